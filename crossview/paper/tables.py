"""MFRGN's Tables 1–5 and Fig. 7 (ACM MM 2024) as data: training presets and the printed numbers.

``PAPER_PRESETS`` (training configs, defined with the other presets in :mod:`crossview.train.paper_presets`)
reproduce the rows. ``ROWS`` holds every row of the tables: the numbers as printed, the dataset,
the protocol and the preset (``None`` for methods this package does not implement) that reproduces it, plus a
synthetic twin preset (``paper-synthetic-*``: the same switches on the tiny CPU model, for the synthetic
CVUSA-, CVACT- and VIGOR-like trees of ``crossview synth``) so that every table runs end to end on a CPU.

One training run can fill several rows: Table 2's rows are Table 1's runs evaluated on the other dataset
(``cross_eval``), Table 5's last two rows are the runs of Table 4's last row and Table 1's plain MFRGN row.
Cross-dataset evaluation::

    crossview train paper-t1-cvusa-mfrgn --data CVUSA --out runs/t1-cvusa-mfrgn
    crossview eval runs/t1-cvusa-mfrgn --data CVACT --dataset cvact --split val --out runs/t1-cvusa-mfrgn/eval-cvact
    crossview eval runs/t1-cvusa-mfrgn --data CVACT --dataset cvact --split val --crop \
        --out runs/t1-cvusa-mfrgn/eval-cvact-crop

(:func:`cross_eval_command` builds these lines); ``crossview report runs/t1-cvusa-mfrgn runs/t1-cvusa-mfrgn/eval-*``
then fills Table 1's and Table 2's rows. The pre-crop exists only for CVACT panoramas: Table 1/2's CVUSA
"w/ Pre-processing" cells come from the plain CVUSA run, evaluated on cropped CVACT for Table 2 (an evaluation
that reads the cropped panoramas must record ``crop`` in its ``metrics.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crossview.train.paper_presets import (  # noqa: F401 (re-exported: the presets are training data)
    F7_RATIOS,
    PAPER_PRESETS,
    SYNTHETIC_PREFIX,
    T4_VARIANTS,
    tiny_model,
    twin_name,
)

# --- the paper's rows -------------------------------------------------------------------------------------------
RECALLS = ("R@1", "R@5", "R@10", "R@1%")
TABLE_TITLES = {
    "1": "Table 1: same-area results on CVUSA and CVACT",
    "2": "Table 2: cross-dataset results (train on one of CVUSA/CVACT, test on the other)",
    "3": "Table 3: VIGOR same-area and cross-area (no pre-processing, no sampling)",
    "4": "Table 4: component analysis, training on CVACT",
    "5": "Table 5: linear attention (LA) and pyramid pooling sampling (PPS), training on CVACT",
    "f7": "Fig. 7: global:local descriptor dimension ratio, training on CVACT",
}
# Where a measured cell comes from: "own" = the run's own test split, "cross" = the run evaluated on the other
# dataset, "cost" = counted on the model (crossview.paper.report.model_cost).
COST_COLUMNS = {"GMACs/image": "gmacs_image", "GMACs/pair": "gmacs_pair", "Memory (MB)": "memory_mb",
                "Params (M)": "params_m"}


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: the numbers as printed and how to reproduce them.

    ``paper`` maps a column to the printed value (``None`` where the paper prints "-" or gives no number);
    ``measure`` maps a column to ``"own:KEY"``, ``"cross:KEY"`` or ``"cost:KEY"`` (see :data:`COST_COLUMNS`).
    ``train`` and ``test`` name the protocol (``cvusa``, ``cvact``, ``vigor-same``, ``vigor-cross``) with the
    evaluation split after a colon. ``cross_eval`` is the evaluation a Table-2/4/5 row needs on top of training.
    """

    id: str
    table: str
    block: str
    section: str
    method: str
    train: str
    test: str
    paper: dict[str, float | None]
    measure: dict[str, str]
    preset: str | None = None
    twin: str | None = None  # synthetic twin preset (tiny model, synthetic world)
    cross_eval: dict[str, Any] | None = None  # {"dataset": ..., "split": ..., "crop": bool}
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def columns(self) -> list[str]:
        return list(self.paper)


