"""The SAFA-like CVACT panorama pre-crop (MFRGN's ``data_preparation.py``, ``is_crop``).

A 1664×832 CVACT panorama keeps rows 208…623 (the middle half: the sky above and the car below are
dropped) and is resized to 512×128 with an area filter (Pillow's BOX = OpenCV's INTER_AREA when shrinking),
saved as PNG in ``streetview_processed/<id>_grdView.png`` beside ``streetview/``. Other heights keep their
middle half of rows the same way: rows ``H//4 … H//4 + H//2 - 1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from crossview.io import atomic_write

CROP_SIZE = (512, 128)  # (width, height) of the cropped panorama


def middle_rows(height: int) -> tuple[int, int]:
    """``(top, bottom)`` (bottom exclusive) of the middle half of ``height`` rows; 832 → (208, 624)."""
    top = height // 4
    return top, top + height // 2


def crop_panorama(image: Image.Image, size: tuple[int, int] = CROP_SIZE) -> Image.Image:
    """The middle half of the rows of ``image``, resized to ``size`` = (width, height) with a box filter."""
    image = image.convert("RGB")
    top, bottom = middle_rows(image.height)
    band = image.crop((0, top, image.width, bottom))
    if band.size != tuple(size):
        band = band.resize(tuple(size), Image.BOX)
    return band


def cropped_path(panorama: Path) -> Path:
    """``.../streetview/<id>_grdView.jpg`` → ``.../streetview_processed/<id>_grdView.png``."""
    return panorama.parent.parent / "streetview_processed" / (panorama.stem + ".png")


def crop_one(src: Path, dst: Path, size: tuple[int, int] = CROP_SIZE) -> bool:
    """Write the crop of ``src`` to ``dst`` atomically; False (no work) if ``dst`` is already up to date."""
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return False
    with Image.open(src) as im:
        out = crop_panorama(im, size)
    atomic_write(dst, lambda p: out.save(p, format="PNG"))
    return True


def crop_panoramas(paths: Iterable[str | os.PathLike], size: tuple[int, int] = CROP_SIZE,
                   workers: int = 4) -> dict[str, int]:
    """Crop every CVACT panorama in ``paths`` into its ``streetview_processed`` folder; skips done ones."""
    paths = [Path(p) for p in paths]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        done = list(pool.map(lambda p: crop_one(p, cropped_path(p), size), paths))
    return {"written": sum(done), "up_to_date": len(done) - sum(done)}
