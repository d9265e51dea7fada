"""Pictures of an answer: the tile with the position, uncertainty and heading; candidate thumbnails."""

from __future__ import annotations

import math
import os
from pathlib import Path


def draw_result(tile_path: str | os.PathLike, xy: tuple[float, float], heading_deg: float | None, radius_px: float,
                out: str | os.PathLike, caption: str = "", size: int = 512, flags: list[str] | tuple = ()) -> Path:
    """The tile (north-up) with the position (dot), uncertainty (circle) and heading (arrow) drawn on it;
    ``flags`` (how the answer contradicts the user's priors) are written under it in red, the circle dashed red:
    such an answer is not shown as a confident fix."""
    from PIL import Image, ImageDraw

    from crossview.io import atomic_write

    with Image.open(tile_path) as im:
        tile = im.convert("RGB")
    k = size / max(tile.size)
    tile = tile.resize((round(tile.width * k), round(tile.height * k)), Image.BILINEAR)
    x, y, r = xy[0] * k, xy[1] * k, min(max(3.0, radius_px * k), 2.0 * size)
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


