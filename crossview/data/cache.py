"""A decoded-image cache: one memory-mapped uint8 array per (image list, size).

The official code pickles one resized array per image; here every image of a split is decoded and resized
once into ``<name>.u8`` (shape N×H×W×3) beside a JSON header naming the source files, so training reads
pixels straight from the page cache with no JPEG decoding and no per-file opens.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from crossview.errors import DatasetError
from crossview.io import atomic_write, write_json_atomic


def load_resized(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """Decode ``path`` to RGB and resize to ``size`` = (height, width); uint8 H×W×3.

    Pillow's antialiased bilinear filter averages over the source footprint when shrinking, like the
    official code's ``INTER_AREA``.
    """
    try:
        with Image.open(path) as im:
            return resize_rgb(im.convert("RGB"), size)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}; re-download or remove the file") from exc


def resize_rgb(image: Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An RGB image (PIL, or uint8 H×W×3) resized to ``size`` = (height, width) as :func:`load_resized` does."""
    h, w = size
    im = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    if im.size != (w, h):
        im = im.resize((w, h), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def cache_key(paths: Sequence[str | os.PathLike], size: tuple[int, int]) -> str:
    digest = hashlib.sha1()
    digest.update(f"{size[0]}x{size[1]}\n".encode())
    for p in paths:
        digest.update(str(p).encode() + b"\n")
    return digest.hexdigest()[:16]


class ImageCache:
    """Read-only view of a built cache: ``cache[i]`` is image i as a uint8 H×W×3 array."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        header = json.loads(self.path.with_suffix(".json").read_text())
        self.size = tuple(header["size"])
        self.paths = header["paths"]
        shape = (len(self.paths), self.size[0], self.size[1], 3)
        self.array = np.memmap(self.path, dtype=np.uint8, mode="r", shape=shape)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array[i]


def build_cache(
    paths: Sequence[str | os.PathLike],
    size: tuple[int, int],
    cache_dir: str | os.PathLike,
    name: str | None = None,
    workers: int = 4,
) -> Path:
    """Decode and resize every image once into a memory-mapped array; returns the ``.u8`` path.

    Skips the work when a complete cache for the same file list and size exists. Written atomically:
    an interrupted build leaves no cache behind, only a temp file that the next build replaces.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise DatasetError("build_cache: no images given; check the split's file lists")
    cache_dir = Path(cache_dir)
    name = name or f"cache-{cache_key(paths, size)}"
    out = cache_dir / f"{name}.u8"
    header = out.with_suffix(".json")
    if out.exists() and header.exists():
        meta = json.loads(header.read_text())
        if meta.get("paths") == paths and tuple(meta.get("size", ())) == tuple(size):
            return out
    h, w = size

    def write(tmp: Path) -> None:
        mm = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(len(paths), h, w, 3))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for i, img in enumerate(pool.map(lambda p: load_resized(p, size), paths)):
                mm[i] = img
        mm.flush()
        del mm

    atomic_write(out, write)
    write_json_atomic(header, {"size": [h, w], "paths": paths, "format": "uint8 NHWC raw"})
    return out
