"""``crossview report``: paper-style tables (Markdown and CSV) from run and evaluation folders.

A **run folder** (``crossview train``) holds ``config.json`` (``{"config": resolved config, "data": ...}``) and
``metrics.jsonl``; its last ``{"type": "eval", ...}`` line gives the run's own test numbers. An **evaluation
folder** (``crossview eval``) holds ``metrics.json``; the run it evaluated and the dataset it was evaluated on
are read from ``metrics.json`` or a ``config.json`` beside it (keys ``run``/``run_dir``/``checkpoint``,
``dataset``, ``split``, ``data``, ``crop`` or ``split_meta.crop``, or a nested training ``config``), else from
the parent folder when the evaluation lives inside the run folder (``RUN/eval-cvact``). An evaluation on another
dataset or another data folder than the run was trained on fills the rows' cross-dataset columns.
``DIR@ROW_ID`` forces a folder onto one row of :data:`crossview.paper.tables.ROWS`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossview.errors import CrossviewError
from crossview.io import write_text_atomic
from crossview.paper.tables import (
    COST_COLUMNS,
    ROWS,
    ROWS_BY_ID,
    T5_COST_NOTE,
    TABLE_TITLES,
    PaperRow,
    protocol,
)

SYNTHETIC_WARNING = ("**Synthetic data.** These numbers were measured on the procedural synthetic world with tiny "
                     "CPU models and a few training steps. They are NOT paper numbers and say nothing about how "
                     "MFRGN performs on CVUSA, CVACT or VIGOR; they only show that each table's pipeline runs end "
                     "to end. The paper's numbers are printed beside them for orientation only. (R@1% uses "
                     "K = references // 100, which is 0 on test sets under 100 references, hence 0.)")
REAL_NOTE = ("Measured with the listed preset on the real dataset; the paper's numbers are as printed (typos "
             "included, see the notes). Retrieval is ground→aerial (the official MFRGN CVUSA/CVACT script ranks "
             "satellite→ground; docs/paper.md).")
ORDERED_TABLES = ("4", "5", "f7")


@dataclass
class Result:
    """One measured folder: the training config it came from and the metrics it holds."""

    path: Path
    kind: str  # "run" | "eval"
    config: dict[str, Any]
    metrics: dict[str, Any]
    train_data: str | None = None
    eval_dataset: str | None = None
    eval_data: str | None = None
    eval_crop: bool = False
    row_hint: str | None = None
    run_id: str | None = None  # the training run folder the numbers come from (resolved)
    notes: list[str] = field(default_factory=list)

    @property
    def preset(self) -> str | None:
        return self.config.get("preset")

    @property
    def is_cross(self) -> bool:
        """Evaluated on another dataset (or data folder) than the run was trained on."""
        if self.kind == "run":
            return False
        if self.eval_dataset and self.config.get("dataset") and self.eval_dataset != self.config["dataset"]:
            return True
        if self.eval_data and self.train_data:
            return _same_path(self.eval_data, self.train_data) is False
        return False


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CrossviewError(f"{path}: cannot read JSON ({exc}); is the run finished?") from exc
    if not isinstance(obj, dict):
        raise CrossviewError(f"{path}: expected a JSON object")
    return obj


def _training_config(obj: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(training config, training data folder) from a run's config.json object."""
    if isinstance(obj.get("config"), dict):
        return obj["config"], obj.get("data")
    if "model" in obj and "dataset" in obj:
        return obj, obj.get("data")
    return {}, obj.get("data")


def last_eval(metrics_jsonl: Path) -> dict[str, Any] | None:
    """The last ``{"type": "eval"}`` line of a ``metrics.jsonl`` (``None`` if there is none)."""
    last = None
    for line in metrics_jsonl.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run
        if row.get("type") == "eval":
            last = row
    return last


