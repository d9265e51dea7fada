"""Training BEVPost (:mod:`crossview.fine.bevpost`) on a synthetic VIGOR-like world: the camera anywhere in a window.

Each sample is one training photo and a square window of the aerial map around it, placed at a random offset of
up to ``max_offset_m`` from the camera, so the window's centre says nothing about where the camera is. The model
scores every heading × position cell of the window and the loss is the negative log-likelihood of the true cell
under one softmax over all of them (bilinear in position, linear in heading, label-smoothed): every other place in
the window is a negative at every step. The GPS prior is not used in training; the compass only sets the headings
searched (the true heading ± ``compass_noise_deg``, widened by ``heading_margin_deg``), and a ``full_circle_frac``
share of batches searches every heading, as locating without a compass does. Augmentation rotates the window by a
multiple of 90° and mirrors the whole sample (photo and map east-west), the label following exactly.

The backbone is frozen, so its features are computed once: one map per city (the city's tiles as one north-up
raster, :class:`crossview.tiles.mosaic.Mosaic`, at a quarter cell per pixel) and one feature grid per photo.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from crossview.errors import DatasetError
from crossview.fine.bevpost import BEVPost

__all__ = ["CityMap", "city_maps", "photo_bank", "make_batch", "nll_loss", "train_bevpost", "read_photos",
           "evaluate_windows"]


@dataclass
class CityMap:
    """Frozen map features of one city (F, N, N) at ``cell_m`` per cell, centred on (lat0, lon0): cell ``(i, j)``
    spans east ``[j - N/2, j + 1 - N/2)`` and north ``(N/2 - i - 1, N/2 - i]`` cells from the centre."""

    name: str
    lat0: float
    lon0: float
    cell_m: float
    feats: torch.Tensor
    variants: dict = field(default_factory=dict)  # (k, flip) -> the features of the turned / mirrored map

    def cell_of(self, east_m: float, north_m: float) -> tuple[float, float]:
        """Continuous (column, row) of a point east/north of the centre (cell ``j`` spans ``[j, j + 1)``)."""
        n = self.feats.shape[-1]
        return n / 2 + east_m / self.cell_m, n / 2 - north_m / self.cell_m

    def crop(self, col0: int, row0: int, size: int) -> torch.Tensor:
        """Cells ``[row0, row0 + size) × [col0, col0 + size)``, zeros outside the map."""
        f = self.feats
        n = f.shape[-1]
        out = f.new_zeros((f.shape[0], size, size))
        r0, r1, c0, c1 = max(row0, 0), min(row0 + size, n), max(col0, 0), min(col0 + size, n)
        if r0 < r1 and c0 < c1:
            out[:, r0 - row0: r1 - row0, c0 - col0: c1 - col0] = f[:, r0:r1, c0:c1]
        return out


def read_photos(world: Path, camera: str, split: str) -> list[dict[str, Any]]:
    """The world's ``camera`` photos of ``split`` from ``crossview_poses.jsonl``, in file order."""
    path = world / "crossview_poses.jsonl"
    if not path.is_file():
        raise DatasetError(f"{path} not found: train on a world from `crossview synth --layout vigor`")
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = [r for r in recs if r.get("camera", "panorama") == camera and r.get("split") == split]
    if not out:
        raise DatasetError(f"{path} holds no {split}-split {camera} photos")
    return out


