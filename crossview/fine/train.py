"""Training and evaluation runs for the fine-grained localizers (FG², GeoDistill).

A run folder holds ``config.json`` (resolved config, data root, command line), ``metrics.jsonl`` (one JSON line
per log/eval), ``checkpoint.pt`` (model name + config + weights, written atomically) and, after evaluation,
``metrics.json``. With a frozen backbone the features of every training image are computed once
(``cache_features``); unknown-orientation rolls then shift feature columns (whole columns, the heading label follows
the applied shift exactly).
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossview.fine.data import FineDataset, FineSample, collate, read_samples
from crossview.fine.presets import train_yaw_range
from crossview.io import save_torch_atomic, write_json_atomic


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(method: str, model_cfg: dict):
    if method == "fg2":
        from crossview.fine.fg2 import FG2

        return FG2(model_cfg)
    from crossview.fine.geodistill import GeoDistill

    return GeoDistill(model_cfg)


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """A model from a run folder or a checkpoint file: (model in eval mode, checkpoint dict)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("method") == "hcnet":
        from crossview.fine.hcnet_train import load_checkpoint

        return load_checkpoint(path, device), ckpt
    model = build_model(ckpt["method"], dict(ckpt["model_config"], pretrained=False))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt


def ground_size(model, camera: str) -> tuple[int, int]:
    cfg = model.cfg
    return tuple(cfg.pinhole_size if camera == "pinhole" and hasattr(cfg, "pinhole_size") else cfg.ground_size)


class FeatureBank:
    """Backbone features of every training image (float16), computed once with the frozen backbone."""

    def __init__(self, model, samples: list[FineSample], camera: str, device, batch: int = 16, log=print):
        gsize = ground_size(model, camera)
        ds = FineDataset(samples, gsize, model.cfg.aerial_size)
        ground, aerial = [], []
        t0 = time.time()
        with torch.no_grad():
            for start in range(0, len(ds), batch):
                items = collate([ds[i] for i in range(start, min(len(ds), start + batch))])
                ground.append(model.features(items["ground"].to(device)).half().cpu())
                aerial.append(model.features(items["aerial"].to(device)).half().cpu())
        self.ground = torch.cat(ground)
        self.aerial = torch.cat(aerial)
        self.hw = gsize
        log(f"cached backbone features of {len(ds)} samples in {time.time() - t0:.0f} s "
            f"(ground {tuple(self.ground.shape[1:])}, aerial {tuple(self.aerial.shape[1:])})")


def make_batch(samples: list[FineSample], idx: list[int], bank: FeatureBank | None, model, camera: str,
               yaw_range: float, rng: random.Random, device) -> dict:
    """A training batch: cached features with column rolls, or images with exact rolls."""
    if bank is None:
        ds = FineDataset([samples[i] for i in idx], ground_size(model, camera), model.cfg.aerial_size,
                         yaw_range_deg=yaw_range)
        b = collate([ds[i] for i in range(len(idx))])
    else:
        gf = bank.ground[idx].float()
        headings = []
        for k, i in enumerate(idx):
            h = samples[i].heading_deg
            if yaw_range > 0 and camera == "panorama":
                w = gf.shape[-1]
                shift = int(round(-rng.uniform(-yaw_range, yaw_range) / 360.0 * w))
                gf[k] = torch.roll(gf[k], shift, dims=-1)
                h = h - shift * 360.0 / w
            headings.append(h % 360.0)
        b = {"ground_feat": gf, "aerial_feat": bank.aerial[idx].float(), "ground_hw": bank.hw,
             "camera": [samples[i].camera for i in idx],
             "fov": torch.tensor([samples[i].fov_deg for i in idx]),
             "heading": torch.tensor(headings, dtype=torch.float32),
             "xy": torch.tensor([[samples[i].x_m, samples[i].y_m] for i in idx], dtype=torch.float32),
             "tile_m": torch.tensor([samples[i].tile_m for i in idx], dtype=torch.float32),
             "eye_height": torch.tensor([samples[i].eye_height_m for i in idx], dtype=torch.float32)}
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}


class RunLog:
    def __init__(self, out: Path, quiet: bool = False):
        self.path = out / "metrics.jsonl"
        self.quiet = quiet

    def __call__(self, record: dict | str) -> None:
        if isinstance(record, str):
            if not self.quiet:
                print(record, flush=True)
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if not self.quiet:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()),
                  flush=True)


def save_checkpoint(out: Path, model, cfg: dict, step: int, extra: dict | None = None) -> Path:
    state = {"method": cfg["method"], "model_config": model.config_dict(), "state_dict": model.state_dict(),
             "step": step, "config": cfg, **(extra or {})}
    return save_torch_atomic(out / "checkpoint.pt", state)


