"""Model size and cost: parameters per module and multiply-accumulates (MACs) at the configured input sizes.

FLOPs convention: we count MACs (one multiply + one add = 1 MAC) of matrix products and convolutions with
``torch.utils.flop_counter.FlopCounterMode`` (which reports 2 FLOPs per MAC; we divide by 2), for **one image of
each view** and for a **pair** (one query + one reference image). Element-wise operations (norms, activations,
pooling, softmax) are not counted, as in fvcore. The paper's "21.80 G per pair" (Table 5) matches one CVUSA image
(about 21 GMACs), not a pair (about 42 GMACs).

Counting runs on the ``meta`` device (shapes only), so it is instant even for full-size ConvNeXt-B models.
"""

from __future__ import annotations

from typing import Any

import torch


def parameter_table(model: torch.nn.Module) -> list[dict[str, Any]]:
    """Rows ``{"module", "params", "trainable"}``: the backbone, the shared projections, each view head's parts,
    and ``logit_scale``; the rows add up to the total."""
    rows: dict[str, list[int]] = {}
    for name, p in model.named_parameters():
        parts = name.split(".")
        if parts[0] == "backbone":
            key = "backbone (unused head)" if not p.requires_grad else "backbone"
        elif parts[0] == "heads":
            key = ".".join(parts[:3])
        else:
            key = parts[0]
        row = rows.setdefault(key, [0, 0])
        row[0] += p.numel()
        row[1] += p.numel() if p.requires_grad else 0
    return [{"module": k, "params": v[0], "trainable": v[1]} for k, v in rows.items()]


def count_macs(model: torch.nn.Module, view: str, batch: int = 1) -> int:
    """MACs of ``model.embed`` for ``batch`` images of ``view`` at the configured size (eval mode)."""
    from torch.utils.flop_counter import FlopCounterMode

    from crossview.models import input_spec

    (h, w), _, _ = input_spec(model, view)
    device = next(model.parameters()).device
    x = torch.zeros(batch, 3, h, w, device=device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.embed(x, view)
    model.train(was_training)
    return counter.get_total_flops() // 2


def model_info(name: str, **overrides: Any) -> dict[str, Any]:
    """Parameters per module and MACs per image of each view and per pair for a registered variant."""
    from crossview.models import create_model

    with torch.device("meta"):
        model = create_model(name, **overrides)
    views = model.config["views"]
    macs = {v: count_macs(model, v) for v in views}
    table = parameter_table(model)
    return {
        "name": name,
        "config": {k: model.config[k] for k in ("arch", "backbone", "backbone_kwargs", "sizes", "mean", "std",
                                                 "descriptor_dim") if k in model.config},
        "parameters": table,
        "total_params": sum(r["params"] for r in table),
        "trainable_params": sum(r["trainable"] for r in table),
        "macs_per_image": macs,
        "macs_per_pair": sum(macs.values()),
    }


def format_info(info: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    cfg = info["config"]
    mean = tuple(round(m, 4) for m in cfg["mean"])
    std = tuple(round(s, 4) for s in cfg["std"])
    lines = [f"model {info['name']}: {cfg['arch']} on {cfg['backbone']} {cfg.get('backbone_kwargs') or ''}".rstrip(),
             "input sizes (H, W): " + ", ".join(f"{v} {tuple(s)}" for v, s in cfg["sizes"].items()),
             f"descriptor: {cfg['descriptor_dim']}-d, mean {mean} std {std}",
             "", f"{'module':40s} {'params':>14s} {'trainable':>14s}"]
    for r in info["parameters"]:
        lines.append(f"{r['module']:40s} {r['params']:>14,d} {r['trainable']:>14,d}")
    lines.append(f"{'total':40s} {info['total_params']:>14,d} {info['trainable_params']:>14,d}")
    lines.append("")
    lines.append("MACs (multiply-accumulates of matmuls and convolutions; 1 MAC = 2 FLOPs):")
    for view, macs in info["macs_per_image"].items():
        lines.append(f"  one {view} image: {macs / 1e9:8.3f} G")
    lines.append(f"  one pair:        {info['macs_per_pair'] / 1e9:8.3f} G")
    return "\n".join(lines)