def read_result(path: str | Path, row_hint: str | None = None) -> Result:
    """Read a run folder or an evaluation folder (see the module docstring)."""
    path = Path(path)
    if not path.is_dir():
        raise CrossviewError(f"{path}: not a folder; give run folders (config.json + metrics.jsonl) or evaluation "
                             "folders (metrics.json)")
    if row_hint is not None and row_hint not in ROWS_BY_ID:
        raise CrossviewError(f"{path}@{row_hint}: unknown row id; see docs/paper.md for the row ids")
    if (path / "metrics.json").exists():
        metrics = _read_json(path / "metrics.json")
        meta = {k: v for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, int | float)}
        if (path / "config.json").exists():
            meta = {**_read_json(path / "config.json"), **meta}
        cfg: dict[str, Any] = {}
        for key in ("train_config", "config"):
            if isinstance(meta.get(key), dict) and "model" in meta[key]:
                cfg = meta[key]
                break
        train_data, run_id = None, str(path.resolve())
        run = meta.get("run") or meta.get("run_dir") or meta.get("checkpoint")  # crossview eval: "checkpoint"
        for folder in ([Path(run)] if isinstance(run, str) and Path(run).is_dir() else []) + [path.parent]:
            if (folder / "config.json").exists() and (folder / "metrics.jsonl").exists():
                run_cfg, train_data = _training_config(_read_json(folder / "config.json"))
                cfg, run_id = cfg or run_cfg, str(folder.resolve())
                break
        res = Result(path, "eval", cfg, _numeric(metrics), train_data=train_data,
                     eval_dataset=meta.get("dataset") if isinstance(meta.get("dataset"), str) else None,
                     eval_data=meta.get("data") if isinstance(meta.get("data"), str) else None, row_hint=row_hint,
                     eval_crop=_eval_crop(meta, cfg), run_id=run_id)
        if not cfg:
            res.notes.append("no training config found (give the evaluation's run folder, or DIR@ROW_ID)")
        if meta.get("direction", "standard") != "standard":
            res.notes.append(f"direction {meta['direction']!r}: the paper tables here are ground→aerial")
            res.config = {k: v for k, v in cfg.items() if k != "preset"}  # kept out of the rows
        return res
    if (path / "config.json").exists() and (path / "metrics.jsonl").exists():
        cfg, train_data = _training_config(_read_json(path / "config.json"))
        row = last_eval(path / "metrics.jsonl")
        res = Result(path, "run", cfg, _numeric(row or {}), train_data=train_data,
                     eval_dataset=cfg.get("dataset"), eval_data=train_data, row_hint=row_hint,
                     eval_crop=bool(cfg.get("crop", False)), run_id=str(path.resolve()))
        if row is None:
            res.notes.append("metrics.jsonl has no evaluation line yet")
        return res
    raise CrossviewError(f"{path}: neither a run folder (config.json + metrics.jsonl) nor an evaluation folder "
                         "(metrics.json)")


def _eval_crop(meta: dict[str, Any], cfg: dict[str, Any]) -> bool:
    """Whether an evaluation read pre-cropped panoramas: recorded, else the run's setting where it applies."""
    for source in (meta, meta.get("split_meta") or {}):
        if "crop" in source:
            return bool(source["crop"])
    dataset = meta.get("dataset") or cfg.get("dataset")
    return bool(cfg.get("crop")) and dataset == "cvact"  # the pre-crop exists for CVACT only


def _numeric(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("step", "epoch")}


def collect(args: list[str]) -> list[Result]:
    """Read each ``DIR`` or ``DIR@ROW_ID`` argument."""
    out = []
    for arg in args:
        hint = None
        if "@" in arg and not Path(arg).exists():
            arg, hint = arg.rsplit("@", 1)
        out.append(read_result(arg, hint))
    return out