_SECTION_KEY = {"w/ Pre-processing": "pre", "w/ Sampling": "sampling", "w/o Pre-processing & Sampling": "none"}


def _slug(method: str) -> str:
    return method.lower().replace("†", "-polar").replace("+", "-plus-").replace("--", "-").strip("-")


_DAGGER = "polar transformation of the aerial images (†)"
_FOREIGN = "reference number only: this package does not implement the method"
_TEST = {"cvusa": "cvusa:test", "cvact": "cvact:val"}
_OTHER = {"cvusa": "cvact", "cvact": "cvusa"}
_NAME = {"cvusa": "CVUSA", "cvact": "CVACT"}


def _recall_row(id, table, block, section, method, train, test, values, preset=None, cross=False,
                notes=(), crop=False) -> PaperRow:
    src = "cross" if cross else "own"
    cols = RECALLS + (("hit_rate",) if len(values) == 5 else ())
    paper = dict(zip(cols, values))
    cross_eval = None
    if cross:
        ds, split = test.split(":")
        cross_eval = {"dataset": ds, "split": split, "crop": crop}
    return PaperRow(id, table, block, section, method, train, test, paper, {c: f"{src}:{c}" for c in cols},
                    preset, twin_name(preset) if preset else None, cross_eval, tuple(notes))


