"""Between a ground image and a bird's-eye-view (BEV) grid: ground-plane and height-layer projection.

A BEV grid of ``n × n`` cells at ``metres_per_cell`` is laid out like an image (row 0 at the top = forward/north,
column 0 at the left), centred on the camera. Cell (i, j) has its centre at
``x = (j + 0.5 − n/2)·m`` (right/east) and ``y = (n/2 − i − 0.5)·m`` (forward/north).
A camera's heading (``camera.heading_deg``) is applied when ``world=True``: the grid is then north-up (tile
frame axes) instead of aligned with the camera's forward direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from crossview.geometry.cameras import Camera
from crossview.geometry.transforms import rotation_matrix
from crossview.geometry.types import Device, DType


def bev_grid(n: int, metres_per_cell: float, dtype: DType = torch.float32, device: Device = None) -> torch.Tensor:
    """Metric (x, y) of the cell centres, shape (n, n, 2), row-major like an image."""
    c = (torch.arange(n, dtype=dtype, device=device) + 0.5 - n / 2) * metres_per_cell
    y, x = torch.meshgrid(-c, c, indexing="ij")
    return torch.stack([x, y], -1)


def metres_to_bev_pixel(xy: torch.Tensor, n: int, metres_per_cell: float) -> torch.Tensor:
    """(x, y) metres -> continuous BEV pixel (col, row) with the origin at the top-left corner."""
    return torch.stack([xy[..., 0] / metres_per_cell + n / 2, n / 2 - xy[..., 1] / metres_per_cell], -1)


def bev_pixel_to_metres(px: torch.Tensor, n: int, metres_per_cell: float) -> torch.Tensor:
    """Continuous BEV pixel (col, row), origin top-left -> (x, y) metres (the inverse of metres_to_bev_pixel)."""
    return torch.stack([(px[..., 0] - n / 2) * metres_per_cell, (n / 2 - px[..., 1]) * metres_per_cell], -1)


def _world_to_camera(xy: torch.Tensor, heading_deg: float) -> torch.Tensor:
    """Tile-frame offsets (east, north) -> camera frame (right, forward) for a camera heading clockwise from north."""
    r = rotation_matrix(torch.tensor(math.radians(heading_deg), dtype=xy.dtype))
    return xy @ r.T


def project_points(camera: Camera, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3-D points (..., 3) in the camera frame -> normalised grid_sample coordinates (..., 2) and a valid mask."""
    u, v, valid = camera.ray_to_pixel(points)
    grid = torch.stack([2 * u / camera.width - 1, 2 * v / camera.height - 1], -1)
    return grid, valid


def pillar_grid(camera: Camera, n: int, metres_per_cell: float, heights_m: Sequence[float], world: bool = False,
                dtype: DType = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling grid of a height-layered BEV (FG²'s 3-D lifting).

    Each BEV cell owns a vertical pillar of points at ``heights_m`` (metres relative to the camera, up positive).
    Returns ``grid`` (L, n, n, 2) in grid_sample coordinates of the ground image and ``valid`` (L, n, n).
    """
    xy = bev_grid(n, metres_per_cell, dtype)
    if world:
        xy = _world_to_camera(xy, camera.heading_deg)
    hs = torch.as_tensor(list(heights_m), dtype=dtype)
    pts = torch.cat([xy.expand(len(hs), n, n, 2), hs.view(-1, 1, 1, 1).expand(len(hs), n, n, 1)], -1)
    grid, valid = project_points(camera, pts)
    return grid.to(dtype), valid


def ground_plane_grid(camera: Camera, n: int, metres_per_cell: float, camera_height_m: float, world: bool = False,
                      dtype: DType = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling grid (n, n, 2) and valid mask (n, n) of the ground plane ``camera_height_m`` below the camera."""
    grid, valid = pillar_grid(camera, n, metres_per_cell, [-camera_height_m], world, dtype)
    return grid[0], valid[0]


def warp_to_bev(image: torch.Tensor, grid: torch.Tensor, valid: torch.Tensor | None = None,
                circular: bool = True) -> torch.Tensor:
    """Sample ``image`` (B, C, H, W) at ``grid`` (…, n, n, 2) -> (B, C, …, n, n); invalid cells are zero.

    ``circular`` wraps the panorama's left and right edges so a cell at azimuth ±180° reads both sides.
    """
    b = image.shape[0]
    lead = grid.shape[:-3]
    g = grid.reshape(-1, grid.shape[-2], 2) if lead else grid
    if circular:
        w = image.shape[-1]
        image = torch.cat([image[..., -1:], image, image[..., :1]], -1)  # one column of wrap each side
        g = torch.stack([g[..., 0] * w / (w + 2), g[..., 1]], -1)
    g = g.unsqueeze(0).expand(b, *g.shape).to(image.dtype)
    out = F.grid_sample(image, g, mode="bilinear", padding_mode="border", align_corners=False)
    out = out.reshape(b, image.shape[1], *grid.shape[:-1])
    if valid is not None:
        out = out * valid.to(out.dtype)
    return out


def pixel_to_ground(camera: Camera, u: torch.Tensor, v: torch.Tensor,
                    camera_height_m: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the ray through pixel (u, v) meets the ground plane: (x right, y forward) metres and a valid mask
    (rays at or above the horizon never meet it)."""
    ray = camera.pixel_to_ray(u, v)
    down = -ray[..., 2]
    valid = down > 1e-9
    s = camera_height_m / down.clamp(min=1e-9)
    return torch.stack([ray[..., 0] * s, ray[..., 1] * s], -1), valid
