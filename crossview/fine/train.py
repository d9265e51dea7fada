"""Training runs for every fine-grained localizer of the registry.

``train(cfg, data, out)`` (``cfg`` from ``crossview.fine.presets.resolve_config``) writes a run folder:
``config.json`` (resolved config, data root, command line), ``metrics.jsonl`` (one JSON line per log/eval),
``checkpoint.pt`` (``crossview.fine.save_fine`` layout + the training config, written atomically) and, with
``final_eval``, ``metrics.json``. A finished run of the same config is not trained again.

One loop serves every architecture whose ``loss(batch, generator=...)`` is a single objective (HC-Net, PillarMatch,
HomoFlow, ...): AdamW, OneCycle (warm-up, cos or linear anneal), gradient clipping, logs every ``log_every`` steps.
Architectures with a schedule of their own register a trainer in ``TRAINERS`` (PlaneCorr: base, control,
distillation, orientation). With a frozen backbone the features of every training image are computed once
(``cache_features``); unknown-orientation rolls then shift whole feature columns (the heading label follows the
applied shift exactly).
"""

from __future__ import annotations

import importlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from crossview.device import pick_device
from crossview.errors import UnsafeCheckpointError
from crossview.fine.data import FineDataset, FineSample, collate, read_samples
from crossview.fine.loading import load_fine, save_fine
from crossview.fine.presets import train_yaw_range
from crossview.fine.registry import create_fine
from crossview.geometry.cameras import roll_panorama
from crossview.io import write_json_atomic
from crossview.safe_load import load_checkpoint

# architecture -> "module:function" of a trainer with its own schedule (signature as train_planecorr)
TRAINERS: dict[str, str] = {"planecorr": "crossview.fine.train_planecorr:train_planecorr",
                            "fg2": "crossview.fine.train_fg2:train_fg2",
                            "geodistill": "crossview.fine.train_geodistill:train_geodistill"}
# architecture -> "module:function" of a trainer that reads the world itself (whole maps, not tile samples):
# ``fn(cfg, data, out, log)``
WORLD_TRAINERS: dict[str, str] = {"bevpost": "crossview.fine.train_bevpost:train_bevpost"}


def _frozen(model: torch.nn.Module) -> bool:
    backbone = getattr(model, "backbone", None)
    return bool(backbone is not None and getattr(backbone, "freeze", False) and hasattr(model, "features"))


class FeatureBank:
    """Backbone features of every training image (float16), computed once with the frozen backbone."""

    def __init__(self, model, samples: list[FineSample], camera: str, device, batch: int = 16, log=print):
        gsize, asize = model.input_sizes(camera)
        ds = FineDataset(samples, gsize, asize)
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


def make_batch(samples: list[FineSample], idx: list[int], bank: FeatureBank | None, model: torch.nn.Module,
               camera: str, yaw_range: float, rng: random.Random, device: str | torch.device,
               photometric: bool = False) -> dict:
    """A training batch: cached features with column rolls, or images with exact rolls."""
    if bank is None:
        gsize, asize = model.input_sizes(camera)
        ds = FineDataset([samples[i] for i in idx], gsize, asize, yaw_range_deg=yaw_range, photometric=photometric)
        b = collate([ds[i] for i in range(len(idx))])
    else:
        gf = bank.ground[idx].float()
        headings = []
        for k, i in enumerate(idx):
            h = samples[i].heading_deg
            if yaw_range > 0 and camera == "panorama":
                gf[k], applied = roll_panorama(gf[k], rng.uniform(-yaw_range, yaw_range))
                h = h + applied
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
    """Log lines to the console (unless ``quiet``) and records to ``metrics.jsonl``."""

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


def save_checkpoint(out: Path, model: torch.nn.Module, cfg: dict, step: int, extra: dict | None = None,
                    finished: bool = False) -> Path:
    """``checkpoint.pt``: the model (``save_fine`` layout), the training config and the step, atomically."""
    return save_fine(model, out / "checkpoint.pt", config=cfg, step=step, finished=finished, **(extra or {}))