# Preset keys per dataset where CVUSA and CVACT differ: the crop only exists for CVACT.
_CROP = {"cvusa": "mfrgn", "cvact": "mfrgn-crop"}
_PLUS = {"cvusa": "mfrgn-sampling", "cvact": "mfrgn-plus"}
# (section, method, CVUSA, CVACT, preset key | {dataset: key} | None, notes)
_T1 = [
    ("w/ Pre-processing", "SAFA", (81.15, 94.23, 96.85, 99.49), (78.28, 91.60, 93.79, 98.15), None, ()),
    ("w/ Pre-processing", "SAFA†", (89.84, 96.93, 98.14, 99.64), (81.03, 92.80, 94.84, 98.17), None,
     (_DAGGER,)),
    ("w/ Pre-processing", "SAFA†+LPN", (92.83, 98.00, 8.85, 99.78), (83.66, 94.14, 95.92, 98.41), None,
     (_DAGGER, "CVUSA R@10 printed as 8.85 (a typo for 98.85, presumably)")),
    ("w/ Pre-processing", "GeoDTR", (93.76, 98.47, 99.22, 99.85), (85.43, 94.81, 96.11, 98.26), None, ()),
    ("w/ Pre-processing", "GeoDTR†", (95.43, 98.86, 99.34, 99.86), (86.21, 95.44, 96.72, 98.77), None,
     (_DAGGER,)),
    ("w/ Pre-processing", "GeoDTR+", (95.05, 98.42, 98.92, 99.77), (87.76, 95.50, 96.50, 98.32), None, ()),
    ("w/ Pre-processing", "GeoDTR+†", (95.40, 98.44, 99.05, 99.75), (87.61, 95.48, 96.52, 98.34), None,
     (_DAGGER,)),
    ("w/ Pre-processing", "SAIG-D", (96.08, 98.72, 99.22, 99.86), (89.21, 96.07, 97.04, 98.74), None, ()),
    ("w/ Pre-processing", "SAIG-D†", (96.34, 99.10, 99.50, 99.86), (89.06, 96.11, 97.08, 98.89), None,
     (_DAGGER,)),
    ("w/ Pre-processing", "MFRGN", (98.24, 99.56, 99.72, 99.88), (89.51, 96.96, 97.75, 99.01), _CROP,
     ("CVACT: the pre-crop only (no polar transformation); CVUSA: panoramas come as the cropped band already, the "
      "crop does not apply (the paper prints identical numbers with and without it), so the cell is the plain run",)),
    ("w/ Sampling", "Sample4Geo", (98.68, 99.68, 99.78, 99.87), (90.81, 96.74, 97.48, 98.77),
     "sample4geo-sampling", ("Sample4Geo's official configuration",)),
    ("w/ Sampling", "MFRGN", (98.69, 99.58, 99.67, 99.82), (90.54, 96.12, 96.84, 98.37), "mfrgn-sampling",
     ("hard-negative sampling of Sample4Geo (GPS neighbours, then visual similarity)",)),
    ("w/o Pre-processing & Sampling", "L2LTR", (91.99, 97.68, 98.65, 99.75), (83.14, 93.84, 95.51, 98.40), None, ()),
    ("w/o Pre-processing & Sampling", "TransGeo", (94.08, 98.36, 99.04, 99.77), (84.95, 94.14, 95.78, 98.37), None, ()),
    ("w/o Pre-processing & Sampling", "Sample4Geo", (97.84, 99.58, 99.75, 99.88), (87.73, 96.58, 97.59, 98.99),
     "sample4geo", ("Sample4Geo's configuration with the sampling switched off",)),
    ("w/o Pre-processing & Sampling", "MFRGN", (98.24, 99.56, 99.72, 99.88), (88.78, 96.61, 97.51, 98.99), "mfrgn",
     ("the released MFRGN configuration",)),
    ("w/o Pre-processing & Sampling", "MFRGN+", (98.67, 99.57, 99.71, 99.85), (91.09, 96.34, 97.14, 98.44),
     _PLUS, ("printed under 'w/o Pre-processing & Sampling', but the text says MFRGN+ uses the "
             "pre-crop and hard-negative sampling; on CVUSA (no crop) it is the sampling run",)),
]
_T2 = [
    ("w/ Pre-processing", "SAFA†", (30.40, 52.93, 62.29, 85.82), (21.45, 36.55, 43.79, 69.83), None,
     (_DAGGER,)),
    ("w/ Pre-processing", "GeoDTR", (43.72, 66.99, 74.61, 91.83), (29.85, 49.25, 57.11, 2.47), None,
     ("CVACT→CVUSA R@1% printed as 2.47 (a typo, presumably)",)),
    ("w/ Pre-processing", "GeoDTR†", (53.16, 75.62, 81.90, 93.80), (44.07, 64.66, 72.08, 90.09), None,
     (_DAGGER,)),
    ("w/ Pre-processing", "GeoDTR+", (60.16, 79.97, 84.67, 94.48), (52.56, 73.08, 79.82, 94.80), None, ()),
    ("w/ Pre-processing", "GeoDTR+†", (61.17, 80.22, 85.45, 94.56), (53.89, 74.56, 81.10, 94.93), None,
     (_DAGGER,)),
    ("w/ Pre-processing", "MFRGN", (71.56, 88.98, 92.06, 97.12), (55.32, 76.64, 83.14, 96.15), _CROP,
     ("CVACT panoramas pre-cropped wherever CVACT is read (CVUSA→CVACT: the plain CVUSA run, evaluated on "
      "cropped CVACT)",)),
    ("w/ Sampling", "Sample4Geo", (56.62, 77.79, 87.02, 94.69), (44.95, 64.36, 72.10, 90.65), "sample4geo-sampling",
     ()),
    ("w/ Sampling", "MFRGN", (66.06, 82.79, 86.58, 94.47), (63.34, 80.54, 86.22, 96.81), "mfrgn-sampling",
     ()),
    ("w/o Pre-processing & Sampling", "TransGeo", (37.81, 61.57, 69.86, 89.14), (17.45, 32.49, 40.48, 69.14), None, ()),
    ("w/o Pre-processing & Sampling", "Sample4Geo", (34.88, 59.68, 69.28, 90.02), (15.78, 31.13, 39.40, 70.04),
     "sample4geo", ()),
    ("w/o Pre-processing & Sampling", "MFRGN", (51.61, 73.91, 80.55, 94.24), (49.18, 70.09, 77.42, 95.04), "mfrgn",
     ()),
    ("w/o Pre-processing & Sampling", "MFRGN+", (79.12, 91.09, 93.17, 96.79), (69.28, 84.91, 89.60, 97.69),
     _PLUS, ("pre-crop + hard-negative sampling (see Table 1); CVUSA→CVACT: the CVUSA sampling run "
             "evaluated on cropped CVACT",)),
]
_T3 = {
    "same": [
        ("TransGeo", (61.48, 87.54, 91.88, 99.56, 73.09), None),
        ("GeoDTR", (56.51, 80.37, 86.21, 99.25, 61.76), None),
        ("GeoDTR+", (59.01, 81.77, 87.10, 99.07, 67.41), None),
        ("SAIG-D", (65.23, None, 88.08, 99.68, 74.11), None),
        ("Sample4Geo", (65.23, 91.62, 95.85, 99.85, 78.77), "sample4geo"),
        ("MFRGN", (71.41, 92.02, 95.07, 99.82, 80.59), "mfrgn"),
    ],
    "cross": [
        ("TransGeo", (18.99, 38.24, 46.91, 88.94, 21.21), None),
        ("GeoDTR", (30.02, 52.67, 61.45, 94.40, 30.19), None),
        ("GeoDTR+", (36.01, 59.06, 67.22, 94.95, 39.40), None),
        ("SAIG-D", (33.05, None, 55.94, 94.64, 36.71), None),
        ("Sample4Geo", (36.38, 63.96, 72.43, 97.18, 43.66), "sample4geo"),
        ("MFRGN", (43.18, 67.52, 75.34, 97.47, 47.54), "mfrgn"),
    ],
}
_T4 = [  # key, label, CVACT, CVACT→CVUSA
    ("baseline", "Baseline", (83.52, 95.27, 96.75, 98.96), (10.78, 23.37, 30.68, 62.89)),
    ("mbaseline", "MBaseline", (80.76, 95.36, 96.84, 99.01), (16.81, 33.21, 43.31, 72.37)),
    ("mbaseline-lini", "MBaseline+L_ini", (81.59, 95.03, 96.36, 98.90), (18.07, 35.21, 44.68, 78.13)),
    ("mbaseline-g", "MBaseline+G", (86.58, 96.15, 97.20, 99.00), (36.61, 57.97, 66.51, 91.31)),
    ("mbaseline-g-lini", "MBaseline+G+L_ini", (88.21, 96.37, 97.40, 99.03), (45.54, 68.35, 76.15, 94.90)),
    ("mbaseline-g-lp", "MBaseline+G+L_p", (88.42, 96.49, 97.49, 99.04), (47.13, 69.07, 77.51, 95.48)),
]
_T4_NOTES = {
    "baseline": "the S4 map straight to the descriptor (no multi-scale, no SCAM, no GPAB)",
    "mbaseline": "S1 (all tokens, no PPS) to S4 through the token Linear; no SCAM, no GPAB",
    "mbaseline-lini": "GPAB with the initial (un-updated) multi-scale tokens as prompts; no SCAM",
    "mbaseline-g": "SCAM (global flow) only; the global part takes all 2048 dimensions",
    "mbaseline-g-lini": "SCAM + GPAB prompted by the initial tokens",
    "mbaseline-g-lp": "SCAM + GPAB prompted by SCAM's output = MFRGN without PPS (Table 5, LA on / PPS off)",
}
_T4_PPS = ("run without PPS: the paper's MBaseline+G+L_p numbers equal Table 5's 'LA on, PPS off' row "
           "(inferred; the paper does not say)")
