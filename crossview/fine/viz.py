"""A picture per sample: the aerial tile with the true (green) and estimated (red) position and heading."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def _arrow(draw: ImageDraw.ImageDraw, x: float, y: float, heading_deg: float, length: float, colour) -> None:
    h = math.radians(heading_deg)
    tx, ty = x + length * math.sin(h), y - length * math.cos(h)  # clockwise from north, image y down
    draw.line([(x, y), (tx, ty)], fill=colour, width=2)
    for side in (-1, 1):
        a = h + math.pi + side * 0.5
        draw.line([(tx, ty), (tx + 0.35 * length * math.sin(a), ty - 0.35 * length * math.cos(a))], fill=colour,
                  width=2)
    draw.ellipse([x - 3, y - 3, x + 3, y + 3], outline=colour, width=2)


def pose_picture(aerial, tile_m: float, true_xy, true_heading: float | None, pred_xy, pred_heading: float | None,
                 out: str | Path, size: int = 256, title: str | None = None) -> Path:
    """Draw both poses on the tile (path or H×W×3 array); positions are metres east/north of the tile centre."""
    img = Image.fromarray(aerial) if isinstance(aerial, np.ndarray) else Image.open(aerial)
    img = img.convert("RGB").resize((size, size), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    mpp = tile_m / size
    for xy, heading, colour in ((true_xy, true_heading, (40, 220, 60)), (pred_xy, pred_heading, (235, 40, 40))):
        x, y = size / 2 + float(xy[0]) / mpp, size / 2 - float(xy[1]) / mpp
        _arrow(draw, x, y, 0.0 if heading is None else heading, size / 10, colour)
    if title:
        draw.rectangle([0, 0, 7 * len(title) + 6, 14], fill=(0, 0, 0))
        draw.text((3, 1), title, fill=(255, 255, 255))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