def optimizer_and_schedule(model: torch.nn.Module, cfg: dict[str, Any], steps: int,
                           params: Any = None) -> tuple[torch.optim.Optimizer, Any, list[torch.nn.Parameter]]:
    """AdamW over the trainable parameters and a OneCycle schedule over ``steps``."""
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], eps=cfg["adam_eps"])
    total = max(steps, 2)
    # the default warm-up (2.5 steps at least) is capped below the run's length: 1- and 2-step runs are valid
    warm = cfg["warmup_frac"] if cfg["warmup_frac"] is not None else min(0.9, max(0.05, 2.5 / total))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=total + 1, pct_start=warm,
                                                anneal_strategy=cfg["anneal"], cycle_momentum=False)
    return opt, sched, params


def _same_finished_run(out: Path, cfg: dict[str, Any], trust_checkpoint: bool = False) -> bool:
    """True when ``out`` holds a finished run of ``cfg`` (re-running it is a no-op). A checkpoint there that names
    code to run raises :class:`~crossview.errors.UnsafeCheckpointError` unless ``trust_checkpoint``."""
    path = out / "checkpoint.pt"
    if not path.exists():
        return False
    try:
        saved = load_checkpoint(path, trust=trust_checkpoint, what="fine-model checkpoint")
    except UnsafeCheckpointError:
        raise
    except Exception:
        return False
    return bool(saved.get("finished")) and saved.get("config") == cfg


