"""Spherical transform: an equirectangular panorama -> the top-down view of a virtual downward camera (HC-Net).

A virtual pinhole camera sits at the panorama's centre and looks straight down. Output pixel (x, y) (continuous,
origin at the top-left corner, x right, y down) becomes the ray ``(e, n, −z)`` with
``e = x − W/2``, ``n = H/2 − y`` and ``z`` the focal length, so the view is north-up (x east, y south) when the
panorama's centre column looks along ``heading_deg``. Two ways to fix the focal length:

- ``fov_deg`` (HC-Net: 170°): ``z = W / (2·tan(fov/2))`` pixels; the metric scale depends on the unknown eye
  height and is left for the homography to absorb;
- ``metres_per_pixel`` + ``eye_height_m``: a flat ground at ``eye_height_m`` below the camera appears at exactly
  ``metres_per_pixel`` (``z = eye_height_m / metres_per_pixel``), so the view matches a north-up aerial tile at
  that resolution.

Panorama pixels follow ``crossview.geometry.cameras.PanoramaCamera``: column ``u`` looks at azimuth
``heading + (u/W − 0.5)·360°`` (clockwise), row ``v`` at polar angle ``v/H·180°`` from the zenith. The grid for
heading 0 is computed once per (panorama size, camera) and cached; other headings are a horizontal shift of the
sampling coordinate, applied per sample, with circular wrap-around. Everything is differentiable through
``grid_sample`` with respect to the panorama.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from crossview.errors import ConfigError
from crossview.geometry.types import ArrayLike, Device, DType


@dataclass(frozen=True)
class TopDownCamera:
    """The virtual downward camera: output ``size`` (H, W) and either ``fov_deg`` or metric scale + eye height.

    ``polar_range_deg`` is the range of polar angles (from the zenith) the panorama rows span: (0, 180) for a full
    equirectangular image; a crop (CVUSA keeps roughly the middle band) gives its own range.
    """

    size: tuple[int, int]
    fov_deg: float | None = 170.0
    metres_per_pixel: float | None = None
    eye_height_m: float | None = None
    polar_range_deg: tuple[float, float] = (0.0, 180.0)

    def __post_init__(self) -> None:
        size = (self.size, self.size) if isinstance(self.size, int) else tuple(int(s) for s in self.size)
        object.__setattr__(self, "size", size)
        metric = self.metres_per_pixel is not None or self.eye_height_m is not None
        if metric:
            if self.metres_per_pixel is None or self.eye_height_m is None:
                raise ConfigError("TopDownCamera: give both metres_per_pixel and eye_height_m (or neither)")
            if self.metres_per_pixel <= 0 or self.eye_height_m <= 0:
                raise ConfigError("TopDownCamera: metres_per_pixel and eye_height_m must be positive")
            object.__setattr__(self, "fov_deg", None)
        elif self.fov_deg is None or not 0 < self.fov_deg < 180:
            raise ConfigError(f"TopDownCamera: fov_deg must lie in (0, 180), got {self.fov_deg}")
        lo, hi = self.polar_range_deg
        if not 0 <= lo < hi <= 180:
            raise ConfigError(f"TopDownCamera: polar_range_deg must satisfy 0 <= lo < hi <= 180, got {lo, hi}")

    @property
    def focal(self) -> float:
        """Distance of the image plane in output pixels (the ray is (e, n, −focal))."""
        if self.fov_deg is None:
            return self.eye_height_m / self.metres_per_pixel
        return self.size[1] / (2 * math.tan(math.radians(self.fov_deg) / 2))

    @property
    def field_deg(self) -> float:
        """Horizontal field of view of the virtual camera in degrees."""
        return math.degrees(2 * math.atan(self.size[1] / (2 * self.focal)))


@lru_cache(maxsize=32)
def _base_uv(camera: TopDownCamera) -> torch.Tensor:
    """(H, W, 2) float64: fractional panorama coordinates (u/W, v/H) for heading 0, u unwrapped in [0, 1)."""
    h, w = camera.size
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                          indexing="ij")
    east, north = x - w / 2, h / 2 - y
    az = torch.atan2(east, north)  # clockwise from north (from the centre column at heading 0)
    polar = math.pi - torch.atan2(torch.sqrt(east * east + north * north), torch.full_like(east, camera.focal))
    u = torch.remainder(az / (2 * math.pi) + 0.5, 1.0)
    lo, hi = (math.radians(a) for a in camera.polar_range_deg)
    v = (polar - lo) / (hi - lo)
    return torch.stack([u, v], -1)


@lru_cache(maxsize=32)
def _base_uv_on(camera: TopDownCamera, device: str, dtype: torch.dtype) -> torch.Tensor:
    return _base_uv(camera).to(device=device, dtype=dtype)


def spherical_uv(camera: TopDownCamera, heading_deg: ArrayLike = 0.0, device: Device = None,
                 dtype: DType = torch.float32) -> torch.Tensor:
    """Fractional panorama coordinates (B, H, W, 2) sampled by each output pixel.

    ``heading_deg`` (float or (B,) tensor): heading of the panorama's centre column, clockwise from north, as
    assumed by the transform (with a wrong heading the output is the true view rotated by the error).
    """
    base = _base_uv_on(camera, str(torch.device(device or "cpu")), dtype)  # cached per device: no copy per call
    heading = torch.as_tensor(heading_deg, dtype=dtype, device=device).reshape(-1)
    u = torch.remainder(base[..., 0] - heading.view(-1, 1, 1) / 360.0, 1.0)
    return torch.stack([u, base[..., 1].expand_as(u)], -1)


def spherical_transform(panorama: torch.Tensor, camera: TopDownCamera, heading_deg: ArrayLike = 0.0,
                        mode: str = "bilinear") -> torch.Tensor:
    """Warp panoramas (B, C, Hp, Wp) to the top-down view (B, C, H, W) of ``camera``.

    ``heading_deg`` is the heading of each panorama's centre column (float or (B,) tensor); north-aligned
    panoramas use 0. Rows outside the panorama's polar range are clamped to its border row.
    """
    if panorama.dim() != 4:
        raise ValueError(f"panorama must be (B, C, H, W), got shape {tuple(panorama.shape)}")
    b, _, hp, wp = panorama.shape
    uv = spherical_uv(camera, heading_deg, device=panorama.device, dtype=panorama.dtype)
    if uv.shape[0] not in (1, b):
        raise ValueError(f"heading_deg has {uv.shape[0]} values for a batch of {b}")
    # One wrapped column on each side makes bilinear sampling continuous across the 0/360° seam.
    padded = torch.cat([panorama[..., -1:], panorama, panorama[..., :1]], -1)
    gx = (uv[..., 0] * wp + 1.0) / (wp + 2) * 2 - 1
    gy = uv[..., 1] * 2 - 1
    grid = torch.stack([gx, gy], -1).expand(b, -1, -1, -1)
    return F.grid_sample(padded, grid, mode=mode, padding_mode="border", align_corners=False)



@lru_cache(maxsize=8)
def _hcnet_grid(size: int, fov_deg: float) -> torch.Tensor:
    s = size / 2
    f = s / math.tan(math.radians(fov_deg) / 2)
    a, b = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                          indexing="ij")
    x, y = s - a, s - b
    rho = torch.sqrt(x * x + y * y)
    u = 1 - (torch.atan2(y, x) + math.pi) / (2 * math.pi)
    v = 1 - (torch.atan2(torch.full_like(rho, -f), rho) + math.pi / 2) / math.pi
    return torch.stack([2 * u - 1, 2 * v - 1], -1).float()


def hcnet_bev(panorama: torch.Tensor, size: int = 512, fov_deg: float = 170.0, quantize: bool = True) -> torch.Tensor:
    """HC-Net's released spherical transform: panoramas (B, C, Hp, Wp) in [0, 1] -> the (B, C, size, size) view.

    As the official code computes it (docs/fine_models.md, "HC-Net"): view pixel (row a, col b) takes the ray
    (size/2 − a, size/2 − b, −f) with f = (size/2)/tan(fov/2) — integer pixel indices, not centres —, sampled with
    ``grid_sample(align_corners=True)``, bilinear, zero padding, no wrap-around; the official loader then truncates
    the 8-bit result (``quantize``: floor(255·x)/255). The grid is built at ``size`` directly (the official 500 px
    argument is ignored because a precomputed grid is passed, so its later resize to 512 is a no-op). The view's up
    direction is the panorama's centre column, its right 90° clockwise from it: a north-up map when the centre
    column looks north. ``spherical_transform`` above is our geometrically centred version with a metric option.
    """
    if panorama.dim() != 4:
        raise ValueError(f"panorama must be (B, C, H, W), got shape {tuple(panorama.shape)}")
    grid = _hcnet_grid(int(size), float(fov_deg)).to(panorama.device, panorama.dtype)
    out = F.grid_sample(panorama, grid.expand(panorama.shape[0], -1, -1, -1), mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    if quantize:
        out = torch.floor(out * 255.0 + 1e-4).clamp(0, 255) / 255.0
    return out
