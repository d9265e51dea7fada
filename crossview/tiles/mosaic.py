"""Aerial windows centred anywhere: a :class:`Mosaic` of overlapping north-up tiles cuts a square window of any
centre from them, so a fine model can look at the ground with the camera near the window's centre (where it was
trained) rather than wherever the camera happens to fall in the fixed tile grid.

Frames: lat/lon WGS84; metres east/north on the tangent plane at the window's centre; pixels x right, y down,
pixel ``i`` spanning ``[i, i + 1)``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from crossview.errors import CrossviewError
from crossview.geometry.geo import latlon_to_offset


class Mosaic:
    """Windows cut from ``tiles`` (:class:`crossview.tiles.Tile`, north-up, overlapping): each output pixel is read
    (bilinearly) from the tile that holds it most centrally; pixels that no tile covers are black. Tile images are
    read lazily and the last ``cache`` kept (in ``images``, by tile id, when given: mosaics over different tiles
    of one region can share it)."""

    def __init__(self, tiles: list[Any], cache: int = 64, images: OrderedDict[str, np.ndarray] | None = None):
        if not tiles:
            raise CrossviewError("a mosaic needs at least one tile")
        self.tiles = list(tiles)
        self.geometry = np.array([[t.lat, t.lon, 0.5 * t.width * t.mpp, 0.5 * t.height * t.mpp]
                                  for t in self.tiles], dtype=np.float64)
        self._images: OrderedDict[str, np.ndarray] = OrderedDict() if images is None else images
        self._cache = int(cache)

    def _image(self, i: int) -> np.ndarray:
        key = self.tiles[i].id
        if key in self._images:
            self._images.move_to_end(key)
            return self._images[key]
        from PIL import Image

        with Image.open(self.tiles[i].path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32)
        self._images[key] = arr
        while len(self._images) > self._cache:
            self._images.popitem(last=False)
        return arr

    def mpp_near(self, lat: float, lon: float) -> float:
        """Metres per pixel of the tile centred nearest to (lat, lon)."""
        east, north = latlon_to_offset(lat, lon, self.geometry[:, 0], self.geometry[:, 1])
        return float(self.tiles[int(np.argmin(np.hypot(east, north)))].mpp)

    def window(self, lat: float, lon: float, size_px: int, mpp: float | None = None) -> np.ndarray:
        """The north-up ``size_px`` × ``size_px`` window centred on (lat, lon) at ``mpp`` metres per pixel (default:
        that of the nearest tile), as uint8 RGB (H, W, 3). Raises when no tile overlaps it."""
        mpp = self.mpp_near(lat, lon) if mpp is None else float(mpp)
        s = int(size_px)
        half_m = 0.5 * s * mpp
        # tile centres from the window's centre (east, north metres on its tangent plane)
        east, north = (np.asarray(v, dtype=np.float64)
                       for v in latlon_to_offset(lat, lon, self.geometry[:, 0], self.geometry[:, 1]))
        near = np.flatnonzero((np.abs(east) < self.geometry[:, 2] + half_m)
                              & (np.abs(north) < self.geometry[:, 3] + half_m))
        if len(near) == 0:
            raise CrossviewError(f"no tile covers the window at {lat:.6f},{lon:.6f}: it lies outside the tiles")
        c = (np.arange(s, dtype=np.float64) + 0.5 - 0.5 * s) * mpp
        e, n = np.meshgrid(c, -c)  # metres east / north of every output pixel centre
        out = np.zeros((s, s, 3), dtype=np.float32)
        best = np.full((s, s), np.inf)  # how central the chosen source pixel is in its tile (0 centre, 1 edge)
        for i in near:
            t = self.tiles[i]
            xs = 0.5 * t.width + (e - east[i]) / t.mpp  # continuous source coordinates
            ys = 0.5 * t.height - (n - north[i]) / t.mpp
            rank = np.maximum(np.abs(xs / t.width - 0.5), np.abs(ys / t.height - 0.5)) * 2
            take = (rank < best) & (xs >= 0.5) & (xs <= t.width - 0.5) & (ys >= 0.5) & (ys <= t.height - 0.5)
            if not take.any():
                continue
            out[take] = _bilinear(self._image(int(i)), xs[take] - 0.5, ys[take] - 0.5)
            best[take] = rank[take]
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``img`` (H, W, C) at pixel-index coordinates (x, y) inside [0, W-1] × [0, H-1], bilinearly."""
    h, w = img.shape[:2]
    x0 = np.clip(np.floor(x).astype(np.int64), 0, w - 2 if w > 1 else 0)
    y0 = np.clip(np.floor(y).astype(np.int64), 0, h - 2 if h > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy
