"""Fine-grained training presets as plain data, merged with ``--set key=value`` overrides in one place.

A preset names a registered fine model (``variant``, see ``crossview fine-model-info``), its config overrides
(``model``, dotted keys reach them: ``--set model.bev_cells=16``) and the training recipe. The published methods'
presets hold their released recipes; the ``*-synthetic-cpu`` ones are sized for a two-core CPU and the
``crossview synth --layout vigor`` worlds (128-px tiles, 256×128 panoramas). Every recipe lives here, the published
models' and ours; model files hold none.
"""

from __future__ import annotations

from typing import Any

from crossview.config import apply_overrides, merge_preset, parse_override  # noqa: F401 (re-exported)
from crossview.errors import ConfigError

BASE: dict[str, Any] = {
    "variant": None,  # a registered fine model (crossview.fine.list_fine_models())
    "model": {},  # config overrides of the variant
    "method": None,  # filled in: the variant's architecture
    "area": "same",  # same | cross
    "camera": "panorama",  # panorama | pinhole (synthetic world)
    "label_set": "corrected",  # real VIGOR: corrected (SliceMatch) | original
    "orientation": "known",  # training data: known (as is) | unknown (roll ±180°) | noise (roll ±yaw_noise_deg)
    "yaw_noise_deg": 20.0,
    "steps": 1000,
    "batch_size": 8,
    "lr": 1e-4,
    "weight_decay": 0.0,
    "adam_eps": 1e-8,
    "warmup_frac": None,  # OneCycle warm-up fraction (None: max(5 %, 2.5 steps))
    "anneal": "cos",  # OneCycle annealing: cos | linear
    "grad_clip": 1.0,
    "photometric": False,
    "seed": 0,
    "cache_features": True,  # frozen backbone: compute its features once per image
    "train_limit": None,  # use at most this many training samples
    "eval_limit": None,  # evaluate on at most this many test samples
    "eval_every": 0,  # steps between evaluations (0 = only at the end, when final_eval)
    "final_eval": False,  # evaluate on the test split at the end (metrics.json in the run folder)
    "eval_seed": 0,  # fixes the test yaws of prior/unknown orientation
    "eval_orientation": None,  # known | prior | unknown (None: from `orientation`)
    "eval_prior_deg": None,  # ±range of the prior protocol (None: yaw_noise_deg)
    "ransac": False,  # PillarMatch / FG²: RANSAC at test time
    # BEVPost (ours; crossview.fine.train_bevpost): windows with the camera anywhere in them
    "window_cells": 96,  # positions scored per training window (cells of the model's cell_m)
    "max_offset_m": 40.0,  # the camera lies up to this far from the window's centre (uniform)
    "compass_noise_deg": 20.0,  # searched headings: the truth ± this (uniform), widened by heading_margin_deg
    "heading_margin_deg": 5.0,
    "full_circle_frac": 0.1,  # share of batches that search every heading (no compass)
    "label_smoothing": 0.1,
    "augment_rot90": True,  # turn the world by k x 90 degrees (the aerial imagery itself, before the backbone)
    "augment_flip": True,  # mirror the world east-west (the imagery and the photo themselves)
    "log_every": 20,
    "checkpoint_every": 200,
    "device": "auto",
    "threads": None,
    "init_from": None,  # a run folder or checkpoint whose weights start this run (e.g. to train longer)
    # PlaneCorr (crossview.fine.train_planecorr)
    "base_steps": 0,  # supervised steps of the base localizer before distillation
    "distill_steps": 0,
    "labelled_limit": None,  # labels for this many (seeded) training samples; distillation sees all
    "fov_range_deg": [180.0, 240.0],  # student's visible field of view, drawn per sample
    "tau_teacher": 1.0,
    "tau_student": 1.0,
    "ema_alpha": 0.9,
    "ema_every": 100,  # steps between teacher EMA updates (the official code: once per epoch)
    "orientation_steps": 0,  # orientation estimator
    "orientation_range_deg": 45.0,
}

