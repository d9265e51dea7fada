"""Building blocks shared by our own fine-grained designs (PillarMatch, PlaneCorr): the backbone choice, the
per-view encoders, conv blocks."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossview.fine.backbones import Backbone, feature_info_taps, is_efficientnet
from crossview.models.lite_weights import lite_variant


def conv_block(c_in: int, c_out: int, circular: bool = False) -> nn.Sequential:
    """conv 3×3 – GroupNorm(8) – GELU – conv 3×3; circular padding for panorama feature maps."""
    mode = "circular" if circular else "zeros"
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, padding_mode=mode), nn.GroupNorm(8, c_out), nn.GELU(),
                         nn.Conv2d(c_out, c_out, 3, 1, 1, padding_mode=mode))


def no_circular(block: nn.Sequential, f: torch.Tensor) -> torch.Tensor:
    """Run a circular-padded block with zero padding (pinhole images have no wrap-around)."""
    x = f
    for m in block:
        if isinstance(m, nn.Conv2d) and m.padding_mode == "circular":
            x = F.conv2d(x, m.weight, m.bias, m.stride, m.padding)
        else:
            x = m(x)
    return x


def make_backbone(cfg: dict[str, Any]) -> Backbone:
    """The frozen (or trainable) feature extractor of our designs (shared with PlaneCorr)."""
    name = cfg["backbone"]
    taps = list(cfg["out_indices"])
    if is_efficientnet(name):
        taps = feature_info_taps(name, taps)
    weights = None
    if cfg["pretrained"] and name != "tiny":
        weights = "lite" if lite_variant(name) is not None else "timm"
    return Backbone(name, taps, weights=weights, freeze=bool(cfg["freeze_backbone"]),
                    kwargs=cfg.get("backbone_kwargs") or None)


def add_view_encoders(module: nn.Module, cfg: dict[str, Any]) -> int:
    """Give ``module`` our designs' shared encoders — ``backbone`` (frozen or not), then a 1×1 projection to
    ``feat_dim`` and a residual conv block per view (``ground_in``/``ground_block`` with circular padding,
    ``aerial_in``/``aerial_block``) — and return ``feat_dim``."""
    module.backbone = make_backbone(cfg)
    c, d = sum(module.backbone.channels), int(cfg["feat_dim"])
    module.ground_in = nn.Conv2d(c, d, 1)
    module.ground_block = conv_block(d, d, circular=True)
    module.aerial_in = nn.Conv2d(c, d, 1)
    module.aerial_block = conv_block(d, d)
    return d
