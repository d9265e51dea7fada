"""What the page's map shows of the index: its tiles as images at their footprints, or, when there are many, the
area they cover as merged rectangles; and the footprint of any tile, for the candidates.

Coordinates: lat/lon WGS84 degrees; bounds are ``[[south, west], [north, east]]`` (Leaflet's order); footprints
are the tile corners ``[[lat, lon], ...]`` in the order nw, ne, se, sw.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossview.io import atomic_write

if TYPE_CHECKING:  # a Tile is only read here (``crossview.tiles`` would import the geometry package: torch)
    from crossview.tiles import Tile

MAX_IMAGE_TILES = 300  # more tiles than this: a coverage outline instead of images
MAX_COVERAGE_CELLS = 4000
THUMB_PX = 256


def bounds(tile: Tile) -> list[list[float]]:
    """``[[south, west], [north, east]]`` of a tile's footprint."""
    lats = [p[0] for p in tile.footprint.values()]
    lons = [p[1] for p in tile.footprint.values()]
    return [[min(lats), min(lons)], [max(lats), max(lons)]]


def footprint(tile: Tile) -> list[list[float]]:
    """The tile's corners nw, ne, se, sw as ``[lat, lon]``."""
    return [list(tile.footprint[k]) for k in ("nw", "ne", "se", "sw")]


def coverage(tiles: list[Tile], max_cells: int = MAX_COVERAGE_CELLS) -> list[list[list[float]]]:
    """The area the tiles cover as rectangles (bounds), from a grid of cells about a tile wide, merged along rows;
    the grid is coarsened until it has at most ``max_cells`` covered cells."""
    b = np.array([[*bounds(t)[0], *bounds(t)[1]] for t in tiles], dtype=np.float64)  # s, w, n, e
    s0, w0 = b[:, 0].min(), b[:, 1].min()
    dlat = float(np.median(b[:, 2] - b[:, 0])) or 1e-4
    dlon = float(np.median(b[:, 3] - b[:, 1])) or 1e-4
    while True:
        cells: set[tuple[int, int]] = set()
        r0, r1 = np.floor((b[:, 0] - s0) / dlat).astype(int), np.ceil((b[:, 2] - s0) / dlat).astype(int)
        c0, c1 = np.floor((b[:, 1] - w0) / dlon).astype(int), np.ceil((b[:, 3] - w0) / dlon).astype(int)
        for a, z, c, d in zip(r0, np.maximum(r1, r0 + 1), c0, np.maximum(c1, c0 + 1)):
            cells.update((r, col) for r in range(a, z) for col in range(c, d))
            if len(cells) > max_cells:
                break
        if len(cells) <= max_cells:
            break
        dlat, dlon = 2 * dlat, 2 * dlon
    rects = []
    for r in sorted({r for r, _ in cells}):
        cols = sorted(c for rr, c in cells if rr == r)
        start = prev = cols[0]
        for c in [*cols[1:], None]:
            if c is not None and c == prev + 1:
                prev = c
                continue
            rects.append([[s0 + r * dlat, w0 + start * dlon], [s0 + (r + 1) * dlat, w0 + (prev + 1) * dlon]])
            if c is not None:
                start = prev = c
    return rects


def tile_layer(tiles: list[Tile], max_images: int = MAX_IMAGE_TILES) -> dict[str, Any]:
    """The map's layer of the index: ``mode`` "images" (each tile's bounds and thumbnail URL ``/tiles/<n>.jpg``)
    or "coverage" (rectangles), with the overall ``bounds`` and the tile ``count``."""
    if not tiles:
        return {"mode": "none", "count": 0, "bounds": None}
    all_b = np.array([[*bounds(t)[0], *bounds(t)[1]] for t in tiles])
    out: dict[str, Any] = {"count": len(tiles), "bounds": [[float(all_b[:, 0].min()), float(all_b[:, 1].min())],
                                                           [float(all_b[:, 2].max()), float(all_b[:, 3].max())]]}
    if len(tiles) <= max_images:
        out.update(mode="images", tiles=[{"n": n, "id": t.id, "bounds": bounds(t), "url": f"/tiles/{n}.jpg"}
                                         for n, t in enumerate(tiles)])
    else:
        out.update(mode="coverage", rects=coverage(tiles))
    return out


def region_layer(index: Any, max_cells: int = MAX_COVERAGE_CELLS) -> dict[str, Any]:
    """The map's layer of a region index (:mod:`crossview.search.region`), read from its sidecar alone: the bounds
    of its H3 cells (coarser parents when there are more than ``max_cells``) as coverage rectangles."""
    import h3

    cells, res = list(index.cells), int(index.res)
    while len(cells) > max_cells and res > 0:
        res -= 1
        cells = sorted({h3.cell_to_parent(c, res) for c in cells})
    rects = []
    for c in cells:
        lats, lons = zip(*h3.cell_to_boundary(c))
        rects.append([[min(lats), min(lons)], [max(lats), max(lons)]])
    b = np.array([[r[0][0], r[0][1], r[1][0], r[1][1]] for r in rects]).reshape(-1, 4)
    return {"mode": "coverage", "count": len(index), "rects": rects,
            "bounds": [[float(b[:, 0].min()), float(b[:, 1].min())], [float(b[:, 2].max()), float(b[:, 3].max())]]
            if len(b) else None}


def thumbnail(tile: Tile, cache: Path, n: int) -> Path:
    """A JPEG of tile ``n`` at most THUMB_PX on a side, made once into ``cache``."""
    from PIL import Image

    path = cache / f"{n}.jpg"
    if not path.is_file():
        with Image.open(tile.path) as im:
            im.draft("RGB", (THUMB_PX, THUMB_PX))
            small = im.convert("RGB")
        small.thumbnail((THUMB_PX, THUMB_PX), Image.BILINEAR)
        atomic_write(path, lambda p: small.save(p, format="JPEG", quality=85))
    return path
