"""The training loop: ``train(config, data, out)`` → run folder. Same code on CPU, one GPU or many (torchrun).

A run folder holds ``config.json`` (resolved config, command line, package version), ``metrics.jsonl``
(one line per step and per evaluation), ``checkpoints/last.pt`` (everything needed to resume: model,
optimiser, scheduler, grad scaler, epoch/step, neighbour table, RNG states) and ``model.safetensors`` (the
trained model: its weights, with the config as JSON metadata, which :func:`crossview.load_model` reads; runs of
earlier versions hold ``model.pt`` instead, which still loads).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from crossview.device import pick_device
from crossview.errors import CrossviewError
from crossview.io import write_json_atomic
from crossview.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from crossview.train.distributed import DistInfo, init_distributed
from crossview.train.losses import symmetric_infonce
from crossview.train.sampling import location_batches, mine_similar_neighbours

_KILL_AT_STEP = int(os.environ.get("CROSSVIEW_TEST_KILL_AT_STEP", "0"))


class TrainingError(CrossviewError):
    """Training cannot go on (non-finite loss, inconsistent resume)."""


class PairModule(torch.nn.Module):
    """Wraps a retrieval model so one ``forward`` embeds both views (DDP hooks run on ``forward``)."""

    def __init__(self, model: torch.nn.Module, query_view: str, reference_view: str):
        super().__init__()
        self.model, self.query_view, self.reference_view = model, query_view, reference_view

    def forward(self, query: torch.Tensor, reference: torch.Tensor):
        return self.model.embed(query, view=self.query_view), self.model.embed(reference, view=self.reference_view)


def dataset_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """Reader keywords from a run config (the crop is only passed when asked for: CVACT/CVUSA readers take it)."""
    kwargs = {"area": cfg["area"], "label_set": cfg["label_set"]}
    if cfg.get("crop"):
        kwargs["crop"] = True
    return kwargs


def pick_precision(name: str, device: torch.device) -> torch.dtype | None:
    """None = fp32. ``auto``: bf16 on GPUs that support it, fp16 (with loss scaling) on older GPUs, fp32 on CPU."""
    if name == "fp32" or (name == "auto" and device.type != "cuda"):
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


def cosine_with_warmup(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))

    return factor


def _param_groups(model: torch.nn.Module, lr: float, backbone_scale: float):
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
    ids = {id(p) for p in backbone}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": rest, "lr": lr}]
    if backbone:
        groups.append({"params": backbone, "lr": lr * backbone_scale})
    return groups


def collate_pairs(items):
    """(query images, reference images, indices) of a batch of ``PairDataset`` items, stacked."""
    q, r, i = zip(*items)
    return torch.stack(q), torch.stack(r), torch.as_tensor(i)


class _Logger:
    def __init__(self, path: Path, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.file = path.open("a") if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(path.parent / "tensorboard"))
            except ImportError:
                print("tensorboard is not installed (pip install tensorboard); logging to metrics.jsonl only")

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, int | float) and k != "step":
                    self.tb.add_scalar(f"{row.get('type', 'train')}/{k}", v, row.get("step", 0))

    def close(self) -> None:
        if self.file:
            self.file.close()


def train(cfg: dict[str, Any], data: str | Path, out: str | Path, resume: bool = False,
          command: list[str] | None = None, trust_checkpoint: bool = False) -> Path:
    """Train ``cfg`` (a resolved config, see :mod:`crossview.train.presets`) on the dataset at ``data``.

    Writes the run folder ``out`` and returns it. With ``resume=True`` it continues from
    ``out/checkpoints/last.pt`` with the same optimiser, scheduler, sampler and RNG state, so the result
    equals an uninterrupted run. ``trust_checkpoint``: the checkpoint is unpickled without restriction
    (``--trust-checkpoint``; by default it loads without running code from it).
    """
    from crossview.data import read_dataset
    from crossview.models import create_model

    info = init_distributed(cfg["device"] if cfg["device"] != "auto" else None)
    device = pick_device(cfg["device"], info.local_rank)
    out, data = Path(out), Path(data)
    if info.is_main:
        _start_run_folder(out, cfg, data, resume, command)

    seed = int(cfg["seed"])
    torch.manual_seed(seed + info.rank)
    np.random.seed(seed + info.rank)

    split = read_dataset(cfg["dataset"], data, cfg["train_split"], **dataset_kwargs(cfg))
    model = create_model(cfg["model"], pretrained=cfg["pretrained"], **cfg["model_kwargs"]).to(device)
    query_view = split.records[0].query_view
    ref_view = split.references[0].view
    queries, references, dataset = _training_pairs(split, model, cfg, data, out)
    locations = dataset.positive

    model, pair, forward = _pair_module(model, query_view, ref_view, cfg, device, info)
    batch_size, steps_per_epoch, total_steps = _schedule(len(split.records), cfg, info.world_size)

    optimizer, scheduler, scaler, amp_dtype = _optimisation(model, cfg, steps_per_epoch, device)

    position = (0, 0, 0, _gps_neighbours(cfg, data, split))
    if resume:
        position = _resume(out / "checkpoints" / "last.pt", info.rank, model, optimizer, scheduler, scaler,
                           trust_checkpoint)

    logger = _Logger(out / "metrics.jsonl", info.is_main, cfg["tensorboard"])
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    run = _Run(cfg, info, out, device, model, forward, optimizer, scheduler, scaler, autocast, logger, total_steps,
               *position)
    done = run.step >= total_steps
    while not done and run.epoch < int(cfg["epochs"]):
        batches, loader = _epoch_loader(run, dataset, locations, batch_size)
        pair.train()
        done = _train_epoch(run, loader, len(batches), _normalizer(model, query_view, ref_view, device))
        if not done or run.step_in_epoch >= len(batches):
            run.epoch, run.step_in_epoch = run.epoch + 1, 0
        last_epoch = done or run.epoch >= int(cfg["epochs"])
        every = int(cfg["eval_every"])
        if (every and run.epoch % every == 0) or last_epoch:
            _evaluate_epoch(run, data)
        if cfg["sim_sample"] and not last_epoch and every and run.epoch % every == 0:
            run.neighbours = mine_training_neighbours(model, split, queries, references, cfg, device, autocast)
        run.checkpoint()
    logger.close()
    if info.is_main:
        from crossview.models import save_model

        save_model(model, out / "model.safetensors")
    return out


@dataclass
class _Run:
    """A training run's parts and where it is (global step, epoch, step in the epoch, the sampler's neighbours)."""

    cfg: dict[str, Any]
    info: DistInfo
    out: Path
    device: torch.device
    model: torch.nn.Module
    forward: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    autocast: Any
    logger: _Logger
    total_steps: int
    step: int
    epoch: int
    step_in_epoch: int
    neighbours: Any

    @property
    def ckpt_path(self) -> Path:
        """``checkpoints/last.pt``, the file a resume reads."""
        return self.out / "checkpoints" / "last.pt"

    def checkpoint(self) -> None:
        """Save everything a resume needs (rank 0), or this rank's RNG state (the other ranks)."""
        if self.info.rank:
            save_checkpoint(self.out / "checkpoints" / f"rng_rank{self.info.rank}.pt")
            return
        save_checkpoint(self.ckpt_path, model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                        scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(), step=self.step,
                        epoch=self.epoch, step_in_epoch=self.step_in_epoch, neighbours=self.neighbours,
                        config=self.cfg)


