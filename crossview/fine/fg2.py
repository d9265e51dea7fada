"""FG² (Xia & Alahi, CVPR 2025) as published: vita-epfl/FG2 @a55d9d13, VIGOR (panorama) and KITTI (pinhole) models.

Module for module (docs/fine_fg2.md):

1. one frozen DINOv2 ViT-L/14 (``crossview.fine.dinov2``: timm with the official +0.1 bicubic position-embedding
   resampling, unfused attention) run in float16 on images in [0, 1] cropped top-left to multiples of 14; its
   final-normed patch tokens, as float32, are the ground and the aerial features;
2. a ground query grid (41 × 41 × 1024 over 71 m, a seeded random tensor in the authors' GPU build; the KITTI
   model: the 21 × 41 half in front of the camera over 99 m) lifted by 6 post-norm blocks: multi-scale
   deformable self-attention over the grid, deformable cross-attention into the ground features once per height
   (11 heights over 20 m / 25 m), a 1024 -> 1 height score with a softmax over heights, an FFN; multi-scale
   deformable attention is written here in plain PyTorch (``grid_sample``, bilinear, zero padding,
   align_corners=False: the maths of mmcv's kernel, no mmcv);
3. descriptor heads (ground: the lifted grid; aerial: the DINO map resized bilinearly to 41 × 41): three ResNet
   blocks 1024 -> 512 -> 256 -> 128, a sine positional encoding, three linear-attention layers, a fourth block, L2;
4. similarity / 0.1 over all cell pairs, a learned dustbin row and column, dual softmax -> the matching score P;
5. 1,024 matches drawn from P (multinomial), weighted 2-D Procrustes (R, t) with ``ground = R·aerial + t`` in
   grid units (``grid_size_h`` per tile side); at test time optionally the official RANSAC (20 × 8,192 draws,
   100 three-point hypotheses each, soft-inlier scoring, 4 refinements), seedable and generator-exact;
6. training: the virtual-correspondence error (VCE) on a 10 × 10 grid spanning 5 units plus β × a bidirectional
   InfoNCE on the raw similarity, positives from the true pose (``TRAIN_PRESETS``; the trainer is
   ``crossview.fine.train_fg2``).

Official quirks kept in the published variants (released weights depend on them), each with the clean behaviour as
a config option:

- ``block4_ffn="ffn1"``: block 4 calls the FFN of block 1 again (``grd_ffn4`` is stored but never used);
  ``"own"`` uses block 4's own FFN.
- ``attention_residual="double"``: mmcv's deformable attention already adds its query and FG² adds it again, so
  each attention step yields 2·query + attention; ``"single"`` adds it once.
- ``query_grid="fixed"``: built on a GPU the official query grid is a plain tensor (a seeded ``torch.rand``, never
  trained, absent from checkpoints); ``"learned"`` makes it a parameter (what a CPU build of the official code
  does). ``convert_official`` regenerates the missing grid (``official_query_grid``).
- ``pose_convention="official"``: the released VIGOR loader labels a rolled panorama with t = −c (the camera
  position c, not −R·c) and ``vigor_eval`` reads the position as −t; ``"rigid"`` uses ground = R·(aerial − c)
  throughout. Both agree at known orientation (R = I).
- In training a rank-1 Procrustes covariance in any element skips the whole step (``crossview.fine.train_fg2``); at
  test time ``predict`` falls back per element (tile centre, ``ok`` False) rather than dropping the batch.

Frames. Official grid coordinates are (x, y) = (down the tile / south, right / east) for the aerial grid and
(backward, right) for the ground grid (a north-aligned panorama's centre column looks along −x). ``predict``
returns metres east/north of the tile centre and headings clockwise from north (``crossview.fine.data``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossview.errors import ConfigError
from crossview.fine.preprocess import LITE, UNIT, normalize
from crossview.fine.registry import ConversionReport, ReleasePart, convert_keys, register_arch, register_fine

__all__ = ["FG2", "DeformableAttention", "DescriptorHead", "official_procrustes", "official_ransac",
           "official_query_grid", "convert_official", "export_official", "reproduce_official",
           "TRAIN_PRESETS", "DEFAULTS"]

DEFAULTS: dict[str, Any] = {
    "arch": "fg2",
    "camera": "panorama",  # panorama: the VIGOR model (spherical lifting) | pinhole: the KITTI model (K, front half)
    "backbone": "vit_large_patch14_dinov2",  # a DINOv2 ViT/14, a CNN of fine.backbones, or None (features given)
    # DINOv2: the official dinov2_vitl14_pretrain.pth | None (none yet: an official head then needs the file) |
    # "random" (said explicitly: tests, timings); CNNs: None | "lite"
    "backbone_weights": None,
    "backbone_taps": [1, 2],  # CNNs only: timm feature_info indices, upsampled to the first and concatenated
    "backbone_dtype": "float16",  # DINOv2 runs in this dtype (the official float16); features return as float32
    # on a CPU, where float16 arithmetic is emulated (one fg2_vigor call: minutes): "auto" computes with a float32
    # copy of the float16 weights (exact upcast), bfloat16 under bf16 autocast (--precision bf16);
    # "as_weights" keeps float16 there too
    "backbone_cpu_dtype": "auto",
    "ground_size": [714, 1428],  # (H, W) of a panorama fed to the backbone (released VIGOR)
    "pinhole_size": [364, 1232],  # (H, W) of a pinhole photo (released KITTI)
    "aerial_size": 630,  # tile side fed to the backbone (VIGOR 630, KITTI 504)
    "mean": list(UNIT[0]),  # the official DINO input: ToTensor only, no mean/std
    "std": list(UNIT[1]),
    "embed_dim": 1024,  # = the backbone's channels
    "num_heads": 8,
    "num_points": 4,
    "ffn_dim": 1024,  # mmcv FFN's default feedforward_channels
    "num_blocks": 6,
    "grd_bev_res": 41,
    "grd_height_res": 11,
    "sat_bev_res": 41,
    "grid_size_h": 71.0,  # ground grid side in metres; the aerial grid spans the tile in the same units
    "grid_size_v": 20.0,  # height span (metres, centred on the camera)
    "block_dims": [512, 256, 128],  # descriptor ResNet blocks; the last is the transformer width
    "desc_dim": 128,
    "att_layers": 3,
    "att_heads": 8,
    "temperature": 0.1,
    "eps": 1e-10,  # [Constants] epsilon (projection, L2 normalisation)
    "num_matches": 1024,
    "sample_seed": 100,  # generator seed of the test-time match draw (the fixture's torch.manual_seed(100))
    "ransac": {"it_matches": 20, "num_samples": 8192, "it_ransac": 100, "min_set": 3, "refinements": 4,
               "th_inlier": 2.5, "th_soft_inlier": 5.0, "seed": 101},
    "query_grid": "fixed",  # fixed (the authors' CUDA build: never trained, not in checkpoints) | learned
    "block4_ffn": "ffn1",  # ffn1 (official: block 4 reuses grd_ffn1) | own
    "attention_residual": "double",  # double (official: 2·query + attention) | single
    "pose_convention": "official",  # official (t = −c label, position read as −t) | rigid (ground = R·(aerial − c))
    "prior_deg": 10.0,  # pinhole training: the tile is turned to a heading off the truth by U(±prior_deg) (KITTI)
    "loss": {"beta": 1.0, "grid_size": 5.0, "points": 10},
}
CAMERAS = ("panorama", "pinhole")
_OFFICIAL = "vita-epfl/FG2 @a55d9d13"


def check_config(cfg: dict[str, Any]) -> None:
    """Refuse inconsistent FG² configs with a message naming the key."""
    choices = {"camera": ("panorama", "pinhole"), "query_grid": ("fixed", "learned"), "block4_ffn": ("ffn1", "own"),
               "attention_residual": ("double", "single"), "pose_convention": ("official", "rigid")}
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            raise ConfigError(f"fg2 {key} must be one of {allowed}, got {cfg[key]!r}")
    if cfg["embed_dim"] % cfg["num_heads"]:
        raise ConfigError(f"fg2 embed_dim {cfg['embed_dim']} is not divisible by num_heads {cfg['num_heads']}")
    width = cfg["block_dims"][-1]
    if width % cfg["att_heads"] or width % 4:
        raise ConfigError(f"fg2 block_dims[-1] = {width} must be divisible by att_heads {cfg['att_heads']} and 4")
    if cfg["camera"] == "pinhole" and cfg["pose_convention"] == "official":
        raise ConfigError("fg2 pose_convention='official' describes the VIGOR loader; pinhole models use 'rigid'")
    for key in ("loss", "ransac"):
        unknown = set(cfg[key]) - set(DEFAULTS[key])
        if unknown:
            raise ConfigError(f"unknown fg2 {key} keys {sorted(unknown)}; known: {sorted(DEFAULTS[key])}")


# ---------------------------------------------------------------------------------------------------------------
# Grids (create_metric_grid, the lifting's reference points)


def metric_grid(size: float, res: int, front_only: bool = False) -> torch.Tensor:
    """Official metric cell centres (N, 2) float32, row-major: x = linspace(−size/2, size/2, res)[row] (the KITTI
    ground grid: linspace(−size/2, 0, res//2 + 1)), y = linspace(−size/2, size/2, res)[col]; float64 -> float32."""
    x = np.linspace(-size / 2, 0, res // 2 + 1) if front_only else np.linspace(-size / 2, size / 2, res)
    y = np.linspace(-size / 2, size / 2, res)
    gx, gy = np.meshgrid(x, y, indexing="ij")
    return torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], -1)).float()


