"""DINOv2 ViT/14 (FG²: ViT-L, frozen, float16; GeoDistill: ViT-B, frozen, float32) through timm, computing what
the official DINOv2 code computes (as vendored by FG² and loaded by GeoDistill).

timm's ``vit_{small,base,large}_patch14_dinov2`` have the official key names (the official ``mask_token`` is
kept here as an unused parameter so official checkpoints load strictly and counts match). What differs is the
position embedding at sizes other than 518 × 518: the official code resamples the stored 37 × 37 grid with
``interpolate(bicubic, scale_factor=((h + 0.1)/37, (w + 0.1)/37))`` in float32 — not timm's size-based,
antialiased resampling (2 % apart). ``DINOv2`` holds the stored 37 × 37 embedding and resamples it the official
way for each token grid; attention runs unfused by default (q·scale·kᵀ, softmax, ·v), which reproduced the
official float16 outputs bit for bit on CPU (fused SDPA: 2.5e-3 in float16, 5e-7 in float32).

Inputs are normalised images whose sides are multiples of 14 (each method crops or pads to that itself).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossview.errors import ConfigError

__all__ = ["DINOv2", "official_pos_embed", "convert_official_dinov2", "official_filename"]

_SIZES = {"small": "s", "base": "b", "large": "l", "giant": "g"}


def official_filename(name: str) -> str:
    """The file torch.hub / the DINOv2 authors publish for timm's ``name`` (``vit_large_patch14_dinov2`` ->
    ``dinov2_vitl14_pretrain.pth``)."""
    size = name.split("_")[1] if name.startswith("vit_") else ""
    return f"dinov2_vit{_SIZES.get(size, size)}14_pretrain.pth"


def official_pos_embed(pos_embed: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The official DINOv2 position embedding (1, 1 + h·w, D) for an h × w token grid, from the stored
    (1, 1 + n², D) one; computed in float32, returned in ``pos_embed``'s dtype."""
    n = int(round((pos_embed.shape[1] - 1) ** 0.5))
    if h * w == n * n and h == w:
        return pos_embed
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    d = grid.shape[-1]
    g = grid.float().reshape(1, n, n, d).permute(0, 3, 1, 2)
    g = F.interpolate(g, scale_factor=((h + 0.1) / n, (w + 0.1) / n), mode="bicubic", align_corners=False)
    if tuple(g.shape[-2:]) != (h, w):
        raise ConfigError(f"DINOv2 position embedding resampled to {tuple(g.shape[-2:])}, expected {(h, w)}")
    g = g.permute(0, 2, 3, 1).reshape(1, h * w, d)
    return torch.cat([cls, g.to(pos_embed.dtype)], 1)


class DINOv2(nn.Module):
    """A timm DINOv2 ViT/14 with the official position-embedding resampling.

    ``forward(x, blocks=None)`` returns ``{"patch": final-normed patch tokens (B, D, h, w), "cls": (B, D)}`` and,
    for each index in ``blocks``, ``"block{i}"``: the raw output of that block (B, 1 + h·w, D), class token first.
    """

    def __init__(self, name: str = "vit_large_patch14_dinov2", weights: Any = None, fused_attn: bool = False):
        super().__init__()
        import timm

        self.name = name
        if weights == "random":  # said explicitly: random weights (tests, timings)
            weights = None
        self.vit = timm.create_model(name.split(".")[0] if weights != "timm" else name, pretrained=weights == "timm",
                                     img_size=518, num_classes=0)
        if getattr(self.vit, "reg_token", None) is not None or getattr(self.vit, "no_embed_class", False):
            raise ConfigError(f"{name}: only DINOv2 ViTs without register tokens are supported")
        for blk in self.vit.blocks:
            blk.attn.fused_attn = bool(fused_attn)
        self.mask_token = nn.Parameter(torch.zeros(1, self.vit.embed_dim))  # official, unused in the forward
        self.embed_dim = self.vit.embed_dim
        if weights not in (None, "timm"):
            from crossview.safe_load import load_checkpoint

            self.load_official(load_checkpoint(weights, what=f"DINOv2 weights ({official_filename(name)})"))

    def load_official(self, state: dict[str, torch.Tensor]) -> None:
        """Load an official DINOv2 checkpoint (``dinov2_vitl14_pretrain.pth`` names) strictly."""
        converted, report = convert_official_dinov2(state, self)
        report.raise_if_failed()
        self.load_state_dict(converted, strict=True)

    def forward(self, x: torch.Tensor, blocks: list[int] | tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
        b, _, hh, ww = x.shape
        if hh % 14 or ww % 14:
            raise ConfigError(f"DINOv2 input sides must be multiples of 14, got {hh}×{ww}")
        h, w = hh // 14, ww // 14
        v = self.vit
        t = v.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([v.cls_token.expand(b, -1, -1).to(t.dtype), t], 1)
        t = t + official_pos_embed(v.pos_embed, h, w).to(t.dtype)
        out: dict[str, torch.Tensor] = {}
        wanted = set(blocks or ())
        for i, blk in enumerate(v.blocks):
            t = blk(t)
            if i in wanted:
                out[f"block{i}"] = t
        n = v.norm(t)
        out["cls"] = n[:, 0]
        out["patch"] = n[:, 1:].transpose(1, 2).reshape(b, self.embed_dim, h, w)
        return out


def convert_official_dinov2(state: dict[str, torch.Tensor], model: DINOv2):
    """Official DINOv2 names -> ours (``vit.`` prefix; ``mask_token`` kept at the top): strict, with a report."""
    from crossview.fine.registry import ConversionReport

    target = model.state_dict()
    report = ConversionReport(source=f"official DINOv2 ({model.name})")
    out = {}
    for key, tensor in state.items():
        new = key if key == "mask_token" else f"vit.{key}"
        if new not in target:
            report.unexpected.append(key)
        elif tuple(target[new].shape) != tuple(tensor.shape):
            report.misshaped.append(f"{key}: {tuple(tensor.shape)} vs ours {tuple(target[new].shape)}")
        else:
            out[new] = tensor
    report.missing = [k for k in target if k not in out]
    return out, report
