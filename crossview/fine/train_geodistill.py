"""GeoDistill's training schedule (the official recipe): a weakly supervised base (G2SWeakly's batch contrastive
loss: the only label is which tile is the positive), then FoV self-distillation from it (EMA teacher on the full
panorama, student on a random 180–240° FoV, no labels), optionally the orientation estimator.

Around the official recipe, for the comparison the paper's claim needs: the base trained as long as base +
distillation (``control``), and every stage evaluated on held-out samples on full panoramas and on limited-FoV ones
(``geodistill_results.json`` in the run folder). Batches hold panoramas with distinct positive tiles (as the
official ``DistanceBatchSampler``: a panorama whose tile is already in the batch waits for a later one).

Options beyond the official recipe (config keys, read with defaults): ``labelled_limit`` (semi-supervised: the weak
pairs, i.e. positive tile and noisy GPS, of a seeded subset only train the base and the control; distillation runs over
every training panoramas without labels, as ``train_planecorr``), ``val_limit`` (a seeded subset of the training
split held out of all training and evaluated as validation, to choose a schedule without the test split),
``val_every`` (validation every so many steps of each stage, with a checkpoint ``<stage>_<step>.pt`` there, e.g.
``base_<step>.pt`` to chain a later run from with ``init_from`` and ``base_steps=0``; the teacher is validated at
the end) and ``distill_lr`` (the distillation learning rate; default ``lr``). Distillation is label-free, as
published (adding the weak loss to each distillation step did not help: docs/fine_geodistill.md).
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
from crossview.fine.loading import save_fine
from crossview.fine.train import make_batch, save_checkpoint
from crossview.geometry.cameras import roll_panorama
from crossview.io import write_json_atomic

LIMITED_FOV_DEG = (180.0, 90.0)  # held-out limited-FoV settings reported with every stage


def _tile_key(sample: Any) -> str:
    return str(sample.aerial) if not isinstance(sample.aerial, np.ndarray) else sample.sample_id


def distinct_tile_batches(samples: list, batch_size: int, rng: random.Random, pool: list[int] | None = None):
    """Index batches whose panoramas have distinct positive tiles, endlessly (shuffled epochs; a panorama whose tile
    is already in the current batch is kept for the next one, as the official ``DistanceBatchSampler``). ``pool``:
    the indices of ``samples`` to draw from (default: all)."""
    backup: list[int] = []
    population = range(len(samples)) if pool is None else list(pool)
    distinct = len({_tile_key(samples[i]) for i in population})
    if distinct < batch_size:  # no batch could ever be filled: say so rather than loop forever
        from crossview.errors import ConfigError

        raise ConfigError(f"GeoDistill batches need {batch_size} panoramas of distinct tiles, but the training pool "
                          f"has {distinct} distinct tiles: lower batch_size or use more training samples")
    while True:
        order = rng.sample(population, len(population))
        batch: list[int] = []
        tiles: set = set()
        for i in backup + order:
            key = _tile_key(samples[i])
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


def split_training(n: int, cfg: dict[str, Any]) -> tuple[list[int], list[int], list[int]]:
    """(validation, distillation pool, labelled subset) indices of ``n`` training samples: ``val_limit`` seeded
    samples held out of all training; of the rest, ``labelled_limit`` seeded ones keep their weak pairs (base and
    control); distillation reads every non-validation sample without labels. Defaults: no validation, all
    labelled."""
    everyone = list(range(n))
    val: list[int] = []
    if cfg.get("val_limit"):
        val = sorted(random.Random(int(cfg["seed"]) + 5).sample(everyone, min(int(cfg["val_limit"]), n - 1)))
    held = set(val)
    pool = [i for i in everyone if i not in held]
    labelled = pool
    if cfg.get("labelled_limit"):
        labelled = sorted(random.Random(int(cfg["seed"]) + 7).sample(pool, min(int(cfg["labelled_limit"]), len(pool))))
    return val, pool, labelled


def train_geodistill(model: GeoDistill, cfg: dict[str, Any], samples: list, bank, out, log, device,
                     rng: random.Random, data) -> None:
    """Base (weak) → ``base.pt``; the same-length weak control; distillation; the orientation estimator. Each
    localizer is evaluated on the held-out split and the comparison written to ``geodistill_results.json``."""
    test = read_samples(data, cfg["area"], "test", cfg["camera"], cfg["label_set"], cfg["eval_limit"])
    val_idx, pool, labelled = split_training(len(samples), cfg)
    val = [samples[i] for i in val_idx]
    if val or len(labelled) < len(pool):
        log(f"training split: {len(val)} held out for validation; weak pairs of {len(labelled)} of the other "
            f"{len(pool)} (base and control); distillation over all {len(pool)} without labels")
    stages = _Stages(model, cfg, samples, val, out, log, device, rng)
    results = stages.results
    results["split"] = {"validation": len(val), "labelled": len(labelled), "distillation": len(pool)}
    if val:
        results["validation"] = {}

    n_base, n_distill = int(cfg["base_steps"]), int(cfg["distill_steps"])
    results["seconds"]["base"] = stages.weak(model, n_base, "base", labelled)
    save_checkpoint(out, model, cfg, n_base)
    (out / "checkpoint.pt").replace(out / "base.pt")
    if val and not (stages.val_every and n_base and n_base % stages.val_every == 0):
        stages.validate(model, "base", n_base)
    results["base"] = evaluate_stage(model, test, cfg, device)
    log({"stage": "base", **{f"eval_{k}": v["median_m"] for k, v in results["base"].items()}})

    if n_distill:
        stages.control(n_distill, labelled, test)
        teacher = stages.distill(n_distill, pool)
        results["student"] = evaluate_stage(model, test, cfg, device)
        results["teacher"] = evaluate_stage(teacher, test, cfg, device)
        log({"stage": "student", **{f"eval_{k}": v["median_m"] for k, v in results["student"].items()}})
        log({"stage": "teacher", **{f"eval_{k}": v["median_m"] for k, v in results["teacher"].items()}})

    n_ori = int(cfg["orientation_steps"])
    if n_ori and model.orienter is not None:
        train_orienter(model, cfg, stages.batches(labelled), rng, device, log, n_ori)
    save_checkpoint(out, model, cfg, n_base + n_distill, {"results": results}, finished=True)
    write_json_atomic(out / "geodistill_results.json", results)


class _Stages:
    """What the stages share: batches and cached tokens of the model, validation, the results and the log."""

    def __init__(self, model: GeoDistill, cfg: dict[str, Any], samples: list, val: list, out, log, device,
                 rng: random.Random):
        self.model, self.cfg, self.samples, self.val = model, cfg, samples, val
        self.out, self.log, self.device, self.rng = out, log, device, rng
        self.val_every = int(cfg.get("val_every") or 0)
        self.cache = TokenCache(model)
        self.results: dict[str, Any] = {"seconds": {}}

    def batches(self, which: list[int]):
        """Endless training batches of the samples ``which`` (distinct tiles per batch), with their indices."""
        gen = distinct_tile_batches(self.samples, int(self.cfg["batch_size"]), self.rng, which)
        while True:
            idx = next(gen)
            yield dict(make_batch(self.samples, idx, None, self.model, self.cfg["camera"], 0.0, self.rng,
                                  self.device), index=idx)

    def validate(self, net: GeoDistill, tag: str, step: int) -> None:
        """Evaluate ``net`` on the validation samples into ``results["validation"][tag][step]`` and the log."""
        was = net.training
        r = evaluate_stage(net, self.val, self.cfg, self.device)
        self.results["validation"].setdefault(tag, {})[str(step)] = r
        self.log({"stage": f"val_{tag}", "step": step, **{f"val_{k}": v["median_m"] for k, v in r.items()}})
        net.train(was)

    def weak(self, net: GeoDistill, steps: int, tag: str, labelled: list[int]) -> float:
        """``steps`` weak steps of ``net``'s heads on the ``labelled`` samples; seconds spent, validation apart."""
        cfg, val, val_every = self.cfg, self.val, self.val_every
        opt = torch.optim.AdamW(heads(net), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        net.train()
        gen = self.batches(labelled)
        t0, spent = time.time(), 0.0
        for step in range(1, steps + 1):
            b = next(gen)
            loss, logs = net.loss(b, tokens=self.cache(b["index"], b))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(heads(net), cfg["grad_clip"])
            opt.step()
            if step % cfg["log_every"] == 0 or step == steps:
                self.log({"stage": tag, "step": step, "time_s": round(spent + time.time() - t0, 1), **logs})
            if val and val_every and step % val_every == 0:
                spent += time.time() - t0
                self.validate(net, tag, step)
                if step < steps:
                    save_fine(net, self.out / f"{tag}_{step}.pt", config=cfg, step=step)
                t0 = time.time()
        return spent + time.time() - t0

    def control(self, steps: int, labelled: list[int], test: list) -> None:
        """A copy of the base trained ``steps`` more weak steps and evaluated; the model stays the base."""
        base_state = copy.deepcopy(self.model.state_dict())
        control = copy.deepcopy(self.model)
        self.results["seconds"]["control"] = self.weak(control, steps, "control", labelled)  # the base trained as long
        if self.val and not (self.val_every and steps % self.val_every == 0):
            self.validate(control, "control", steps)
        self.results["base_same_length"] = evaluate_stage(control, test, self.cfg, self.device)
        self.log({"stage": "control",
                  **{f"eval_{k}": v["median_m"] for k, v in self.results["base_same_length"].items()}})
        del control
        self.model.load_state_dict(base_state)

    def distill(self, steps: int, pool: list[int]) -> GeoDistill:
        """``steps`` FoV self-distillation steps over the unlabelled ``pool``; returns the EMA teacher."""
        model, cfg, val, val_every = self.model, self.cfg, self.val, self.val_every
        teacher = copy.deepcopy(model).eval()
        teacher.requires_grad_(False)
        opt = torch.optim.AdamW(heads(model), lr=float(cfg.get("distill_lr") or cfg["lr"]),
                                weight_decay=cfg["weight_decay"])
        np_rng = np.random.RandomState(int(cfg["seed"]) + 11)
        ema = float(model.cfg.ema)
        model.train()
        gen = self.batches(pool)
        t0, spent = time.time(), 0.0
        for step in range(1, steps + 1):
            loss = distill_loss(model, teacher, next(gen), self.cache, np_rng, self.device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(heads(model), cfg["grad_clip"])
            opt.step()
            if step % cfg["ema_every"] == 0:  # the official update, once per epoch
                ema_update(teacher, model, ema)
            if step % cfg["log_every"] == 0 or step == steps:
                self.log({"stage": "distill", "step": step, "time_s": round(spent + time.time() - t0, 1),
                          "distill_loss": float(loss.detach())})
            if val and (val_every and step % val_every == 0 or step == steps):
                spent += time.time() - t0
                self.validate(model, "student", step)
                if step < steps:
                    save_fine(model, self.out / f"student_{step}.pt", config=cfg, step=step)
                else:
                    self.validate(teacher, "teacher", step)
                t0 = time.time()
        self.results["seconds"]["distill"] = spent + time.time() - t0
        return teacher


def distill_loss(model: GeoDistill, teacher: GeoDistill, b: dict, cache: TokenCache, np_rng: np.random.RandomState,
                 device) -> torch.Tensor:
    """One distillation batch: the student sees each panorama through a random field of view (the official draw),
    the teacher the whole panorama; the batch's labels are not read (the teacher's output is the target)."""
    width = b["ground"].shape[-1]
    masks = [official_fov_mask(width, *draw_fov(np_rng, model.cfg.fov_range_deg))
             for _ in range(b["ground"].shape[0])]
    column = torch.as_tensor(np.stack(masks), dtype=torch.float32, device=device)
    tokens = {**cache(b["index"], b), "masked_ground": model.tokens(b["ground"] * column[:, None, None, :])}
    with torch.no_grad():
        t_enc = teacher.encode_batch(b, tokens=tokens)
    s_enc = model.encode_batch(b, column, tokens=tokens)
    return model.distill_loss(t_enc, s_enc)


def ema_update(teacher: GeoDistill, student: GeoDistill, ema: float) -> None:
    """teacher ← ema · teacher + (1 − ema) · student, over the two heads (the frozen DINOv2 is shared)."""
    with torch.no_grad():
        for name in ("aerial_head", "ground_head"):
            for pt, ps in zip(getattr(teacher, name).parameters(), getattr(student, name).parameters(), strict=True):
                pt.mul_(ema).add_(ps.detach(), alpha=1 - ema)


def train_orienter(model: GeoDistill, cfg: dict[str, Any], batches, rng: random.Random, device, log,
                   steps: int) -> None:
    """The orientation estimator alone, on panoramas rolled by whole columns to a random yaw within
    ±``orientation_range_deg`` (the loader rolls by +yaw; ``predict`` rolls back by −yaw)."""
    params = [p for p in model.orienter.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=1e-4)
    model.train()
    t0 = time.time()
    r = float(cfg["orientation_range_deg"])
    for step in range(1, steps + 1):
        b = next(batches)
        yaws = [rng.uniform(-r, r) for _ in range(b["ground"].shape[0])]
        rolled = [roll_panorama(g, -y, "toward_zero") for g, y in zip(b["ground"], yaws)]  # as the official code
        ground = torch.stack([g for g, _ in rolled])
        labels = torch.tensor([-a for _, a in rolled], device=device)
        loss, logs = model.orientation_loss(b["aerial"], ground, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
        opt.step()
        if step % cfg["log_every"] == 0 or step == steps:
            log({"stage": "orientation", "step": step, "time_s": round(time.time() - t0, 1), **logs})