def train(cfg: dict[str, Any], data: str | Path, out: str | Path, command: list[str] | None = None,
          quiet: bool = False) -> Path:
    """Train from a resolved config (``presets.resolve_config``) on the tree at ``data``; returns the run folder."""
    if cfg["method"] == "hcnet":
        from crossview.fine.hcnet_train import train_from_preset

        return train_from_preset(cfg, data, out, command)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    write_json_atomic(out / "config.json", {"config": cfg, "data": str(data),
                                            "command": command or sys.argv, "started": time.time()})
    (out / "metrics.jsonl").unlink(missing_ok=True)
    log = RunLog(out, quiet)
    device = pick_device(cfg["device"])
    torch.manual_seed(cfg["seed"])
    rng = random.Random(cfg["seed"])
    samples = read_samples(data, cfg["area"], "train", cfg["camera"], cfg["label_set"], cfg["train_limit"])
    model = build_model(cfg["method"], cfg["model"]).to(device)
    if cfg.get("init_from"):
        src = Path(cfg["init_from"])
        src = src / "checkpoint.pt" if src.is_dir() else src
        model.load_state_dict(torch.load(src, map_location="cpu", weights_only=False)["state_dict"])
        log(f"initialised from {src}")
    log(f"{cfg['method']}: {len(samples)} training samples ({cfg['area']}-area, {cfg['camera']}), "
        f"{sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f} M trainable parameters")
    frozen = getattr(model.cfg, "freeze_backbone", True)
    bank = FeatureBank(model, samples, cfg["camera"], device, log=log) if cfg["cache_features"] and frozen else None
    if cfg["method"] == "geodistill":
        from crossview.fine.geodistill import train_geodistill

        train_geodistill(model, cfg, samples, bank, out, log, device, rng, data)
    else:
        train_fg2(model, cfg, samples, bank, out, log, device, rng, data)
    return out