def _start_run_folder(out: Path, cfg: dict[str, Any], data: Path, resume: bool, command: list[str] | None) -> None:
    """Create the run folder; a new run writes ``config.json`` (config, data, command line, package version)."""
    from crossview import __version__

    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_json_atomic(out / "config.json", {
            "config": cfg, "data": str(data), "command": command or sys.argv, "version": __version__,
        })


def _gps_neighbours(cfg: dict[str, Any], data: Path, split) -> Any:
    """The training split's GPS-neighbour table when ``gps_sample`` is on, else None."""
    if not cfg["gps_sample"]:
        return None
    from crossview.data import load_gps_neighbours

    return load_gps_neighbours(cfg["dataset"], data, area=cfg["area"], split=split)


def _epoch_loader(run: _Run, dataset, locations: np.ndarray, batch_size: int) -> tuple[list[np.ndarray], DataLoader]:
    """The epoch's batches (drawn from ``(seed, epoch)``) and a loader of this rank's share from its position."""
    from crossview.train.data import BatchList

    cfg, info, seed = run.cfg, run.info, int(run.cfg["seed"])
    rng = np.random.default_rng([seed, run.epoch])
    batches = location_batches(locations, batch_size, rng, neighbours=run.neighbours,
                               neighbour_select=cfg["neighbour_select"],
                               neighbour_range=cfg["neighbour_range"])
    sampler = BatchList(batches, seed, run.epoch, run.step_in_epoch, info.rank, info.world_size)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg["num_workers"],
                        collate_fn=collate_pairs, pin_memory=run.device.type == "cuda",
                        persistent_workers=False, generator=torch.Generator())
    return batches, loader


