"""MFRGN's Tables 1–5 and Fig. 7 as training presets (data): one per reproducible row, plus a synthetic twin per
preset (``paper-synthetic-*``: the same switches on the tiny CPU model). Merged into
:data:`crossview.train.presets.PRESETS`; the rows themselves (printed numbers, protocols) are in
:mod:`crossview.paper.tables`.
"""

from __future__ import annotations

from typing import Any

# --- training presets -------------------------------------------------------------------------------------------
# Official MFRGN scripts (docs/official_code_notes.md): AdamW lr 1e-4, batch 64 pairs, 1 warm-up epoch, 50 epochs
# (VIGOR 70), sampling switches off as released. Sample4Geo: lr 1e-3, batch 128, 40 epochs, GPS + similarity
# sampling on.
_MFRGN = {"lr": 1e-4, "batch_size": 64, "warmup_epochs": 1.0, "pretrained": True, "epochs": 50, "seed": 42,
          "eval_every": 4}
_S4G = {"lr": 1e-3, "batch_size": 128, "warmup_epochs": 1.0, "pretrained": True, "epochs": 40, "eval_every": 4,
        "neighbour_select": 64, "neighbour_range": 128}
_DATA = {
    "cvusa": {"dataset": "cvusa", "eval_split": "test", "neighbour_select": 64, "neighbour_range": 128},
    "cvact": {"dataset": "cvact", "eval_split": "val", "neighbour_select": 32, "neighbour_range": 64},
}
_SAMPLING = {"gps_sample": True, "sim_sample": True}
# Synthetic twins run on `crossview synth --layout cvusa|cvact|vigor --scale small` trees with the tiny CPU models,
# schedule like the `synthetic-cpu` preset; meant to be cut short with --set max_steps=N
# (benchmarks/experiments/paper_synthetic.py).
_SYNTH = {"epochs": 4, "batch_size": 32, "lr": 1e-3, "warmup_epochs": 0.5, "eval_every": 0, "num_workers": 0,
          "checkpoint_every": 50, "seed": 0, "pretrained": False, "neighbour_select": 8, "neighbour_range": 16}
SYNTHETIC_PREFIX = "paper-synthetic-"

# Table 4 was run without PPS: its last row (MBaseline+G+L_p: 88.42 / 47.13) prints exactly the numbers of
# Table 5's "LA on, PPS off" row, while the full model (PPS on) is Table 1/2's 88.78 / 49.18.
_NO_PPS = {"pps": False}
# Table 4 row key -> (model suffix, model_kwargs). Baseline uses only S4, so PPS does not apply to it.
T4_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("baseline", {}),
    "mbaseline": ("mbaseline", _NO_PPS),
    "mbaseline-lini": ("mbaseline_lini", _NO_PPS),
    "mbaseline-g": ("g", _NO_PPS),
    "mbaseline-g-lini": ("g_lini", _NO_PPS),
    "mbaseline-g-lp": ("no_pps", {}),
}
# Fig. 7 global:local descriptor ratios (2048 dimensions in all; global = 128 x tokens). The paper's choice is
# 7:1 (1792 / 256 = the plain model). Ratios with more local than global are built with model_kwargs.
F7_RATIOS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "0-1": ("local_only", {}),
    "1-7": (None, {"global_dim": 256, "local_dim": 1792}),
    "1-3": (None, {"global_dim": 512, "local_dim": 1536}),
    "1-1": ("ratio_1_1", {}),
    "3-1": ("ratio_3_1", {}),
    "7-1": (None, {}),
    "15-1": ("ratio_15_1", {}),
    "1-0": ("global_only", {}),
}


def _model(base: str, suffix: str | None) -> str:
    return f"{base}_{suffix}" if suffix else base


def tiny_model(model: str) -> str:
    """The tiny CPU variant with the same switches: ``mfrgn_cvact_g_lini`` → ``mfrgn_tiny_g_lini``."""
    arch, _, rest = model.partition("_")
    if arch == "sample4geo":
        return "sample4geo_tiny"
    _, _, suffix = rest.partition("_")  # drop the dataset part
    return _model("mfrgn_tiny", suffix)


def twin_name(preset: str) -> str:
    """``paper-t4-cvact-baseline`` → ``paper-synthetic-t4-cvact-baseline``."""
    return SYNTHETIC_PREFIX + preset.removeprefix("paper-")


def _build_presets() -> dict[str, dict[str, Any]]:
    p: dict[str, dict[str, Any]] = {}
    for ds in ("cvusa", "cvact"):
        mf = {**_MFRGN, **_DATA[ds], "model": f"mfrgn_{ds}"}
        p[f"paper-t1-{ds}-mfrgn"] = dict(mf)
        p[f"paper-t1-{ds}-mfrgn-sampling"] = {**mf, **_SAMPLING}
        if ds == "cvact":  # the pre-crop exists for CVACT panoramas only (CVUSA ships the cropped band)
            p[f"paper-t1-{ds}-mfrgn-crop"] = {**mf, "crop": True}
            p[f"paper-t1-{ds}-mfrgn-plus"] = {**mf, **_SAMPLING, "crop": True}
        s4g = {**_S4G, **_DATA[ds], "model": f"sample4geo_{ds}", "seed": 42 if ds == "cvusa" else 1,
               "neighbour_select": 64, "neighbour_range": 128}
        p[f"paper-t1-{ds}-sample4geo-sampling"] = {**s4g, **_SAMPLING}
        p[f"paper-t1-{ds}-sample4geo"] = dict(s4g)
    for area in ("same", "cross"):
        p[f"paper-t3-vigor-{area}-mfrgn"] = {**_MFRGN, "model": "mfrgn_vigor", "dataset": "vigor", "area": area,
                                             "epochs": 70, "seed": 40, "eval_every": 0}
        p[f"paper-t3-vigor-{area}-sample4geo"] = {**_S4G, "model": "sample4geo_vigor", "dataset": "vigor",
                                                  "area": area, "seed": 1}
    cvact = {**_MFRGN, **_DATA["cvact"]}
    for key, (suffix, kwargs) in T4_VARIANTS.items():
        p[f"paper-t4-cvact-{key}"] = {**cvact, "model": f"mfrgn_cvact_{suffix}", "model_kwargs": dict(kwargs)}
    p["paper-t5-cvact-softmax-nopps"] = {**cvact, "model": "mfrgn_cvact_softmax_no_pps"}
    for key, (suffix, kwargs) in F7_RATIOS.items():
        if key != "7-1":  # 7:1 is the plain model: paper-t1-cvact-mfrgn
            p[f"paper-f7-cvact-ratio-{key}"] = {**cvact, "model": _model("mfrgn_cvact", suffix),
                                                "model_kwargs": dict(kwargs)}
    # Synthetic twins: the same switches (dataset, area, crop, sampling, ablation, model_kwargs) on the tiny model.
    for name, cfg in list(p.items()):
        p[twin_name(name)] = {**cfg, **_SYNTH, "model": tiny_model(cfg["model"])}
    return p


PAPER_PRESETS: dict[str, dict[str, Any]] = _build_presets()