# LA, PPS, FLOPs (G), memory (M), same-area R@1, cross-area R@1, preset
_T5 = [
    ("×", "×", 22.31, 1166, 87.47, 42.14, "paper-t5-cvact-softmax-nopps"),
    ("✓", "×", 22.31, 1065, 88.42, 47.13, "paper-t4-cvact-mbaseline-g-lp"),
    ("✓", "✓", 21.80, 1050, 88.78, 49.18, "paper-t1-cvact-mfrgn"),
]
T5_COST_NOTE = ("FLOPs and memory 'using a pair of street image and satellite image as input' (paper); 21.80 G "
                "matches the multiply-accumulates (MACs) of ONE image at 256x256 / 128x512 (20.98 G per image, "
                "41.96 G per pair by fvcore), and LA/softmax print the same FLOPs, so the paper's counter "
                "presumably skipped the attention matrix products. Measured: GMACs per single image (the larger "
                "of the two views) and per pair (one ground + one aerial), counted by torch's FlopCounterMode "
                "(2 FLOPs per MAC, halved), attention products included; memory = peak CUDA memory of one "
                "inference forward of a pair (batch 1, fp32, weights included), only on a GPU.")


def _t1_t2_rows() -> list[PaperRow]:
    rows = []
    for table, data in (("1", _T1), ("2", _T2)):
        for section, method, a, b, key, notes in data:
            for ds, values in (("cvusa", a), ("cvact", b)):
                cross = table == "2"
                test = _TEST[_OTHER[ds]] if cross else _TEST[ds]
                block = f"{_NAME[ds]}→{_NAME[_OTHER[ds]]}" if cross else _NAME[ds]
                rid = f"t{table}-{ds}-{_SECTION_KEY[section]}-{_slug(method)}"
                extra = () if key else (_FOREIGN,)
                k = key.get(ds) if isinstance(key, dict) else key
                # CVACT read by a CVUSA-trained run of a "crop" row is cropped at evaluation
                crop = cross and ds == "cvusa" and isinstance(key, dict)
                rows.append(_recall_row(
                    rid, table, block, section, method, ds, test, values, crop=crop,
                    preset=f"paper-t1-{ds}-{k}" if k else None,
                    cross=cross, notes=notes + extra))
    return rows


