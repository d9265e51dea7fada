"""Fine-grained training presets as plain data, merged with ``--set key=value`` overrides in one place.

The real-data presets hold the released settings (FINE_SPEC 2.4, 2.5); the ``*-synthetic-cpu`` ones are sized for
a two-core CPU and the ``crossview synth --layout vigor --scale small`` world (128-px tiles, 256×128 panoramas).
"""

from __future__ import annotations

import copy
from typing import Any

from crossview.config import apply_overrides, parse_override  # noqa: F401 (re-exported)
from crossview.errors import ConfigError

BASE: dict[str, Any] = {
    "method": "fg2",  # fg2 | geodistill | hcnet
    "hcnet": {},  # HC-Net extras: variant, prior_deg, loss, eps, warmup_frac (crossview.fine.hcnet_train)
    "model": {},  # model keys (FG2Config / GeoDistillConfig)
    "area": "same",  # same | cross
    "camera": "panorama",  # panorama | pinhole (synthetic world)
    "label_set": "corrected",  # real VIGOR: corrected (SliceMatch) | original
    "orientation": "known",  # known: as is | unknown: roll ±180° | noise: roll ±yaw_noise_deg (FG² stage 2)
    "yaw_noise_deg": 20.0,
    "steps": 1000,
    "batch_size": 8,
    "lr": 1e-4,
    "weight_decay": 0.0,
    "grad_clip": 1.0,
    "seed": 0,
    "cache_features": True,  # frozen backbone: compute its features once per image
    "train_limit": None,  # use at most this many training samples
    "eval_limit": None,  # evaluate on at most this many test samples
    "eval_every": 0,  # steps between evaluations (0 = only at the end)
    "eval_seed": 0,  # fixes the test yaws of unknown orientation
    "ransac": False,  # FG²: RANSAC at test time
    "checkpoint_every": 200,
    "device": "auto",
    "threads": None,
    "init_from": None,  # a run folder or checkpoint whose weights start this run (e.g. to train longer)
    # GeoDistill
    "base_steps": 0,  # GeoDistill: supervised steps of the base localizer before distillation
    "distill_steps": 0,
    "labelled_limit": None,  # GeoDistill: labels for this many (seeded) training samples; distillation sees all
    "fov_range_deg": [180.0, 240.0],  # student's visible field of view, drawn per sample
    "tau_teacher": 1.0,
    "tau_student": 1.0,
    "ema_alpha": 0.9,
    "ema_every": 100,  # steps between teacher EMA updates (the official code: once per epoch)
    "orientation_steps": 0,  # GeoDistill orientation estimator
    "orientation_range_deg": 45.0,
}

