"""Where a :class:`crossview.locate.Locator` finds the tiles of its index: their geometry (centre, size, scale), their
images, the tile nearest a point and aerial windows cut across tiles.

Two kinds:

- :class:`ManifestTiles`: a flat index and its tile manifest (``crossview tiles``), every tile in memory — the
  tables are small next to the index itself;
- :class:`RegionTiles`: a region index (:mod:`crossview.search.region`). Nothing is read at start-up: a tile's
  geometry comes from the cell files around it, its image from the manifest's file (an index built from a tile
  folder) or, for an index built from rasters (``crossview locate-index RASTERS…``), is cut from the raster when
  a stage first needs it — the same plan and true-north resampling as when it was embedded — and kept as a PNG in a
  cache folder (``tile_cache``; default a temporary folder removed with the locator). So a locator over a state's
  tiles starts in the time of one sidecar read and touches only the cells around each photo.
"""

from __future__ import annotations

import os
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from crossview.errors import ConfigError, CrossviewError
from crossview.geometry.geo import latlon_to_offset
from crossview.locate.area import tile_geometry, tiles_near
from crossview.tiles import Tile, read_manifest, square_footprint


class ManifestTiles(Mapping):
    """Index id -> :class:`Tile` for every row of a (flat) index, with the rows' geometry in index order."""

    def __init__(self, ids: list[str], by_id: dict[str, Tile]):
        self.ids, self._by_id = list(ids), by_id
        self.geometry = tile_geometry([by_id[i] for i in self.ids])  # rows in index order
        self._mosaic = None

    def __getitem__(self, tid: str) -> Tile:
        return self._by_id[tid]

    def geometry_of(self, tid: str) -> Tile:
        """The tile ``tid`` (its file exists already)."""
        return self._by_id[tid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def nearest(self, lat: float, lon: float) -> str:
        """The id of the tile whose centre is nearest to (lat, lon) (ties: the first in index order)."""
        east, north = latlon_to_offset(lat, lon, self.geometry[:, 0], self.geometry[:, 1])
        return self.ids[int(np.argmin(np.hypot(east, north)))]

    def any_near(self, lat: float, lon: float, radius_m: float) -> bool:
        return bool(tiles_near(self.geometry, lat, lon, radius_m).any())

    def mosaic(self):
        """Every tile as one :class:`crossview.tiles.mosaic.Mosaic` (made once)."""
        from crossview.tiles.mosaic import Mosaic

        if self._mosaic is None:
            self._mosaic = Mosaic([self._by_id[i] for i in self.ids])
        return self._mosaic


class RegionTiles:
    """The tiles of a region index, read when asked (see the module notes). ``manifest``: the tile manifest of an
    index built from a tile folder; without one the index must record the rasters it was cut from."""

    def __init__(self, index: Any, manifest: str | os.PathLike | None = None,
                 tile_cache: str | os.PathLike | None = None, cache_tiles: int = 4096):
        self.index = index
        self._manifest_path = manifest
        self._manifest: dict[str, Tile] | None = None
        extra = index.info.get("extra") or {}
        self._rasters = extra.get("rasters") if manifest is None else None
        if manifest is None and not self._rasters:
            raise ConfigError(f"index {index.path} records neither a tile manifest nor the rasters its tiles were "
                              "cut from, so its tiles cannot be shown to a fine model: pass --tiles MANIFEST")
        self._lock = threading.RLock()  # the page locates in threads
        self._tiles: OrderedDict[str, Tile] = OrderedDict()
        self._keep = int(cache_tiles)
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()  # decoded images, shared by the area mosaics
        if self._rasters:
            from crossview.locate.rasters import raster_prefixes
            from crossview.tiles.raster import RasterOptions

            for r in self._rasters:
                _check_raster(r, index.path)
            self._prefixes = raster_prefixes([Path(r["path"]) for r in self._rasters])
            self._tile_px, self._overlap = int(extra["tile_px"]), float(extra["overlap"])
            self._options = RasterOptions.from_json(extra.get("raster") or {})
            self._plans: dict[int, dict[tuple[int, int], tuple[float, float]]] = {}
            if tile_cache is None:
                tmp = tempfile.TemporaryDirectory(prefix="crossview-tiles-")
                self._cleanup = weakref.finalize(self, tmp.cleanup)
                tile_cache = tmp.name
            self.cache = Path(tile_cache)
            self.cache.mkdir(parents=True, exist_ok=True)

    # -- geometry, from the cells around a point --
    def nearest(self, lat: float, lon: float) -> str:
        """The id of the tile whose centre is nearest to (lat, lon)."""
        got = self.index.nearest(lat, lon)
        if got is None:
            raise CrossviewError(f"index {self.index.path} is empty")
        return got["id"]

    def any_near(self, lat: float, lon: float, radius_m: float) -> bool:
        return self.index.any_near(lat, lon, radius_m)

    def near(self, lat: float, lon: float, radius_m: float) -> list[str]:
        """Ids of the tiles whose footprint comes within ``radius_m`` of the point, in row order."""
        return list(self.index.near(lat, lon, radius_m, descriptors=False)["ids"])

    # -- tiles --
    def __getitem__(self, tid: str) -> Tile:
        """The tile ``tid``; one cut from a raster has its image file made on this first use."""
        with self._lock:
            tile = self.geometry_of(tid)
            if self._rasters:
                self._cut(tile)
            return tile

    def geometry_of(self, tid: str) -> Tile:
        """The tile ``tid`` without making its image (its centre, size and footprint)."""
        with self._lock:
            tile = self._tiles.get(tid)
            if tile is None:
                tile = self._from_raster(tid) if self._rasters else self._from_manifest(tid)
                self._tiles[tid] = tile
                while len(self._tiles) > self._keep:
                    self._tiles.popitem(last=False)
            else:
                self._tiles.move_to_end(tid)
            return tile

    def get(self, tid: str, default: Any = None) -> Tile | Any:
        """:meth:`geometry_of`, or ``default`` for an id that is not a tile of the index."""
        try:
            return self.geometry_of(tid)
        except CrossviewError:
            return default

    def _from_manifest(self, tid: str) -> Tile:
        if self._manifest is None:  # a region index from a tile folder names its tiles by their manifest ids
            self._manifest = {t.id: t for t in read_manifest(self._manifest_path)}
        try:
            return self._manifest[tid]
        except KeyError:
            raise CrossviewError(f"tile {tid!r} of index {self.index.path} is not in {self._manifest_path}: pass "
                                 "the manifest the index was built from (--tiles)") from None

    def _from_raster(self, tid: str) -> Tile:
        """The tile's geometry from its raster's tile plan (the centre it was embedded at)."""
        ri, name = self._raster_of(tid)
        try:
            r, c = (int(v[1:]) for v in name.split("_"))
            lat, lon = self._plan(ri)[(r, c)]
        except (ValueError, KeyError):
            raise CrossviewError(f"tile {tid!r} is not a tile of {self._rasters[ri]['path']} as index "
                                 f"{self.index.path} cut it") from None
        mpp = float(self._rasters[ri]["mpp"])
        size = self._tile_px * mpp
        return Tile(tid, self.cache / f"{tid.replace('/', '__')}.png", lat, lon, mpp, self._tile_px, self._tile_px,
                    square_footprint(lat, lon, size, size))

    def _open(self, ri: int):
        from crossview.tiles.raster import OpenRaster

        r = self._rasters[ri]
        return OpenRaster(Path(r["path"]), self._tile_px, self._overlap, float(r["mpp"]), self._options)

    def _plan(self, ri: int) -> dict[tuple[int, int], tuple[float, float]]:
        if ri not in self._plans:
            with self._open(ri) as raster:
                self._plans[ri] = {(r, c): (lat, lon) for r, c, lat, lon in raster.plan}
        return self._plans[ri]

    def _raster_of(self, tid: str) -> tuple[int, str]:
        for i, p in enumerate(self._prefixes):
            if tid.startswith(p):
                return i, tid[len(p):]
        raise CrossviewError(f"tile {tid!r} of index {self.index.path} names none of its rasters")

    def _cut(self, tile: Tile) -> None:
        """Write ``tile``'s image, cut from its raster as when it was embedded, unless it is there already."""
        if tile.path.is_file():
            return
        from crossview.tiles.raster import save_tile

        ri, _ = self._raster_of(tile.id)
        with self._open(ri) as raster:
            got = raster.read_at(tile.lat, tile.lon)
        if got is None:
            raise CrossviewError(f"tile {tile.id} of index {self.index.path} is outside "
                                 f"{self._rasters[ri]['path']}: the raster changed since the index was built; "
                                 "rebuild it (crossview locate-index)")
        save_tile(tile.path, got[0], compress_level=1)

    def mosaic(self) -> RegionMosaic:
        """Windows over whichever tiles they meet (:class:`RegionMosaic`)."""
        return RegionMosaic(self)


class RegionMosaic:
    """A :class:`crossview.tiles.mosaic.Mosaic` over whichever tiles of a region index a window meets: each call
    reads the tiles around the window (in row order) and cuts it from them."""

    def __init__(self, tiles: RegionTiles):
        self.tiles = tiles

    def _around(self, lat: float, lon: float, reach_m: float):
        from crossview.tiles.mosaic import Mosaic

        ids = self.tiles.near(lat, lon, reach_m)
        if not ids:
            raise CrossviewError(f"no tile covers the window at {lat:.6f},{lon:.6f}: it lies outside the tiles")
        return Mosaic([self.tiles[i] for i in ids], images=self.tiles._images)

    def mpp_near(self, lat: float, lon: float) -> float:
        return float(self.tiles[self.tiles.nearest(lat, lon)].mpp)

    def window(self, lat: float, lon: float, size_px: int, mpp: float | None = None) -> np.ndarray:
        """As :meth:`crossview.tiles.mosaic.Mosaic.window`, from the tiles within the window's half-diagonal."""
        with self.tiles._lock:  # the decoded images are shared: one window at a time
            mpp = self.mpp_near(lat, lon) if mpp is None else float(mpp)
            return self._around(lat, lon, 0.5 * np.sqrt(2.0) * int(size_px) * mpp).window(lat, lon, size_px, mpp)


def _check_raster(r: dict[str, Any], index: Path) -> None:
    p = Path(r["path"])
    if not p.is_file():
        raise ConfigError(f"index {index} was cut from the raster {p}, which is not there: put it back at that path "
                          "(or rebuild the index with crossview locate-index)")
    if p.stat().st_size != int(r["bytes"]):
        raise ConfigError(f"the raster {p} has changed since index {index} was built ({p.stat().st_size} bytes, "
                          f"was {r['bytes']}): its tiles would not be the ones embedded; rebuild the index")


def tile_source(index: Any, manifest: str | os.PathLike | None, what: str,
                tile_cache: str | os.PathLike | None = None) -> ManifestTiles | RegionTiles:
    """The tiles of ``index`` for a Locator: :class:`RegionTiles` for a region index, else :class:`ManifestTiles`
    from ``manifest`` (which a flat index needs)."""
    if hasattr(index, "search_near"):
        return RegionTiles(index, manifest, tile_cache)
    if manifest is None:
        raise ConfigError(f"{what} does not say where its tile images are: pass --tiles MANIFEST (from "
                          "`crossview tiles`)")
    from crossview.locate.models import match_tiles

    return ManifestTiles(index.ids, match_tiles(index.ids, read_manifest(manifest), what, manifest))
