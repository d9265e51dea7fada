"""FG²'s grids: the official metric cell centres (``create_metric_grid``) and the lifting's reference points."""

from __future__ import annotations

import numpy as np
import torch


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
