"""GeoDistill's training schedule (the official recipe): a weakly supervised base (G2SWeakly's batch contrastive
loss: the only label is which tile is the positive), then FoV self-distillation from it (EMA teacher on the full
panorama, student on a random 180–240° FoV, no labels), optionally the orientation estimator.

Around the official recipe, for the comparison the paper's claim needs: the base trained as long as base +
distillation (``control``), and every stage evaluated on held-out samples on full panoramas and on limited-FoV ones
(``geodistill_results.json`` in the run folder). Batches hold panoramas with distinct positive tiles (as the
official ``DistanceBatchSampler``: a panorama whose tile is already in the batch waits for a later one).
"""

from __future__ import annotations

import copy
import random
import time
from typing import Any

import numpy as np
import torch

from crossview.fine.data import read_samples
from crossview.fine.evaluate import evaluate
from crossview.fine.geodistill import GeoDistill, draw_fov, evaluate_limited_fov, official_fov_mask
from crossview.fine.train import make_batch, save_checkpoint
from crossview.io import write_json_atomic

LIMITED_FOV_DEG = (180.0, 90.0)  # held-out limited-FoV settings reported with every stage


def distinct_tile_batches(samples: list, batch_size: int, rng: random.Random):
    """Index batches whose panoramas have distinct positive tiles, endlessly (shuffled epochs; a panorama whose tile
    is already in the current batch is kept for the next one, as the official ``DistanceBatchSampler``)."""
    backup: list[int] = []
    while True:
        order = rng.sample(range(len(samples)), len(samples))
        batch: list[int] = []
        tiles: set = set()
        for i in backup + order:
            key = str(samples[i].aerial) if not isinstance(samples[i].aerial, np.ndarray) else samples[i].sample_id
            if key in tiles:
                continue
            batch.append(i)
            tiles.add(key)
            if len(batch) == batch_size:
                yield batch
                batch, tiles = [], set()
        backup = batch


class TokenCache:
    """The frozen encoder's outputs per training sample (float16), computed on first use: the base and the control
    read them instead of running the encoder again (the student's masked panoramas are encoded every step)."""

    def __init__(self, model: GeoDistill):
        self.model = model
        self.store: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def __call__(self, idx: list[int], batch: dict) -> dict[str, list[torch.Tensor]]:
        todo = [k for k, i in enumerate(idx) if i not in self.store]
        if todo:
            a = self.model.tokens(batch["aerial"][todo])
            g = self.model.tokens(batch["ground"][todo])
            for j, k in enumerate(todo):
                self.store[idx[k]] = ([t[j].half().cpu() for t in a], [t[j].half().cpu() for t in g])
        dev = batch["aerial"].device
        stack = lambda part: [torch.stack([self.store[i][part][n] for i in idx]).float().to(dev)  # noqa: E731
                              for n in range(len(self.store[idx[0]][part]))]
        return {"aerial": stack(0), "ground": stack(1)}


def heads(model: GeoDistill) -> list[torch.nn.Parameter]:
    """The trainable localizer parameters (both DPT decoders; the encoder is frozen, the estimator apart)."""
    return [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("orienter.")]


def evaluate_stage(model: GeoDistill, test: list, cfg: dict[str, Any], device) -> dict[str, Any]:
    """Known-orientation metrics on full panoramas and at each limited FoV (same seeded azimuths for every model)."""
    out = {"full": evaluate(model, test, "known", seed=cfg["eval_seed"], device=device)}
    for fov in LIMITED_FOV_DEG:
        out[f"fov{fov:g}"] = evaluate_limited_fov(model, test, fov, cfg["eval_seed"], device)
    return out