def _optimizer(model, cfg):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def train_fg2(model, cfg, samples, bank, out, log, device, rng, data) -> None:
    opt = _optimizer(model, cfg)
    yaw_range = train_yaw_range(cfg)
    steps = int(cfg["steps"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=max(steps, 2),
                                                pct_start=max(0.05, 2.5 / max(steps, 2)))  # warm-up >= 1.5 steps
    model.train()
    order: list[int] = []
    t0 = time.time()
    for step in range(1, steps + 1):
        if len(order) < cfg["batch_size"]:
            order += rng.sample(range(len(samples)), len(samples))
        idx, order = order[:cfg["batch_size"]], order[cfg["batch_size"]:]
        batch = make_batch(samples, idx, bank, model, cfg["camera"], yaw_range, rng, device)
        loss, logs = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()
        sched.step()
        if step % 20 == 0 or step == steps:
            log({"step": step, "time_s": round(time.time() - t0, 1), **logs})
        if cfg["eval_every"] and step % cfg["eval_every"] == 0 and step < steps:
            m = evaluate(model, read_samples(data, cfg["area"], "test", cfg["camera"], cfg["label_set"],
                                             cfg["eval_limit"]), cfg, device)
            log({"step": step, **{f"eval_{k}": v for k, v in m.items()}})
            model.train()
        if step % cfg["checkpoint_every"] == 0 or step == steps:
            save_checkpoint(out, model, cfg, step)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation


def eval_yaw_range(orientation: str, cfg: dict | None = None) -> float:
    if orientation == "known":
        return 0.0
    if orientation == "unknown":
        return 180.0
    return float((cfg or {}).get("yaw_noise_deg", 20.0))


@torch.no_grad()
def predict_samples(model, samples: list[FineSample], orientation: str = "known", seed: int = 0,
                    batch_size: int = 8, device="cpu", ransac: bool = False, stage2=None,
                    fix_heading: bool = False) -> dict[str, np.ndarray]:
    """Predictions on samples: positions (N, 2) metres, headings (N,), confidences, and the truths.

    ``orientation``: known = images as they are; unknown = each panorama rolled by a yaw fixed by ``seed``.
    ``stage2``: FG²'s second stage; the panorama is rolled back by the first stage's heading before it.
    ``fix_heading``: FG² with known orientation solves the translation only, at the known heading.
    """
    from crossview.geometry.cameras import roll_panorama

    model.eval()
    camera = samples[0].camera
    yaw_range = eval_yaw_range(orientation)
    geodistill = hasattr(model, "predict_yaw")
    if geodistill and orientation != "known":  # its estimator covers ±ori_range_deg (±45° as released)
        yaw_range = min(yaw_range, model.cfg.ori_range_deg)
    ds = FineDataset(samples, ground_size(model, camera), model.cfg.aerial_size,
                     yaw_range_deg=yaw_range, fixed_seed=seed)
    keys = ("xy", "heading", "confidence", "true_xy", "true_heading")
    res: dict[str, list] = {k: [] for k in keys}
    for start in range(0, len(ds), batch_size):
        b = collate([ds[i] for i in range(start, min(len(ds), start + batch_size))])
        b = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
        if geodistill:
            p = model.predict(b, estimate_orientation=orientation != "known" and camera == "panorama")
        else:
            p = model.predict(b, ransac=ransac, fixed_heading_deg=b["heading"] if fix_heading else None)
        xy, heading = p["xy"], p["heading"]
        if stage2 is not None and camera == "panorama":
            ground, applied = [], []
            for k in range(len(heading)):
                g, a = roll_panorama(b["ground"][k], -float(heading[k]))
                ground.append(g)
                applied.append(a)
            b2 = dict(b, ground=torch.stack(ground))
            p2 = stage2.predict(b2, ransac=ransac)
            xy = p2["xy"]
            heading = torch.remainder(p2["heading"] - torch.tensor(applied, device=xy.device), 360.0)
        res["xy"].append(xy.cpu())
        res["heading"].append(heading.cpu())
        res["confidence"].append(p["confidence"].float().cpu())
        res["true_xy"].append(b["xy"].cpu())
        res["true_heading"].append(b["heading"].cpu())
    return {k: torch.cat(v).numpy() for k, v in res.items()}


def evaluate(model, samples: list[FineSample], cfg: dict, device="cpu", orientation: str | None = None,
             stage2=None, seed: int | None = None) -> dict[str, float]:
    from crossview.fine.metrics import fine_metrics

    orientation = orientation or ("known" if cfg["orientation"] == "known" else "unknown")
    p = predict_samples(model, samples, orientation, cfg["eval_seed"] if seed is None else seed,
                        device=device, ransac=cfg.get("ransac", False), stage2=stage2)
    return fine_metrics(p["xy"], p["true_xy"], p["heading"], p["true_heading"])


def evaluate_run(run: str | Path, data: str | Path, out: str | Path, area: str | None = None,
                 orientation: str | None = None, stage2: str | Path | None = None, limit: int | None = None,
                 pictures: int = 16, ransac: bool | None = None, device: str = "cpu", seed: int = 0,
                 camera: str | None = None, fix_heading: bool = False,
                 num_matches: int | None = None) -> dict[str, Any]:
    """Evaluate a run folder on ``data``; writes ``metrics.json``, predictions and pictures to ``out``."""
    from crossview.fine.metrics import fine_metrics, format_table
    from crossview.fine.viz import pose_picture

    ckpt_path = Path(run) / "checkpoint.pt" if Path(run).is_dir() else Path(run)
    if torch.load(ckpt_path, map_location="cpu", weights_only=False).get("method") == "hcnet":
        from crossview.fine.hcnet_train import evaluate_run as evaluate_hcnet

        return evaluate_hcnet(run, data, out, area=area, limit=limit, pictures=pictures, device=device, seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, ckpt = load_model(run, device)
    cfg = ckpt["config"]
    if num_matches and hasattr(model.cfg, "num_matches"):  # FG²: matches sampled at test (released: 1024)
        model.cfg.num_matches = int(num_matches)
    area = area or cfg["area"]
    camera = camera or cfg["camera"]
    orientation = orientation or ("known" if cfg["orientation"] == "known" else "unknown")
    ransac = cfg.get("ransac", False) if ransac is None else ransac
    samples = read_samples(data, area, "test", camera, cfg.get("label_set", "corrected"), limit)
    second = load_model(stage2, device)[0] if stage2 else None
    if second is not None and num_matches:
        second.cfg.num_matches = int(num_matches)
    t0 = time.time()
    fix_heading = fix_heading and orientation == "known" and cfg["method"] == "fg2"
    p = predict_samples(model, samples, orientation, seed, device=device, ransac=ransac, stage2=second,
                        fix_heading=fix_heading)
    secs = time.time() - t0
    metrics = fine_metrics(p["xy"], p["true_xy"], p["heading"], p["true_heading"])
    setting = (f"{cfg['method']} {area}-area {orientation}" + (" two-stage" if second else "")
               + (" ransac" if ransac else "") + (" fixed-heading" if fix_heading else ""))
    report = {"setting": setting, "method": cfg["method"], "area": area, "orientation": orientation,
              "camera": camera, "positives_only": True, "label_set": cfg.get("label_set"), "ransac": ransac,
              "yaw_seed": seed, "two_stage": bool(second), "fix_heading": fix_heading, "run": str(run),
              "num_matches": getattr(model.cfg, "num_matches", None),
              "data": str(data),
              "seconds_per_sample": secs / len(samples), "metrics": metrics}
    write_json_atomic(out / "metrics.json", report)
    np.savez(out / "predictions.npz", **p)
    print(format_table({setting: metrics}))
    if pictures:
        pic_dir = out / "pictures"
        pic_dir.mkdir(exist_ok=True)
        for i in range(min(pictures, len(samples))):
            s = samples[i]
            pose_picture(s.aerial, s.tile_m, p["true_xy"][i], float(p["true_heading"][i]), p["xy"][i],
                         float(p["heading"][i]), pic_dir / f"{i:04d}_{s.sample_id[:40]}.png",
                         title=f"err {float(np.linalg.norm(p['xy'][i] - p['true_xy'][i])):.1f} m")
    return report