# --- matching results to rows --------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def assign(results: list[Result]) -> tuple[dict[tuple[str, bool], dict[str, list[Result]]], list[Result]]:
    """Map each result to ``(row id, synthetic)`` → {"own"|"cross": [results]}; also return unmatched results."""
    table: dict[tuple[str, bool], dict[str, list[Result]]] = defaultdict(lambda: defaultdict(list))
    unmatched = []
    for res in results:
        source = "cross" if res.is_cross else "own"
        if res.row_hint:
            row = ROWS_BY_ID[res.row_hint]
            synthetic = bool(res.preset and res.preset == row.twin)
            sources = {m.split(":")[0] for m in row.measure.values()}
            if source not in sources:
                source = next(s for s in ("own", "cross") if s in sources)
            table[(row.id, synthetic)][source].append(res)
            continue
        if source == "own" and res.kind == "eval" and res.eval_crop != bool(res.config.get("crop")):
            res.notes.append("evaluated with the pre-crop " + ("on" if res.eval_crop else "off") + ", trained with "
                             "it " + ("on" if res.config.get("crop") else "off") + ": not the row's protocol")
            unmatched.append(res)
            continue
        hit = False
        for row in ROWS:
            if res.preset not in (row.preset, row.twin) or res.preset is None:
                continue
            if source == "cross" and row.cross_eval and bool(row.cross_eval.get("crop")) != res.eval_crop:
                continue  # Table 2's CVUSA→CVACT "w/ Pre-processing" cells need cropped CVACT, the others not
            if any(m.startswith(source + ":") for m in row.measure.values()):
                table[(row.id, res.preset == row.twin)][source].append(res)
                hit = True
        if not hit:
            unmatched.append(res)
    for sources in table.values():  # one result per training run and source: an evaluation folder wins over the
        for src, found in sources.items():  # run's in-training evaluation of the same split
            best: dict[str, Result] = {}
            for res in found:
                key = res.run_id or str(res.path)
                if key not in best or (res.kind == "eval" and best[key].kind == "run"):
                    best[key] = res
            sources[src] = list(best.values())
    return table, unmatched


