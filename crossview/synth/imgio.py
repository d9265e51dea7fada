"""Deterministic image files: fixed encoder settings and no metadata, so equal pixels give equal bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

JPEG_QUALITY = 90


def save_image(path: Path, img: np.ndarray) -> None:
    """Write a uint8 H x W x 3 array as PNG (``.png``) or baseline JPEG (``.jpg``/``.jpeg``, 4:2:0, quality 90)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.ascontiguousarray(img))
    if path.suffix.lower() == ".png":
        im.save(path, format="PNG", compress_level=6, optimize=False)
    else:
        im.save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=2, optimize=False, progressive=False)