def self_reference_points(rows: int, cols: int) -> torch.Tensor:
    """(rows·cols, 2) reference points (x = column fraction, y = row fraction) of the self-attention, row-major."""
    r, c = np.meshgrid(np.linspace(0, 1, rows), np.linspace(0, 1, cols), indexing="ij")
    return torch.from_numpy(np.stack([c.ravel(), r.ravel()], -1)).float()


def panorama_reference_points(res: int, heights: int, size_h: float, size_v: float, eps: float) -> torch.Tensor:
    """(res², heights, 2) panorama reference points (column, row fractions) of the pillar points, computed in float64
    exactly as the official code (ε in the azimuth and zenith) and cast to float32 (docs/fine_fg2.md, quirks)."""
    x = np.linspace(-size_h / 2, size_h / 2, res)
    z = np.linspace(-size_v / 2, size_v / 2, heights)
    gx, gy, gz = np.meshgrid(x, x, z, indexing="ij")
    phi = np.sign(gy + eps) * np.arccos(gx / (np.sqrt(gx**2 + gy**2) + eps))
    theta = np.arccos(gz / (np.sqrt(gx**2 + gy**2 + gz**2) + eps))
    phi = 2 * np.pi - phi
    phi[phi > 2 * np.pi] -= 2 * np.pi
    ref = np.stack([phi / (2 * np.pi), theta / np.pi], -1).reshape(res * res, heights, 2)
    return torch.from_numpy(ref).float()