def _t3_rows() -> list[PaperRow]:
    rows = []
    for area, data in _T3.items():
        for method, values, key in data:
            notes = ["VIGOR 'balanced' labels; hit rate = top-1 is the positive or a semi-positive"]
            if area == "same":
                notes.append("the paper prints this block under a second 'Cross-area' heading (a typo)")
            if values[1] is None:
                notes.append("R@5 printed as '-'")
            if not key:
                notes.append(_FOREIGN)
            rows.append(_recall_row(
                f"t3-{area}-{_slug(method)}", "3", f"{area.capitalize()}-area", "", method, f"vigor-{area}",
                f"vigor-{area}:test", values, preset=f"paper-t3-vigor-{area}-{key}" if key else None,
                notes=notes))
    return rows


def _t4_rows() -> list[PaperRow]:
    rows = []
    for key, label, same, cross in _T4:
        notes = (_T4_NOTES[key],) + ((_T4_PPS,) if key != "baseline" else ())
        for block, values, is_cross in (("CVACT", same, False), ("CVACT→CVUSA", cross, True)):
            rows.append(_recall_row(
                f"t4-{'cross' if is_cross else 'same'}-{key}", "4", block, "", label, "cvact",
                _TEST["cvusa" if is_cross else "cvact"], values, preset=f"paper-t4-cvact-{key}",
                cross=is_cross, notes=notes))
    return rows


def _t5_rows() -> list[PaperRow]:
    rows = []
    for la, pps, flops, mem, same, cross, preset in _T5:
        paper = {"GMACs/image": flops, "GMACs/pair": None, "Memory (MB)": float(mem), "Params (M)": None,
                 "Same-area R@1": same, "Cross-area R@1": cross}
        measure = {c: f"cost:{COST_COLUMNS[c]}" for c in COST_COLUMNS}
        measure.update({"Same-area R@1": "own:R@1", "Cross-area R@1": "cross:R@1"})
        name = f"LA {la} / PPS {pps}"
        rows.append(PaperRow(
            f"t5-la{'1' if la == '✓' else '0'}-pps{'1' if pps == '✓' else '0'}", "5", "CVACT / CVACT→CVUSA", "",
            name, "cvact", "cvact:val", paper, measure, preset, twin_name(preset),
            {"dataset": "cvusa", "split": "test"},
            ("attention: " + ("linear (elu+1 kernel)" if la == "✓" else "softmax dot-product"),
             "PPS: " + ("S1 pooled by PPS (622 tokens at the paper's sizes)" if pps == "✓" else "all S1 tokens"),
             "paper prints FLOPs per 'pair'; see the counting note")))
    return rows


