"""Small building blocks shared by our own fine-grained designs (PillarMatch, PlaneCorr)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