def pinhole_points(res: int, heights: int, size_h: float, size_v: float) -> torch.Tensor:
    """(rows·res·heights, 3) camera-frame points (x right, y down, z forward) of the KITTI pillars, float32: grid
    (x back, y right, z up) -> (y, −z, −x); rows = res//2 + 1 in front of the camera."""
    x = np.linspace(-size_h / 2, 0, res // 2 + 1)
    y = np.linspace(-size_h / 2, size_h / 2, res)
    z = np.linspace(-size_v / 2, size_v / 2, heights)
    gx, gy, gz = np.meshgrid(x, y, z, indexing="ij")
    pts = np.stack([gy, -gz, -gx], -1).reshape(-1, 3)
    return torch.from_numpy(pts).float()


def pinhole_intrinsics(fov_deg: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """K (B, 3, 3) of upright pinhole photos of ``width`` × ``height`` pixels with horizontal FoV ``fov_deg`` (B,):
    square pixels, principal point at the image centre (continuous pixel coordinates, as ``grid_sample``)."""
    f = (width / 2) / torch.tan(torch.deg2rad(fov_deg.float()) / 2)
    k = torch.zeros(fov_deg.shape[0], 3, 3, dtype=torch.float32, device=fov_deg.device)
    k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = f, f, width / 2, height / 2, 1.0
    return k


# ---------------------------------------------------------------------------------------------------------------
# Blocks


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

    def __init__(self, cin: int, dims: list[int], desc_dim: int, layers: int, heads: int, eps: float = 1e-10):
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

    def __init__(self, name: str | None, weights: Any, taps: list[int], dtype: str, channels: int = 0,
                 cpu_dtype: str = "auto"):
        super().__init__()
        if cpu_dtype not in ("auto", "as_weights"):
            raise ConfigError(f"fg2 backbone_cpu_dtype {cpu_dtype!r}: choose auto or as_weights")
        self.freeze = True
        self.cpu_dtype = cpu_dtype
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
        """(ViT, dtype) to compute with on ``device``: the module itself, except for float16 weights on a CPU with
        ``cpu_dtype="auto"``: a cached float32 copy (the exact upcast), or bfloat16 under CPU bf16 autocast."""
        if device.type != "cpu" or self.dtype != torch.float16 or self.cpu_dtype == "as_weights":
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


# ---------------------------------------------------------------------------------------------------------------
# Pose: the official Procrustes and RANSAC (utils.py of the official code; docs/fine_fg2.md)


def official_procrustes(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor | None = None,
                        eps: float = 1e-16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(R (B, 2, 2), t (B, 1, 2), rank_ok (B,)) with ``b ≈ R·a + t`` for point sets (B, N, 2).

    Weighted (``w`` (B, N)): centroids with w / (Σ|w| + eps), the covariance with the *raw* weights (the official
    ``use_mask`` variant); unweighted: plain means. SVD H = U S Vᵀ, Z = diag(1, sign det(U·Vᵀ)), R = V·Z·Uᵀ,
    t = b̄ − ā·Rᵀ. ``rank_ok`` is False where ``matrix_rank(H) == 1`` (the official test; rank 0 passes)."""
    if w is not None:
        wn = (w / (w.abs().sum(1, keepdim=True) + eps)).unsqueeze(-1)
        a_mean, b_mean = (wn * a).sum(1, keepdim=True), (wn * b).sum(1, keepdim=True)
        h = (a - a_mean).transpose(1, 2) @ (w.unsqueeze(-1) * (b - b_mean))
    else:
        a_mean, b_mean = a.mean(1, keepdim=True), b.mean(1, keepdim=True)
        h = (a - a_mean).transpose(1, 2) @ (b - b_mean)
    rank_ok = torch.linalg.matrix_rank(h) != 1
    u, _, vh = torch.linalg.svd(h)
    v = vh.transpose(1, 2)
    z = torch.eye(2, dtype=h.dtype, device=h.device).unsqueeze(0).repeat(h.shape[0], 1, 1)
    z[:, -1, -1] = torch.sign(torch.linalg.det(u @ v.transpose(1, 2)))
    r = v @ z @ u.transpose(1, 2)
    return r, b_mean - a_mean @ r.transpose(1, 2), rank_ok


def _distances(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (((r @ x.transpose(2, 1)).transpose(2, 1) + t - y).pow(2).sum(-1) + 1e-6).sqrt()


def soft_inliers(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, t: torch.Tensor, th: float) -> torch.Tensor:
    """Σ sigmoid(5/th · (th − d)) over the pairs, d = √(‖R·x + t − y‖² + 1e-6); (B, 1)."""
    return torch.sigmoid(5.0 / th * (th - _distances(x, y, r, t))).sum(-1, keepdim=True)


def _minimal_sets(w: torch.Tensor, k: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` draws of ``k`` indices without replacement from weights ``w`` (B, N): (n, B, k), equal to ``n``
    successive ``torch.multinomial(w, k, generator=generator)`` calls on the CPU (one ``exponential_`` for all)."""
    if w.device.type != "cpu":
        return torch.stack([torch.multinomial(w, k, generator=generator) for _ in range(n)])
    q = torch.empty((n, *w.shape), dtype=w.dtype).exponential_(generator=generator)
    return torch.topk(w.unsqueeze(0) / q, k, dim=-1).indices


def official_ransac(prob: torch.Tensor, sat_xy: torch.Tensor, grd_xy: torch.Tensor, it_matches: int = 20,
                    num_samples: int = 8192, it_ransac: int = 100, min_set: int = 3, refinements: int = 4,
                    th_inlier: float = 2.5, th_soft_inlier: float = 5.0,
                    generator: torch.Generator | None = None) -> dict[str, Any]:
    """The official probabilistic Procrustes RANSAC (``e2eProbabilisticProcrustesSolver.estimate_pose``) on the
    matching score ``prob`` (B, N_sat, N_grd) with cell coordinates ``sat_xy`` (N_sat, 2), ``grd_xy`` (N_grd, 2).

    Every random draw is ``torch.multinomial`` (without replacement) from ``generator`` (None: the default CPU
    generator), in the official order, so that after ``torch.manual_seed(101)`` on a bit-identical score it
    returns the official pose: for each of ``it_matches`` rounds, ``num_samples`` pairs from P, then ``it_ransac``
    minimal sets of ``min_set`` pairs from their weights -> unweighted Procrustes -> skipped for the whole batch if
    any element is rank-1 or non-finite, else scored by soft inliers (threshold ``th_soft_inlier``); the best
    hypothesis per element (first maximum) is refined up to ``refinements`` times by weighted Procrustes on its
    round's hard inliers (≤ ``th_inlier``) while their count grows. Returns ``R`` (B, 2, 2), ``t`` (B, 1, 2),
    ``best_soft_inliers`` (B, 1) (threshold ``th_inlier``; (B,) zeros and a zero pose if no hypothesis was
    valid), ``valid_hypotheses``, ``inliers`` (B, num_samples) of the final refinement."""
    probs = prob.detach()
    b, _, n_grd = probs.shape
    flat = probs.reshape(b, -1)
    rows = torch.arange(b, device=probs.device)
    hyp_r, hyp_t, hyp_s, hyp_round, rounds = [], [], [], [], []
    for i in range(it_matches):
        idx = torch.multinomial(flat, num_samples, generator=generator)
        x = sat_xy[torch.div(idx, n_grd, rounding_mode="trunc")]
        y = grd_xy[idx % n_grd]
        w = flat.gather(1, idx)
        rounds.append((x, y))
        # the round's it_ransac minimal sets at once, with the very draws of the official one-by-one loop:
        # torch.multinomial without replacement is top-k of w / q with q ~ Exp(1) from one exponential_ call, and
        # CPU exponential_ fills a tensor in order, so one call for the stacked shape gives the same q
        # (tests/test_fg2.py compares with the loop); Procrustes and soft inliers are then solved for all at once
        pick = _minimal_sets(w, min_set, it_ransac, generator)
        xk = x[rows[None, :, None], pick].flatten(0, 1)  # (it_ransac * B, min_set, 2)
        yk = y[rows[None, :, None], pick].flatten(0, 1)
        r, t, rank_ok = official_procrustes(xk, yk)
        r, t = r.view(it_ransac, b, 2, 2), t.view(it_ransac, b, 1, 2)
        # a hypothesis is skipped for the whole batch if any element is rank-1 or non-finite
        valid = (rank_ok.view(it_ransac, b).all(1) & torch.isfinite(r).flatten(1).all(1)
                 & torch.isfinite(t).flatten(1).all(1))
        keep = valid.nonzero().flatten()
        if len(keep) == 0:
            continue
        rv, tv = r[keep], t[keep]  # (K, B, ...)
        k = len(keep)
        sk = soft_inliers(x.repeat(k, 1, 1), y.repeat(k, 1, 1), rv.flatten(0, 1), tv.flatten(0, 1), th_soft_inlier)
        sk = sk.view(k, b, 1)
        hyp_r.extend(rv.unbind(0))
        hyp_t.extend(tv.unbind(0))
        hyp_s.extend(sk.unbind(0))
        hyp_round.extend([i] * k)
    if not hyp_r:
        return {"R": torch.zeros(b, 2, 2, dtype=probs.dtype), "t": torch.zeros(b, 1, 2, dtype=probs.dtype),
                "best_soft_inliers": torch.zeros(b, dtype=probs.dtype), "valid_hypotheses": 0,
                "inliers": torch.zeros(b, num_samples, dtype=probs.dtype)}
    scores = torch.cat(hyp_s, 1)
    best = scores.argmax(1)
    r = torch.stack(hyp_r, 1)[rows, best]
    t = torch.stack(hyp_t, 1)[rows, best]
    xb = torch.stack([rounds[hyp_round[int(best[k])]][0][k] for k in range(b)])
    yb = torch.stack([rounds[hyp_round[int(best[k])]][1][k] for k in range(b)])
    inl_ref = torch.zeros(b, num_samples, dtype=probs.dtype, device=probs.device)
    previous = min_set * torch.ones_like(scores[rows, best])
    for _ in range(refinements):
        inl = ((th_inlier - _distances(xb, yb, r, t)) >= 0).to(probs.dtype)
        count = inl.sum(-1)
        refine = (count >= min_set) & (count > previous)
        previous[refine] = count[refine]
        if not bool(refine.any()):
            break
        inl_ref[refine] = inl[refine]
        r_new, t_new, _ = official_procrustes(xb[refine], yb[refine], inl_ref[refine])
        r[refine], t[refine] = r_new, t_new
    return {"R": r, "t": t, "best_soft_inliers": soft_inliers(xb, yb, r, t, th_inlier),
            "valid_hypotheses": len(hyp_r), "inliers": inl_ref}


# ---------------------------------------------------------------------------------------------------------------
# The model


def _rotation(deg: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise 2-D rotations (B, 2, 2) by ``deg`` degrees."""
    th = torch.deg2rad(deg.float())
    c, s = torch.cos(th), torch.sin(th)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def turn_tiles(images: torch.Tensor, heading_deg: torch.Tensor) -> torch.Tensor:
    """North-up tiles (or feature maps) (B, C, S, S) turned about their centre so that the direction
    ``heading_deg`` (B,) (clockwise from north) points up (bilinear, zeros outside), as the KITTI loader turns each
    tile to the vehicle's heading."""
    th = torch.deg2rad(heading_deg.float().to(images.device))
    c, s = torch.cos(th), torch.sin(th)
    # output (x right, y down) normalised -> source: rotate clockwise by the heading
    theta = torch.stack([torch.stack([c, -s, torch.zeros_like(c)], -1),
                         torch.stack([s, c, torch.zeros_like(c)], -1)], -2)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class FG2(nn.Module):
    """The published FG²; ``forward`` takes backbone features, ``predict`` / ``loss`` take batches
    (``crossview.fine.data`` layout). ``config`` is a plain dict (``crossview.fine.fine_config("fg2_vigor")``)."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        check_config(cfg)
        self.config = copy.deepcopy(cfg)
        self.cameras = (cfg["camera"],)
        d = int(cfg["embed_dim"])
        self.backbone = FG2Backbone(cfg["backbone"], cfg["backbone_weights"], cfg["backbone_taps"],
                                    cfg["backbone_dtype"], d, cfg["backbone_cpu_dtype"])
        if self.backbone.channels != d:
            raise ConfigError(f"fg2 embed_dim {d} must equal the backbone's feature channels "
                              f"({cfg['backbone']}: {self.backbone.channels}); set embed_dim or backbone_taps")
        res, n_h = int(cfg["grd_bev_res"]), int(cfg["grd_height_res"])
        self.rows = res if cfg["camera"] == "panorama" else res // 2 + 1
        self.dustbin = nn.Parameter(torch.tensor(1.0))
        grid = torch.rand(self.rows, res, d)  # the official init (CPU generator), redrawn at every construction
        if cfg["query_grid"] == "learned":
            self.query_grid = nn.Parameter(grid)
        else:
            self.register_buffer("query_grid", grid)
        self.blocks = nn.ModuleList(BEVBlock(d, cfg["num_heads"], cfg["num_points"], cfg["ffn_dim"])
                                    for _ in range(int(cfg["num_blocks"])))
        dims = [int(c) for c in cfg["block_dims"]]
        args = (d, dims, int(cfg["desc_dim"]), int(cfg["att_layers"]), int(cfg["att_heads"]), float(cfg["eps"]))
        self.ground_head = DescriptorHead(*args)
        self.aerial_head = DescriptorHead(*args)
        self.register_buffer("self_ref", self_reference_points(self.rows, res).view(1, -1, 1, 2), persistent=False)
        self.register_buffer("sat_xy", metric_grid(cfg["grid_size_h"], cfg["sat_bev_res"]), persistent=False)
        self.register_buffer("grd_xy", metric_grid(cfg["grid_size_h"], res, cfg["camera"] == "pinhole"),
                             persistent=False)
        if cfg["camera"] == "panorama":
            ref = panorama_reference_points(res, n_h, cfg["grid_size_h"], cfg["grid_size_v"], cfg["eps"])
            self.register_buffer("cross_ref", ref.unsqueeze(0), persistent=False)
        else:
            pts = pinhole_points(res, n_h, cfg["grid_size_h"], cfg["grid_size_v"])
            self.register_buffer("cam_points", pts, persistent=False)

    # -- sizes and features ------------------------------------------------------------------------------------
    def input_sizes(self, camera: str = "panorama") -> tuple[tuple[int, int], int]:
        """(ground (H, W), aerial side) the data loader should produce for ``camera``."""
        if camera not in self.cameras:
            raise ConfigError(f"{self.config.get('name', 'fg2')} places {self.cameras[0]} images, not {camera} "
                              f"(fg2_vigor / fg2_tiny: panoramas; fg2_kitti / fg2_tiny_kitti: pinhole photos)")
        g = self.config["pinhole_size"] if camera == "pinhole" else self.config["ground_size"]
        return (int(g[0]), int(g[1])), int(self.config["aerial_size"])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, embed_dim, h, w) float32 of images (B, 3, H, W) in [0, 1] (cacheable: frozen)."""
        return self.backbone(normalize(images, self.config["mean"], self.config["std"]))

    def head_parameters(self) -> list[nn.Parameter]:
        """The matching head's parameters (everything but the frozen backbone): the official ``CVM``."""
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]

    # -- forward ------------------------------------------------------------------------------------------------
    def _pinhole_ref(self, fov: torch.Tensor, k: torch.Tensor | None, hw: tuple[int, int]):
        """Reference points (B, Nq, heights, 2) and cell validity (B, Nq) of the KITTI lifting: u = (K·p)₀/(K·p)₂/W,
        v = (K·p)₁/(K·p)₂/H, a cell kept when any of its heights projects into [0, 1]²."""
        h, w = hw
        if k is None:
            k = pinhole_intrinsics(fov.to(self.cam_points.device), h, w)
        proj = k.float() @ self.cam_points.t().unsqueeze(0)
        u = proj[:, 0] / proj[:, 2] / w
        v = proj[:, 1] / proj[:, 2] / h
        n_h = int(self.config["grd_height_res"])
        u, v = u.view(k.shape[0], -1, n_h), v.view(k.shape[0], -1, n_h)
        keep = ((u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)).any(-1)
        return torch.stack([u, v], -1), keep

    def forward(self, ground_feat: torch.Tensor, aerial_feat: torch.Tensor, fov: torch.Tensor | None = None,
                camera_k: torch.Tensor | None = None, ground_hw: tuple[int, int] | None = None) -> dict[str, Any]:
        """Matching from backbone features: ``ground_feat`` (B, C, h, w), ``aerial_feat`` (B, C, h', w').

        Pinhole models need ``fov`` (B,) degrees (or ``camera_k`` (B, 3, 3)) for images of ``ground_hw``
        (default ``pinhole_size``). Returns ``prob`` (B, N_sat, N_grd) (the matching score P), ``sim`` (the raw
        similarity / temperature), ``grd_desc``, ``sat_desc`` (B, D, rows, cols), ``height_index`` (B, rows, cols,
        1) of the last block and ``valid`` (B, N_grd) ground cells (all True for panoramas)."""
        cfg = self.config
        b, c, h, w = ground_feat.shape
        if c != cfg["embed_dim"] or aerial_feat.shape[1] != c:
            raise ConfigError(f"fg2 ({cfg.get('name', 'fg2')}) takes {cfg['embed_dim']}-channel features, got ground "
                              f"{tuple(ground_feat.shape)} and aerial {tuple(aerial_feat.shape)}")
        res = int(cfg["grd_bev_res"])
        q = self.query_grid.reshape(1, -1, c).expand(b, -1, -1)
        value = ground_feat.permute(0, 2, 3, 1).reshape(b, h * w, c)
        if cfg["camera"] == "panorama":
            ref, valid = self.cross_ref, torch.ones(b, q.shape[1], dtype=torch.bool, device=q.device)
        else:
            hw = tuple(ground_hw or cfg["pinhole_size"])
            if fov is None and camera_k is None:
                raise ConfigError("fg2 pinhole model: the batch needs 'fov' (degrees) or 'camera_k'")
            ref, valid = self._pinhole_ref(fov, camera_k, hw)
        double = cfg["attention_residual"] == "double"
        height = None
        for i, blk in enumerate(self.blocks):
            q = blk.norm1(blk.attend_self(q, (self.rows, res), self.self_ref, double))
            q, height = blk.attend_cross(q, value, (h, w), ref, double)
            q = blk.norm2(q)
            ffn = self.blocks[0].ffn if (i == 3 and cfg["block4_ffn"] == "ffn1") else blk.ffn
            q = blk.norm3(ffn(q))
        grd_desc = self.ground_head(q.transpose(1, 2).reshape(b, c, self.rows, res))
        n_sat = int(cfg["sat_bev_res"])
        sat = F.interpolate(aerial_feat, (n_sat, n_sat), mode="bilinear", align_corners=False)
        sat_desc = self.aerial_head(sat)
        sim = sat_desc.flatten(2).transpose(1, 2) @ grd_desc.flatten(2) / cfg["temperature"]
        if not bool(valid.all()):
            sim = sim.masked_fill(~valid[:, None, :], float("-inf"))
        m, n = sim.shape[1:]
        bins0 = self.dustbin.expand(b, m, 1)
        bins1 = self.dustbin.expand(b, 1, n)
        alpha = self.dustbin.expand(b, 1, 1)
        full = torch.cat([torch.cat([sim, bins0], -1), torch.cat([bins1, alpha], -1)], 1)
        prob = (F.softmax(full, 1) * F.softmax(full, 2))[:, :-1, :-1]
        return {"prob": prob, "sim": sim, "grd_desc": grd_desc, "sat_desc": sat_desc,
                "height_index": height.view(b, self.rows, res, 1), "valid": valid}

    # -- batches -----------------------------------------------------------------------------------------------
    def _batch_features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        af = batch["aerial_feat"] if "aerial_feat" in batch else self.features(batch["aerial"])
        if "ground_feat" in batch:
            return batch["ground_feat"].float(), af.float(), tuple(batch["ground_hw"])
        return self.features(batch["ground"]), af.float(), tuple(batch["ground"].shape[-2:])

    def _run(self, batch: dict, prior: torch.Tensor | None) -> dict[str, Any]:
        """Forward on a batch whose ground image is believed to face ``prior`` (B,) degrees (None: as given).

        Panoramas are rolled so that the believed heading is their centre column (FG²'s second stage; cached
        features: whole feature columns); pinhole tiles are turned so that it points up (the KITTI loader; cached
        features: the feature map is turned, an approximation). Returns the forward's outputs with
        ``applied`` (B,): the heading offset to add to a heading estimated in the model's frame."""
        kind = batch["camera"][0] if "camera" in batch else self.cameras[0]
        if kind not in self.cameras:
            raise ConfigError(f"{self.config.get('name', 'fg2')} places {self.cameras[0]} images, got {kind}")
        n = len(batch["tile_m"])
        applied = torch.zeros(n, device=batch["tile_m"].device)
        if prior is not None and kind == "panorama":
            from crossview.fine.data import rotate_to_prior

            if "ground" in batch:
                batch, rolled = rotate_to_prior(batch, prior)
                applied = -rolled.to(applied.device)
            else:
                gf = batch["ground_feat"].clone()
                width = gf.shape[-1]
                for k, p in enumerate(prior.reshape(-1).tolist()):
                    shift = int(round(p / 360.0 * width))
                    gf[k] = torch.roll(gf[k], shift, dims=-1)
                    applied[k] = -(-shift * 360.0 / width)
                batch = dict(batch, ground_feat=gf)
        if prior is not None and kind == "pinhole":  # the tile's pixels are turned (cached features: the map)
            key = "aerial" if "aerial" in batch else "aerial_feat"
            batch = dict(batch, **{key: turn_tiles(batch[key], prior)})
            applied = prior.float().to(applied.device)
        gf, af, hw = self._batch_features(batch)
        out = self.forward(gf, af, batch.get("fov"), batch.get("camera_k"), hw)
        out["applied"] = applied
        return out

    def to_pose(self, r: torch.Tensor, t: torch.Tensor, tile_m: torch.Tensor,
                applied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, t) in grid units -> (xy (B, 2) metres east/north of the tile centre, heading (B,) degrees clockwise
        from north), undoing the prior's roll / turn (``applied``)."""
        t = t.reshape(-1, 2)
        if self.config["pose_convention"] == "official":
            c = -t  # vigor_eval reads t as the offset (exact at R = I)
        else:
            c = -(r.transpose(1, 2) @ t.unsqueeze(-1)).squeeze(-1)
        scale = tile_m.float().to(c.device) / float(self.config["grid_size_h"])
        east_north = torch.stack([c[:, 1], -c[:, 0]], -1) * scale.unsqueeze(-1)
        heading = torch.rad2deg(torch.atan2(r[:, 1, 0], r[:, 0, 0]))
        if self.config["camera"] == "pinhole":  # turned tile: back to north-up
            east_north = (_rotation(-applied.float()).to(east_north) @ east_north.unsqueeze(-1)).squeeze(-1)
        return east_north, torch.remainder(heading + applied.to(heading), 360.0)

    def gt_pose(self, xy: torch.Tensor, heading: torch.Tensor, tile_m: torch.Tensor,
                applied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The true (R, t (B, 1, 2)) in grid units for a camera at ``xy`` metres east/north with ``heading``, in the
        model's frame (a pinhole tile turned by ``applied``); the label of ``pose_convention``."""
        en = xy.float()
        if self.config["camera"] == "pinhole":
            en = (_rotation(applied.float()).to(en) @ en.unsqueeze(-1)).squeeze(-1)
        scale = float(self.config["grid_size_h"]) / tile_m.float().to(en.device)
        c = torch.stack([-en[:, 1], en[:, 0]], -1) * scale.unsqueeze(-1)
        r = _rotation(heading.float().to(en.device) - applied.float().to(en.device))
        t = -c if self.config["pose_convention"] == "official" else -(r @ c.unsqueeze(-1)).squeeze(-1)
        return r, t.unsqueeze(1)

    def sample_matches(self, prob: torch.Tensor, k: int, generator: torch.Generator | None = None):
        """``k`` matches drawn without replacement from P (official ``torch.multinomial``): (X (B, k, 2) aerial and
        Y ground cell coordinates, weights (B, k), flat indices (B, k))."""
        flat = prob.flatten(1)
        idx = torch.multinomial(flat.detach(), k, generator=generator)
        n_grd = prob.shape[2]
        x = self.sat_xy[torch.div(idx, n_grd, rounding_mode="trunc")]
        y = self.grd_xy[idx % n_grd]
        return x, y, flat.gather(1, idx), idx

    @torch.no_grad()
    def predict(self, batch: dict, heading_prior: Any = None, ransac: bool = False, num_matches: int | None = None,
                seed: int | None = None) -> dict[str, torch.Tensor]:
        """Poses of a batch (``crossview.fine.FineLocalizer``): ``xy`` (B, 2) metres east/north of the tile centre,
        ``heading`` (B,) degrees clockwise from north, ``confidence`` (B,) (share of the drawn match weight within
        ``th_inlier`` of the pose), ``ok`` (B,) (False: a rank-1 Procrustes; the tile centre is returned).

        ``heading_prior`` (B,) or float: the believed heading (a panorama is rolled to it, FG²'s second stage; a
        pinhole tile is turned to it, the KITTI setting); None: as given (a north-aligned panorama: FG²'s first
        stage estimates the heading from scratch). ``ransac``: the official RANSAC (seed ``ransac.seed``) instead
        of the single weighted Procrustes on ``num_matches`` draws (seed ``sample_seed``, or ``seed``)."""
        cfg = self.config
        n = len(batch["tile_m"])
        prior = None
        if heading_prior is not None:
            prior = torch.as_tensor(heading_prior, dtype=torch.float32, device=batch["tile_m"].device)
            prior = prior.reshape(-1).expand(n).contiguous()
        out = self._run(batch, prior)
        prob = out["prob"]
        rc = cfg["ransac"]
        if ransac:
            gen = torch.Generator(device=prob.device).manual_seed(int(rc["seed"] if seed is None else seed))
            sol = official_ransac(prob, self.sat_xy, self.grd_xy, rc["it_matches"], rc["num_samples"],
                                  rc["it_ransac"], rc["min_set"], rc["refinements"], rc["th_inlier"],
                                  rc["th_soft_inlier"], generator=gen)
            r, t = sol["R"], sol["t"]
            ok = torch.full((n,), sol["valid_hypotheses"] > 0, dtype=torch.bool)
            x, y, w, _ = self.sample_matches(prob, min(int(num_matches or cfg["num_matches"]), prob[0].numel()),
                                             torch.Generator(device=prob.device).manual_seed(int(cfg["sample_seed"])))
        else:
            gen = torch.Generator(device=prob.device).manual_seed(int(cfg["sample_seed"] if seed is None else seed))
            x, y, w, _ = self.sample_matches(prob, min(int(num_matches or cfg["num_matches"]), prob[0].numel()), gen)
            r, t, ok = official_procrustes(x, y, w)
        inl = ((rc["th_inlier"] - _distances(x, y, r, t)) >= 0).float()
        conf = (w * inl).sum(1) / w.sum(1).clamp(min=1e-12)
        xy, heading = self.to_pose(r, t, batch["tile_m"], out["applied"])
        fallback = prior if prior is not None else torch.zeros(n, device=xy.device)
        xy = torch.where(ok.view(-1, 1).to(xy.device), xy, torch.zeros_like(xy))
        heading = torch.where(ok.to(xy.device), heading, torch.remainder(fallback, 360.0))
        conf = torch.where(ok.to(xy.device), conf, torch.zeros_like(conf))
        return {"xy": xy, "heading": heading, "confidence": conf, "ok": ok, "R": r, "t": t,
                "height_index": out["height_index"]}

    # -- training ----------------------------------------------------------------------------------------------
    def loss(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """The official training objective on a batch: 1,024 matches drawn from P (``generator``), weighted
        Procrustes, VCE + β · InfoNCE (the official loss.py). A pinhole tile is first turned to a heading off the
        truth by U(±``prior_deg``) (the KITTI loader's rotation). ``parts["_skip"]`` is True when the Procrustes
        covariance of any element has rank 1 — the official loop skips that step."""
        cfg = self.config
        kind = batch["camera"][0] if "camera" in batch else self.cameras[0]
        heading = batch["heading"].float().reshape(-1)
        prior = None
        if kind == "pinhole":
            noise = (torch.rand(heading.shape, generator=generator) * 2 - 1) * float(cfg["prior_deg"])
            prior = torch.remainder(heading + noise.to(heading.device), 360.0)
        out = self._run(batch, prior)
        prob = out["prob"]
        x, y, w, idx = self.sample_matches(prob, min(int(cfg["num_matches"]), prob[0].numel()), generator)
        r, t, rank_ok = official_procrustes(x, y, w)
        r_gt, t_gt = self.gt_pose(batch["xy"], heading, batch["tile_m"], out["applied"])
        lw = cfg["loss"]
        vce = vce_loss(r_gt.to(r), t_gt.to(t), r, t, float(lw["grid_size"]), int(lw["points"]))
        n_grd = prob.shape[2]
        nce = infonce_loss(out["sim"], r_gt, t_gt, torch.div(idx, n_grd, rounding_mode="trunc"), idx % n_grd,
                           cfg, self.rows, out["valid"])
        total = float(lw["beta"]) * nce.mean() + vce.mean()
        with torch.no_grad():
            xy, _ = self.to_pose(r, t, batch["tile_m"], out["applied"])
            err = (xy - batch["xy"].float()).norm(dim=-1).mean()
        skip = not bool(rank_ok.all())
        return total, {"loss": float(total.detach()), "vce": float(vce.mean().detach()),
                       "infonce": float(nce.mean().detach()), "err_m": float(err), "_skip": skip}


def vce_loss(r_gt: torch.Tensor, t_gt: torch.Tensor, r: torch.Tensor, t: torch.Tensor, grid_size: float,
             points: int) -> torch.Tensor:
    """Virtual correspondence error (B,): mean over a ``points`` × ``points`` grid spanning ``grid_size`` units
    (``metric_grid``) of ‖(R_gt·p + t_gt) − (R·p + t)‖."""
    p = metric_grid(grid_size, points).to(r).t().unsqueeze(0)
    d = (r_gt @ p + t_gt.transpose(2, 1)) - (r @ p + t.transpose(2, 1))
    return d.pow(2).sum(1).sqrt().mean(-1)


def infonce_loss(sim: torch.Tensor, r_gt: torch.Tensor, t_gt: torch.Tensor, sat_idx: torch.Tensor,
                 grd_idx: torch.Tensor, cfg: dict[str, Any], grd_rows: int, valid: torch.Tensor) -> torch.Tensor:
    """The official bidirectional InfoNCE (B,) on the raw similarity ``sim`` (B, N_sat, N_grd) at the drawn matches.

    Cell indices are centred (row − (res−1)/2, col − (res−1)/2; the KITTI ground rows run −(res−1)/2 … 0); the true
    pose maps them, its translation scaled by res / ``grid_size_h`` cells per unit (official), rounded. Satellite ->
    ground: each distinct drawn satellite row whose mapped cell is inside the ground grid (KITTI: whose flat index is
    a valid ground cell) is a softmax over its row; ground -> satellite likewise over columns. Each direction is the
    mean −log p of its positives (0 when none); the result is their average."""
    b = sim.shape[0]
    res_s, res_g = int(cfg["sat_bev_res"]), int(cfg["grd_bev_res"])
    pinhole = cfg["camera"] == "pinhole"
    scale = torch.full((b, 1, 2), res_g / float(cfg["grid_size_h"]), device=sim.device)
    t_cells = t_gt.to(sim.device).float() * scale
    r = r_gt.to(sim.device).float()
    sat_c = torch.stack([torch.div(sat_idx, res_s, rounding_mode="trunc"), sat_idx % res_s], -1).float()
    sat_c = sat_c - (res_s - 1) / 2
    g_row = torch.div(grd_idx, res_g, rounding_mode="trunc").float()
    g_row = g_row - (res_g - 1) / 2 if not pinhole else g_row - (grd_rows - 1)
    grd_c = torch.stack([g_row, (grd_idx % res_g).float() - (res_g - 1) / 2], -1)
    # satellite -> ground
    mapped = torch.round(sat_c @ r.transpose(1, 2) + t_cells) + (res_g - 1) / 2
    if pinhole:
        mapped[..., 0] = mapped[..., 0] - (res_g - 1) / 2 + (grd_rows - 1)
    col_idx = (mapped[..., 0] * res_g + mapped[..., 1]).long()
    if pinhole:
        flat_valid = valid.flatten(1)
        keep = torch.zeros_like(col_idx, dtype=torch.bool)
        inside = (col_idx >= 0) & (col_idx < flat_valid.shape[1])
        keep[inside] = flat_valid.gather(1, col_idx.clamp(0, flat_valid.shape[1] - 1))[inside]
    else:
        keep = ((mapped >= 0) & (mapped < res_g)).all(-1)
    row_idx = sat_idx
    s2g = _nce_direction(sim, row_idx, col_idx, keep, dim=2)
    # ground -> satellite
    back = torch.round((grd_c - t_cells) @ r) + (res_s - 1) / 2  # row vectors: Rᵀ·(g − t)
    keep = ((back >= 0) & (back < res_s)).all(-1)
    row_idx = (back[..., 0] * res_s + back[..., 1]).long()
    g2s = _nce_direction(sim, row_idx, grd_idx, keep, dim=1)
    return (s2g + g2s) / 2


def _nce_direction(sim: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, keep: torch.Tensor,
                   dim: int) -> torch.Tensor:
    """Per element: mean over the distinct anchors (rows when ``dim`` = 2, columns when 1) of −log softmax at the
    positive; 0 where no anchor is kept."""
    out = []
    for k in range(sim.shape[0]):
        r, c = rows[k][keep[k]], cols[k][keep[k]]
        if r.numel() == 0:
            out.append(sim.new_zeros(()))
            continue
        anchor = c if dim == 1 else r
        _, first = np.unique(anchor.cpu().numpy(), return_index=True)
        sel = torch.as_tensor(np.sort(first), device=sim.device)
        r, c = r[sel], c[sel]
        if dim == 2:
            logp = torch.log_softmax(sim[k, r, :], -1).gather(1, c.view(-1, 1))
        else:
            logp = torch.log_softmax(sim[k, :, c], 0).gather(0, r.view(1, -1))
        out.append(-logp.mean())
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------------------------
# Official checkpoints (vita-epfl/FG2 CVM state dict + the official DINOv2 names)


@dataclass
class FG2ConversionReport(ConversionReport):
    """``ConversionReport`` with notes on what the converter supplied itself (the regenerated query grid, a
    backbone not held by the checkpoint)."""

    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return super().summary() + "".join(f"\n  note: {n}" for n in self.notes)


def _official_to_ours(key: str) -> str | None:
    """Our name for an official CVM key (None: no counterpart)."""
    if key == "dustbin_score":
        return "dustbin"
    if key == "grd_grid_queries":
        return "query_grid"
    for official, ours in (("grd_projector.", "ground_head."), ("sat_projector.", "aerial_head.")):
        if key.startswith(official):
            return ours + key[len(official):]
    parts = key.split(".", 1)
    head, rest = parts[0], parts[1] if len(parts) > 1 else ""
    for prefix, inner, ours in (("grd_attention_self", "grd_attention_self.", "self_attn."),
                                ("grd_attention_cross", "grd_attention_cross.", "cross_attn.")):
        if head.startswith(prefix) and head[len(prefix):].isdigit():
            b = int(head[len(prefix):]) - 1
            if rest.startswith(inner):
                return f"blocks.{b}.{ours}{rest[len(inner):]}"
            if prefix == "grd_attention_cross" and rest.startswith("projector."):
                return f"blocks.{b}.height_score.{rest[len('projector.'):]}"
            return None
    if head.startswith("grd_ffn") and head[7:].isdigit():
        return f"blocks.{int(head[7:]) - 1}.ffn.{rest}"
    if head.startswith("grd_layer_norm") and len(head) == 16 and head[14:].isdigit():
        return f"blocks.{int(head[14]) - 1}.norm{head[15]}.{rest}"
    return None


def _ours_to_official(key: str) -> str | None:
    if key == "dustbin":
        return "dustbin_score"
    if key == "query_grid":
        return "grd_grid_queries"
    for ours, official in (("ground_head.", "grd_projector."), ("aerial_head.", "sat_projector.")):
        if key.startswith(ours):
            return official + key[len(ours):]
    if key.startswith("blocks."):
        _, b, mod, rest = key.split(".", 3)
        n = int(b) + 1
        if mod == "self_attn":
            return f"grd_attention_self{n}.grd_attention_self.{rest}"
        if mod == "cross_attn":
            return f"grd_attention_cross{n}.grd_attention_cross.{rest}"
        if mod == "height_score":
            return f"grd_attention_cross{n}.projector.{rest}"
        if mod == "ffn":
            return f"grd_ffn{n}.{rest}"
        if mod.startswith("norm"):
            return f"grd_layer_norm{n}{mod[4:]}.{rest}"
    return None


_DINO_TOP = ("cls_token", "pos_embed", "mask_token", "register_tokens")
_DINO_PREFIXES = ("backbone.", "dinov2.", "dinov2_vitl14.")


def _is_dino_key(key: str) -> bool:
    return key in _DINO_TOP or key.split(".", 1)[0] in ("patch_embed", "blocks", "norm", "head")


def _official_dino_key(key: str) -> bool:
    """An official DINOv2 key, bare or under a prefix ``convert_official`` accepts."""
    for prefix in _DINO_PREFIXES:
        if key.startswith(prefix) and _is_dino_key(key[len(prefix):]):
            return True
    return _is_dino_key(key)


def release_parts(cfg: dict[str, Any]) -> list[ReleasePart]:
    """The files of FG²'s release: the matching head (``checkpoints/VIGOR/<area>/…/model.pt``,
    ``checkpoints/KITTI/model.pt``) and, for a DINOv2 backbone, the separately published DINOv2 weights."""
    head = ReleasePart("matching head", "model.pt", lambda k: not _official_dino_key(k))
    if not (cfg["backbone"] and "dinov2" in cfg["backbone"]):
        return [head]
    from crossview.fine.dinov2 import official_filename

    return [head, ReleasePart("DINOv2 backbone", official_filename(cfg["backbone"]), _official_dino_key,
                              supplied_by="backbone_weights")]


def official_query_grid(shape: tuple[int, ...] = (41, 41, 1024), seed: int = 0, depth: int = 24, dim: int = 1024,
                        mlp_hidden: int = 4096, patch: int = 14, pos_tokens: int = 1370) -> torch.Tensor:
    """The ground query grid the released evaluation builds on a GPU (docs/fine_fg2.md): after
    ``torch.manual_seed(seed)`` the vendored DINOv2 ViT-L is constructed — its initialisation consumes the CPU
    generator — and the next draw is ``CVM``'s ``torch.rand(*shape)``. This replays the ViT-L's draws (same calls
    on tensors of the same shapes: the patch conv's and every Linear's Kaiming/uniform init, then trunc-normal
    pos_embed, normal cls_token and trunc-normal on every Linear weight) on a private generator, then draws the
    grid. Measured with torch 2.14.1: float64 sum 860693.59197, first values 0.98370278, 0.53005344, 0.81148326,
    0.92709821 (agreeing with an independent measurement; not checked against a real checkpoint)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(dim, 3, patch, patch), (dim,)]
    linears = [(3 * dim, dim), (dim, dim), (mlp_hidden, dim), (dim, mlp_hidden)]
    for _ in range(depth):
        for o, i in linears:
            shapes += [(o, i), (o,)]
    for s in shapes:  # module construction: kaiming_uniform_ / uniform_ bias
        torch.empty(s).uniform_(generator=g)
    torch.empty(1, pos_tokens, dim).uniform_(generator=g)  # trunc_normal_(pos_embed) draws uniforms
    torch.empty(1, 1, dim).normal_(generator=g)  # normal_(cls_token)
    for _ in range(depth):  # init_weights_vit_timm: trunc_normal_ on every Linear weight
        for o, i in linears:
            torch.empty(o, i).uniform_(generator=g)
    return torch.rand(*shape, generator=g)


def convert_official(state: dict[str, torch.Tensor], model: FG2) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Official FG² state dict -> ours, strictly: every official key is mapped or reported.

    ``state`` holds the official ``CVM`` keys (``official_fg2_cvm_keys.tsv``) and, optionally, the official DINOv2
    keys (``official_fg2_dinov2_vitl14_keys.tsv``, bare or prefixed ``backbone.``/``dinov2.``). The ground query
    grid, absent from GPU-made checkpoints, is regenerated by ``official_query_grid`` (a note says so). A DINOv2
    absent from the checkpoint is kept as the model has it only when ``backbone_weights`` names its file (or says
    ``"random"``; a note says so); otherwise it is reported missing: the release's backbone is a separate file.
    Returns (our state dict, report); ``report.ok`` is False when any key is missing, unexpected or misshaped."""
    target = model.state_dict()
    report = FG2ConversionReport(source=f"official FG² ({_OFFICIAL})")
    dino: dict[str, torch.Tensor] = {}
    head: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        k = key[len("module."):] if key.startswith("module.") else key
        for prefix in _DINO_PREFIXES:
            if k.startswith(prefix) and _is_dino_key(k[len(prefix):]):
                k = k[len(prefix):]
                break
        (dino if _is_dino_key(k) else head)[k if _is_dino_key(k) else key] = tensor
    out = convert_keys(head, target, _official_to_ours, report)
    report.missing = []  # recomputed below, once the query grid and the backbone are placed
    if model.config["block4_ffn"] == "ffn1" and any(k.startswith("blocks.3.ffn.") for k in out):
        report.unused += [f"grd_ffn4.{k.split('ffn.', 1)[1]}" for k in out if k.startswith("blocks.3.ffn.")]
    if "query_grid" not in out and not report.misshaped:
        shape = tuple(target["query_grid"].shape)
        out["query_grid"] = official_query_grid(shape)
        report.notes.append(f"grd_grid_queries absent (a GPU-made checkpoint): regenerated as torch.rand{shape} "
                            "after manual_seed(0) and the vendored ViT-L's initialisation (official_query_grid)")
    if model.backbone.is_dino:
        if dino:
            from crossview.fine.dinov2 import convert_official_dinov2

            conv, rep = convert_official_dinov2(dino, model.backbone.dino)
            report.unexpected += rep.unexpected
            report.misshaped += rep.misshaped
            report.missing += [f"backbone.dino.{k}" for k in rep.missing]
            out.update({f"backbone.dino.{k}": v for k, v in conv.items()})
        elif model.config["backbone_weights"] is None:  # never silently random: the release's backbone is a file
            from crossview.fine.dinov2 import official_filename

            report.missing.append(f"backbone.dino.* (FG²'s release keeps its DINOv2 in the separate "
                                  f"{official_filename(model.config['backbone'])}: give it with --fine-backbone)")
        else:
            src = model.config["backbone_weights"]
            src = "random initialisation (backbone_weights='random')" if src == "random" else src
            report.notes.append(f"no DINOv2 weights in the checkpoint: the backbone is kept from {src}")
    elif dino:
        report.unexpected += [f"{k} (DINOv2 weights, but this variant's backbone is {model.config['backbone']})"
                              for k in dino]
    for k, v in target.items():
        if k.startswith("backbone.") and k not in out and not (model.backbone.is_dino and dino):
            out[k] = v
    report.missing += [k for k in target if k not in out and k not in report.missing]
    return out, report


def export_official(model: FG2, with_grid: bool = True, with_backbone: bool = False) -> dict[str, torch.Tensor]:
    """Our head in the official CVM layout (the inverse of ``convert_official``); ``with_grid``: include
    ``grd_grid_queries`` (a CPU build's checkpoint; False: as a GPU build saves it); ``with_backbone``: also the
    DINOv2 weights under their official names."""
    out = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach() if tensor.is_meta else tensor.detach().cpu()
        if key.startswith("backbone."):
            if with_backbone and model.backbone.is_dino:
                k = key[len("backbone.dino."):]
                out[k[len("vit."):] if k.startswith("vit.") else k] = tensor
            continue
        official = _ours_to_official(key)
        if official is None:
            raise ConfigError(f"no official FG² name for {key}")
        if official == "grd_grid_queries" and not with_grid:
            continue
        out[official] = tensor
    return out


# ---------------------------------------------------------------------------------------------------------------
# Official fixtures


def _fixture_config(fixture: dict[str, Any]) -> dict[str, Any]:
    """fg2_vigor overrides from a fixture's ``config``."""
    cfg = fixture.get("config", {})
    over: dict[str, Any] = {"query_grid": "learned" if "grd_grid_queries" in fixture.get("state_dict", {})
                            else "fixed"}
    for key in ("grd_bev_res", "grd_height_res", "sat_bev_res", "embed_dim", "desc_dim", "temperature"):
        if key in cfg:
            over[key] = type(DEFAULTS[key])(cfg[key])
    for key in ("grid_size_h", "grid_size_v"):
        if key in cfg:
            over[key] = float(cfg[key])
    if "num_samples_matches" in cfg:
        over["num_matches"] = int(cfg["num_samples_matches"])
    if "ground_image_size" in cfg:
        over["ground_size"] = [int(v) for v in cfg["ground_image_size"]]
    if "satellite_image_size" in cfg:
        over["aerial_size"] = int(cfg["satellite_image_size"][0])
    rc = cfg.get("ransac")
    if isinstance(rc, dict):
        over["ransac"] = _ransac_config(rc)
    return over


def _ransac_config(rc: dict[str, Any]) -> dict[str, Any]:
    names = {"it_matches": "it_matches", "num_samples_matches": "num_samples", "it_RANSAC": "it_ransac",
             "num_corr_2d_2d": "min_set", "num_refinements": "refinements", "th_inlier": "th_inlier",
             "th_soft_inlier": "th_soft_inlier"}
    out = dict(DEFAULTS["ransac"])
    for k, v in rc.items():
        if k in names:
            out[names[k]] = type(out[names[k]])(v)
    return out


def _ransac_fixture(fixture: dict[str, Any]) -> dict[str, Any]:
    rc = _ransac_config(fixture.get("ransac", {}))
    size = float(fixture.get("grid_size_h", 71.0))
    prob = fixture["matching_score"].float()
    sat_xy = metric_grid(size, int(fixture.get("sat_bev_res", 41)))
    grd_xy = metric_grid(size, int(fixture.get("grd_bev_res", 41)))
    gen = torch.Generator().manual_seed(int(fixture.get("seed", rc["seed"])))
    sol = official_ransac(prob, sat_xy, grd_xy, rc["it_matches"], rc["num_samples"], rc["it_ransac"], rc["min_set"],
                          rc["refinements"], rc["th_inlier"], rc["th_soft_inlier"], generator=gen)
    return {"ransac_R": sol["R"], "ransac_t": sol["t"], "ransac_best_soft_inliers": sol["best_soft_inliers"],
            "valid_hypotheses": sol["valid_hypotheses"]}


def _dino_features(fixture: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``dino_feat_ground`` / ``dino_feat_sat``: the fixture's ViT-L (float16 weights) on its two small images."""
    from crossview.fine.dinov2 import DINOv2
    from crossview.fine.preprocess import to_unit

    state = fixture["backbone_state_dict"]
    dim = int(state["cls_token"].shape[-1])
    name = {384: "vit_small_patch14_dinov2", 768: "vit_base_patch14_dinov2",
            1024: "vit_large_patch14_dinov2", 1536: "vit_giant_patch14_dinov2"}[dim]
    dtype = getattr(torch, fixture.get("config", {}).get("dinov2", {}).get("dtype", "float16"))
    with torch.device("meta"):
        dino = DINOv2(name)
    dino = dino.to(dtype).to_empty(device="cpu")
    dino.load_official({k: v.to(dtype) for k, v in state.items()})
    dino.eval()
    out = {}
    for key, name_out in (("dino_image_ground", "dino_feat_ground"), ("dino_image_sat", "dino_feat_sat")):
        img = fixture["inputs"].get(key)
        if img is None:
            continue
        x = to_unit(img) if img.dtype == torch.uint8 else img
        h, w = x.shape[-2:]
        x = x[:, :, : 14 * (h // 14), : 14 * (w // 14)].to(dtype)
        with torch.no_grad():
            out[name_out] = dino(x)["patch"].float()
    return out


def _accepts(fixture: dict[str, Any]) -> bool:
    return "matching_score" in fixture and "state_dict" not in fixture


def reproduce_official(fixture: dict[str, Any]) -> dict[str, Any]:
    """Our outputs for an official FG² fixture, under its output names (``official_fg2_vigor.pt`` layout).

    The CVM weights (float16 -> float32) are converted strictly into ``fg2_vigor`` with the fixture's config;
    the DINO-shaped input features are matched; P and the raw similarity are returned subsampled (every 8th row)
    with full row / column sums; R, t, ``t_sat_px_630`` and ``yaw_deg`` come from the weighted Procrustes on the
    fixture's stored ``sampled_idx`` (the official seed-100 draw; our own seed-100 draw on our P is under
    ``own_draw``); ``ransac_*`` is our RANSAC (seed 101) on our P. The fixture's ViT-L computes ``dino_feat_*``
    in float16. Given a RANSAC fixture (``official_fg2_ransac.pt``: ``matching_score``, no weights), returns
    ``ransac_R``, ``ransac_t`` and ``ransac_best_soft_inliers`` from our RANSAC on the stored score."""
    if _accepts(fixture):
        return _ransac_fixture(fixture)
    from crossview.fine.registry import fine_config, load_official_state

    over = _fixture_config(fixture)
    model = FG2(fine_config("fg2_vigor", backbone=None, **over))  # the fixture feeds DINO-shaped features
    load_official_state(model, fixture["state_dict"], convert_official)
    inp = fixture["inputs"]
    cfg = model.config
    with torch.no_grad():
        out = model.forward(inp["grd_feature"].float(), inp["sat_feature"].float())
        prob, sim = out["prob"], out["sim"]
        res: dict[str, Any] = {
            "grd_desc": out["grd_desc"], "sat_desc": out["sat_desc"], "height_index": out["height_index"],
            "matching_score_rows_every_8": prob[:, ::8], "matching_score_original_rows_every_8": sim[:, ::8],
            "matching_score_row_sum": prob.sum(2), "matching_score_col_sum": prob.sum(1),
            "matching_score_total": prob.sum((1, 2)), "matching_score_original_row_max": sim.max(2).values,
        }
        gen = torch.Generator().manual_seed(int(cfg["sample_seed"]))
        k = int(cfg["num_matches"])
        own = model.sample_matches(prob, k, gen)[3]
        stored = fixture.get("outputs", {}).get("sampled_idx")
        idx = stored.long() if stored is not None else own
        n_grd = prob.shape[2]
        x = model.sat_xy[torch.div(idx, n_grd, rounding_mode="trunc")]
        y = model.grd_xy[idx % n_grd]
        w = prob.flatten(1).gather(1, idx)
        r, t, rank_ok = official_procrustes(x, y, w)
        sat_px = float(fixture.get("config", {}).get("released_satellite_image_size", [630])[0])
        res.update({"sampled_idx": idx, "sampled_weights": w, "R": r, "t": t, "ok_rank": rank_ok.all(),
                    "t_sat_px_630": t / cfg["grid_size_h"] * sat_px,
                    "yaw_deg": torch.rad2deg(torch.atan2(r[:, 1, 0], r[:, 0, 0]))})
        rc = cfg["ransac"]
        sol = official_ransac(prob, model.sat_xy, model.grd_xy, rc["it_matches"], rc["num_samples"],
                              rc["it_ransac"], rc["min_set"], rc["refinements"], rc["th_inlier"],
                              rc["th_soft_inlier"], generator=torch.Generator().manual_seed(int(rc["seed"])))
        res.update({"ransac_R": sol["R"], "ransac_t": sol["t"], "ransac_best_soft_inliers": sol["best_soft_inliers"]})
        res["own_draw"] = {"sampled_idx": own, "agreement": (own == idx).float().mean()}
    if "backbone_state_dict" in fixture:
        res.update(_dino_features(fixture))
    return res


reproduce_official.accepts = _accepts  # RANSAC fixtures carry no weights: fixture_arch asks this


# The released recipes (vigor_train.py / kitti_train_test.py): Adam 1e-4, batch 24, 25 epochs over 80 % of the
# training list (VIGOR; the rest is validation), 100 epochs on KITTI, no clipping, constant rate. Stage 1 of the
# unknown-orientation setting trains on ±180° rolls with β = 100, stage 2 on ±20° with β = 1 (FG2#8). The released
# KITTI script trains the VCE only (its InfoNCE call is commented out): β = 0.
_OFFICIAL_RECIPE = {"batch_size": 24, "lr": 1e-4, "weight_decay": 0.0, "adam_eps": 1e-8, "warmup_frac": 0.0,
                    "grad_clip": None, "cache_features": False, "final_eval": True, "ransac": False}
_VIGOR_SAME_STEPS = 25 * (52609 * 4 // 5) // 24
_VIGOR_CROSS_STEPS = 25 * (51520 * 4 // 5) // 24
# CPU size on the synthetic world (fg2_tiny: frozen EfficientNet-Lite0, 64-d, cached features): the same objective
# with β = 100 (with β = 1 the matching barely learns in a CPU-sized run: InfoNCE flat at log 441 over 200 steps,
# while β = 100 brings it from 6.3 to 4.5; the released stage-1 weight), OneCycle for a short run, clipping at 1.
_SYNTH = {"variant": "fg2_tiny", "batch_size": 8, "lr": 3e-4, "weight_decay": 0.0, "warmup_frac": 0.05,
          "anneal": "cos", "grad_clip": 1.0, "steps": 2500, "eval_limit": 300, "checkpoint_every": 250,
          "threads": 1, "final_eval": True, "log_every": 50, "model": {"loss": {"beta": 100.0}}}

# pinhole photos with a heading prior (±20°): each tile is turned to the believed heading, so images are read per
# step (no feature cache: the turn acts on the tile's pixels, as the KITTI loader does)
_PINHOLE = {**_SYNTH, "variant": "fg2_tiny_kitti", "camera": "pinhole", "cache_features": False,
            "eval_orientation": "prior", "eval_prior_deg": 20.0, "model": {"prior_deg": 20.0, "loss": {"beta": 100.0}}}

TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "fg2-vigor-same": {**_OFFICIAL_RECIPE, "variant": "fg2_vigor", "area": "same", "steps": _VIGOR_SAME_STEPS},
    "fg2-vigor-cross": {**_OFFICIAL_RECIPE, "variant": "fg2_vigor", "area": "cross", "steps": _VIGOR_CROSS_STEPS},
    "fg2-vigor-same-stage1": {**_OFFICIAL_RECIPE, "variant": "fg2_vigor", "area": "same", "orientation": "unknown",
                              "steps": _VIGOR_SAME_STEPS, "model": {"loss": {"beta": 100.0}}},
    "fg2-vigor-same-stage2": {**_OFFICIAL_RECIPE, "variant": "fg2_vigor", "area": "same", "orientation": "noise",
                              "yaw_noise_deg": 20.0, "steps": _VIGOR_SAME_STEPS},
    "fg2-vigor-cross-stage1": {**_OFFICIAL_RECIPE, "variant": "fg2_vigor", "area": "cross", "orientation": "unknown",
                               "steps": _VIGOR_CROSS_STEPS, "model": {"loss": {"beta": 100.0}}},
    "fg2-vigor-cross-stage2": {**_OFFICIAL_RECIPE, "variant": "fg2_vigor", "area": "cross", "orientation": "noise",
                               "yaw_noise_deg": 20.0, "steps": _VIGOR_CROSS_STEPS},
    "fg2-kitti": {**_OFFICIAL_RECIPE, "variant": "fg2_kitti", "camera": "pinhole", "area": "same", "steps": 100 * 800,
                  "eval_orientation": "prior", "eval_prior_deg": 10.0, "model": {"loss": {"beta": 0.0}}},
    "fg2-synthetic-cpu": {**_SYNTH},
    "fg2-synthetic-cpu-cross": {**_SYNTH, "area": "cross"},
    "fg2-synthetic-cpu-stage1": {**_SYNTH, "orientation": "unknown"},
    "fg2-synthetic-cpu-stage2": {**_SYNTH, "orientation": "noise", "yaw_noise_deg": 20.0},
    "fg2-synthetic-cpu-pinhole": {**_PINHOLE},
    # ours, for `locate --fine-search scan`: continue a fg2-synthetic-cpu-pinhole run (--set init_from=RUN) on its
    # positives plus the semi-positive tiles holding the camera within 0.4 of the side of their centre, so the
    # model places cameras up to ~29 m off its window's centre (docs/locate_priors.md)
    "fg2-synthetic-cpu-pinhole-semi": {**_PINHOLE, "semi_max_offset": 0.4, "steps": 1500, "lr": 1.5e-4, "threads": 2},
    "fg2-tiny-test": {**_SYNTH, "steps": 4, "batch_size": 2, "eval_limit": 4, "final_eval": False, "log_every": 1},
}


# ---------------------------------------------------------------------------------------------------------------
# Registered variants

register_arch("fg2", builder=FG2, defaults=DEFAULTS, published="FG² (Xia & Alahi, CVPR 2025)",
              converter=convert_official, exporter=export_official, reproduce=reproduce_official,
              official_repo="vita-epfl/FG2", cameras=CAMERAS, official_params=60_549_255,
              release_parts=release_parts)
# VIGOR as released: panoramas 714 × 1428 and tiles 630 px through a frozen float16 DINOv2 ViT-L/14 (the official
# dinov2_vitl14_pretrain.pth, a file of the release: --fine-backbone; nothing is downloaded), 41 × 41 queries over 71 m,
# 11 heights over 20 m, every official quirk.
register_fine("fg2_vigor", "fg2")
# KITTI as released: the front camera (364 × 1232, intrinsics from the batch's camera_k or its fov), the 21 × 41
# half-grid in front of it over 99 m, 11 heights over 25 m, 504-px tiles turned to the believed heading (±10°).
register_fine("fg2_kitti", "fg2", camera="pinhole", grid_size_h=99.0, grid_size_v=25.0, aerial_size=504,
              pose_convention="rigid")
# The same architecture at CPU size for tests and the synthetic world (128-px tiles, 256 × 128 panoramas, 128 × 96
# pinholes): a frozen EfficientNet-Lite0 on its packaged ImageNet weights (stride-4 and stride-8 taps, 24 + 40 = 64
# channels, in place of the ViT-L's 1024) and 64-d queries, at a small grid: 21 × 21 cells over the same 71 m
# (3.55 m cells; KITTI half-grid 11 × 21) and 6 heights over the same 20 m (−10 … 10 m in 4 m steps); the 6 blocks,
# 8 heads × 4 points, the heads' structure (widths 64/48/32, 32-d descriptors), matcher, solver, losses and every
# quirk of the published variant unchanged. Positions read as the rigid pose (ground = R·(aerial − c)).
_TINY = dict(backbone="tf_efficientnet_lite0", backbone_weights="lite", backbone_taps=[1, 2], embed_dim=64,
             ffn_dim=256, block_dims=[64, 48, 32], desc_dim=32, grd_bev_res=21, sat_bev_res=21, grd_height_res=6,
             ground_size=[128, 256], pinhole_size=[96, 128], aerial_size=128, mean=list(LITE[0]), std=list(LITE[1]),
             pose_convention="rigid")
register_fine("fg2_tiny", "fg2", **_TINY)
register_fine("fg2_tiny_kitti", "fg2", camera="pinhole", **_TINY)