def train(cfg: dict[str, Any], data: str | Path, out: str | Path, command: list[str] | None = None,
          quiet: bool = False, trust_checkpoint: bool = False) -> Path:
    """Train from a resolved config on the tree at ``data``; returns the run folder. ``trust_checkpoint``: the
    run folder's checkpoint and ``init_from`` are unpickled without restriction (``--trust-checkpoint``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if _same_finished_run(out, cfg, trust_checkpoint):
        return out
    threads = torch.get_num_threads()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    try:
        return _train(cfg, data, out, command, quiet, trust_checkpoint)
    finally:
        torch.set_num_threads(threads)  # the config's thread count holds for the run only


def _train(cfg: dict[str, Any], data: str | Path, out: Path, command: list[str] | None, quiet: bool,
           trust_checkpoint: bool) -> Path:
    write_json_atomic(out / "config.json", {"config": cfg, "data": str(data),
                                            "command": command or sys.argv, "started": time.time()})
    (out / "metrics.jsonl").unlink(missing_ok=True)
    log = RunLog(out, quiet)
    device = pick_device(cfg["device"])
    torch.manual_seed(cfg["seed"])
    if cfg["method"] in WORLD_TRAINERS:
        module, _, fn = WORLD_TRAINERS[cfg["method"]].partition(":")
        return getattr(importlib.import_module(module), fn)(cfg, data, out, log)
    rng = random.Random(cfg["seed"])
    samples = read_samples(data, cfg["area"], "train", cfg["camera"], cfg["label_set"], cfg["train_limit"])
    model = create_fine(cfg["variant"], **(cfg["model"] or {})).to(device)
    if cfg["camera"] not in model.cameras:
        from crossview.errors import ConfigError

        raise ConfigError(f"{cfg['variant']} places {', '.join(model.cameras)} images; camera={cfg['camera']!r} "
                          "is not one of them")
    if cfg.get("init_from"):
        model.load_state_dict(load_fine(cfg["init_from"], trust_checkpoint=trust_checkpoint).state_dict())
        log(f"initialised from {cfg['init_from']}")
    log(f"{cfg['variant']} ({cfg['method']}): {len(samples)} training samples ({cfg['area']}-area, "
        f"{cfg['camera']}), {sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f} M trainable "
        "parameters")
    bank = FeatureBank(model, samples, cfg["camera"], device, log=log) \
        if cfg["cache_features"] and _frozen(model) else None
    if cfg["method"] in TRAINERS:
        module, _, fn = TRAINERS[cfg["method"]].partition(":")
        getattr(importlib.import_module(module), fn)(model, cfg, samples, bank, out, log, device, rng, data)
    else:
        train_loop(model, cfg, samples, bank, out, log, device, rng, data)
    return out


def train_loop(model: torch.nn.Module, cfg: dict[str, Any], samples: list[FineSample], bank: FeatureBank | None,
               out: Path, log: Any, device: str | torch.device, rng: random.Random, data: Any) -> None:
    """The shared loop: one objective, ``model.loss(batch, generator=...)``."""
    steps = int(cfg["steps"])
    opt, sched, params = optimizer_and_schedule(model, cfg, steps)
    yaw_range = train_yaw_range(cfg)
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    model.train()
    order: list[int] = []
    t0 = time.time()
    from crossview.progress import progress

    bar = progress(range(1, steps + 1), desc=f"train {cfg['variant']}", unit="step")
    for step in bar:
        if len(order) < cfg["batch_size"]:
            order += rng.sample(range(len(samples)), len(samples))
        idx, order = order[:cfg["batch_size"]], order[cfg["batch_size"]:]
        batch = make_batch(samples, idx, bank, model, cfg["camera"], yaw_range, rng, device, cfg["photometric"])
        loss, logs = model.loss(batch, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{logs['loss']:.3f}", lr=f"{sched.get_last_lr()[0]:.2e}",
                        samples_s=f"{step * cfg['batch_size'] / max(time.time() - t0, 1e-9):.1f}", refresh=False)
        after_step(model, cfg, out, log, data, device, step, steps,
                   {"lr": sched.get_last_lr()[0], "time_s": round(time.time() - t0, 1), **logs})
    finish_run(model, cfg, out, log, data, device, steps, {"train_seconds": time.time() - t0})


def after_step(model: torch.nn.Module, cfg: dict[str, Any], out: Path, log: Any, data: str | Path,
               device: str | torch.device, step: int, steps: int, record: dict[str, Any]) -> None:
    """What every trainer does after a step: log ``record`` every ``log_every`` steps (keys starting with ``_``
    are private), evaluate every ``eval_every`` steps and checkpoint every ``checkpoint_every`` steps."""
    if step % cfg["log_every"] == 0 or step == steps:
        log({"step": step, **{k: v for k, v in record.items() if not k.startswith("_")}})
    if cfg["eval_every"] and step % cfg["eval_every"] == 0 and step < steps:
        log({"step": step, **{f"eval_{k}": v for k, v in run_eval(model, cfg, data, device).items()}})
        model.train()
    if step % cfg["checkpoint_every"] == 0 and step < steps:
        save_checkpoint(out, model, cfg, step)


def finish_run(model: torch.nn.Module, cfg: dict[str, Any], out: Path, log: Any, data: str | Path,
               device: str | torch.device, steps: int, extra: dict[str, Any]) -> None:
    """The finished checkpoint (with ``extra``, e.g. ``train_seconds``) and, with ``final_eval``, the config's
    evaluation written to ``metrics.json``."""
    save_checkpoint(out, model, cfg, steps, extra, finished=True)
    if cfg["final_eval"]:
        metrics = run_eval(model, cfg, data, device)
        metrics["train_seconds"] = extra["train_seconds"]
        write_json_atomic(out / "metrics.json", {"setting": f"{cfg['variant']} {cfg['area']}-area "
                                                            f"{cfg['eval_orientation']}", "metrics": metrics,
                                                 "config": cfg})
        log({"step": steps, **{f"eval_{k}": v for k, v in metrics.items()}})


def run_eval(model: torch.nn.Module, cfg: dict[str, Any], data: str | Path,
             device: str | torch.device) -> dict[str, Any]:
    """The config's evaluation protocol on the test split (at most ``eval_limit`` samples)."""
    from crossview.fine.evaluate import evaluate

    test = read_samples(data, cfg["area"], "test", cfg["camera"], cfg["label_set"], cfg["eval_limit"])
    return evaluate(model, test, cfg["eval_orientation"], cfg["eval_seed"], cfg["eval_prior_deg"], device,
                    ransac=cfg.get("ransac") or None)
