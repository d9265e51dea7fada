"""FG² training (``crossview.fine.train.TRAINERS["fg2"]``): the official recipe is Adam at a constant learning rate,
no gradient clipping, and a step skipped when its Procrustes has a rank-1 covariance. Kept out of
``crossview.fine.fg2`` so that inference never imports training code."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from crossview.fine.fg2 import FG2
from crossview.fine.presets import train_yaw_range
from crossview.fine.train import after_step, finish_run, make_batch, optimizer_and_schedule

__all__ = ["train_fg2"]


def train_fg2(model: FG2, cfg: dict[str, Any], samples: list, bank: Any, out: Path, log: Any, device: Any,
              rng: Any, data: Any) -> None:
    """``crossview.fine.train`` trainer for FG² (``TRAINERS["fg2"]``). The official recipe is Adam(β 0.9/0.999)
    at a constant learning rate with no gradient clipping, skipping a step whose Procrustes has a rank-1
    covariance (presets: ``weight_decay`` 0 = Adam, ``warmup_frac`` 0 = constant, ``grad_clip`` None). A
    ``warmup_frac`` > 0 (or None) uses the shared OneCycle schedule instead (the CPU presets)."""
    steps = int(cfg["steps"])
    params = model.head_parameters()
    if cfg["warmup_frac"] == 0:
        opt = torch.optim.AdamW([p for p in params if p.requires_grad], lr=cfg["lr"], betas=(0.9, 0.999),
                                eps=cfg["adam_eps"], weight_decay=cfg["weight_decay"])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    else:
        opt, sched, params = optimizer_and_schedule(model, cfg, steps, params)
    yaw_range = train_yaw_range(cfg)
    gen = torch.Generator().manual_seed(int(cfg["seed"]) + 1)
    model.train()
    order: list[int] = []
    skipped = 0
    t0 = time.time()
    for step in range(1, steps + 1):
        if len(order) < cfg["batch_size"]:
            order += rng.sample(range(len(samples)), len(samples))
        idx, order = order[:cfg["batch_size"]], order[cfg["batch_size"]:]
        batch = make_batch(samples, idx, bank, model, cfg["camera"], yaw_range, rng, device, cfg["photometric"])
        loss, logs = model.loss(batch, generator=gen)
        if logs.get("_skip"):
            skipped += 1
        else:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
            opt.step()
            sched.step()
        after_step(model, cfg, out, log, data, device, step, steps,
                   {"lr": sched.get_last_lr()[0], "time_s": round(time.time() - t0, 1), "skipped": skipped, **logs})
    finish_run(model, cfg, out, log, data, device, steps, {"train_seconds": time.time() - t0, "skipped_steps": skipped})