_FG2_VIGOR = {"method": "fg2", "model": {"backbone": "vit_large_patch14_dinov2.lvd142m", "pretrained": True,
                                         "ground_size": [714, 1428], "aerial_size": 630, "bev_cells": 41,
                                         "heights_m": [-10, -8, -6, -4, -2, 0, 2, 4, 6, 8, 10], "feat_dim": 256,
                                         "desc_dim": 128, "num_matches": 1024, "out_indices": [23],
                                         "backbone_kwargs": {"dynamic_img_size": True},
                                         "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
              "batch_size": 24, "lr": 1e-4, "steps": 25 * 52600 // 24, "eval_every": 52600 // 24}
_FG2_SYNTH = {"method": "fg2", "model": {"backbone": "tf_efficientnet_lite0", "pretrained": True,
                                         "ground_size": [128, 256], "pinhole_size": [96, 128], "aerial_size": 128,
                                         "bev_cells": 24, "heights_m": [-2.0, -1.0, 0.0, 2.0, 5.0, 10.0],
                                         "feat_dim": 32, "desc_dim": 32, "num_matches": 256, "beta": 100.0},
              "batch_size": 8, "lr": 1e-3, "steps": 1500, "eval_limit": 200, "checkpoint_every": 100,
              "threads": 1}
_GEOD_SYNTH = {"method": "geodistill", "model": {"backbone": "tf_efficientnet_lite0", "pretrained": True,
                                                 "ground_size": [128, 256], "aerial_size": 128, "feat_dim": 32},
               "batch_size": 8, "lr": 1e-3, "base_steps": 150, "distill_steps": 150, "steps": 300,
               "orientation_steps": 150, "eval_limit": 100, "ema_every": 25, "threads": 1}
_GEOD_VIGOR = {"method": "geodistill", "model": {"backbone": "vit_base_patch14_dinov2.lvd142m", "pretrained": True,
                                                 "out_indices": [2, 5, 8, 11], "ground_size": [322, 644],
                                                 "aerial_size": 518, "bev_cells": 64, "feat_dim": 256,
                                                 "backbone_kwargs": {"dynamic_img_size": True},
                                                 "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
               "batch_size": 8, "lr": 1e-4, "weight_decay": 1e-5, "base_steps": 15 * 52600 // 8,
               "distill_steps": 20 * 52600 // 8, "ema_every": 52600 // 8, "tau_teacher": 1.0, "tau_student": 1.0,
               "orientation_steps": 10 * 52600 // 8}

PRESETS: dict[str, dict[str, Any]] = {
    "fg2-vigor-same": {**_FG2_VIGOR, "area": "same"},
    "fg2-vigor-cross": {**_FG2_VIGOR, "area": "cross"},
    # unknown orientation, two stages: stage 1 ±180° with β = 100, stage 2 ±20° with β = 1 (FG2#8)
    "fg2-vigor-same-stage1": {**_FG2_VIGOR, "area": "same", "orientation": "unknown",
                              "model": {**_FG2_VIGOR["model"], "beta": 100.0}},
    "fg2-vigor-same-stage2": {**_FG2_VIGOR, "area": "same", "orientation": "noise", "yaw_noise_deg": 20.0},
    "fg2-vigor-cross-stage1": {**_FG2_VIGOR, "area": "cross", "orientation": "unknown",
                               "model": {**_FG2_VIGOR["model"], "beta": 100.0}},
    "fg2-vigor-cross-stage2": {**_FG2_VIGOR, "area": "cross", "orientation": "noise", "yaw_noise_deg": 20.0},
    "geodistill-vigor-same": {**_GEOD_VIGOR, "area": "same"},
    "geodistill-vigor-cross": {**_GEOD_VIGOR, "area": "cross"},
    "fg2-synthetic-cpu": {**_FG2_SYNTH},
    "fg2-synthetic-cpu-cross": {**_FG2_SYNTH, "area": "cross"},
    "fg2-synthetic-cpu-stage1": {**_FG2_SYNTH, "orientation": "unknown",
                                 "model": {**_FG2_SYNTH["model"], "beta": 100.0}},
    # stage 2 keeps β = 100 here: with β = 1 the matching barely learns in a CPU-sized run
    "fg2-synthetic-cpu-stage2": {**_FG2_SYNTH, "orientation": "noise", "yaw_noise_deg": 20.0},
    "fg2-synthetic-cpu-pinhole": {**_FG2_SYNTH, "camera": "pinhole"},
    # The fine model `make demo` uses inside locate: photos come with a compass heading off by up to ±20°, so the
    # stage-2 setting (trained with ±20° yaw noise); 1,500 steps, a few minutes on 2 cores with cached features.
    "fg2-synthetic-cpu-locate": {**_FG2_SYNTH, "orientation": "noise", "yaw_noise_deg": 20.0, "steps": 1500,
                                 "threads": None},
    "fg2-tiny-test": {**_FG2_SYNTH, "model": {**_FG2_SYNTH["model"], "backbone": "tiny", "pretrained": False,
                                              "freeze_backbone": False, "bev_cells": 16}, "steps": 20,
                      "cache_features": False},
    "geodistill-synthetic-cpu": {**_GEOD_SYNTH},
    "geodistill-synthetic-cpu-cross": {**_GEOD_SYNTH, "area": "cross"},
    # Semi-supervised, on the dense world (`--scale dense`): labels for 300 training panoramas; the base trains
    # 4,000 steps on them, distillation 3,000 steps over all 2,000 without labels; the control trains the base 3,000
    # more labelled steps. Measured (2026-11-24, as two chained runs, 300 held-out panoramas): student median
    # 1.06 m vs same-length base 1.16 m (180-deg FoV: 1.36 vs 2.01 m). benchmarks/results/fine_dense.json.
    "geodistill-synthetic-cpu-semi": {**_GEOD_SYNTH, "labelled_limit": 300, "base_steps": 4000,
                                      "distill_steps": 3000, "steps": 7000, "orientation_steps": 0,
                                      "eval_limit": 300, "ema_every": 250},
}


def _merge_hcnet() -> None:
    """HC-Net's presets live beside its trainer (crossview.fine.hcnet_train); merged here, in the one place."""
    from crossview.fine.hcnet_train import HCNET_PRESETS

    PRESETS.update(HCNET_PRESETS)


_merge_hcnet()


def resolve_config(preset: str | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """BASE ← preset ← overrides; dotted keys (``model.bev_cells=16``) set nested entries; unknown keys refused."""
    cfg = copy.deepcopy(BASE)
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown fine-grained preset {preset!r}; choose one of: {', '.join(sorted(PRESETS))}")
        cfg.update(copy.deepcopy(PRESETS[preset]))
        cfg["preset"] = preset
    apply_overrides(cfg, overrides, BASE)
    if cfg["method"] not in ("fg2", "geodistill", "hcnet"):
        raise ConfigError(f"method must be fg2, geodistill or hcnet, got {cfg['method']!r}")
    if cfg["orientation"] not in ("known", "unknown", "noise"):
        raise ConfigError(f"orientation must be known, unknown or noise, got {cfg['orientation']!r}")
    return cfg


def train_yaw_range(cfg: dict) -> float:
    return {"known": 0.0, "unknown": 180.0, "noise": float(cfg["yaw_noise_deg"])}[cfg["orientation"]]
