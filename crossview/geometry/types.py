"""Type aliases of the geometry API: numbers that may be scalars, NumPy arrays or torch tensors, and torch options."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeAlias

import numpy as np
import torch

ArrayLike: TypeAlias = float | int | np.ndarray | torch.Tensor
"""A scalar, a NumPy array or a tensor (broadcast element-wise)."""
Device: TypeAlias = str | torch.device | None
DType: TypeAlias = torch.dtype
Size2: TypeAlias = Sequence[int]  # (width, height) or (height, width) as each function says


class Camera(Protocol):
    """What the projection functions need of a camera (``crossview.geometry.cameras``)."""

    width: int
    height: int
    heading_deg: float

    def pixel_to_ray(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...

    def ray_to_pixel(self, rays: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...
