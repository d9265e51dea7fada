"""Evaluation of fine-grained localizers on held-out samples (inference only: nothing here imports training code).

Orientation protocols (docs/official_code_notes.md, "Metrics and protocol switches"; each number is recorded
with its protocol):

- ``known``: the model is told the true heading (``heading_prior`` = truth); VIGOR's north-aligned panoramas as they
  are.
- ``prior``: the image as it is, with a believed heading off the truth by a yaw uniform in ±``prior_deg`` fixed per
  sample by ``seed`` — HC-Net's released ±45° setting, FG²'s second stage (±20°), a phone compass.
- ``unknown``: each panorama rolled by a yaw uniform in ±180° fixed per sample by ``seed`` (the model's own range
  when smaller: PlaneCorr's estimator covers ±45°), no prior. ``stage2``: a second model refines with the first
  one's heading as its prior (FG²'s two-stage evaluation).

Positives only, as every fine-grained paper; the tile-centre baseline (and the prior's heading) are reported with
every evaluation.
"""

from __future__ import annotations

import inspect
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossview.errors import ConfigError, UnsafeCheckpointError
from crossview.safe_load import load_checkpoint

ORIENTATIONS = ("known", "prior", "unknown")


def input_sizes(model: torch.nn.Module, camera: str) -> tuple[tuple[int, int], int]:
    """(ground (H, W), aerial side) a model's data loader produces for ``camera``."""
    if camera not in getattr(model, "cameras", ("panorama",)):
        raise ConfigError(f"{model.config.get('name')}: places {', '.join(model.cameras)} images, not {camera}")
    return model.input_sizes(camera)


def prior_noise(n: int, prior_deg: float, seed: int) -> np.ndarray:
    """Per-sample yaw errors uniform in ±``prior_deg``, fixed by (seed, sample index)."""
    return np.array([random.Random(seed * 1000003 + i).uniform(-prior_deg, prior_deg) for i in range(n)])


def predict_options(model: torch.nn.Module, options: dict[str, Any]) -> dict[str, Any]:
    """The options ``model.predict`` accepts among ``options`` (None values dropped); any other is an error."""
    accepted = set(inspect.signature(model.predict).parameters)
    chosen = {k: v for k, v in options.items() if v is not None and v is not False}
    bad = sorted(set(chosen) - accepted)
    if bad:
        raise ConfigError(f"{model.config.get('name')}: predict has no option {', '.join(bad)} "
                          f"(it takes {', '.join(sorted(accepted - {'batch', 'heading_prior'}))})")
    return chosen


@torch.no_grad()
def predict_samples(model: torch.nn.Module, samples: list, orientation: str = "known", seed: int = 0,
                    prior_deg: float = 45.0, batch_size: int = 8, device: str | torch.device = "cpu",
                    stage2: torch.nn.Module | None = None, **options: Any) -> dict[str, np.ndarray]:
    """Predictions on ``samples`` (``crossview.fine.data.FineSample``): positions (N, 2) metres, headings (N,),
    confidences, the priors given (NaN: none) and the truths. ``options`` go to ``model.predict`` (``ransac``,
    ``num_matches``, ``fix_heading``, ``iterations`` where the model has them)."""
    from crossview.fine.data import FineDataset, collate

    if orientation not in ORIENTATIONS:
        raise ConfigError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    model.eval()
    camera = samples[0].camera
    gsize, asize = input_sizes(model, camera)
    yaw_range = 0.0
    if orientation == "unknown" and camera == "panorama":
        yaw_range = min(180.0, float(model.config.get("ori_range_deg") or 180.0))
    ds = FineDataset(samples, gsize, asize, yaw_range_deg=yaw_range, fixed_seed=seed)
    noise = prior_noise(len(samples), prior_deg, seed) if orientation == "prior" else np.zeros(len(samples))
    opts = predict_options(model, options)
    res: dict[str, list] = {k: [] for k in ("xy", "heading", "confidence", "prior", "true_xy", "true_heading")}
    from crossview.progress import progress

    for start in progress(range(0, len(ds), batch_size), desc=f"evaluate {model.config.get('name')}", unit="batch"):
        b = collate([ds[i] for i in range(start, min(len(ds), start + batch_size))])
        b = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
        prior = None
        if orientation in ("known", "prior"):
            idx = np.asarray(b["index"])
            prior = torch.remainder(b["heading"] - torch.as_tensor(noise[idx], dtype=torch.float32, device=device),
                                    360.0)
        p = model.predict(b, heading_prior=prior, **opts)
        xy, heading = p["xy"], p["heading"]
        if stage2 is not None:
            p2 = stage2.predict(b, heading_prior=heading, **predict_options(stage2, options))
            xy, heading = p2["xy"], p2["heading"]
        res["xy"].append(xy.float().cpu())
        res["heading"].append(heading.float().cpu())
        res["confidence"].append(p["confidence"].float().cpu())
        res["prior"].append(prior.cpu() if prior is not None else torch.full((len(xy),), float("nan")))
        res["true_xy"].append(b["xy"].cpu())
        res["true_heading"].append(b["heading"].cpu())
    return {k: torch.cat(v).numpy() for k, v in res.items()}


