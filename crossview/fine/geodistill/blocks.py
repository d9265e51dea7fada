"""GeoDistill's building blocks: cv2-exact mask resizing and the official FoV mask, the token encoders, the DPT
decoder and the orientation estimator."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossview.errors import ConfigError
from crossview.fine.backbones import Backbone


def _cv2_coeffs(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR source indices and 11-bit fixed-point weights along one axis."""
    scale = 1.0 / (dst / src)  # OpenCV: scale = 1 / inv_scale, inv_scale = dst / src (double)
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    low, high = s < 0, s >= src - 1
    f[low], s[low] = 0, 0
    f[high], s[high] = 0, src - 1
    w1 = np.rint(f * np.float32(2048)).astype(np.int64)
    w0 = np.rint((np.float32(1) - f) * np.float32(2048)).astype(np.int64)
    return s, np.minimum(s + 1, src - 1), w0, w1


def cv2_linear_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)`` for uint8 ``image`` (…, H, W, C) and ``size`` =
    (width, height), computed as OpenCV does: 11-bit weights, a horizontal pass in integers, and the vectorised
    vertical pass ((((r0 >> 4)·b0) >> 16) + (((r1 >> 4)·b1) >> 16) + 2) >> 2. Bit-identical to cv2 5.0.0 on 1,500
    random downscales (or equal sizes) of random, binary and column-mask images, including the official 640 → 92
    and 640 → 368; when enlarging, cv2 treats the clamped border rows differently (1-unit differences there)."""
    if image.dtype != np.uint8:
        raise ValueError(f"cv2_linear_resize takes uint8 images, got {image.dtype}")
    h, w = image.shape[-3], image.shape[-2]
    dw, dh = int(size[0]), int(size[1])
    x0, x1, a0, a1 = _cv2_coeffs(w, dw)
    y0, y1, b0, b1 = _cv2_coeffs(h, dh)
    s = image.astype(np.int64)
    rows = s[..., x0, :] * a0[:, None] + s[..., x1, :] * a1[:, None]  # (…, H, dw, C)
    r0, r1 = rows[..., y0, :, :], rows[..., y1, :, :]
    out = ((((r0 >> 4) * b0[:, None, None]) >> 16) + (((r1 >> 4) * b1[:, None, None]) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def official_fov_mask(width: int, masked_deg: int, start_deg: int) -> np.ndarray:
    """(width,) uint8 column mask of the official loader: columns round(W·s/360) … round(W·(s + m)/360) − 1 are
    hidden (0; numpy rounding, half to even), the rest visible (1). ``masked_deg`` = 360 − visible FoV."""
    mask = np.ones(width, dtype=np.uint8)
    mask[int(np.round(width / 360 * start_deg)):int(np.round(width / 360 * (start_deg + masked_deg)))] = 0
    return mask


def draw_fov(rng: np.random.RandomState | np.random.Generator, fov_range: tuple[int, int]) -> tuple[int, int]:
    """(masked degrees, start degree) as the official loader draws them: masked = 360 − randint(low, high), start =
    randint(0, 360 − masked) (high exclusive)."""
    draw = rng.randint if isinstance(rng, np.random.RandomState) else rng.integers
    masked = 360 - int(draw(int(fov_range[0]), int(fov_range[1])))
    return masked, int(draw(0, 360 - masked))


# ---------------------------------------------------------------------------------------------------------------
# Blocks: token encoders and the DPT decoder


class CNNTokens(nn.Module):
    """A frozen CNN as a token encoder (tiny configurations): each tap brought to the grid of ``stride`` (average
    pooling from finer taps, nearest upsampling from coarser ones) and concatenated with its spatial mean broadcast
    over the grid — the class token's role in the ViT — giving 2·C channels per tap."""

    def __init__(self, name: str, taps: list[int], *, weights: Any, stride: int):
        super().__init__()
        self.net = Backbone(name, taps, weights=weights, freeze=True)
        self.stride = int(stride)
        for s in self.net.strides:
            if max(s, self.stride) % min(s, self.stride):
                raise ConfigError(f"geodistill token_stride {self.stride} and tap stride {s} must divide each other")
        self.channels = [2 * c for c in self.net.channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2] // self.stride, x.shape[-1] // self.stride
        out = []
        for f, s in zip(self.net(x), self.net.strides):
            if s < self.stride:
                f = F.avg_pool2d(f, self.stride // s)
            elif s > self.stride:
                f = F.interpolate(f, scale_factor=s // self.stride, mode="nearest")
            f = f[..., :h, :w]
            out.append(torch.cat([f, f.mean((2, 3), keepdim=True).expand_as(f)], 1))
        return out


class ResidualConvUnit(nn.Module):
    """relu(conv₂(relu(conv₁(x)))) + x, 3×3 convolutions with bias (official ``resConfUnitK.conv.{0,2}``)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x)))) + x


class FusionBlock(nn.Module):
    """unit2(unit1(x) + coarser) (official ``ref_i``); the coarsest block (``ref_3``) has only unit2."""

    def __init__(self, c: int, coarsest: bool):
        super().__init__()
        self.unit1 = None if coarsest else ResidualConvUnit(c)
        self.unit2 = ResidualConvUnit(c)

    def forward(self, x: torch.Tensor, coarser: torch.Tensor | None = None) -> torch.Tensor:
        return self.unit2(x if self.unit1 is None else self.unit1(x) + coarser)


def unit_norm(x: torch.Tensor) -> torch.Tensor:
    """``x`` divided by its L2 norm over C·H·W per sample (eps 1e-12)."""
    return F.normalize(x.flatten(1), dim=1).view_as(x)


class DPTHead(nn.Module):
    """The official DPT decoder (``SatDPT`` / ``GrdDPT``): four token maps (B, Cᵢ, t) → {level: map}, level 0 at 2t
    (from the third fusion output), 1 at 4t, 2 at 8t, each L2-normalised per sample."""

    def __init__(self, in_channels: list[int], *, width: int, hidden: list[int], out: list[int]):
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.fuse = nn.ModuleList(FusionBlock(width, coarsest=i == 3) for i in range(4))
        self.out = nn.ModuleList(nn.Sequential(nn.Conv2d(width, h, 3, 1, 1), nn.ReLU(), nn.Conv2d(h, o, 3, 1, 1))
                                 for h, o in zip(hidden, out))

    def forward(self, tokens: list[torch.Tensor], levels: tuple[int, ...] = (0, 1, 2)) -> dict[int, torch.Tensor]:
        f = [F.interpolate(p(t), scale_factor=2, mode="nearest") for p, t in zip(self.project, tokens)]
        o3 = self.fuse[3](f[3])
        o2 = self.fuse[2](f[2], o3)
        o1 = self.fuse[1](f[1], o2) if 1 in levels or 2 in levels else None
        maps: dict[int, torch.Tensor] = {}
        if 0 in levels:
            maps[0] = self.out[0](o2)
        if 1 in levels:
            maps[1] = self.out[1](F.interpolate(o1, scale_factor=2, mode="nearest"))
        if 2 in levels:
            o0 = self.fuse[0](f[0], o1)
            maps[2] = self.out[2](F.interpolate(o0, scale_factor=4, mode="nearest"))
        return {lv: unit_norm(m) for lv, m in maps.items()}


class OrientationEstimator(nn.Module):
    """The official ``RotationPredictionNet``: EfficientNet block ``block`` of the tile (``aerial_encoder``, official
    ``sat_efficientnet``) and of the spherical-transform view (``bev_encoder``, ``grd_efficientnet``), concatenated
    [tile, view], conv 3×3 + BN + ReLU (``fusion``), flattened channel-major, MLP (``fc``) → ``classes`` logits."""

    def __init__(self, backbone: str, *, block: int, size: int, weights: Any, fusion: int,
                 hidden: tuple[int, ...], classes: int, keep_unused: bool = False):
        super().__init__()
        kw = dict(weights=weights, keep_unused=keep_unused, keep_classifier=False)
        self.aerial_encoder = Backbone(backbone, [block], **kw)
        self.bev_encoder = Backbone(backbone, [block], **kw)
        c, stride = self.aerial_encoder.channels[0], self.aerial_encoder.strides[0]
        if size % stride:
            raise ConfigError(f"geodistill orientation input {size} is not a multiple of the block stride {stride}")
        n = size // stride
        self.fusion = nn.Sequential(nn.Conv2d(2 * c, fusion, 3, 1, 1), nn.BatchNorm2d(fusion), nn.ReLU())
        self.fc = nn.Sequential(nn.Linear(fusion * n * n, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]),
                                nn.ReLU(), nn.Linear(hidden[1], classes))

    def forward(self, aerial: torch.Tensor, bev: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) of backbone-ready tile and view (B, 3, S, S)."""
        f = torch.cat([self.aerial_encoder(aerial)[0], self.bev_encoder(bev)[0]], 1)
        return self.fc(self.fusion(f).flatten(1))

