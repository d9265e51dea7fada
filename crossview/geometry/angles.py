"""Angles in degrees, the one place they are compared: signed wrap and smallest absolute difference.

Both take floats, NumPy arrays or torch tensors (and return the same kind): tensors stay on their device and keep
gradients where the operation has them.
"""

from __future__ import annotations

import numpy as np
import torch

from crossview.geometry.types import ArrayLike


def wrap180(a: ArrayLike) -> ArrayLike:
    """Angle(s) wrapped into [-180, 180)."""
    if isinstance(a, torch.Tensor):
        return torch.remainder(a + 180.0, 360.0) - 180.0
    return (np.asarray(a) + 180.0) % 360.0 - 180.0  # the input's float precision is kept


def angle_diff_deg(a: ArrayLike, b: ArrayLike) -> ArrayLike:
    """Smallest absolute difference of two headings in degrees, in [0, 180]."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        d = torch.remainder(torch.as_tensor(a) - torch.as_tensor(b), 360.0)
        return torch.minimum(d, 360.0 - d)
    d = np.remainder(np.asarray(a, dtype=float) - np.asarray(b, dtype=float), 360.0)
    out = np.minimum(d, 360.0 - d)
    return float(out) if np.ndim(out) == 0 else out