def city_maps(model: BEVPost, world: Path, cache: Path, margin_m: float = 48.0, log: Any = print,
              variants: tuple[tuple[int, bool], ...] = ()) -> dict:
    """Map features of every city of the world (cached as ``cache/map_<city>.pt``), and of the city's imagery
    turned ``k`` × 90° counter-clockwise and then mirrored east-west (``flip``) for each of ``variants``
    (``CityMap.variants``; cached as ``map_<city>_r<k>[f].pt``): augmentation at the image, so the frozen
    features are those of the turned imagery."""
    from crossview.tiles import build_tiles, read_manifest

    meta = json.loads((world / "crossview_meta.json").read_text())
    tiles = read_manifest(build_tiles(world / "satellite", cache / "tiles"))
    cell = float(model.cfg.cell_m)
    out = {}
    for city, info in sorted(meta["cities"].items()):
        mine = [t for t in tiles if Path(t.path).parent.name == city]
        if not mine:
            continue
        lat0, lon0 = float(info["origin_lat"]), float(info["origin_lon"])
        image = None
        maps = {}
        for k, flip in ((0, False),) + tuple(v for v in variants if tuple(v) != (0, False)):
            path = cache / (f"map_{city}.pt" if (k, flip) == (0, False) else f"map_{city}_r{k}{'f' if flip else ''}.pt")
            if path.is_file():
                maps[(k, flip)] = CityMap(**torch.load(path, weights_only=True))
                continue
            t0 = time.time()
            if image is None:
                image = _city_image(mine, lat0, lon0, cell, margin_m)
            turned = np.rot90(image, k)[:, ::-1] if flip else np.rot90(image, k)
            x = torch.from_numpy(np.ascontiguousarray(turned)).permute(2, 0, 1)[None].float() / 255.0
            with torch.no_grad():
                feats = model.map_features(x)[0].half()
            from crossview.io import save_torch_atomic

            save_torch_atomic(path, {"name": city, "lat0": lat0, "lon0": lon0, "cell_m": cell, "feats": feats})
            maps[(k, flip)] = CityMap(city, lat0, lon0, cell, feats)
            log(f"map {city} (turned {90 * k} deg{', mirrored' if flip else ''}): {feats.shape[-1]} x "
                f"{feats.shape[-2]} cells, {time.time() - t0:.1f} s")
        out[city] = maps.pop((0, False))
        out[city].variants = maps
    return out


def _city_image(tiles: list, lat0: float, lon0: float, cell: float, margin_m: float) -> np.ndarray:
    """The city's tiles as one north-up square image centred on (lat0, lon0) at a quarter cell per pixel."""
    from crossview.geometry.geo import latlon_to_offset
    from crossview.tiles.mosaic import Mosaic

    e, n = latlon_to_offset(lat0, lon0, np.array([t.lat for t in tiles]), np.array([t.lon for t in tiles]))
    reach = float(np.max(np.maximum(np.abs(e), np.abs(n)))) + 0.5 * max(tiles[0].width, tiles[0].height) * \
        tiles[0].mpp + margin_m
    cells = int(math.ceil(2 * reach / cell))
    return Mosaic(tiles).window(lat0, lon0, 4 * cells, cell / 4)


def turned_pose(col: float, row: float, heading: float, n: int, k: int, flip: bool) -> tuple[float, float, float]:
    """A camera at continuous (column, row) of an ``n`` × ``n`` map looking at ``heading``, after the map is turned
    ``k`` × 90° counter-clockwise (``np.rot90``) and then mirrored east-west: its (column, row, heading)."""
    for _ in range(k % 4):
        col, row, heading = row, n - col, heading - 90.0  # (r, c) -> (n - 1 - c, r) for whole cells
    if flip:
        col, heading = n - col, -heading
    return col, row, heading % 360.0


def photo_bank(model: BEVPost, world: Path, recs: list[dict[str, Any]], cache: Path, name: str,
               batch: int = 32, log: Any = print, mirror: bool = False) -> torch.Tensor:
    """Frozen features of the photos ``recs`` (float16, cached as ``cache/<name>.pt``); ``mirror``: of the photos
    mirrored left-right."""
    from PIL import Image

    path = cache / f"{name}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved["images"] == [r["image"] for r in recs]:
            return saved["feats"]
    t0, parts = time.time(), []
    with torch.no_grad():
        for s in range(0, len(recs), batch):
            imgs = [np.asarray(Image.open(world / r["image"]).convert("RGB")) for r in recs[s: s + batch]]
            imgs = [im[:, ::-1] for im in imgs] if mirror else imgs
            x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
            parts.append(model.photo_features(x).half())
    feats = torch.cat(parts)
    from crossview.io import save_torch_atomic

    save_torch_atomic(path, {"images": [r["image"] for r in recs], "feats": feats})
    log(f"photo features: {len(recs)} photos, {time.time() - t0:.1f} s")
    return feats