# -- HC-Net as published (xlwangDev/HC-Net train.sh + train-vigor.json): AdamW 3.5e-4, wd 5e-4, eps 1e-7, OneCycle
# with linear anneal and 5 % warm-up over 180 k steps, clip 1.0, batch 16, ±45° orientation noise, the official loss
# (0.1 · homography + 1.0 · correlation). For a budget run, 20–40 k steps (--set steps=...) is a suggestion, not a
# measurement: expect a gap to the paper.
_HC_VIGOR = {"variant": "hcnet_vigor", "batch_size": 16, "lr": 3.5e-4, "weight_decay": 5e-4, "adam_eps": 1e-7,
             "warmup_frac": 0.05, "anneal": "linear", "grad_clip": 1.0, "steps": 180_000, "cache_features": False,
             "final_eval": True, "eval_orientation": "prior", "eval_prior_deg": 45.0}
# The same architecture at CPU size (hcnet_tiny), the same recipe at a higher learning rate, sized for the dense
# synthetic world (`crossview synth --layout vigor --scale dense`: 2,000 training panoramas; on the small world's 300
# it memorises them). Its figures: docs/fine_models.md.
_HC_SYNTH = {**_HC_VIGOR, "variant": "hcnet_tiny", "batch_size": 8, "lr": 3e-3, "steps": 4000, "threads": 1,
             "eval_limit": 300, "checkpoint_every": 500}

# -- designs of our own (not the published models)
_PM_SYNTH = {"variant": "pillarmatch_synthetic", "batch_size": 8, "lr": 1e-3, "steps": 1500, "eval_limit": 200,
             "checkpoint_every": 100, "threads": 1}