def _train_epoch(run: _Run, loader: DataLoader, n_batches: int, norm) -> bool:
    """The rest of an epoch's steps, with logging and checkpoints; True when the run's last step is done."""
    from crossview.progress import progress

    t0, seen = time.perf_counter(), 0
    bar = progress(total=n_batches - run.step_in_epoch, desc=f"epoch {run.epoch}", unit="step") if run.info.is_main \
        else None
    done = False
    for q, r, _ in loader:
        q, r = norm(q.to(run.device, non_blocking=True), r.to(run.device, non_blocking=True))
        loss = _optimisation_step(run.forward, run.model, q, r, run.cfg, run.autocast, run.optimizer, run.scaler,
                                  run.scheduler)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at step {run.step}; the last good checkpoint is {run.ckpt_path}. "
                "Lower --set lr=..., use --set precision=fp32, or check the data.")
        run.step += 1
        run.step_in_epoch += 1
        seen += len(q) * run.info.world_size
        _report_step(run, bar, loss, seen, t0)
        if run.step % int(run.cfg["checkpoint_every"]) == 0:
            run.checkpoint()
        if _KILL_AT_STEP and run.step == _KILL_AT_STEP:  # tests: die like a pre-empted job, no clean-up
            os.kill(os.getpid(), signal.SIGKILL)
        if run.step >= run.total_steps:
            done = True
            break
    if bar is not None:
        bar.close()
    return done


def _report_step(run: _Run, bar, loss: torch.Tensor, seen: int, t0: float) -> None:
    """Progress bar; a ``train`` row every 10 steps, at an epoch's first step and at the run's last."""
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}",
                        pairs_s=f"{seen / max(time.perf_counter() - t0, 1e-9):.1f}", refresh=False)
    if run.info.is_main and (run.step % 10 == 0 or run.step == run.total_steps or run.step_in_epoch == 1):
        elapsed = time.perf_counter() - t0
        run.logger.log({"type": "train", "step": run.step, "epoch": run.epoch, "loss": loss.item(),
                        "lr": run.scheduler.get_last_lr()[0], "logit_scale": run.model.logit_scale.exp().item(),
                        "pairs_per_s": seen / max(elapsed, 1e-9)})


def _evaluate_epoch(run: _Run, data: Path) -> None:
    """Retrieval metrics on the evaluation split: an ``eval`` row in metrics.jsonl and one printed line."""
    metrics = evaluate_in_training(run.model, run.cfg, data, run.out, run.device, run.autocast)
    if run.info.is_main:
        run.logger.log({"type": "eval", "step": run.step, "epoch": run.epoch, **metrics})
        print(" ".join(f"{k}={v:.2f}" for k, v in metrics.items() if isinstance(v, float)))


def _pair_module(model: torch.nn.Module, query_view: str, ref_view: str, cfg: dict[str, Any], device: torch.device,
                 info: DistInfo):
    """(model, the pair module — DDP-wrapped under torchrun —, its forward: compiled with ``compile``)."""
    if cfg["channels_last"] and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if cfg["grad_checkpointing"] and hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    pair = PairModule(model, query_view, ref_view)
    if info.enabled:
        pair = torch.nn.parallel.DistributedDataParallel(
            pair, device_ids=[device.index] if device.type == "cuda" else None)
    return model, pair, torch.compile(pair) if cfg["compile"] else pair