def _f7_rows() -> list[PaperRow]:
    rows = []
    both = {"Same-area R@1": "own:R@1", "Cross-area R@1": "cross:R@1"}
    for key in F7_RATIOS:
        g, l = key.split("-")
        preset = "paper-t1-cvact-mfrgn" if key == "7-1" else f"paper-f7-cvact-ratio-{key}"
        notes = ["the paper plots R@1 minus the mean over ratios and prints no numbers",
                 "the ratios plotted are not listed in the text; these cover 0:1 … 1:0 around the chosen 7:1",
                 "which dataset Fig. 7 trains on is not stated (CVACT assumed, like Tables 4–5)"]
        if key == "7-1":
            notes.append("the paper's choice (1792 global / 256 local)")
        rows.append(PaperRow(
            f"f7-ratio-{key}", "f7", "CVACT / CVACT→CVUSA", "", f"Dim^g:Dim^l = {g}:{l}", "cvact", "cvact:val",
            dict.fromkeys(both), both,
            preset, twin_name(preset), {"dataset": "cvusa", "split": "test"}, tuple(notes)))
    return rows


ROWS: list[PaperRow] = _t1_t2_rows() + _t3_rows() + _t4_rows() + _t5_rows() + _f7_rows()
ROWS_BY_ID: dict[str, PaperRow] = {r.id: r for r in ROWS}
assert len(ROWS_BY_ID) == len(ROWS), "paper row ids must be unique"


def rows_for_preset(preset: str) -> list[tuple[PaperRow, bool]]:
    """Rows a run of ``preset`` fills, each with ``True`` when the preset is the row's synthetic twin."""
    return [(r, r.twin == preset) for r in ROWS if preset in (r.preset, r.twin)]


def protocol(row: PaperRow, synthetic: bool = False) -> str:
    """A one-line description of how the row is measured (direction, crop, sampling, labels, schedule)."""
    name = row.twin if synthetic else row.preset
    if name is None:
        return "; ".join(row.notes) or _FOREIGN
    cfg = PAPER_PRESETS[name]
    sources = {v.split(":")[0] for v in row.measure.values()}
    world = "synthetic " if synthetic else ""
    tests = []
    if "own" in sources:
        tests.append(f"own: {world}{cfg['dataset']}" + (f"-{cfg['area']}" if cfg["dataset"] == "vigor" else "")
                     + f":{cfg.get('eval_split', 'test')}")
    if "cross" in sources and row.cross_eval:
        tests.append(f"cross: {world}{row.cross_eval['dataset']}:{row.cross_eval['split']}"
                     + (" with the pre-crop" if row.cross_eval.get("crop") else "") + " (crossview eval --dataset)")
    test = ", ".join(tests)
    parts = [f"preset {name}", f"model {cfg['model']}" + (f" {cfg['model_kwargs']}" if cfg.get("model_kwargs") else ""),
             f"train {world}{cfg['dataset']}" + (f" ({cfg['area']}-area)" if cfg["dataset"] == "vigor" else ""),
             f"test {test}", "ground→aerial retrieval (queries = ground panoramas)"]
    parts.append("pre-crop (SAFA-like, middle half of the rows)" if cfg.get("crop") else "no pre-crop")
    parts.append("GPS + visual-similarity hard negatives" if cfg.get("gps_sample") or cfg.get("sim_sample")
                 else "random location-unique batches")
    if cfg["dataset"] == "vigor":
        parts.append("label set: original balanced")
    parts.append(f"{cfg.get('epochs')} epochs, batch {cfg.get('batch_size')}, lr {cfg.get('lr')}")
    return "; ".join(parts + list(row.notes))


def cross_eval_command(row: PaperRow, run_dir: str, data_dir: str) -> list[str]:
    """The ``crossview eval`` command line that measures a row's cross-dataset columns."""
    if not row.cross_eval:
        raise ValueError(f"row {row.id} has no cross-dataset evaluation")
    ds, split, crop = row.cross_eval["dataset"], row.cross_eval["split"], row.cross_eval.get("crop", False)
    return ["crossview", "eval", run_dir, "--data", data_dir, "--dataset", ds, "--split", split,
            *(["--crop"] if crop else []), "--out", f"{run_dir}/eval-{ds}{'-crop' if crop else ''}"]
