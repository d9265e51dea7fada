"""PlaneCorr's training schedule (ours): the supervised base, a same-length supervised control, FoV
self-distillation from an EMA teacher, then the orientation estimator; each evaluated on held-out samples and the
comparison logged (``planecorr_results.json`` in the run folder)."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Iterator

import torch

from crossview.fine.data import read_samples
from crossview.fine.evaluate import evaluate
from crossview.fine.planecorr import PlaneCorr, evaluate_limited_fov, fov_column_mask, roll_columns
from crossview.fine.train import make_batch, save_checkpoint
from crossview.io import write_json_atomic


def train_planecorr(model: PlaneCorr, cfg, samples, bank, out, log, device, rng, data) -> None:
    """Base (supervised heatmap) → checkpoint ``base.pt``; a same-length supervised control; distillation;
    the orientation estimator. Evaluates each and logs the comparison."""

    test = read_samples(data, cfg["area"], "test", cfg["camera"], cfg["label_set"], cfg["eval_limit"])
    everyone = list(range(len(samples)))
    labelled = everyone
    if cfg.get("labelled_limit"):  # semi-supervised: labels for a seeded subset, the rest only for distillation
        n = min(int(cfg["labelled_limit"]), len(samples))
        labelled = sorted(random.Random(cfg["seed"] + 7).sample(everyone, n))
        log(f"labelled subset: {n} of {len(samples)} training samples (base and control); distillation uses all "
            "of them without their labels")

    def batches(pool=None):
        pool = labelled if pool is None else pool
        order: list[int] = []
        while True:
            while len(order) < cfg["batch_size"]:
                order += rng.sample(pool, len(pool))
            idx, order[:] = order[:cfg["batch_size"]], order[cfg["batch_size"]:]
            yield make_batch(samples, idx, bank, model, cfg["camera"], 0.0, rng, device)

    def supervised(net, steps, tag):
        opt = torch.optim.AdamW([p for n_, p in net.named_parameters() if p.requires_grad
                                 and not n_.startswith("orienter")], lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        net.train()
        gen, t0 = batches(), time.time()
        for step in range(1, steps + 1):
            loss, logs = net.loss(next(gen))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg["grad_clip"])
            opt.step()
            if step % 20 == 0 or step == steps:
                log({"stage": tag, "step": step, "time_s": round(time.time() - t0, 1), **logs})

    def masked_eval(net, fov):
        return evaluate_limited_fov(net, test, fov, cfg["eval_seed"], device)

    results = {}
    supervised(model, int(cfg["base_steps"]), "base")
    save_checkpoint(out, model, cfg, int(cfg["base_steps"]))
    (out / "checkpoint.pt").replace(out / "base.pt")
    results["base"] = evaluate(model, test, "known", device=device)
    results["base_fov180"] = masked_eval(model, 180.0)
    log({"stage": "base", **{f"eval_{k}": v for k, v in results["base"].items()}})
    base_state = copy.deepcopy(model.state_dict())

    n_distill = int(cfg["distill_steps"])
    if n_distill:
        control = copy.deepcopy(model)
        supervised(control, n_distill, "control")  # the base trained as long as base + distillation
        results["base_same_length"] = evaluate(control, test, "known", device=device)
        results["base_same_length_fov180"] = masked_eval(control, 180.0)
        log({"stage": "control", **{f"eval_{k}": v for k, v in results["base_same_length"].items()}})
        del control
        model.load_state_dict(base_state)
        teacher = distill(model, cfg, batches(everyone), rng, device, log, n_distill)
        results["student"] = evaluate(model, test, "known", device=device)
        results["student_fov180"] = masked_eval(model, 180.0)
        results["teacher"] = evaluate(teacher, test, "known", device=device)
        log({"stage": "student", **{f"eval_{k}": v for k, v in results["student"].items()}})

    n_ori = int(cfg["orientation_steps"])
    if n_ori:
        train_orienter(model, cfg, batches(), rng, device, log, n_ori)
    save_checkpoint(out, model, cfg, int(cfg["base_steps"]) + n_distill, {"results": results}, finished=True)
    write_json_atomic(out / "planecorr_results.json", results)


def distill(model: PlaneCorr, cfg: dict, batches: Iterator[dict], rng: random.Random, device, log,
            steps: int) -> PlaneCorr:
    """FoV self-distillation from a frozen copy of ``model``: the student sees a random field of view
    (``fov_range_deg``) and matches the teacher's full-view heatmap (temperatures ``tau_teacher`` /
    ``tau_student``); the teacher follows the student by EMA every ``ema_every`` steps. Labels are not read.
    Returns the teacher."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW([p for n_, p in model.named_parameters() if p.requires_grad
                             and not n_.startswith("orienter")], lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    model.train()
    t0 = time.time()
    for step in range(1, steps + 1):
        b = next(batches)
        with torch.no_grad():
            t_logits = teacher(b)["logits"]
        width = b["ground_feat"].shape[-1] if "ground_feat" in b else model.features(b["ground"]).shape[-1]
        mask = fov_column_mask(len(b["tile_m"]), width, cfg["fov_range_deg"], rng, device)
        s_logits = model(b, column_mask=mask)["logits"]
        p_t = torch.softmax(t_logits.flatten(1) / cfg["tau_teacher"], 1)
        loss = -(p_t * torch.log_softmax(s_logits.flatten(1) / cfg["tau_student"], 1)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()
        if step % cfg["ema_every"] == 0:
            with torch.no_grad():
                for pt, ps in zip(teacher.parameters(), model.parameters(), strict=True):
                    pt.mul_(cfg["ema_alpha"]).add_(ps.detach(), alpha=1 - cfg["ema_alpha"])
        if step % 20 == 0 or step == steps:
            log({"stage": "distill", "step": step, "time_s": round(time.time() - t0, 1),
                 "distill_loss": float(loss.detach())})
    return teacher


def train_orienter(model: PlaneCorr, cfg: dict, batches: Iterator[dict], rng: random.Random, device, log,
                   steps: int) -> None:
    """The orientation estimator alone, on cached ground features rolled by a random yaw within
    ±``orientation_range_deg``."""
    params = list(model.orienter.parameters())
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=1e-4)
    t0 = time.time()
    model.train()
    for step in range(1, steps + 1):
        b = next(batches)
        if "ground_feat" not in b:  # features not cached: computed here (the estimator trains alone)
            with torch.no_grad():
                b["ground_feat"] = model.features(b["ground"])
                b["ground_hw"] = tuple(b["ground"].shape[-2:])
        yaws = []
        w = b["ground_feat"].shape[-1]
        for k in range(b["ground_feat"].shape[0]):
            yaw = rng.uniform(-cfg["orientation_range_deg"], cfg["orientation_range_deg"])
            b["ground_feat"][k] = roll_columns(b["ground_feat"][k], -yaw / 360.0 * w)
            yaws.append(yaw)
        loss, logs = model.orientation_loss(b, torch.tensor(yaws, device=device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == steps:
            log({"stage": "orientation", "step": step, "time_s": round(time.time() - t0, 1), **logs})