def _window(cm: CityMap, col: float, row: float, cells: int, t: int, max_offset_m: float,
            rng: random.Random) -> tuple[torch.Tensor, float, float]:
    """A map crop of ``cells + t - 1`` cells whose valid positions (``cells``²) hold the camera (continuous
    ``col``, ``row`` of ``cm``) at a random offset of up to ``max_offset_m`` from their centre; the camera's
    continuous (col, row) among those positions."""
    off = max_offset_m / cm.cell_m
    c0 = int(math.floor(col - cells / 2 + rng.uniform(-off, off)))
    r0 = int(math.floor(row - cells / 2 + rng.uniform(-off, off)))
    crop = cm.crop(c0 - t // 2, r0 - t // 2, cells + t - 1)
    return crop, col - 0.5 - c0, row - 0.5 - r0


def augment_variants(cfg: dict[str, Any]) -> tuple[tuple[int, bool], ...]:
    """The (k, flip) turns of the world training draws from (``augment_rot90``, ``augment_flip``)."""
    ks = range(4) if cfg["augment_rot90"] else (0,)
    flips = (False, True) if cfg["augment_flip"] else (False,)
    return tuple((k, f) for k in ks for f in flips)


def make_batch(recs: list[dict[str, Any]], idx: list[int], bank: Any, maps: dict[str, CityMap],
               cfg: dict[str, Any], t: int, step: float, rng: random.Random, full_circle: bool) -> dict[str, Any]:
    """One training batch: map crops, photo features, fields of view, the headings searched (``step`` degrees
    apart) and the target. ``bank``: the photos' features, or (features, mirrored photos' features) when the
    world may be mirrored; each sample's world is turned / mirrored as drawn from :func:`augment_variants`."""
    cells = int(cfg["window_cells"])
    plain, mirrored = bank if isinstance(bank, tuple) else (bank, None)
    turns = augment_variants(cfg)
    crops, photos, fovs, heads, targets = [], [], [], [], []
    for i in idx:
        rec = recs[i]
        base = maps[rec["city"]]
        k, flip = turns[rng.randrange(len(turns))]
        cm = base if (k, flip) == (0, False) else base.variants[(k, flip)]
        col, row = base.cell_of(float(rec["east_m"]), float(rec["north_m"]))
        col, row, heading = turned_pose(col, row, float(rec["heading_deg"]), base.feats.shape[-1], k, flip)
        crop, x, y = _window(cm, col, row, cells, t, float(cfg["max_offset_m"]), rng)
        photo = mirrored[i] if flip else plain[i]
        if full_circle:
            n = int(round(360.0 / step))
            h0 = rng.uniform(0.0, step)
        else:
            noise = float(cfg["compass_noise_deg"])
            kk = int(math.ceil((noise + float(cfg["heading_margin_deg"])) / step - 1e-9))
            n, h0 = 2 * kk + 1, heading + rng.uniform(-noise, noise) - kk * step
        crops.append(crop)
        photos.append(photo)
        fovs.append(float(rec.get("fov_deg") or 360.0))
        heads.append([(h0 + j * step) % 360.0 for j in range(n)])
        targets.append((x, y, ((heading - h0) % 360.0) / step))
    return {"map": torch.stack(crops).float(), "photo": torch.stack(photos).float(),
            "fov": torch.tensor(fovs), "headings": torch.tensor(heads, dtype=torch.float64), "target": targets,
            "full_circle": full_circle}


def target_distribution(targets: list[tuple[float, float, float]], k: int, cells: int,
                        circular: bool) -> torch.Tensor:
    """(B, K, cells, cells): each target's mass spread bilinearly over its 4 cells and linearly over its 2 heading
    bins (the last bin wraps to the first on a full circle; off the searched range it sticks to the edge)."""
    out = torch.zeros(len(targets), k, cells, cells)
    for b, (x, y, h) in enumerate(targets):
        x, y = min(max(x, 0.0), cells - 1.0), min(max(y, 0.0), cells - 1.0)
        if not circular:
            h = min(max(h, 0.0), k - 1.0)
        x0, y0, h0 = int(math.floor(x)), int(math.floor(y)), int(math.floor(h))
        for hi, wh in ((h0, 1 - (h - h0)), (h0 + 1, h - h0)):
            for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                    w = wh * wy * wx
                    if w > 0:
                        out[b, hi % k if circular else min(hi, k - 1), min(yi, cells - 1), min(xi, cells - 1)] += w
    return out


def nll_loss(model: BEVPost, batch: dict[str, Any], camera: str, image_hw: tuple[int, int],
             smoothing: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Label-smoothed negative log-likelihood of the true cell under one softmax over heading × position."""
    pol = model.polar(batch["photo"], camera, batch["fov"], image_hw)
    logits = model.scores(pol, model.map_embedding(batch["map"]), camera, batch["fov"], batch["headings"])
    b, k, h, w = logits.shape
    logp = F.log_softmax(logits.reshape(b, -1), dim=1)
    q = target_distribution(batch["target"], k, h, batch["full_circle"]).reshape(b, -1)
    nll = -(q * logp).sum(1).mean()
    loss = (1 - smoothing) * nll - smoothing * logp.mean(1).mean()
    with torch.no_grad():
        best = logp.argmax(1)
        rem = best % (h * w)
        err = [math.hypot(int(rem[i] % w) - t[0], int(rem[i] // w) - t[1]) for i, t in enumerate(batch["target"])]
    return loss, {"loss": float(loss.detach()), "nll": float(nll.detach()), "median_cells": float(np.median(err))}


def _image_hw(world: Path, rec: dict[str, Any]) -> tuple[int, int]:
    from PIL import Image

    with Image.open(world / rec["image"]) as im:
        return im.height, im.width


def train_bevpost(cfg: dict[str, Any], data: str | Path, out: Path, log: Any) -> Path:
    """``crossview fine-train`` for BEVPost: caches the frozen features under ``out/cache``, then trains the heads
    with Adam on :func:`nll_loss` (cosine-annealed learning rate); ``checkpoint.pt`` every ``checkpoint_every``
    steps (atomically; a run with the same config resumes from it)."""
    from crossview.fine.loading import load_fine
    from crossview.fine.registry import create_fine
    from crossview.fine.train import save_checkpoint

    world, out = Path(data), Path(out)
    camera = cfg["camera"]
    model = create_fine(cfg["variant"], **(cfg["model"] or {}))
    if cfg.get("init_from"):
        model.load_state_dict(load_fine(cfg["init_from"]).state_dict())
    recs = read_photos(world, camera, "train")
    if cfg.get("train_limit"):
        recs = recs[: int(cfg["train_limit"])]
    maps = city_maps(model, world, out / "cache", log=log, variants=augment_variants(cfg))
    bank = photo_bank(model, world, recs, out / "cache", f"photos_{camera}_train", log=log)
    if cfg["augment_flip"]:
        bank = (bank, photo_bank(model, world, recs, out / "cache", f"photos_{camera}_train_mirrored", log=log,
                                 mirror=True))
    hw = _image_hw(world, recs[0])
    log(f"{cfg['variant']}: {len(recs)} training {camera} photos over {len(maps)} cities, "
        f"{sum(p.numel() for p in model.head_parameters()) / 1e3:.1f} k trainable parameters")
    steps, t = int(cfg["steps"]), int(model.cfg.template_cells)
    opt = torch.optim.Adam(model.head_parameters(), lr=float(cfg["lr"]))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    start = _resume(out / "checkpoint.pt", cfg, model, opt, sched, log)
    rng = random.Random(int(cfg["seed"]) * 1009 + start)
    model.train()
    t0, hist = time.time(), []
    for step in range(start + 1, steps + 1):
        full = rng.random() < float(cfg["full_circle_frac"])  # every heading: half a batch (the cost is K-fold)
        idx = [rng.randrange(len(recs)) for _ in range(max(1, int(cfg["batch_size"]) // (2 if full else 1)))]
        batch = make_batch(recs, idx, bank, maps, cfg, t, float(model.cfg.heading_step_deg), rng, full)
        loss, parts = nll_loss(model, batch, camera, hw, float(cfg["label_smoothing"]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hist.append(parts)
        if step % int(cfg["log_every"]) == 0 or step == steps:
            log({"step": step, "loss": float(np.mean([h["loss"] for h in hist])),
                 "nll": float(np.mean([h["nll"] for h in hist])),
                 "median_cells": float(np.median([h["median_cells"] for h in hist])),
                 "lr": sched.get_last_lr()[0], "seconds": round(time.time() - t0, 1)})
            hist = []
        if step % int(cfg["checkpoint_every"]) == 0 or step == steps:
            save_checkpoint(out, model, cfg, step, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
                            finished=step == steps)
    if cfg.get("final_eval"):
        metrics = evaluate_windows(model, world, out / "cache", cfg, int(cfg.get("eval_limit") or 200), log=log)
        from crossview.io import write_json_atomic

        write_json_atomic(out / "metrics.json", {**metrics, "step": steps})
        log({"eval": "test", **metrics})
    return out


def _resume(path: Path, cfg: dict[str, Any], model: BEVPost, opt: Any, sched: Any, log: Any) -> int:
    """The step a previous run of the same config reached (its weights, optimiser and schedule restored); 0 if
    none."""
    if not path.is_file():
        return 0
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("config") != cfg:
        log(f"{path}: written by another config; starting afresh")
        return 0
    model.load_state_dict(saved["state_dict"])
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    log(f"resumed at step {saved['step']}")
    return int(saved["step"])


def evaluate_windows(model: BEVPost, world: str | Path, cache: Path, cfg: dict[str, Any], n: int = 200,
                     split: str = "test", seed: int = 0, log: Any = print) -> dict[str, float]:
    """The trained task on ``n`` photos of ``split`` (evenly spread, seeded windows and compass, no augmentation):
    median position error (m) of the most probable cell, the share within 5 m and the median heading error."""
    world = Path(world)
    recs = read_photos(world, cfg["camera"], split)
    recs = [recs[i] for i in sorted(set(np.linspace(0, len(recs) - 1, min(n, len(recs))).round().astype(int)))]
    maps = city_maps(model, world, cache, log=log)
    bank = photo_bank(model, world, recs, cache, f"photos_{cfg['camera']}_{split}_{len(recs)}", log=log)
    plain = {**cfg, "augment_rot90": False, "augment_flip": False}
    rng, t = random.Random(seed), int(model.cfg.template_cells)
    step, cell = float(model.cfg.heading_step_deg), float(model.cfg.cell_m)
    errs, herrs = [], []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(recs), 8):
            idx = list(range(s, min(s + 8, len(recs))))
            b = make_batch(recs, idx, bank, maps, plain, t, step, rng, False)
            pol = model.polar(b["photo"], cfg["camera"], b["fov"], _image_hw(world, recs[0]))
            logits = model.scores(pol, model.map_embedding(b["map"]), cfg["camera"], b["fov"], b["headings"])
            k, h, w = logits.shape[1:]
            best = logits.reshape(len(idx), -1).argmax(1)
            for i, (x, y, hd) in enumerate(b["target"]):
                kk, rem = int(best[i]) // (h * w), int(best[i]) % (h * w)
                errs.append(math.hypot(rem % w - x, rem // w - y) * cell)
                herrs.append(abs(((kk - hd) * step + 180.0) % 360.0 - 180.0))
    return {"photos": len(errs), "median_m": float(np.median(errs)), "within_5m": float(np.mean(np.array(errs) <= 5)),
            "heading_median_deg": float(np.median(herrs))}
