"""2-D rigid transforms ``p' = R·p + t`` (batched over leading dimensions) and the pose convention.

The pose convention used by every fine-grained localizer: a ground point ``g`` (camera frame: x right, y forward)
and the aerial point ``a`` (tile frame: x east, y north, metres from the tile centre) seeing the same place are
related by ``g = R(h)·(a − c)`` where ``c`` is the camera position in the tile frame and ``h`` the camera heading
(clockwise from north). ``R(h)`` is the counter-clockwise rotation by ``h`` in (x, y): a bearing clockwise from
north becomes a bearing relative to the camera's forward direction. So ``t = −R·c`` and ``c = −Rᵀ·t``.
"""

from __future__ import annotations

import math

import torch

from crossview.geometry.angles import angle_diff_deg  # noqa: F401 (re-exported)
from crossview.geometry.types import ArrayLike


def rotation_matrix(theta: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise rotation matrices (..., 2, 2) for angles ``theta`` in radians."""
    theta = torch.as_tensor(theta)
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def rotation_angle(r: torch.Tensor) -> torch.Tensor:
    """Angle (radians, counter-clockwise) of rotation matrices (..., 2, 2)."""
    return torch.atan2(r[..., 1, 0], r[..., 0, 0])


def apply_rigid(r: torch.Tensor, t: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``R·p + t`` for points (..., N, 2), R (..., 2, 2), t (..., 2)."""
    return points @ r.transpose(-1, -2) + t.unsqueeze(-2)


def invert_rigid(r: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse (Rᵀ, −Rᵀ·t) of the rigid transform p -> R·p + t."""
    rt = r.transpose(-1, -2)
    return rt, -(rt @ t.unsqueeze(-1)).squeeze(-1)


def compose_rigid(r1: torch.Tensor, t1: torch.Tensor, r2: torch.Tensor,
                  t2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The transform applying (r2, t2) first, then (r1, t1)."""
    return r1 @ r2, (r1 @ t2.unsqueeze(-1)).squeeze(-1) + t1


def pose_to_rigid(x_m: ArrayLike, y_m: ArrayLike, heading_deg: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera pose in the tile frame -> (R, t) mapping aerial points to ground (camera-frame) points."""
    x_m, y_m = torch.as_tensor(x_m), torch.as_tensor(y_m)
    heading = torch.as_tensor(heading_deg, dtype=x_m.dtype if x_m.is_floating_point() else None)
    r = rotation_matrix(heading * (math.pi / 180.0))
    c = torch.stack([x_m, y_m], -1).to(r.dtype)
    return r, -(r @ c.unsqueeze(-1)).squeeze(-1)


def rigid_to_pose(r: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(R, t) aerial -> ground back to the camera position (x east, y north, metres) and heading (degrees, [0, 360))."""
    c = -(r.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)
    heading = torch.remainder(rotation_angle(r) * (180.0 / math.pi), 360.0)
    return c[..., 0], c[..., 1], heading
