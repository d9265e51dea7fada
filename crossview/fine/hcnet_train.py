"""HC-Net training, evaluation and single-pair localization (FINE_SPEC §2.2 schedule, §3 metrics).

``train(cfg, data, out)`` writes a run folder (config.json, metrics.jsonl, checkpoint.pt, metrics.json) and returns
it, skipping the training when ``checkpoint.pt`` already holds a finished run of the same config. ``evaluate``
returns the §3 metrics plus the tile-centre baseline under a fixed-seed ±``prior_deg`` orientation prior (HC-Net's ±45°:
the panorama's believed heading is the true one minus a per-sample yaw drawn by ``random.Random(seed·1000003 + i)``).
``localize`` places one panorama in one tile and returns a ``Pose``.
"""

from __future__ import annotations

import copy
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossview.errors import ConfigError
from crossview.fine.hcnet import HCNet, build_model, hcnet_config
from crossview.fine.pose import Pose
from crossview.io import save_torch_atomic, write_json_atomic

TRAIN_DEFAULTS: dict[str, Any] = {
    "method": "hcnet",
    "variant": "hcnet_lite0_tiny",  # crossview.fine.hcnet.VARIANTS
    "model": {},  # overrides of the variant's model config
    "area": "same",  # same | cross (VIGOR protocol; synthetic trees follow it too)
    "label_set": "corrected",  # real VIGOR only
    "train_limit": None,  # use at most this many training samples
    "eval_limit": None,
    "steps": 300,  # HC-Net: 180 k (FINE_SPEC §6 suggests 20–40 k for a budget run)
    "batch_size": 8,  # HC-Net: 16
    "lr": 3.5e-4,  # AdamW, OneCycle with linear anneal and 5 % warm-up, as HC-Net
    "weight_decay": 5e-4,
    "eps": 1e-7,
    "warmup_frac": 0.05,
    "clip": 1.0,
    "loss": {},  # crossview.fine.hcnet.hcnet_loss weights
    "prior_deg": 45.0,  # orientation prior half-width, training noise and evaluation
    "photometric": False,
    "seed": 0,
    "eval_seed": 17,
    "eval_batch_size": 16,
    "log_every": 20,
    "device": "auto",
    "num_workers": 0,
}


def resolve_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """TRAIN_DEFAULTS ← overrides; the model section is resolved against its variant (errors name bad keys)."""
    cfg = copy.deepcopy(TRAIN_DEFAULTS)
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ConfigError(f"unknown HC-Net training keys {sorted(unknown)}; known: {sorted(cfg)}")
    cfg.update(copy.deepcopy(overrides))
    hcnet_config(cfg["variant"], **cfg["model"])  # validates
    return cfg


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _samples(data, area: str, split: str, label_set: str, limit: int | None):
    if isinstance(data, list | tuple):
        return list(data)[:limit] if limit else list(data)
    from crossview.fine.data import read_samples

    return read_samples(data, area=area, split=split, camera="panorama", label_set=label_set, limit=limit)


