"""FG²'s building blocks: multi-scale deformable attention in plain PyTorch, the BEV blocks, the descriptor heads
and the frozen backbone."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossview.errors import ConfigError


class DeformableAttention(nn.Module):
    """mmcv ``MultiScaleDeformableAttention`` with one level, batch-first, in plain PyTorch (docs/fine_fg2.md).

    ``forward(query, value, shape, ref)``: ``query`` (B, Nq, C); ``value`` (B, H·W, C) row-major over ``shape`` =
    (H, W) (or ``value_proj`` already applied: ``projected=True``); ``ref`` (B, Nq, R, 2) reference points as
    (column, row) fractions, R sets sharing the query's offsets and weights (the 11 heights). Returns
    (B, R, Nq, C) = output_proj(Σ_p w_p · v(ref + offset_p / (W, H))) + query — the module adds its query, as mmcv.
    Non-finite reference points sample zeros (the CUDA kernel's out-of-range rule).
    """

    def __init__(self, dim: int, heads: int = 8, points: int = 4):
        super().__init__()
        self.dim, self.heads, self.points = dim, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * points * 2)
        self.attention_weights = nn.Linear(dim, heads * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmcv's initialisation: zero offset weights with biases on a ring of ``heads`` directions scaled by the
        point index, zero attention logits, Xavier-uniform projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        ring = torch.stack([theta.cos(), theta.sin()], -1)
        ring = ring / ring.abs().max(-1, keepdim=True).values
        ring = ring.view(self.heads, 1, 2).repeat(1, self.points, 1)
        ring = ring * torch.arange(1, self.points + 1, dtype=torch.float32).view(1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(ring.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, value: torch.Tensor, shape: tuple[int, int], ref: torch.Tensor,
                projected: bool = False) -> torch.Tensor:
        b, nq, c = query.shape
        h, w = shape
        r = ref.shape[2]
        hd = c // self.heads
        v = value if projected else self.value_proj(value)
        if v.shape[1] != h * w:
            raise ConfigError(f"deformable attention: value has {v.shape[1]} tokens, spatial shape {h}×{w}")
        v = v.flatten(2).transpose(1, 2).reshape(b * self.heads, hd, h, w)
        off = self.sampling_offsets(query).view(b, nq, 1, self.heads, self.points, 2)
        aw = self.attention_weights(query).view(b, nq, self.heads, self.points).softmax(-1)
        norm = torch.tensor([w, h], dtype=off.dtype, device=off.device)
        ref = ref.to(off.dtype)
        if not bool(torch.isfinite(ref).all()):  # points the camera cannot see (KITTI: behind / at the camera)
            ref = torch.where(torch.isfinite(ref), ref, torch.full_like(ref, -4.0))
        loc = ref[:, :, :, None, None, :] + off / norm  # (B, Nq, R, heads, points, 2)
        # sample with the grid laid out (B·heads, points, Nq·R, 2): the long axis innermost (vectorised)
        grid = (2 * loc - 1).permute(0, 3, 4, 1, 2, 5).reshape(b * self.heads, self.points, nq * r, 2)
        sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        aw = aw.permute(0, 2, 3, 1)[..., None].expand(b, self.heads, self.points, nq, r)
        out = (sampled * aw.reshape(b * self.heads, 1, self.points, nq * r)).sum(2)
        out = out.view(b, c, nq, r).permute(0, 3, 2, 1)
        return self.output_proj(out) + query.unsqueeze(1)


class FFN(nn.Module):
    """mmcv ``FFN`` (2 fc layers, ReLU, no dropout in eval): x + fc2(relu(fc1(x))); keys ``layers.0.0``,
    ``layers.1``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.0)),
                                    nn.Linear(hidden, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class BEVBlock(nn.Module):
    """One lifting block (docs/fine_fg2.md): deformable self-attention over the query grid, deformable
    cross-attention into the ground features at every height with a softmax height selection, an FFN; post-norm."""

    def __init__(self, dim: int, heads: int, points: int, ffn_dim: int):
        super().__init__()
        self.self_attn = DeformableAttention(dim, heads, points)
        self.cross_attn = DeformableAttention(dim, heads, points)
        self.height_score = nn.Linear(dim, 1)
        self.ffn = FFN(dim, ffn_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def attend_self(self, q: torch.Tensor, shape: tuple[int, int], ref: torch.Tensor, double: bool) -> torch.Tensor:
        out = self.self_attn(q, q, shape, ref.expand(q.shape[0], -1, -1, -1))[:, 0]
        return out + q if double else out

    def attend_cross(self, q: torch.Tensor, value: torch.Tensor, shape: tuple[int, int], ref: torch.Tensor,
                     double: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(lifted queries (B, Nq, C), argmax height (B, Nq)); ``ref`` (B or 1, Nq, heights, 2)."""
        o = self.cross_attn(q, self.cross_attn.value_proj(value), shape, ref.expand(q.shape[0], -1, -1, -1),
                            projected=True)  # (B, heights, Nq, C), each with +q
        w = torch.softmax(self.height_score(o), dim=1)
        lifted = (w * o).sum(1)
        return (lifted + q if double else lifted), w.squeeze(-1).argmax(1)


class ResBlock(nn.Module):
    """The official pre-activation-named ``BasicBlock`` (stride 1, BatchNorm, convs without bias): relu(bn1(conv1 x))
    -> bn2(conv2 ·) + shortcut -> ReLU unless ``relu=False``; shortcut = 1×1 conv when the width changes."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor, relu: bool = True) -> torch.Tensor:
        short = self.shortcut(x) if hasattr(self, "shortcut") else x
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + short
        return F.relu(out) if relu else out


def sine_encoding(channels: int, h: int, w: int, device=None) -> torch.Tensor:
    """The LoFTR-style sine positional encoding (channels, h, w), float32: for k < channels/4, d_k =
    exp(2k·(−ln 10000/(channels/2))); channels 4k..4k+3 = sin(X·d_k), cos(X·d_k), sin(Y·d_k), cos(Y·d_k) with
    X = column + 1, Y = row + 1."""
    ones = torch.ones(h, w, device=device)
    y = ones.cumsum(0).unsqueeze(0)
    x = ones.cumsum(1).unsqueeze(0)
    div = torch.exp(torch.arange(0, channels // 2, 2, device=device).float() * (-math.log(10000.0) / (channels // 2)))
    div = div.view(-1, 1, 1)
    pe = torch.zeros(channels, h, w, device=device)
    pe[0::4], pe[1::4] = torch.sin(x * div), torch.cos(x * div)
    pe[2::4], pe[3::4] = torch.sin(y * div), torch.cos(y * div)
    return pe


class LinearAttentionLayer(nn.Module):
    """A LoFTR encoder layer with linear attention (φ = elu + 1), self-attention only (FG²'s descriptor heads)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.merge = nn.Linear(dim, dim, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, 2 * dim, bias=False), nn.ReLU(),
                                 nn.Linear(2 * dim, dim, bias=False))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        hd = c // self.heads
        q = F.elu(self.q_proj(x).view(b, n, self.heads, hd)) + 1
        k = F.elu(self.k_proj(x).view(b, n, self.heads, hd)) + 1
        v = self.v_proj(x).view(b, n, self.heads, hd) / n
        kv = torch.einsum("bnhd,bnhe->bhde", k, v)
        z = 1.0 / (torch.einsum("bnhd,bhd->bnh", q, k.sum(1)) + 1e-6)
        msg = torch.einsum("bnhd,bhde,bnh->bnhe", q, kv, z) * n
        msg = self.norm1(self.merge(msg.reshape(b, n, c)))
        msg = self.norm2(self.mlp(torch.cat([x, msg], -1)))
        return x + msg


class Transformer(nn.Module):
    """Sine encoding + ``layers`` linear-attention layers on a (B, C, H, W) map (official ``att_layer``)."""

    def __init__(self, dim: int, layers: int, heads: int):
        super().__init__()
        self.layers = nn.ModuleList(LinearAttentionLayer(dim, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = (x + sine_encoding(c, h, w, x.device).to(x.dtype)).flatten(2).transpose(1, 2)
        for layer in self.layers:
            x = layer(x)
        return x.transpose(1, 2).reshape(b, c, h, w)


class DescriptorHead(nn.Module):
    """ResNet blocks to ``dims`` -> transformer -> last block (no final ReLU) -> L2 over channels (official
    ``DeepResBlock_desc``; ``grd_projector`` / ``sat_projector``)."""

    def __init__(self, cin: int, dims: tuple[int, ...], *, desc_dim: int, layers: int, heads: int,
                 eps: float = 1e-10):
        super().__init__()
        chans = [cin, *dims]
        for i in range(len(dims)):
            self.add_module(f"resblock{i + 1}", ResBlock(chans[i], chans[i + 1]))
        self.att_layer = Transformer(dims[-1], layers, heads)
        self.add_module(f"resblock{len(dims) + 1}", ResBlock(dims[-1], desc_dim))
        self.n, self.eps = len(dims), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n):
            x = getattr(self, f"resblock{i + 1}")(x)
        x = getattr(self, f"resblock{self.n + 1}")(self.att_layer(x), relu=False)
        return F.normalize(x, p=2, dim=1, eps=self.eps)


class FG2Backbone(nn.Module):
    """The shared frozen feature extractor: a DINOv2 ViT/14 in ``dtype`` (final-normed patch tokens of the image
    cropped top-left to multiples of 14, as float32) or a CNN of ``crossview.fine.backbones`` (taps upsampled to
    the first and concatenated)."""

    def __init__(self, name: str | None, *, weights: Any = None, taps: tuple[int, ...] = (), dtype: str = "float16",
                 channels: int = 0):
        super().__init__()
        self.freeze = True
        self._copies: dict[tuple, nn.Module] = {}  # (dtype, device) -> a frozen copy of the ViT (not a submodule)
        self._register_load_state_dict_pre_hook(lambda *a, **k: self._copies.clear())
        self.name = name
        self.is_dino = name is not None and "dinov2" in name
        if name is None:  # features are supplied by the caller (official fixtures, cached features)
            self.channels, self.stride = channels, 14
        elif self.is_dino:
            from crossview.fine.dinov2 import DINOv2

            if weights not in (None, "timm", "random") and not Path(str(weights)).exists():
                raise ConfigError(f"fg2 backbone_weights {weights!r}: no such file (give the official "
                                  "dinov2_vitl14_pretrain.pth, or None for random weights)")
            self.dino = DINOv2(name, weights=weights)
            self.dtype = getattr(torch, dtype)
            self.dino.to(self.dtype)
            self.channels, self.stride = self.dino.embed_dim, 14
        else:
            from crossview.fine.backbones import Backbone, feature_info_taps, is_efficientnet

            taps = feature_info_taps(name, taps) if is_efficientnet(name) else list(taps)
            self.cnn = Backbone(name, taps, weights=weights, freeze=True)
            self.channels, self.stride = sum(self.cnn.channels), self.cnn.strides[0]
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> FG2Backbone:
        super().train(False)  # frozen: eval mode always (BatchNorm statistics, no dropout)
        return self

    def _vit_for(self, device: torch.device) -> tuple[nn.Module, torch.dtype]:
        """(ViT, dtype) to compute with on ``device``: the module itself, except for float16 weights on a CPU
        (emulated there): a cached float32 copy (the exact upcast), or bfloat16 under CPU bf16 autocast."""
        if device.type != "cpu" or self.dtype != torch.float16:
            return self.dino, self.dtype
        bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        dtype = torch.bfloat16 if bf16 else torch.float32
        key = (dtype, str(device))
        if key not in self._copies:
            self._copies[key] = copy.deepcopy(self.dino).to(dtype).eval().requires_grad_(False)
        return self._copies[key], dtype

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.name is None:
            raise ConfigError("this fg2 model has no backbone (backbone=None): pass features, not images")
        if self.is_dino:
            h, w = x.shape[-2:]
            x = x[:, :, : 14 * (h // 14), : 14 * (w // 14)]
            dino, dtype = self._vit_for(x.device)
            # the ViT runs in its own dtype (float16 as released): an enclosing autocast (bf16 on CPU) is switched
            # off here, since autocast cannot mix it with float16 weights
            with torch.autocast(device_type=x.device.type, enabled=False):
                return dino(x.to(dtype))["patch"].float()
        from crossview.fine.backbones import concat_upsampled

        return concat_upsampled(self.cnn(x)).float()