def train_geodistill(model: GeoDistill, cfg: dict[str, Any], samples: list, bank, out, log, device,
                     rng: random.Random, data) -> None:
    """Base (weak) → ``base.pt``; the same-length weak control; distillation; the orientation estimator. Each
    localizer is evaluated on the held-out split and the comparison written to ``geodistill_results.json``."""
    test = read_samples(data, cfg["area"], "test", cfg["camera"], cfg["label_set"], cfg["eval_limit"])
    gen = distinct_tile_batches(samples, int(cfg["batch_size"]), rng)
    cache = TokenCache(model)

    def batch() -> dict:
        idx = next(gen)
        return dict(make_batch(samples, idx, None, model, cfg["camera"], 0.0, rng, device), index=idx)

    def weak(net: GeoDistill, steps: int, tag: str) -> float:
        opt = torch.optim.AdamW(heads(net), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        net.train()
        t0 = time.time()
        for step in range(1, steps + 1):
            b = batch()
            loss, logs = net.loss(b, tokens=cache(b["index"], b))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(heads(net), cfg["grad_clip"])
            opt.step()
            if step % cfg["log_every"] == 0 or step == steps:
                log({"stage": tag, "step": step, "time_s": round(time.time() - t0, 1), **logs})
        return time.time() - t0

    results: dict[str, Any] = {"seconds": {}}
    n_base, n_distill = int(cfg["base_steps"]), int(cfg["distill_steps"])
    results["seconds"]["base"] = weak(model, n_base, "base")
    save_checkpoint(out, model, cfg, n_base)
    (out / "checkpoint.pt").replace(out / "base.pt")
    results["base"] = evaluate_stage(model, test, cfg, device)
    log({"stage": "base", **{f"eval_{k}": v["median_m"] for k, v in results["base"].items()}})

    if n_distill:
        base_state = copy.deepcopy(model.state_dict())
        control = copy.deepcopy(model)
        results["seconds"]["control"] = weak(control, n_distill, "control")  # the base trained as long
        results["base_same_length"] = evaluate_stage(control, test, cfg, device)
        log({"stage": "control", **{f"eval_{k}": v["median_m"] for k, v in results["base_same_length"].items()}})
        del control
        model.load_state_dict(base_state)
        teacher = copy.deepcopy(model).eval()
        teacher.requires_grad_(False)
        opt = torch.optim.AdamW(heads(model), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        np_rng = np.random.RandomState(int(cfg["seed"]) + 11)
        ema = float(model.config["ema"])
        model.train()
        t0 = time.time()
        for step in range(1, n_distill + 1):
            b = batch()  # its labels are not read: the teacher's output is the target
            width = b["ground"].shape[-1]
            masks = [official_fov_mask(width, *draw_fov(np_rng, model.config["fov_range_deg"]))
                     for _ in range(b["ground"].shape[0])]
            column = torch.as_tensor(np.stack(masks), dtype=torch.float32, device=device)
            tokens = {**cache(b["index"], b), "masked_ground": model.tokens(b["ground"] * column[:, None, None, :])}
            with torch.no_grad():
                t_enc = teacher.encode_batch(b, tokens=tokens)
            s_enc = model.encode_batch(b, column, tokens=tokens)
            loss = model.distill_loss(t_enc, s_enc)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(heads(model), cfg["grad_clip"])
            opt.step()
            if step % cfg["ema_every"] == 0:  # the official update, once per epoch
                with torch.no_grad():
                    for name in ("aerial_head", "ground_head"):
                        for pt, ps in zip(getattr(teacher, name).parameters(), getattr(model, name).parameters(),
                                          strict=True):
                            pt.mul_(ema).add_(ps.detach(), alpha=1 - ema)
            if step % cfg["log_every"] == 0 or step == n_distill:
                log({"stage": "distill", "step": step, "time_s": round(time.time() - t0, 1),
                     "distill_loss": float(loss.detach())})
        results["seconds"]["distill"] = time.time() - t0
        results["student"] = evaluate_stage(model, test, cfg, device)
        results["teacher"] = evaluate_stage(teacher, test, cfg, device)
        log({"stage": "student", **{f"eval_{k}": v["median_m"] for k, v in results["student"].items()}})
        log({"stage": "teacher", **{f"eval_{k}": v["median_m"] for k, v in results["teacher"].items()}})

    n_ori = int(cfg["orientation_steps"])
    if n_ori and model.orienter is not None:
        params = [p for p in model.orienter.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=1e-4)
        model.train()
        t0 = time.time()
        r = float(cfg["orientation_range_deg"])
        for step in range(1, n_ori + 1):
            b = batch()
            w = b["ground"].shape[-1]
            yaws = [rng.uniform(-r, r) for _ in range(b["ground"].shape[0])]
            shifts = [int(y / 360 * w) for y in yaws]  # the loader rolls by +yaw; predict rolls back by −yaw
            ground = torch.stack([torch.roll(g, s, dims=-1) for g, s in zip(b["ground"], shifts)])
            labels = torch.tensor([s * 360.0 / w for s in shifts], device=device)
            loss, logs = model.orientation_loss(b["aerial"], ground, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
            opt.step()
            if step % cfg["log_every"] == 0 or step == n_ori:
                log({"stage": "orientation", "step": step, "time_s": round(time.time() - t0, 1), **logs})
    save_checkpoint(out, model, cfg, n_base + n_distill, {"results": results}, finished=True)
    write_json_atomic(out / "geodistill_results.json", results)