def _batches(dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int):
    from crossview.fine.data import collate

    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g,
                                       num_workers=num_workers, collate_fn=collate, drop_last=shuffle)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train(cfg: dict[str, Any], data, out: str | Path, eval_data=None, command: list[str] | None = None) -> Path:
    """Train HC-Net on the panoramas of ``data`` (a dataset root or a list of ``FineSample``) into run folder ``out``.

    ``eval_data`` (root or samples; default: the root's test split when ``data`` is a root) is evaluated at the end
    into ``metrics.json``. Returns ``out``.
    """
    from crossview.fine.data import FineDataset

    cfg = resolve_config(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if saved.get("config") == cfg and saved.get("finished"):
            return out
    write_json_atomic(out / "config.json", {"config": cfg, "data": str(data) if not isinstance(data, list) else
                                            f"<{len(data)} samples>", "command": command or sys.argv})
    torch.manual_seed(cfg["seed"])
    random.seed(cfg["seed"])
    device = _device(cfg["device"])
    model = build_model(hcnet_config(cfg["variant"], **cfg["model"])).to(device)
    mc = model.config
    samples = _samples(data, cfg["area"], "train", cfg["label_set"], cfg["train_limit"])
    ds = FineDataset(samples, tuple(mc["pano_size"]), mc["aerial_size"], 0.0, photometric=cfg["photometric"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], eps=cfg["eps"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=cfg["steps"] + 1,
                                                pct_start=cfg["warmup_frac"], anneal_strategy="linear",
                                                cycle_momentum=False)
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    step, epoch, t0 = 0, 0, time.time()
    model.train()
    log = (out / "metrics.jsonl").open("a")
    while step < cfg["steps"]:
        for batch in _batches(ds, cfg["batch_size"], True, cfg["seed"] + epoch, cfg["num_workers"]):
            loss, parts = model.loss(_to(batch, device), cfg["loss"], gen, cfg["prior_deg"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg["clip"])
            opt.step()
            sched.step()
            step += 1
            if step % cfg["log_every"] == 0 or step == cfg["steps"]:
                rec = {"step": step, "epoch": epoch, "lr": sched.get_last_lr()[0], "seconds": time.time() - t0,
                       **parts}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                print(f"step {step:5d}  loss {parts['loss']:.3f}  hom {parts['homography']:.3f}  "
                      f"corr {parts['correlation']:.3f}  err {parts['err_m']:.2f} m  {time.time() - t0:.0f}s",
                      flush=True)
            if step >= cfg["steps"]:
                break
        epoch += 1
    log.close()
    save_torch_atomic(ckpt_path, {"method": "hcnet", "model_config": mc, "config": cfg, "step": step,
                                  "state_dict": model.state_dict(), "finished": True,
                                  "train_seconds": time.time() - t0})
    if eval_data is None and not isinstance(data, list | tuple):
        eval_data = data
    if eval_data is not None:
        eval_samples = _samples(eval_data, cfg["area"], "test", cfg["label_set"], cfg["eval_limit"])
        metrics = evaluate(model, eval_samples, prior_deg=cfg["prior_deg"], seed=cfg["eval_seed"],
                           batch_size=cfg["eval_batch_size"], device=device)
        metrics["train_seconds"] = time.time() - t0
        write_json_atomic(out / "metrics.json", metrics)
    return out


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> HCNet:
    """An HC-Net from a ``checkpoint.pt`` (or its run folder); the saved config rebuilds it without fetching
    weights."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise ConfigError(f"{path}: no HC-Net checkpoint; train one with `crossview fine-train hcnet-...`")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    cfg = dict(saved["model_config"])
    if cfg.get("arch") != "hcnet":
        raise ConfigError(f"{path} holds a {cfg.get('arch')!r} model, not HC-Net")
    cfg["weights"] = None  # the state dict carries them
    model = HCNet(cfg)
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()


def heading_priors(headings: np.ndarray, prior_deg: float, seed: int) -> np.ndarray:
    """Believed headings: each true heading minus a yaw uniform in ±prior_deg fixed by (seed, sample index)."""
    noise = [random.Random(seed * 1000003 + i).uniform(-prior_deg, prior_deg) for i in range(len(headings))]
    return np.remainder(np.asarray(headings, dtype=float) - np.asarray(noise), 360.0)


@torch.no_grad()
def evaluate(model: HCNet | str | Path, samples, prior_deg: float = 45.0, seed: int = 17, batch_size: int = 16,
             device: str | torch.device = "cpu", iterations: int | None = None, area: str = "same",
             label_set: str = "corrected", limit: int | None = None, keep: dict | None = None) -> dict[str, Any]:
    """§3 metrics of HC-Net on ``samples`` (a list of ``FineSample`` or a dataset root, test split) under a
    fixed-seed ±``prior_deg`` orientation prior, with the tile-centre baseline and the protocol switches.
    ``keep`` (a dict) receives the per-sample arrays: xy, heading, prior, confidence, true_xy, true_heading."""
    from crossview.fine.data import FineDataset
    from crossview.fine.metrics import fine_metrics

    device = torch.device(device) if not isinstance(device, torch.device) else device
    if not isinstance(model, HCNet):
        model = load_checkpoint(model, device)
    model = model.to(device).eval()
    samples = _samples(samples, area, "test", label_set, limit)
    mc = model.config
    ds = FineDataset(samples, tuple(mc["pano_size"]), mc["aerial_size"], 0.0)
    priors = heading_priors(np.array([s.heading_deg for s in samples]), prior_deg, seed)
    pred_xy, true_xy, pred_h, true_h, conf = [], [], [], [], []
    t0 = time.time()
    for batch in _batches(ds, batch_size, False, 0, 0):
        batch = _to(batch, device)
        idx = torch.as_tensor(batch["index"])
        p = model.predict(batch, torch.as_tensor(priors[idx.numpy()], dtype=torch.float32, device=device),
                          iterations)
        pred_xy.append(p["xy"].cpu())
        true_xy.append(batch["xy"].cpu())
        pred_h.append(p["heading"].cpu())
        true_h.append(batch["heading"].cpu())
        conf.append(p["confidence"].cpu())
    seconds = time.time() - t0
    pxy, txy = torch.cat(pred_xy).numpy(), torch.cat(true_xy).numpy()
    ph, th = torch.cat(pred_h).numpy(), torch.cat(true_h).numpy()
    if keep is not None:
        keep.update({"xy": pxy, "heading": ph, "prior": priors, "confidence": torch.cat(conf).numpy(),
                     "true_xy": txy, "true_heading": th})
    metrics = fine_metrics(pxy, txy, ph, th)
    centre = fine_metrics(np.zeros_like(txy), txy, priors, th)
    metrics.update({
        "method": "hcnet", "variant": mc.get("variant"), "prior_deg": prior_deg, "prior_seed": seed,
        "positives_only": True, "iterations": iterations or mc["iterations"],
        "baseline_tile_centre_mean_m": centre["mean_m"], "baseline_tile_centre_median_m": centre["median_m"],
        "baseline_prior_heading_median_deg": centre["heading_median_deg"],
        "confidence_mean": float(torch.cat(conf).mean()), "seconds": seconds,
        "samples_per_second": len(pxy) / max(seconds, 1e-9),
    })
    return metrics


def _image_tensor(img, device) -> torch.Tensor:
    """Path / H×W×3 uint8 array / (3, H, W) or (H, W, 3) float tensor in [0, 1] -> (1, 3, H, W) float."""
    if isinstance(img, str | Path):
        from PIL import Image

        with Image.open(img) as im:
            img = np.asarray(im.convert("RGB"))
    if isinstance(img, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(img)).float()
        t = t / 255.0 if img.dtype == np.uint8 else t
        t = t.permute(2, 0, 1)
    else:
        t = img.float()
        if t.dim() == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
            t = t.permute(2, 0, 1)
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3) or (3, H, W), got shape {tuple(t.shape)}")
    return t.unsqueeze(0).to(device)


@torch.no_grad()
def localize(model: HCNet | str | Path, ground_image, aerial_tile, camera=None, heading_prior: float | None = None,
             metres_per_pixel: float | None = None, tile_m: float | None = None, tile: str | None = None,
             device: str | torch.device = "cpu") -> Pose:
    """Place one panorama in one north-up tile.

    ``metres_per_pixel`` is the tile's at its native size (or give ``tile_m``, the side in metres).
    ``heading_prior``: believed heading of the panorama's centre column (HC-Net needs it within ±45°); None
    assumes a north-aligned panorama (0°). The pose's ``extras`` hold the homography (view -> tile pixels at the
    model's size) and the tile pixel at the native size.
    """
    if camera is not None and getattr(camera, "kind", "panorama") != "panorama":
        raise ConfigError("HC-Net localizes panoramas only (its spherical transform needs the full sphere)")
    if not isinstance(model, HCNet):
        model = load_checkpoint(model, device)
    dev = next(model.parameters()).device
    ground = _image_tensor(ground_image, dev)
    aerial = _image_tensor(aerial_tile, dev)
    side = aerial.shape[-1]
    if aerial.shape[-2] != side:
        raise ValueError(f"the aerial tile must be square, got {tuple(aerial.shape[-2:])}")
    if tile_m is None:
        if metres_per_pixel is None:
            raise ConfigError("give the tile's metres_per_pixel (native size) or tile_m")
        tile_m = metres_per_pixel * side
    prior = 0.0 if heading_prior is None else float(heading_prior)
    batch = {"ground": ground, "aerial": aerial, "tile_m": torch.tensor([tile_m], device=dev),
             "heading": torch.tensor([prior], device=dev), "camera": ["panorama"]}
    model.eval()
    p = model.predict(batch, torch.tensor([prior], device=dev))
    x, y = (float(v) for v in p["xy"][0])
    mpp_native = tile_m / side
    return Pose(x, y, float(p["heading"][0]), float(p["confidence"][0]), tile,
                extras={"homography": p["homography"][0].cpu(), "method": "hcnet",
                        "pixel": (side / 2 + x / mpp_native, side / 2 - y / mpp_native),
                        "heading_prior_deg": prior, "distance_from_prior_deg": math.remainder(
                            float(p["heading"][0]) - prior, 360.0)})


# ----------------------------------------------------------------------------------------------------------------
# The shared fine-grained presets (crossview.fine.presets) and run folders (crossview.fine.train)

# CPU size for the ``crossview synth --layout vigor --scale small`` world (128-px tiles at about 0.56 m/px): frozen
# Lite0 stride-8 features of a 128-px view at the tile's scale and the 128-px tile (16×16 correlation), a 64-d
# projection with three dilated context convolutions, cosine correlation, 4 iterations; the corner and dense
# correlation terms speed up a few-minute run (FINE_SPEC §6 "HC-Net-mini" has the same spirit).
_HC_SYNTH_MODEL = {"feature_index": 2, "bev_size": 128, "aerial_size": 128, "pano_size": [128, 256],
                   "feature_dim": 64, "hidden": 32, "iterations": 4, "bev_metres_per_pixel": 0.56,
                   "eye_height_m": 2.0, "freeze_backbone": True, "feature_norm": True, "context_layers": 3}
_HC_SYNTH = {"method": "hcnet", "model": _HC_SYNTH_MODEL, "batch_size": 8, "lr": 3e-3, "weight_decay": 5e-4,
             "grad_clip": 1.0, "steps": 600, "eval_limit": None, "threads": 1,
             "hcnet": {"variant": "hcnet_lite0_tiny", "prior_deg": 45.0,
                       "loss": {"corners": 1.0, "correlation_dense": 1.0}}}
# VIGOR: the official layout (512-px view from a 170° virtual camera, 512-px tile, 6 iterations, ±45° prior) on the
# offline EfficientNet-Lite0 ImageNet weights; AdamW 3.5e-4 / wd 5e-4 / eps 1e-7, OneCycle 5 % warm-up, clip 1.0,
# batch 16. HC-Net trains 180 k steps; FINE_SPEC §6 suggests 20–40 k for a budget run (set steps=...).
_HC_VIGOR = {"method": "hcnet", "model": {}, "batch_size": 16, "lr": 3.5e-4, "weight_decay": 5e-4, "grad_clip": 1.0,
             "steps": 180_000, "label_set": "corrected",
             "hcnet": {"variant": "hcnet_lite0", "prior_deg": 45.0, "eps": 1e-7, "warmup_frac": 0.05,
                       "loss": {"correlation": 1.0, "homography": 0.1}}}

HCNET_PRESETS: dict[str, dict[str, Any]] = {
    "hcnet-synthetic-cpu": {**_HC_SYNTH, "area": "same"},
    "hcnet-synthetic-cpu-cross": {**_HC_SYNTH, "area": "cross"},
    "hcnet-vigor-same": {**_HC_VIGOR, "area": "same"},
    "hcnet-vigor-cross": {**_HC_VIGOR, "area": "cross"},
}

_PRESET_KEYS = {"area": "area", "label_set": "label_set", "train_limit": "train_limit", "eval_limit": "eval_limit",
                "steps": "steps", "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay",
                "grad_clip": "clip", "seed": "seed", "eval_seed": "eval_seed", "device": "device"}


def config_from_preset(cfg: dict[str, Any]) -> dict[str, Any]:
    """A resolved ``crossview.fine.presets`` config (method ``hcnet``) -> this module's training config.

    Shared keys map one to one (``grad_clip`` -> ``clip``); ``model`` holds HC-Net model overrides; the ``hcnet``
    section holds the rest (``variant``, ``prior_deg``, ``loss``, ``eps``, ``warmup_frac``, ``photometric``, ...).
    """
    if cfg.get("method") != "hcnet":
        raise ConfigError(f"config method is {cfg.get('method')!r}, not 'hcnet'")
    if cfg.get("camera", "panorama") != "panorama":
        raise ConfigError("HC-Net needs panoramas (camera=panorama); its spherical transform has no pinhole form")
    mine: dict[str, Any] = {dst: cfg[src] for src, dst in _PRESET_KEYS.items() if src in cfg}
    mine["model"] = dict(cfg.get("model") or {})
    mine.update(copy.deepcopy(cfg.get("hcnet") or {}))
    return resolve_config(mine)


def train_from_preset(cfg: dict[str, Any], data, out, command: list[str] | None = None) -> Path:
    """``crossview fine-train hcnet-...``: train from a resolved fine-grained preset config."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    return train(config_from_preset(cfg), data, out, command=command)


def evaluate_run(run: str | Path, data: str | Path, out: str | Path, area: str | None = None,
                 limit: int | None = None, pictures: int = 16, device: str = "cpu", seed: int | None = None,
                 prior_deg: float | None = None) -> dict[str, Any]:
    """``crossview fine-eval`` for an HC-Net run: metrics.json (with the protocol switches), predictions.npz and
    pictures of the true (and estimated) position and heading on the tile."""
    from crossview.fine.metrics import format_table

    run, out = Path(run), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    cfg = saved["config"]
    model = load_checkpoint(run, device)
    area = area or cfg["area"]
    prior_deg = cfg["prior_deg"] if prior_deg is None else prior_deg
    seed = cfg["eval_seed"] if seed is None else seed
    samples = _samples(data, area, "test", cfg["label_set"], limit)
    preds: dict[str, list] = {}
    metrics = evaluate(model, samples, prior_deg=prior_deg, seed=seed, device=device, keep=preds)
    setting = f"hcnet {area}-area prior±{prior_deg:g}°"
    report = {"setting": setting, "method": "hcnet", "area": area, "orientation": f"prior±{prior_deg:g}",
              "camera": "panorama", "positives_only": True, "label_set": cfg["label_set"], "yaw_seed": seed,
              "run": str(run), "data": str(data), "seconds_per_sample": metrics["seconds"] / len(samples),
              "metrics": metrics}
    write_json_atomic(out / "metrics.json", report)
    np.savez(out / "predictions.npz", **{k: np.asarray(v) for k, v in preds.items()})
    print(format_table({setting: metrics}))
    if pictures:
        from crossview.fine.viz import pose_picture

        pic_dir = out / "pictures"
        pic_dir.mkdir(exist_ok=True)
        for i in range(min(pictures, len(samples))):
            s = samples[i]
            err = float(np.linalg.norm(preds["xy"][i] - preds["true_xy"][i]))
            pose_picture(s.aerial, s.tile_m, preds["true_xy"][i], float(preds["true_heading"][i]), preds["xy"][i],
                         float(preds["heading"][i]), pic_dir / f"{i:04d}_{s.sample_id[:40]}.png",
                         title=f"err {err:.1f} m")
    return report
