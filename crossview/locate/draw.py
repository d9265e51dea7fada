"""Pictures of an answer: the tile with the position, uncertainty and heading; candidate thumbnails."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any


def draw_result(tile_path: Any, xy: tuple[float, float], heading_deg: float | None, radius_px: float,
                out: str | os.PathLike, caption: str = "", size: int = 512, flags: list[str] | tuple = (),
                overlay: Any = None, marks: list[tuple[float, float]] | tuple = (),
                ring_px: float | None = None, fix_xy: tuple[float, float] | None = None) -> Path:
    """The tile (north-up; a path or a PIL image) with the position (dot), uncertainty (circle) and heading (arrow)
    drawn on it; ``flags`` (how the answer contradicts the user's priors) are written under it in red, the circle
    dashed red: such an answer is not shown as a confident fix. Optional: an RGBA ``overlay`` of the tile's size
    blended over it (a posterior heat map), other ``marks`` (white rings), a second ring of ``ring_px`` (the 95 %
    radius, dotted) and the GPS fix (a cross at ``fix_xy``); all in the tile's pixels."""
    from PIL import Image, ImageDraw

    from crossview.io import atomic_write

    if isinstance(tile_path, Image.Image):
        tile = tile_path.convert("RGB")
    else:
        with Image.open(tile_path) as im:
            tile = im.convert("RGB")
    if overlay is not None:
        tile = Image.alpha_composite(tile.convert("RGBA"), overlay.resize(tile.size, Image.BILINEAR)).convert("RGB")
    k = size / max(tile.size)
    tile = tile.resize((round(tile.width * k), round(tile.height * k)), Image.BILINEAR)
    x, y, r = xy[0] * k, xy[1] * k, min(max(3.0, radius_px * k), 2.0 * size)
    _marks(ImageDraw.Draw(tile), k, marks, (x, y), ring_px, fix_xy)
    lines = [_wrap(f"NOT A CONFIDENT FIX: {f}", tile.width - 12) for f in flags]
    extra = sum(14 * (line.count("\n") + 1) for line in lines) + (6 if lines else 0)
    canvas = Image.new("RGB", (tile.width, tile.height + 28 + extra), (255, 255, 255))
    canvas.paste(tile, (0, 0))
    d = ImageDraw.Draw(canvas)
    if flags:  # dashed red: an answer that contradicts the user's priors
        for k in range(0, 360, 20):
            d.arc((x - r, y - r, x + r, y + r), k, k + 12, fill=(230, 0, 0), width=3)
    else:
        d.ellipse((x - r, y - r, x + r, y + r), outline=(255, 220, 0), width=2)
    if heading_deg is not None:
        a = math.radians(heading_deg)
        length = 0.15 * size
        tip = (x + length * math.sin(a), y - length * math.cos(a))
        d.line((x, y, *tip), fill=(255, 40, 40), width=4)
        for side in (-1, 1):  # arrow head
            b = a + math.pi + side * math.radians(28)
            d.line((*tip, tip[0] + 12 * math.sin(b), tip[1] - 12 * math.cos(b)), fill=(255, 40, 40), width=4)
    d.ellipse((x - 6, y - 6, x + 6, y + 6), fill=(255, 40, 40), outline=(255, 255, 255), width=2)
    d.polygon(((14, 4), (8, 18), (20, 18)), fill=(255, 255, 255), outline=(0, 0, 0))  # north is up
    d.text((11, 20), "N", fill=(255, 255, 255))
    d.text((6, tile.height + 8), caption, fill=(0, 0, 0))
    top = tile.height + 28
    for line in lines:
        d.multiline_text((6, top), line, fill=(200, 0, 0), spacing=4)
        top += 14 * (line.count("\n") + 1)
    return atomic_write(out, lambda p: canvas.save(p, format="PNG"))


def _marks(d: Any, k: float, marks, xy: tuple[float, float], ring_px: float | None,
           fix_xy: tuple[float, float] | None) -> None:
    """Other modes (white rings), the 95 % ring (dotted white) and the GPS fix (a black-and-white cross)."""
    for mx, my in marks:
        d.ellipse((mx * k - 7, my * k - 7, mx * k + 7, my * k + 7), outline=(255, 255, 255), width=2)
    if ring_px is not None:
        r = min(max(3.0, ring_px * k), 2.0 * max(d.im.size))
        for a in range(0, 360, 10):
            d.arc((xy[0] - r, xy[1] - r, xy[0] + r, xy[1] + r), a, a + 4, fill=(255, 255, 255), width=2)
    if fix_xy is not None:
        fx, fy = fix_xy[0] * k, fix_xy[1] * k
        for w, col in ((5, (0, 0, 0)), (2, (255, 255, 255))):
            d.line((fx - 9, fy - 9, fx + 9, fy + 9), fill=col, width=w)
            d.line((fx - 9, fy + 9, fx + 9, fy - 9), fill=col, width=w)


def heat_overlay(prob: Any, scale: int = 1, alpha: float = 0.6) -> Any:
    """An RGBA PIL image of a probability map (rows north to south): transparent where the mass is negligible,
    yellow to red with opacity rising with the square root of the probability relative to its peak."""
    import numpy as np
    from PIL import Image

    p = np.asarray(prob, dtype=np.float64)
    v = np.sqrt(p / max(float(p.max()), 1e-300))
    rgba = np.zeros(p.shape + (4,), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = np.clip(255 * (1 - v), 0, 255)
    rgba[..., 3] = np.clip(255 * alpha * np.minimum(1.0, 1.5 * v), 0, 255) * (v > 0.02)
    img = Image.fromarray(rgba, "RGBA")
    return img.resize((p.shape[1] * scale, p.shape[0] * scale), Image.NEAREST) if scale > 1 else img


def _wrap(text: str, width_px: int, char_px: int = 6) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, max(20, width_px // char_px)))


def draw_thumbnail(tile_path: str | os.PathLike, xy: tuple[float, float] | None, out: str | os.PathLike,
                   size: int = 192) -> Path:
    """A JPEG thumbnail (``size`` px on its long side) of a candidate tile with its fine position as a dot."""
    from PIL import Image, ImageDraw

    from crossview.io import atomic_write

    with Image.open(tile_path) as im:
        tile = im.convert("RGB")
    k = size / max(tile.size)
    thumb = tile.resize((round(tile.width * k), round(tile.height * k)), Image.BILINEAR)
    if xy is not None:
        x, y = xy[0] * k, xy[1] * k
        ImageDraw.Draw(thumb).ellipse((x - 4, y - 4, x + 4, y + 4), fill=(255, 40, 40), outline=(255, 255, 255))
    return atomic_write(out, lambda p: thumb.save(p, format="JPEG", quality=88))


