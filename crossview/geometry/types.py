"""Type aliases of the geometry API: numbers that may be scalars, NumPy arrays or torch tensors, and torch options.

The camera type is ``crossview.geometry.cameras.Camera``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import torch

ArrayLike: TypeAlias = float | int | np.ndarray | torch.Tensor
"""A scalar, a NumPy array or a tensor (broadcast element-wise)."""
Device: TypeAlias = str | torch.device | None
DType: TypeAlias = torch.dtype
Size2: TypeAlias = Sequence[int]  # (width, height) or (height, width) as each function says