def count_macs(fn) -> float:
    """Multiply-accumulates of ``fn()`` (no gradients): torch's FlopCounterMode counts 2 FLOPs per MAC."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return counter.get_total_flops() / 2


def model_cost(model: str, model_kwargs: dict[str, Any] | None = None, device: str | None = None) -> dict[str, Any]:
    """Parameters, multiply-accumulates and (on a GPU) peak memory of a registered model variant.

    GMACs come from :func:`crossview.models.info.model_info` (else :func:`count_macs` here): matrix products and
    convolutions counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per MAC, halved), element-wise
    operations not counted, for one image of each view at the model's input size; ``gmacs_image`` is the larger view,
    ``gmacs_pair`` one ground + one aerial image. ``memory_mb`` is the peak CUDA memory allocated by one
    inference forward of a pair (batch 1, fp32, weights included); ``None`` without a GPU.
    """
    import torch

    from crossview.models import create_model, input_spec

    kwargs = dict(model_kwargs or {})
    kwargs.pop("pretrained", None)
    try:  # the models package's own counter (shapes only, on the meta device: instant)
        from crossview.models.info import model_info
    except ImportError:
        model_info = None
    net = None
    if model_info is not None:
        info = model_info(model, **kwargs)
        params, macs = info["total_params"], {v: m / 1e9 for v, m in info["macs_per_image"].items()}
    else:
        net = create_model(model, pretrained=False, **kwargs).eval()
        params = sum(p.numel() for p in net.parameters())
        macs = {}
        for view in net.config.get("views") or ["ground", "aerial"]:
            size = input_spec(net, view)[0]
            macs[view] = count_macs(lambda v=view, s=size: net.embed(torch.zeros(1, 3, *s), view=v)) / 1e9
    out: dict[str, Any] = {"model": model, "model_kwargs": kwargs, "params_m": params / 1e6,
                           "gmacs_per_view": macs, "gmacs_image": max(macs.values()),
                           "gmacs_pair": sum(macs.values()), "memory_mb": None}
    dev = torch.device(device) if device else (torch.device("cuda") if torch.cuda.is_available() else None)
    if dev is not None and dev.type == "cuda":
        net = (net or create_model(model, pretrained=False, **kwargs)).eval().to(dev)
        views = list(macs)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        with torch.no_grad():
            for view in views:
                net.embed(torch.zeros(1, 3, *input_spec(net, view)[0], device=dev), view=view)
        torch.cuda.synchronize(dev)
        out["memory_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


# --- tables ----------------------------------------------------------------------------------------------------


@dataclass
class TableRow:
    row: PaperRow
    synthetic: bool
    measured: dict[str, float | None]
    runs: list[str]
    n: int


@dataclass
class Table:
    key: str
    synthetic: bool
    columns: list[str]
    rows: list[TableRow]

    @property
    def title(self) -> str:
        return TABLE_TITLES[self.key] + (" — synthetic twin" if self.synthetic else "")


def build_tables(results: list[Result], all_rows: bool = False, cost: bool = True,
                 cost_fn=model_cost) -> tuple[list[Table], list[Result]]:
    """Tables (in paper order, real then synthetic) with measured cells, and the results no row took."""
    assigned, unmatched = assign(results)
    costs: dict[str, dict[str, Any]] = {}
    tables = []
    for synthetic in (False, True):
        for key in TABLE_TITLES:
            rows = [r for r in ROWS if r.table == key]
            if not any((r.id, synthetic) in assigned for r in rows):
                continue
            out_rows = []
            columns: list[str] = []
            for r in rows:
                got = assigned.get((r.id, synthetic), {})
                if not got and not all_rows and (r.twin if synthetic else r.preset) is None:
                    continue
                measured: dict[str, float | None] = {}
                runs = sorted({str(x.path) for xs in got.values() for x in xs})
                for col, spec in r.measure.items():
                    src, metric = spec.split(":", 1)
                    if src == "cost":
                        measured[col] = _cost_value(got, metric, costs, cost, cost_fn)
                    else:
                        vals = [x.metrics[metric] for x in got.get(src, []) if metric in x.metrics]
                        measured[col] = _mean(vals)
                if synthetic:  # what R@1 a random model gets on the (small) synthetic test set
                    src = "own" if got.get("own") else "cross"
                    vals = [x.metrics["chance_R@1"] for x in got.get(src, []) if "chance_R@1" in x.metrics]
                    measured["chance R@1"] = _mean(vals)
                n = max((len(xs) for xs in got.values()), default=0)
                out_rows.append(TableRow(r, synthetic, measured, runs, n))
                for c in measured:
                    if c not in columns:
                        columns.append(c)
            tables.append(Table(key, synthetic, columns, out_rows))
    return tables, unmatched


def _cost_value(got, metric, costs, enabled, cost_fn):
    if not enabled:
        return None
    runs = [x for xs in got.values() for x in xs if x.config.get("model")]
    if not runs:
        return None
    cfg = runs[0].config
    key = json.dumps([cfg["model"], cfg.get("model_kwargs") or {}], sort_keys=True)
    if key not in costs:
        costs[key] = cost_fn(cfg["model"], cfg.get("model_kwargs") or {})
    value = costs[key].get(metric)
    return float(value) if value is not None else None


def _fmt(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def ordering(table: Table, column: str, block: str | None = None) -> tuple[str, str]:
    """The measured rows' methods ranked by measured and by paper value of ``column``, best first, as text:
    ``"A > B = C"`` (``=`` for equal values)."""
    rows = [t for t in table.rows if (block is None or t.row.block == block)
            and t.measured.get(column) is not None]

    def ranked(pairs):
        pairs = sorted(pairs, key=lambda p: -p[1])
        text = pairs[0][0] if pairs else ""
        for (_, prev), (name, value) in zip(pairs, pairs[1:]):
            text += (" = " if abs(prev - value) < 1e-9 else " > ") + name
        return text

    return (ranked([(t.row.method, t.measured[column]) for t in rows]),
            ranked([(t.row.method, t.row.paper[column]) for t in rows if t.row.paper.get(column) is not None]))


def to_markdown(tables: list[Table], unmatched: list[Result]) -> str:
    out = io.StringIO()
    w = out.write
    w("# MFRGN paper tables: measured vs printed\n\n")
    w("Each cell is `measured / paper`; `–` = not measured or not printed. Generated by `crossview report`.\n\n")
    for t in tables:
        w(f"## {t.title}\n\n")
        w((SYNTHETIC_WARNING if t.synthetic else REAL_NOTE) + "\n\n")
        if t.key == "5":
            w(f"Counting convention: {T5_COST_NOTE}\n\n")
        blocks = list(dict.fromkeys(r.row.block for r in t.rows))
        for block in blocks:
            rows = [r for r in t.rows if r.row.block == block]
            if len(blocks) > 1:
                w(f"**{block}**\n\n")
            w("| Method | Section | " + " | ".join(f"{c} (meas. / paper)" for c in t.columns) + " | runs |\n")
            w("|---|---|" + "---:|" * len(t.columns) + "---:|\n")
            for r in rows:
                cells = [f"{_fmt(r.measured.get(c))} / {_fmt(r.row.paper.get(c))}" for c in t.columns]
                w(f"| {r.row.method} | {r.row.section or '–'} | " + " | ".join(cells) + f" | {r.n} |\n")
            w("\n")
            if t.key in ORDERED_TABLES:
                for col in [c for c in t.columns if c == "R@1" or c in ("Same-area R@1", "Cross-area R@1")]:
                    m, p = ordering(t, col, block)
                    if sum(r.measured.get(col) is not None for r in rows) > 1:
                        w(f"Ordering by {col}, measured: {m}; paper: {p or 'not printed'}. (Recorded as measured; "
                          "no claim that it matches the paper's.)\n\n")
        w("Protocol of each row:\n\n")
        for r in t.rows:
            w(f"- `{r.row.id}` ({r.row.method}, {r.row.block}): {protocol(r.row, t.synthetic)}")
            if r.runs:
                w(f". Runs: {', '.join(r.runs)}")
            w("\n")
        w("\n")
    if unmatched:
        w("## Folders not matched to a paper row\n\n")
        w("Their preset is not one of the paper presets (see `crossview train --list`); pass `DIR@ROW_ID` to "
          "place one.\n\n")
        for res in unmatched:
            shown = ", ".join(f"{k} {_fmt(v)}" for k, v in res.metrics.items() if k.startswith(("R@", "hit")))
            w(f"- {res.path} (preset {res.preset}, {'cross-dataset ' if res.is_cross else ''}{res.kind}): "
              f"{shown or 'no metrics'}{'; ' + '; '.join(res.notes) if res.notes else ''}\n")
    return out.getvalue()


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["table", "block", "section", "method", "row_id", "preset", "synthetic", "n_runs"]
    for c in table.columns:
        header += [f"measured {c}", f"paper {c}"]
    writer.writerow(header + ["protocol", "runs"])
    for r in table.rows:
        line = [table.key, r.row.block, r.row.section, r.row.method, r.row.id,
                r.row.twin if r.synthetic else r.row.preset, int(r.synthetic), r.n]
        for c in table.columns:
            m, p = r.measured.get(c), r.row.paper.get(c)
            line += ["" if m is None else f"{m:.4f}", "" if p is None else f"{p:.2f}"]
        writer.writerow(line + [protocol(r.row, r.synthetic), ";".join(r.runs)])
    return out.getvalue()


def write_report(folders: list[str], out: str | Path, all_rows: bool = False, cost: bool = True,
                 cost_fn=model_cost) -> dict[str, Path]:
    """Read ``folders`` (``DIR`` or ``DIR@ROW_ID``), write ``report.md`` and one CSV per table into ``out``.

    Returns ``{"markdown": path, "<table>.csv": path, ...}``.
    """
    results = collect(folders)
    tables, unmatched = build_tables(results, all_rows=all_rows, cost=cost, cost_fn=cost_fn)
    out = Path(out)
    paths = {"markdown": write_text_atomic(out / "report.md", to_markdown(tables, unmatched))}
    for t in tables:
        name = f"table{t.key}{'_synthetic' if t.synthetic else ''}.csv"
        paths[name] = write_text_atomic(out / name, to_csv(t))
    return paths


__all__ = ["COST_COLUMNS", "Result", "Table", "build_tables", "collect", "count_macs", "model_cost", "read_result",
           "to_csv", "to_markdown", "write_report"]
