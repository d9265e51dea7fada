"""A picture sheet of query/reference pairs: the aerial tile with the camera's position and heading marked,
beside the ground image. Used by ``make demo`` so a person can check the geometry at a glance."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

from crossview.data.records import Split
from crossview.io import atomic_write


def _arrow(draw: ImageDraw.ImageDraw, x: float, y: float, heading_deg: float, length: float, colour) -> None:
    """Draw the camera at pixel (x, y) and an arrow along ``heading_deg`` (clockwise from north; y is down)."""
    h = math.radians(heading_deg)
    ex, ey = x + length * math.sin(h), y - length * math.cos(h)
    r = max(2.0, length / 6)
    draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=2)
    draw.line([x, y, ex, ey], fill=colour, width=2)
    left, right = h + math.radians(150), h - math.radians(150)
    for a in (left, right):
        draw.line([ex, ey, ex + r * 1.5 * math.sin(a), ey - r * 1.5 * math.cos(a)], fill=colour, width=2)


def pair_sheet(split: Split, out: str | Path, n: int = 6, tile_px: int = 192, ground_h: int = 192) -> Path:
    """Save a sheet of ``n`` records: positive tile (camera marked), then the ground image. Returns the path.

    The marker is drawn at ``record.pixel_xy[0]`` (native tile pixels, rescaled) with the heading of the
    panorama's centre column; records without a known pixel position are drawn without a marker.
    """
    records = split.records[:n]
    if not records:
        raise ValueError(f"split {split.dataset}/{split.name} has no records to draw")
    rows = []
    for rec in records:
        ref = split.references[rec.positives[0]]
        tile = Image.open(ref.path).convert("RGB")
        sx, sy = tile_px / tile.width, tile_px / tile.height
        tile = tile.resize((tile_px, tile_px), Image.BILINEAR)
        draw = ImageDraw.Draw(tile)
        if rec.pixel_xy is not None:
            x, y = rec.pixel_xy[0]
            _arrow(draw, x * sx, y * sy, rec.heading_deg or 0.0, tile_px / 8, (255, 40, 40))
        ground = Image.open(rec.query_path).convert("RGB")
        gw = round(ground.width * ground_h / ground.height)
        ground = ground.resize((gw, ground_h), Image.BILINEAR)
        gdraw = ImageDraw.Draw(ground)
        if rec.query_view == "ground":  # mark the panorama's centre column (its heading)
            gdraw.line([gw / 2, 0, gw / 2, ground_h], fill=(255, 40, 40), width=1)
        rows.append((tile, ground))
    width = max(t.width + 8 + g.width for t, g in rows)
    height = sum(max(t.height, g.height) + 8 for t, g in rows)
    sheet = Image.new("RGB", (width + 8, height + 8), (255, 255, 255))
    y = 8
    for tile, ground in rows:
        sheet.paste(tile, (8, y))
        sheet.paste(ground, (8 + tile.width + 8, y))
        y += max(tile.height, ground.height) + 8
    return atomic_write(out, lambda p: sheet.save(p, format="PNG"))
