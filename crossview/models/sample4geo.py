"""Sample4Geo (Deuser et al., ICCV 2023): one timm backbone shared by both views, its pooled feature as descriptor.

As the official model: ``timm.create_model(name, num_classes=0)`` (ConvNeXt: global average pool + head LayerNorm,
1024-d for ConvNeXt-B) plus a learnable ``logit_scale``; we L2-normalise in :meth:`Sample4Geo.embed`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossview.errors import ConfigError
from crossview.models.backbones import Backbone
from crossview.models.mfrgn import check_input


class Sample4Geo(nn.Module):
    def __init__(self, config: dict[str, Any]):
        super().__init__()
        cfg = self.config = config
        self.backbone = Backbone(cfg["backbone"], pretrained=cfg.get("pretrained", False),
                                 weights=cfg.get("backbone_weights"), kwargs=cfg.get("backbone_kwargs"),
                                 tag=cfg.get("backbone_tag"))
        cfg["backbone_source"] = self.backbone.weights_source
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        cfg["descriptor_dim"] = self.backbone.num_features

    def embed(self, x: torch.Tensor, view: str) -> torch.Tensor:
        """(B, 3, H, W) normalised images of ``view`` -> (B, D) float32 L2-normalised descriptors."""
        sizes = self.config["sizes"]
        if view not in sizes:
            raise ConfigError(f"{self.config.get('name', 'sample4geo')}: unknown view {view!r}; this model embeds "
                              f"{sorted(sizes)}")
        check_input(x, tuple(sizes[view]), view, self.config.get("name", "sample4geo"))
        return F.normalize(self.backbone.forward_pooled(x).float(), dim=-1)

    def forward(self, x: torch.Tensor, view: str) -> torch.Tensor:
        return self.embed(x, view)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)
