"""Camera models: pixel <-> unit ray in the camera frame (x right, y forward, z up).

Pixels are continuous coordinates with the origin at the top-left corner (pixel i spans [i, i+1]); that matches
``grid_sample(..., align_corners=False)`` via ``normalized = 2·u/W − 1``.

Equirectangular panorama: the centre column (u = W/2) looks along the camera's heading; azimuth grows clockwise
(to the right in the image); the top row looks at the zenith, the bottom row at the nadir.
Pinhole: square pixels, principal point at the image centre, horizontal field of view ``fov_deg``, optional
pitch (positive looks up). A downward virtual camera (HC-Net's spherical transform) is ``pitch_deg=-90``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from crossview.geometry.types import Device


def _as_tensor(x, like: torch.Tensor | None = None) -> torch.Tensor:
    if like is not None:
        return torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if not isinstance(x, torch.Tensor):  # python / numpy numbers: full precision
        return torch.as_tensor(x, dtype=torch.float64)
    return x if x.is_floating_point() else x.double()


@dataclass(frozen=True)
class PanoramaCamera:
    """Equirectangular panorama of ``width`` × ``height`` pixels (normally 2:1)."""

    width: int
    height: int
    heading_deg: float = 0.0  # heading of the centre column, clockwise from north

    kind = "panorama"
    fov_deg = 360.0

    def pixel_to_ray(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Unit rays (..., 3) in the camera frame for pixel coordinates ``u`` (x) and ``v`` (y)."""
        u = _as_tensor(u)
        v = _as_tensor(v, u)
        az = (u / self.width - 0.5) * (2 * math.pi)
        el = math.pi / 2 - v / self.height * math.pi
        return torch.stack([torch.sin(az) * torch.cos(el), torch.cos(az) * torch.cos(el), torch.sin(el)], -1)

    def ray_to_pixel(self, rays: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Camera-frame rays/points (..., 3) -> continuous pixels (u, v) and a mask of those in front of it."""
        """(u, v, valid) for rays (..., 3) in the camera frame (need not be unit length)."""
        rays = _as_tensor(rays)
        x, y, z = rays.unbind(-1)
        az = torch.atan2(x, y)  # clockwise from forward
        el = torch.atan2(z, torch.sqrt(x * x + y * y))
        u = torch.remainder(az / (2 * math.pi) + 0.5, 1.0) * self.width
        v = (math.pi / 2 - el) / math.pi * self.height
        return u, v, torch.ones_like(u, dtype=torch.bool)


@dataclass(frozen=True)
class PinholeCamera:
    """Perspective camera, ``fov_deg`` horizontal field of view, square pixels, principal point at the centre."""

    width: int
    height: int
    fov_deg: float
    heading_deg: float = 0.0  # heading of the optical axis, clockwise from north
    pitch_deg: float = 0.0  # positive looks up; -90 looks straight down

    kind = "pinhole"

    @property
    def focal(self) -> float:
        """Focal length in pixels for the horizontal field of view."""
        return (self.width / 2) / math.tan(math.radians(self.fov_deg) / 2)

    def _pitch(self) -> tuple[float, float]:
        p = math.radians(self.pitch_deg)
        return math.cos(p), math.sin(p)

    def pixel_to_ray(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Unit rays (..., 3) in the camera frame (x right, y forward, z up) through continuous pixels (u, v)."""
        u = _as_tensor(u)
        v = _as_tensor(v, u)
        xc = (u - self.width / 2) / self.focal  # optical frame: x right, y along the axis, z up
        zc = -(v - self.height / 2) / self.focal
        yc = torch.ones_like(xc)
        c, s = self._pitch()  # rotate about x by pitch: axis (0,1,0) -> (0, c, s)
        ray = torch.stack([xc, c * yc - s * zc, s * yc + c * zc], -1)
        return ray / ray.norm(dim=-1, keepdim=True)

    def ray_to_pixel(self, rays: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rays = _as_tensor(rays)
        x, y, z = rays.unbind(-1)
        c, s = self._pitch()
        yc, zc = c * y + s * z, -s * y + c * z
        depth = yc.clamp(min=1e-9)
        u = self.width / 2 + self.focal * x / depth
        v = self.height / 2 - self.focal * zc / depth
        valid = (yc > 1e-6) & (u >= 0) & (u <= self.width) & (v >= 0) & (v <= self.height)
        return u, v, valid


Camera = PanoramaCamera | PinholeCamera


def roll_panorama(image: torch.Tensor, yaw_deg: float, rounding: str = "nearest") -> tuple[torch.Tensor, float]:
    """Turn a panorama (…, H, W) — pixels or feature columns — so its centre column looks ``yaw_deg`` further
    clockwise: the one panorama roll of the project.

    Returns the rolled image and the whole-column yaw actually applied; the new centre-column heading is
    ``old + applied``. The shift is ``-yaw_deg / 360 · W`` columns, rounded to the nearest (Python's ``round``:
    halves to even) or, with ``rounding="toward_zero"``, truncated as GeoDistill's official code does
    (``int(…)``), which its published model keeps.
    """
    width = image.shape[-1]
    exact = -yaw_deg / 360.0 * width
    if rounding == "nearest":
        shift = int(round(exact))
    elif rounding == "toward_zero":
        shift = int(exact)
    else:
        raise ValueError(f"rounding {rounding!r}: 'nearest' or 'toward_zero'")
    return torch.roll(image, shifts=shift, dims=-1), -shift * 360.0 / width


def fov_mask(width: int, start_deg: float, fov_deg: float, device: Device = None) -> torch.Tensor:
    """Column mask (W,) of a panorama whose visible part spans ``fov_deg`` from relative azimuth ``start_deg``.

    Azimuths are relative to the centre column, clockwise, so the columns kept are a contiguous circular block
    (GeoDistill's field-of-view masking); 1 = visible.
    """
    az = ((torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width - 0.5) * 360.0
    rel = torch.remainder(az - start_deg, 360.0)
    return (rel < fov_deg).float()