def evaluate(model: torch.nn.Module, samples: list, orientation: str = "known", seed: int = 0,
             prior_deg: float = 45.0, device: str | torch.device = "cpu", stage2: torch.nn.Module | None = None,
             batch_size: int = 8, keep: dict | None = None, **options: Any) -> dict[str, Any]:
    """§3 metrics (mean/median metres, recall at 1/3/5 m, heading errors) with the tile-centre baseline (and the
    prior's own heading error under ``prior``). ``keep`` (a dict) receives the per-sample predictions."""
    from crossview.fine.metrics import fine_metrics

    t0 = time.time()
    p = predict_samples(model, samples, orientation, seed, prior_deg, batch_size, device, stage2, **options)
    seconds = time.time() - t0
    if keep is not None:
        keep.update(p)
    m = fine_metrics(p["xy"], p["true_xy"], p["heading"], p["true_heading"])
    centre = fine_metrics(np.zeros_like(p["true_xy"]), p["true_xy"])
    m["baseline_tile_centre_mean_m"] = centre["mean_m"]
    m["baseline_tile_centre_median_m"] = centre["median_m"]
    if orientation == "prior":
        m["baseline_prior_heading_median_deg"] = fine_metrics(p["xy"], p["true_xy"], p["prior"],
                                                              p["true_heading"])["heading_median_deg"]
    m["confidence_mean"] = float(np.mean(p["confidence"]))
    m["seconds"] = seconds
    m["samples_per_second"] = len(p["xy"]) / max(seconds, 1e-9)
    return m


def evaluate_run(run: str | Path, data: str | Path, out: str | Path, area: str | None = None,
                 orientation: str | None = None, stage2: str | Path | None = None, limit: int | None = None,
                 pictures: int = 16, device: str = "cpu", seed: int = 0, camera: str | None = None,
                 prior_deg: float | None = None, arch: str | None = None, trust_checkpoint: bool = False,
                 stage2_arch: str | None = None, backbone: str | Path | None = None,
                 **options: Any) -> dict[str, Any]:
    """``crossview fine-eval``: evaluate a run folder (or any checkpoint ``load_fine`` reads; an official one with
    ``arch``; a release of several files as their paths joined by commas, its backbone also as ``backbone``) on the
    test split of ``data``; writes ``metrics.json``, ``predictions.npz`` and pictures to ``out``. ``stage2`` (an
    official one with ``stage2_arch``, sharing ``backbone``): FG²'s two-stage protocol.
    ``trust_checkpoint``: the checkpoints are unpickled without restriction (``--trust-checkpoint``)."""
    from crossview.fine.data import read_samples
    from crossview.fine.loading import load_fine, refuse_bare_name
    from crossview.fine.metrics import format_table
    from crossview.io import write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    refuse_bare_name(run, "fine-eval")
    model = load_fine(run, arch=arch, device=device, trust_checkpoint=trust_checkpoint, backbone=backbone)
    cfg = _run_config(run, trust_checkpoint)
    area = area or cfg.get("area", "same")
    camera = camera or cfg.get("camera", "panorama")
    orientation = orientation or cfg.get("eval_orientation") or "known"
    prior_deg = float(cfg.get("eval_prior_deg", 45.0) if prior_deg is None else prior_deg)
    label_set = cfg.get("label_set", "corrected")
    samples = read_samples(data, area, "test", camera, label_set, limit)
    second = load_fine(stage2, arch=stage2_arch, device=device, trust_checkpoint=trust_checkpoint,
                       backbone=backbone if stage2_arch else None) if stage2 else None
    keep: dict[str, np.ndarray] = {}
    metrics = evaluate(model, samples, orientation, seed, prior_deg, device, second, keep=keep, **options)
    name = model.config.get("name", model.config["arch"])
    setting = (f"{name} {area}-area {orientation}" + (f"±{prior_deg:g}°" if orientation == "prior" else "")
               + (" two-stage" if second else "") + "".join(f" {k}" if v is True else f" {k}={v}"
                                                           for k, v in options.items() if v not in (None, False)))
    report = {"setting": setting, "model": name, "arch": model.config["arch"], "area": area,
              "orientation": orientation, "prior_deg": prior_deg if orientation == "prior" else None,
              "camera": camera, "positives_only": True, "label_set": label_set, "yaw_seed": seed,
              "two_stage": bool(second), "options": {k: v for k, v in options.items() if v is not None},
              "run": str(run), "data": str(data), "seconds_per_sample": metrics["seconds"] / len(samples),
              "metrics": metrics}
    write_json_atomic(out / "metrics.json", report)
    np.savez(out / "predictions.npz", **keep)
    print(format_table({setting: metrics}))
    if pictures:
        from crossview.fine.viz import pose_picture

        pic_dir = out / "pictures"
        pic_dir.mkdir(exist_ok=True)
        for i in range(min(pictures, len(samples))):
            s = samples[i]
            err = float(np.linalg.norm(keep["xy"][i] - keep["true_xy"][i]))
            pose_picture(s.aerial, s.tile_m, keep["true_xy"][i], float(keep["true_heading"][i]), keep["xy"][i],
                         float(keep["heading"][i]), pic_dir / f"{i:04d}_{s.sample_id[:40]}.png",
                         title=f"err {err:.1f} m")
    return report


def _run_config(run: str | Path, trust_checkpoint: bool = False) -> dict[str, Any]:
    """The training config saved in a run folder's checkpoint (empty for official checkpoints); a checkpoint that
    names code to run raises :class:`~crossview.errors.UnsafeCheckpointError` unless ``trust_checkpoint``."""
    path = Path(run)
    path = path / "checkpoint.pt" if path.is_dir() else path
    try:
        ckpt = load_checkpoint(path, trust=trust_checkpoint, what="fine-model checkpoint")
    except UnsafeCheckpointError:
        raise
    except Exception:  # a registered name or an unreadable file: load_fine has already said what is wrong
        return {}
    return ckpt.get("config", {}) if isinstance(ckpt, dict) else {}