_PM_VIGOR = {"variant": "pillarmatch_vigor", "batch_size": 24, "lr": 1e-4, "steps": 25 * 52600 // 24,
             "eval_every": 52600 // 24}
_PC_SYNTH = {"variant": "planecorr_synthetic", "batch_size": 8, "lr": 1e-3, "base_steps": 150, "distill_steps": 150,
             "steps": 300, "orientation_steps": 150, "eval_limit": 100, "ema_every": 25, "threads": 1}
_PC_VIGOR = {"variant": "planecorr_vigor", "batch_size": 8, "lr": 1e-4, "weight_decay": 1e-5,
             "base_steps": 15 * 52600 // 8, "distill_steps": 20 * 52600 // 8, "ema_every": 52600 // 8,
             "orientation_steps": 10 * 52600 // 8}
_HF_SYNTH = {"variant": "homoflow_synthetic", "batch_size": 8, "lr": 3e-3, "weight_decay": 5e-4, "adam_eps": 1e-7,
             "warmup_frac": 0.05, "anneal": "linear", "steps": 600, "threads": 1, "cache_features": False,
             "final_eval": True, "eval_orientation": "prior", "eval_prior_deg": 45.0}

# -- FG² as published: the released recipes (vigor_train.py / kitti_train_test.py): Adam 1e-4, batch 24, 25 epochs
# over 80 % of the training list (VIGOR; the rest is validation), 100 epochs on KITTI, no clipping, constant rate.
# Stage 1 of the unknown-orientation setting trains on ±180° rolls with β = 100, stage 2 on ±20° with β = 1 (FG2#8).
# The released KITTI script trains the VCE only (its InfoNCE call is commented out): β = 0.
_FG2_OFFICIAL = {"batch_size": 24, "lr": 1e-4, "weight_decay": 0.0, "adam_eps": 1e-8, "warmup_frac": 0.0,
                    "grad_clip": None, "cache_features": False, "final_eval": True, "ransac": False}
_FG2_SAME_STEPS = 25 * (52609 * 4 // 5) // 24
_FG2_CROSS_STEPS = 25 * (51520 * 4 // 5) // 24
# CPU size on the synthetic world (fg2_tiny: frozen EfficientNet-Lite0, 64-d, cached features): the same objective
# with β = 100 (with β = 1 the matching barely learns in a CPU-sized run: InfoNCE flat at log 441 over 200 steps,
# while β = 100 brings it from 6.3 to 4.5; the released stage-1 weight), OneCycle for a short run, clipping at 1.
_FG2_SYNTH = {"variant": "fg2_tiny", "batch_size": 8, "lr": 3e-4, "weight_decay": 0.0, "warmup_frac": 0.05,
          "anneal": "cos", "grad_clip": 1.0, "steps": 2500, "eval_limit": 300, "checkpoint_every": 250,
          "threads": 1, "final_eval": True, "log_every": 50, "model": {"loss": {"beta": 100.0}}}

# pinhole photos with a heading prior (±20°): each tile is turned to the believed heading, so images are read per
# step (no feature cache: the turn acts on the tile's pixels, as the KITTI loader does)
_FG2_PINHOLE = {**_FG2_SYNTH, "variant": "fg2_tiny_kitti", "camera": "pinhole", "cache_features": False,
            "eval_orientation": "prior", "eval_prior_deg": 20.0, "model": {"prior_deg": 20.0, "loss": {"beta": 100.0}}}

_FG2_PRESETS: dict[str, dict[str, Any]] = {
    "fg2-vigor-same": {**_FG2_OFFICIAL, "variant": "fg2_vigor", "area": "same", "steps": _FG2_SAME_STEPS},
    "fg2-vigor-cross": {**_FG2_OFFICIAL, "variant": "fg2_vigor", "area": "cross", "steps": _FG2_CROSS_STEPS},
    "fg2-vigor-same-stage1": {**_FG2_OFFICIAL, "variant": "fg2_vigor", "area": "same", "orientation": "unknown",
                              "steps": _FG2_SAME_STEPS, "model": {"loss": {"beta": 100.0}}},
    "fg2-vigor-same-stage2": {**_FG2_OFFICIAL, "variant": "fg2_vigor", "area": "same", "orientation": "noise",
                              "yaw_noise_deg": 20.0, "steps": _FG2_SAME_STEPS},
    "fg2-vigor-cross-stage1": {**_FG2_OFFICIAL, "variant": "fg2_vigor", "area": "cross", "orientation": "unknown",
                               "steps": _FG2_CROSS_STEPS, "model": {"loss": {"beta": 100.0}}},
    "fg2-vigor-cross-stage2": {**_FG2_OFFICIAL, "variant": "fg2_vigor", "area": "cross", "orientation": "noise",
                               "yaw_noise_deg": 20.0, "steps": _FG2_CROSS_STEPS},
    "fg2-kitti": {**_FG2_OFFICIAL, "variant": "fg2_kitti", "camera": "pinhole", "area": "same", "steps": 100 * 800,
                  "eval_orientation": "prior", "eval_prior_deg": 10.0, "model": {"loss": {"beta": 0.0}}},
    "fg2-synthetic-cpu": {**_FG2_SYNTH},
    "fg2-synthetic-cpu-cross": {**_FG2_SYNTH, "area": "cross"},
    "fg2-synthetic-cpu-stage1": {**_FG2_SYNTH, "orientation": "unknown"},
    "fg2-synthetic-cpu-stage2": {**_FG2_SYNTH, "orientation": "noise", "yaw_noise_deg": 20.0},
    "fg2-synthetic-cpu-pinhole": {**_FG2_PINHOLE},
    "fg2-tiny-test": {**_FG2_SYNTH, "steps": 4, "batch_size": 2, "eval_limit": 4, "final_eval": False, "log_every": 1},
}

# -- GeoDistill as published (docs/official_code_notes.md): a weakly supervised base (G2SWeakly's batch contrastive
# loss, Adam(W) lr 1e-4, batch 8, 10 epochs), then self-distillation from it (AdamW lr 1e-4, wd 1e-5, clip 1.0, batch 8,
# 20 epochs, EMA teacher α 0.9 once per epoch); the official validation keeps the best teacher and student. VIGOR
# same-area training has 52,609 panoramas (the official loader trains on 80 % of them: 5,261 steps of 8 per epoch).
_GD_EPOCH = int(0.8 * 52609) // 8
# Keys of train_geodistill beyond the shared ones (defaults: no validation split, all pairs labelled, distillation
# at ``lr`` without labels as published): ``val_limit`` training panoramas held out as validation, validated every
# ``val_every`` steps; ``distill_lr`` the distillation's learning rate.
_GD_OPTIONS = {"val_limit": None, "val_every": 0, "distill_lr": None}
_GD_VIGOR = {"variant": "geodistill_vigor", "batch_size": 8, "lr": 1e-4, "weight_decay": 1e-5, "grad_clip": 1.0,
             "base_steps": 10 * _GD_EPOCH, "distill_steps": 20 * _GD_EPOCH, "ema_every": _GD_EPOCH,
             "steps": 30 * _GD_EPOCH, "cache_features": False, "orientation_steps": 0, **_GD_OPTIONS}
# The same architecture at CPU size (geodistill_tiny) on the dense synthetic world (2,000 training panoramas: one
# epoch = 250 steps of 8, the EMA period); a higher learning rate for a run of minutes on one thread. The base adds
# G2SWeakly's noisy-GPS term (GPS within 5 m, weight 20): with the contrastive loss alone the tiny base did not
# learn positions in 600 steps (running error ~20 m vs the tile centre's 14 m); with it, 7.9 m after 250 steps.
_GD_SYNTH = {"variant": "geodistill_tiny", "model": {"gps_weight": 20.0}, "batch_size": 8, "lr": 1e-3,
             "weight_decay": 1e-5, "grad_clip": 1.0, "base_steps": 600, "distill_steps": 400, "steps": 1000,
             "ema_every": 250, "eval_limit": 200, "cache_features": False, "orientation_steps": 0, "threads": 1,
             "log_every": 50, **_GD_OPTIONS}
_GD_PRESETS: dict[str, dict[str, Any]] = {
    "geodistill-vigor-same": {**_GD_VIGOR, "area": "same"},
    "geodistill-vigor-cross": {**_GD_VIGOR, "area": "cross"},
    "geodistill-synthetic-cpu": {**_GD_SYNTH},
    "geodistill-synthetic-cpu-cross": {**_GD_SYNTH, "area": "cross"},
}

_BP_SYNTH = {"variant": "bevpost_lite0", "camera": "pinhole", "batch_size": 8, "lr": 1e-3, "steps": 1500,
             "log_every": 50, "checkpoint_every": 250, "threads": 2}

PRESETS: dict[str, dict[str, Any]] = {
    # ours, after OrienterNet / CCVPE: the search-area posterior of `locate --fine-search posterior`, trained on the
    # pinhole-dense world (`crossview synth --layout vigor --scale pinhole-dense`); docs/locate_posterior.md
    "bevpost-synthetic-cpu-pinhole": {**_BP_SYNTH},
    "bevpost-tiny-test": {**_BP_SYNTH, "variant": "bevpost_tiny", "steps": 4, "batch_size": 2, "window_cells": 24,
                          "max_offset_m": 8.0, "checkpoint_every": 2, "log_every": 1, "threads": 1},
    "hcnet-vigor-same": {**_HC_VIGOR, "area": "same"},
    "hcnet-vigor-cross": {**_HC_VIGOR, "area": "cross"},
    "hcnet-synthetic-cpu": {**_HC_SYNTH, "area": "same"},
    "hcnet-synthetic-cpu-cross": {**_HC_SYNTH, "area": "cross"},
    "pillarmatch-vigor-same": {**_PM_VIGOR, "area": "same"},
    "pillarmatch-vigor-cross": {**_PM_VIGOR, "area": "cross"},
    # unknown orientation, two stages: stage 1 ±180° with β = 100, stage 2 ±20° with β = 1 (FG2#8's recipe)
    "pillarmatch-vigor-same-stage1": {**_PM_VIGOR, "area": "same", "orientation": "unknown",
                                      "model": {"beta": 100.0}},
    "pillarmatch-vigor-same-stage2": {**_PM_VIGOR, "area": "same", "orientation": "noise", "yaw_noise_deg": 20.0},
    "pillarmatch-vigor-cross-stage1": {**_PM_VIGOR, "area": "cross", "orientation": "unknown",
                                       "model": {"beta": 100.0}},
    "pillarmatch-vigor-cross-stage2": {**_PM_VIGOR, "area": "cross", "orientation": "noise", "yaw_noise_deg": 20.0},
    "pillarmatch-synthetic-cpu": {**_PM_SYNTH},
    "pillarmatch-synthetic-cpu-cross": {**_PM_SYNTH, "area": "cross"},
    "pillarmatch-synthetic-cpu-stage1": {**_PM_SYNTH, "orientation": "unknown"},
    # stage 2 keeps β = 100 here: with β = 1 the matching barely learns in a CPU-sized run
    "pillarmatch-synthetic-cpu-stage2": {**_PM_SYNTH, "orientation": "noise", "yaw_noise_deg": 20.0},
    "pillarmatch-synthetic-cpu-pinhole": {**_PM_SYNTH, "camera": "pinhole"},
    # The fine model `make demo` uses inside locate: photos come with a compass heading off by up to ±20°, so the
    # stage-2 setting (trained with ±20° yaw noise); 1,500 steps, a few minutes on 2 cores with cached features.
    "pillarmatch-synthetic-cpu-locate": {**_PM_SYNTH, "orientation": "noise", "yaw_noise_deg": 20.0,
                                         "steps": 1500, "threads": None},
    "pillarmatch-tiny-test": {**_PM_SYNTH, "variant": "pillarmatch_tiny_test", "steps": 20, "cache_features": False},
    "planecorr-vigor-same": {**_PC_VIGOR, "area": "same"},
    "planecorr-vigor-cross": {**_PC_VIGOR, "area": "cross"},
    "planecorr-synthetic-cpu": {**_PC_SYNTH},
    "planecorr-synthetic-cpu-cross": {**_PC_SYNTH, "area": "cross"},
    # Semi-supervised, on the dense world (`--scale dense`): labels for 300 training panoramas; the base trains
    # 4,000 steps on them, distillation 3,000 steps over all 2,000 without labels; the control trains the base 3,000
    # more labelled steps. Its figures: docs/fine_models.md.
    "planecorr-synthetic-cpu-semi": {**_PC_SYNTH, "labelled_limit": 300, "base_steps": 4000, "distill_steps": 3000,
                                     "steps": 7000, "orientation_steps": 0, "eval_limit": 300, "ema_every": 250},
    "homoflow-synthetic-cpu": {**_HF_SYNTH, "area": "same"},
    "homoflow-synthetic-cpu-cross": {**_HF_SYNTH, "area": "cross"},
    **_FG2_PRESETS,
    **_GD_PRESETS,
}


def resolve_config(preset: str | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """BASE ← preset ← overrides; dotted keys (``model.bev_cells=16``) set nested entries; unknown keys refused.
    The model overrides are checked against the variant's architecture now, so a typo fails before training."""
    from crossview.fine.registry import fine_config

    cfg = merge_preset(BASE, PRESETS, preset, overrides, "fine-grained preset")
    if not cfg["variant"]:
        raise ConfigError("the config names no model: set variant=<a registered fine model> "
                          "(`crossview fine-model-info --list`)")
    cfg["method"] = fine_config(cfg["variant"], **(cfg["model"] or {}))["arch"]
    if cfg["orientation"] not in ("known", "unknown", "noise"):
        raise ConfigError(f"orientation must be known, unknown or noise, got {cfg['orientation']!r}")
    if cfg["anneal"] not in ("cos", "linear"):
        raise ConfigError(f"anneal must be cos or linear, got {cfg['anneal']!r}")
    if cfg["eval_orientation"] is None:
        cfg["eval_orientation"] = {"known": "known", "unknown": "unknown", "noise": "prior"}[cfg["orientation"]]
    if cfg["eval_prior_deg"] is None:
        cfg["eval_prior_deg"] = float(cfg["yaw_noise_deg"])
    return cfg


def train_yaw_range(cfg: dict) -> float:
    """The ±yaw (degrees) training panoramas are rolled by."""
    return {"known": 0.0, "unknown": 180.0, "noise": float(cfg["yaw_noise_deg"])}[cfg["orientation"]]