def _schedule(n_pairs: int, cfg: dict[str, Any], world_size: int) -> tuple[int, int, int]:
    """(global batch size, steps per epoch, total steps) with the errors that name the fix."""
    batch_size = int(cfg["batch_size"])
    if batch_size % world_size:
        raise CrossviewError(f"batch_size {batch_size} must be divisible by the {world_size} processes")
    steps_per_epoch = n_pairs // batch_size
    if steps_per_epoch == 0:
        raise CrossviewError(f"{n_pairs} training pairs is fewer than one batch of {batch_size}")
    total_steps = steps_per_epoch * int(cfg["epochs"])
    if cfg["max_steps"]:
        total_steps = min(total_steps, int(cfg["max_steps"]))
    return batch_size, steps_per_epoch, total_steps


def _resume(ckpt_path: Path, rank: int, model, optimizer, scheduler, scaler,
            trust_checkpoint: bool = False) -> tuple[int, int, int, Any]:
    """Restore a run from ``checkpoints/last.pt`` (and this rank's RNG file): (step, epoch, step in epoch,
    neighbour table)."""
    if not ckpt_path.exists():
        raise TrainingError(f"no checkpoint to resume at {ckpt_path}; start the run without --resume")
    state = load_checkpoint(ckpt_path, trust_checkpoint)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    rank_rng = ckpt_path.parent / f"rng_rank{rank}.pt"
    set_rng_state(load_checkpoint(rank_rng, trust_checkpoint)["rng"] if rank and rank_rng.exists() else state["rng"])
    return state["step"], state["epoch"], state["step_in_epoch"], state["neighbours"]


def _training_pairs(split, model: torch.nn.Module, cfg: dict[str, Any], data: Path, out: Path):
    """(query images, reference images, the pair dataset) of a training split at the model's input sizes, served
    from the image caches (``data/crossview_cache`` made by ``crossview prepare --cache``, else ``out/cache``)."""
    from crossview.data.images import ImageSource
    from crossview.models import input_spec
    from crossview.train.data import PairDataset

    (q_size, _, _) = input_spec(model, split.records[0].query_view)
    (r_size, _, _) = input_spec(model, split.references[0].view)
    cache_dir = [data / "crossview_cache", out / "cache"] if cfg["cache"] else None
    queries = ImageSource([str(r.query_path) for r in split.records], q_size, cache_dir)
    references = ImageSource([str(r.path) for r in split.references], r_size, cache_dir)
    dataset = PairDataset(split, queries, references, train=True, prob_flip=cfg["prob_flip"],
                          prob_rotate=cfg["prob_rotate"], photometric=cfg["photometric"], fov=cfg.get("fov"),
                          fov_orientation=cfg.get("fov_orientation", "known"))
    if cfg["shuffle_labels"]:  # control: break the query/reference correspondence, keep everything else
        dataset.positive = np.random.default_rng(int(cfg["seed"]) + 1).permutation(dataset.positive)
    return queries, references, dataset


def _optimisation(model: torch.nn.Module, cfg: dict[str, Any], steps_per_epoch: int, device: torch.device):
    """AdamW (backbone at ``backbone_lr_scale``), cosine schedule with warm-up, the gradient scaler and the
    autocast dtype (None = fp32)."""
    optimizer = torch.optim.AdamW(_param_groups(model, cfg["lr"], cfg["backbone_lr_scale"]), lr=cfg["lr"],
                                  weight_decay=cfg["weight_decay"], fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(
        int(cfg["warmup_epochs"] * steps_per_epoch), steps_per_epoch * int(cfg["epochs"])))
    amp_dtype = pick_precision(cfg["precision"], device)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**10, enabled=amp_dtype is torch.float16)
    return optimizer, scheduler, scaler, amp_dtype


