"""``crossview fine-model-info``: what a registered fine model is and how many parameters it has."""

from __future__ import annotations

from typing import Any

import torch

from crossview.fine.loading import load_fine
from crossview.fine.registry import arch_info, create_fine, fine_config, list_fine_models


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def fine_model_info(name: str, arch: str | None = None, backbone: str | None = None,
                    trust_checkpoint: bool = False) -> dict[str, Any]:
    """Parameters of a registered fine model (random weights, nothing downloaded), per top-level module, and for
    published architectures the official count: built with the official checkpoint's unused tensors kept
    (``keep_unused``) when the architecture has that switch. ``name`` may also be a checkpoint ``load_fine`` reads
    (an official release with ``arch`` and ``backbone``): it is loaded, and the answer says where its weights came
    from."""
    if name not in list_fine_models() or arch or backbone:
        return _loaded_info(name, arch, backbone, trust_checkpoint)
    cfg = fine_config(name)
    info = arch_info(name)
    no_fetch = {k: v for k, v in (("weights", None), ("pretrained", False)) if k in cfg}
    model = create_fine(name, **no_fetch)
    out: dict[str, Any] = {
        "name": name, "arch": cfg["arch"], "published": info.published or "ours (not a published model)",
        "official_repo": info.official_repo, "cameras": list(getattr(model, "cameras", ())),
        "parameters": _count(model),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "modules": {n: _count(m) for n, m in model.named_children()},
        "official_parameters": info.official_params,
    }
    if "keep_unused" in cfg:
        out["forward_used_parameters"] = _count(create_fine(name, **no_fetch, keep_unused=False))
        out["parameters_with_unused_official_tensors"] = _count(create_fine(name, **no_fetch, keep_unused=True))
    return out


def _loaded_info(source: str, arch: str | None, backbone: str | None, trust_checkpoint: bool) -> dict[str, Any]:
    model = load_fine(source, arch=arch, backbone=backbone, trust_checkpoint=trust_checkpoint)
    name = model.config.get("name", model.config["arch"])
    info = arch_info(model.config["arch"])
    out: dict[str, Any] = {
        "name": name, "arch": model.config["arch"], "published": info.published or "ours (not a published model)",
        "official_repo": info.official_repo, "cameras": list(getattr(model, "cameras", ())),
        "parameters": _count(model), "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "modules": {n: _count(m) for n, m in model.named_children()}, "official_parameters": info.official_params,
        "checkpoint": str(source),
    }
    if getattr(model, "release_files", None):  # an official release, converted now
        out["loaded_from"] = {"files": model.release_files, "conversion": model.conversion_report.summary()}
    elif getattr(model, "release_info", None):  # a checkpoint of ours (fine-convert / fine-release)
        out["loaded_from"] = model.release_info
    return out


def format_fine_info(info: dict[str, Any]) -> str:
    """The table ``crossview fine-model-info`` prints."""
    lines = [f"{info['name']}  (arch {info['arch']}: {info['published']})"]
    if info.get("official_repo"):
        lines.append(f"  official code: {info['official_repo']}")
    lines.append(f"  cameras: {', '.join(info['cameras'])}")
    for k, v in info["modules"].items():
        lines.append(f"  {k:28s} {v:>14,}")
    lines.append(f"  {'parameters':28s} {info['parameters']:>14,}  (trainable {info['trainable']:,})")
    if "forward_used_parameters" in info:
        lines.append(f"  {'used in the forward':28s} {info['forward_used_parameters']:>14,}")
        lines.append(f"  {'with unused official tensors':28s} {info['parameters_with_unused_official_tensors']:>14,}")
    if info.get("official_parameters"):
        lines.append(f"  {'official count (as released)':28s} {info['official_parameters']:>14,}")
    src = info.get("loaded_from") or {}
    src = src.get("converted_from", src)
    if info.get("checkpoint"):
        lines.append(f"  checkpoint: {info['checkpoint']}")
    for f in src.get("files", []):
        lines.append(f"    from {f['file']}: {', '.join(f.get('parts', [])) or 'weights'} ({f['tensors']} tensors)"
                     + (f"; ignored {', '.join(f['ignored'])}" if f.get("ignored") else ""))
    return "\n".join(lines)