def _optimisation_step(forward, model: torch.nn.Module, q: torch.Tensor, r: torch.Tensor, cfg: dict[str, Any],
                       autocast, optimizer, scaler, scheduler) -> torch.Tensor:
    """One step of the symmetric InfoNCE on a batch of normalised pairs; returns the loss (the caller checks it is
    finite: with a non-finite loss the optimiser step is skipped by the scaler only under fp16)."""
    with autocast():
        dq, dr = forward(q, r)
    loss = symmetric_infonce(dq, dr, model.logit_scale.exp(), cfg["label_smoothing"])
    if not torch.isfinite(loss):
        return loss
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_value_(model.parameters(), cfg["clip_value"])
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss


def _normalizer(model, query_view: str, ref_view: str, device: torch.device):
    from crossview.data.transforms import normalize
    from crossview.models import input_spec

    _, qm, qs = input_spec(model, query_view)
    _, rm, rs = input_spec(model, ref_view)

    def norm(q: torch.Tensor, r: torch.Tensor):
        q, r = normalize(q, qm, qs), normalize(r, rm, rs)
        if device.type == "cuda":
            q, r = q.contiguous(memory_format=torch.channels_last), r.contiguous(memory_format=torch.channels_last)
        return q, r

    return norm


@torch.no_grad()
def embed_source(model, source, view: str, device, autocast, batch_size: int = 128) -> torch.Tensor:
    """Descriptors (N, D) float32 for every image of an :class:`ImageSource`, in order."""
    from crossview.data.transforms import normalize
    from crossview.models import input_spec

    _, mean, std = input_spec(model, view)
    model.eval()
    out = []
    for start in range(0, len(source), batch_size):
        x = torch.stack([source.get(i) for i in range(start, min(start + batch_size, len(source)))]).to(device)
        with autocast():
            out.append(model.embed(normalize(x, mean, std), view=view).float())
    model.train()
    return torch.cat(out)


def evaluate_in_training(model, cfg, data, out, device, autocast) -> dict[str, float]:
    """Retrieval metrics on the evaluation split (queries against its full reference set)."""
    from crossview.data import read_dataset
    from crossview.evaluate import evaluate_retrieval
    from crossview.models import input_spec
    from crossview.train.data import ImageSource

    split = read_dataset(cfg["dataset"], data, cfg["eval_split"], **dataset_kwargs(cfg))
    qv, rv = split.records[0].query_view, split.references[0].view
    cache_dir = [Path(data) / "crossview_cache", Path(out) / "cache"] if cfg["cache"] else None
    qs = ImageSource([str(r.query_path) for r in split.records], input_spec(model, qv)[0], cache_dir)
    rs = ImageSource([str(r.path) for r in split.references], input_spec(model, rv)[0], cache_dir)
    dq = embed_source(model, qs, qv, device, autocast, cfg["eval_batch_size"])
    dr = embed_source(model, rs, rv, device, autocast, cfg["eval_batch_size"])
    if cfg["dataset"] == "university1652":  # class labels, many positives per query (sat2drone)
        from crossview.evaluate.university import evaluate_university

        metrics = evaluate_university(dq, [r.label for r in split.records], dr, [r.label for r in split.references],
                                      protocol=cfg.get("u1652_protocol", "original"))
        return {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    semis = [list(r.semi_positives) for r in split.records]
    return evaluate_retrieval(dq, dr, [r.positives[0] for r in split.records],
                              semi_positives=semis if any(semis) else None)


def mine_training_neighbours(model, split, queries, references, cfg, device, autocast) -> dict[int, np.ndarray]:
    """Re-mine visual-similarity hard negatives on the training set (after an evaluation)."""
    qv, rv = split.records[0].query_view, split.references[0].view
    dq = embed_source(model, queries, qv, device, autocast, cfg["eval_batch_size"])
    dr = embed_source(model, references, rv, device, autocast, cfg["eval_batch_size"])
    positives = np.asarray([r.positives[0] for r in split.records])
    return mine_similar_neighbours(dq, dr, positives, int(cfg["neighbour_range"]))
