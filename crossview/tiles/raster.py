"""Tiles from a geo-referenced raster (GeoTIFF, or anything else GDAL reads) in any CRS, through rasterio.

Every tile is a north-up square of ``tile_px`` pixels of ``mpp`` metres on the WGS84 tangent plane at its own
centre (``crossview.geometry.geodesy``), the frame the rest of the package places photos in: image columns run
along the meridian through the tile centre (true north, not the grid north of a projected CRS, which in UTM is
turned by the meridian convergence, about Δλ·sin φ: 2° at a zone's edge). Tile centres are laid out in rows of
constant latitude, ``tile_px * (1 - overlap)`` pixels apart on the ground.

For each tile, and only for it:

1. the source pixel under a 17 x 17 lattice of the tile's pixel centres (tangent plane -> lat/lon -> the raster's
   CRS -> the inverse geotransform, so rotated geotransforms work too), interpolated linearly to every pixel (the
   mapping is smooth: well under a millimetre off over a tile);
2. one windowed read of the source pixels under the tile, decimated to about the tile's resolution when the tile
   is coarser (GDAL then reads the best overview the file has), with its validity mask (nodata, alpha band or mask
   band);
3. bilinear resampling of the masked values, normalised by the resampled mask so nodata does not darken the edges;
   a stretch to 8 bits shared by the whole raster (computed once from a decimated read).

Tiles whose valid fraction is below ``min_valid`` are skipped and counted. Memory: one tile's window at a time plus
GDAL's block cache (``cache_mb``), whatever the raster's size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossview.errors import ConfigError, CrossviewError, DatasetError
from crossview.geometry.geo import distance_m
from crossview.geometry.geodesy import enu_to_latlon, radii
from crossview.io import atomic_write
from crossview.tiles.manifest import Tile, square_footprint

RASTER_SUFFIXES = (".tif", ".tiff", ".gtif", ".gtiff", ".vrt", ".jp2")
LATTICE = 17  # lattice nodes per tile side at which the source position is computed exactly
STATS_PX = 1024  # longest side of the decimated read the stretch is computed from
_STRETCH = re.compile(r"^(auto|none|minmax|percentile|range)(?::\s*(-?[\d.eE+-]+)\s*,\s*(-?[\d.eE+-]+))?$")


@dataclass(frozen=True)
class RasterOptions:
    """How raster values become 8-bit RGB tiles.

    ``bands``: 1-based band numbers, three (red, green, blue) or one (grey); None picks the bands whose colour
    interpretation is red/green/blue, else bands 1-3, else band 1 (an alpha band is never a colour).
    ``stretch``: ``auto`` (8-bit data as is, anything else ``percentile``), ``none`` (values clipped to 0-255),
    ``minmax``, ``percentile`` (2-98 % by default, or ``percentile:LO,HI``) or ``range:LO,HI`` (fixed values, e.g.
    ``range:0,4095`` for 12-bit data), per band over the valid pixels of the whole raster.
    ``min_valid``: tiles with a smaller fraction of valid (not nodata, not outside) pixels are skipped.
    ``cache_mb``: GDAL's block cache while tiling.
    """

    bands: tuple[int, ...] | None = None
    stretch: str = "auto"
    min_valid: float = 0.5
    cache_mb: int = 96

    def to_json(self) -> dict[str, Any]:
        return {"bands": list(self.bands) if self.bands else None, "stretch": self.stretch,
                "min_valid": self.min_valid}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RasterOptions:
        """The options :meth:`to_json` recorded (the block cache is not recorded: the default)."""
        bands = data.get("bands")
        return cls(tuple(int(b) for b in bands) if bands else None, str(data.get("stretch", "auto")),
                   float(data.get("min_valid", 0.5)))


def parse_bands(text: str | tuple | list | None) -> tuple[int, ...] | None:
    """``"3,2,1"`` or ``"1"`` -> band numbers (1-based), checked; None/empty -> None (pick automatically)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        bands = tuple(int(v) for v in (text.split(",") if isinstance(text, str) else text))
    except ValueError as exc:
        raise ConfigError(f"--bands {text!r}: expected band numbers like 1,2,3 (red, green, blue) or 1") from exc
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise ConfigError(f"--bands {text!r}: give three band numbers (red,green,blue) or one (grey), counted from 1")
    return bands


def parse_stretch(text: str) -> tuple[str, float | None, float | None]:
    """``auto | none | minmax | percentile[:LO,HI] | range:LO,HI`` -> (kind, lo, hi), checked."""
    m = _STRETCH.match(str(text).strip().lower())
    if not m:
        raise ConfigError(f"--stretch {text!r}: use auto, none, minmax, percentile (or percentile:2,98) or "
                          "range:LO,HI (e.g. range:0,4095 for 12-bit data)")
    kind, lo, hi = m.group(1), m.group(2), m.group(3)
    if kind == "range" and lo is None:
        raise ConfigError(f"--stretch {text!r}: range needs its values, e.g. range:0,4095")
    if lo is not None and kind not in ("range", "percentile"):
        raise ConfigError(f"--stretch {text!r}: only percentile and range take values")
    if kind == "percentile" and lo is None:
        lo, hi = 2.0, 98.0
    lo_f, hi_f = (None, None) if lo is None else (float(lo), float(hi))
    if lo_f is not None and not hi_f > lo_f:
        raise ConfigError(f"--stretch {text!r}: the high value must be above the low one")
    if kind == "percentile" and not (0 <= lo_f < hi_f <= 100):
        raise ConfigError(f"--stretch {text!r}: percentiles run from 0 to 100")
    return kind, lo_f, hi_f


def import_rasterio(path: Path):
    """rasterio (with ``rasterio.warp``), or a CrossviewError saying how to install it."""
    try:
        import rasterio
        import rasterio.enums  # noqa: F401 - used through the module
        import rasterio.errors  # noqa: F401
        import rasterio.warp  # noqa: F401
        import rasterio.windows  # noqa: F401
    except ImportError as exc:
        raise CrossviewError(f"{path} is a geo-referenced raster: reading it needs rasterio, which is not installed. "
                             "Run `pip install -e '.[geo]'` (or `pip install rasterio`: its wheels bundle GDAL), or "
                             "export a PNG and pass --corners lat0,lon0,lat1,lon1") from exc
    return rasterio


# --- the raster ---------------------------------------------------------------------------------------------
class _Source:
    """An open raster with its geotransform, CRS conversions, chosen bands and stretch."""

    def __init__(self, rasterio, ds, path: Path, options: RasterOptions):
        self.rio, self.ds, self.path = rasterio, ds, path
        if ds.crs is None:
            hint = "it has ground control points only: " if ds.gcps[0] else ""
            raise DatasetError(f"{path} has no coordinate reference system ({hint}warp it to one first, e.g. "
                               "`gdalwarp -t_srs EPSG:4326 in.tif out.tif`), or use a PNG with --corners")
        t = ds.transform
        if abs(t.a * t.e - t.b * t.d) < 1e-300:
            raise DatasetError(f"{path} has a degenerate geotransform {tuple(t)[:6]}; fix its geo-referencing")
        self.crs, self.inverse = ds.crs, ~t
        flags = self.rio.enums.MaskFlags
        self.all_valid = all(f == [flags.all_valid] for f in ds.mask_flag_enums)  # no nodata, alpha or mask band
        self.bands, self.lut = self._pick_bands(options.bands)
        self.kind, lo, hi = parse_stretch(options.stretch)
        if self.kind == "auto":
            self.kind, lo, hi = ("none", None, None) if self.lut is not None or ds.dtypes[0] == "uint8" \
                else ("percentile", 2.0, 98.0)
        self.lo, self.hi = self._stretch_limits(lo, hi)

    # -- bands and stretch --
    def _pick_bands(self, bands: tuple[int, ...] | None) -> tuple[list[int], np.ndarray | None]:
        ds, ci = self.ds, self.rio.enums.ColorInterp
        if bands is not None:
            bad = [b for b in bands if b > ds.count]
            if bad:
                raise ConfigError(f"--bands {','.join(map(str, bands))}: {self.path} has {ds.count} band(s), "
                                  f"no band {bad[0]}")
            chosen = list(bands)
        else:
            interp = list(ds.colorinterp)
            rgb = [interp.index(c) + 1 for c in (ci.red, ci.green, ci.blue) if c in interp]
            colour = [i + 1 for i, c in enumerate(interp) if c != ci.alpha]
            chosen = rgb if len(rgb) == 3 else colour[:3] if len(colour) >= 3 else colour[:1] or [1]
        lut = None
        if len(chosen) == 1 and ds.colorinterp[chosen[0] - 1] == ci.palette:
            lut = np.zeros((256, 3), np.float32)  # palette index -> RGB, applied before resampling
            for k, rgba in ds.colormap(chosen[0]).items():
                if 0 <= k < 256:
                    lut[k] = rgba[:3]
        return chosen, lut

    def _stretch_limits(self, lo: float | None, hi: float | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        n = 3 if self.lut is not None else len(self.bands)
        if self.kind == "none":
            return None, None
        if self.kind == "range":
            return np.full(n, lo, np.float32), np.full(n, hi, np.float32)
        ds = self.ds
        k = max(1.0, max(ds.width, ds.height) / STATS_PX)
        shape = (max(1, round(ds.height / k)), max(1, round(ds.width / k)))
        values = self._colour(ds.read(self.bands, out_shape=(len(self.bands), *shape)).astype(np.float32))
        valid = ds.dataset_mask(out_shape=shape) > 0
        if not valid.any():
            raise DatasetError(f"{self.path}: every pixel is nodata or masked; check its nodata value or mask")
        v = values[:, valid]
        if self.kind == "minmax":
            return v.min(axis=1), v.max(axis=1)
        return np.percentile(v, lo, axis=1).astype(np.float32), np.percentile(v, hi, axis=1).astype(np.float32)

    def _colour(self, arr: np.ndarray) -> np.ndarray:
        """(bands, h, w) values -> (channels, h, w) float32 (a palette index becomes its RGB)."""
        if self.lut is None:
            return arr.astype(np.float32, copy=False)
        return np.moveaxis(self.lut[np.clip(arr[0], 0, 255).astype(np.intp)], -1, 0)

    def to_uint8(self, values: np.ndarray) -> np.ndarray:
        """(channels, h, w) float32 -> (h, w, 3) uint8 through the raster's stretch."""
        if self.lo is not None:
            scale = 255.0 / np.maximum(self.hi - self.lo, 1e-12)
            values = (values - self.lo[:, None, None]) * scale[:, None, None]
        out = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        if out.shape[0] == 1:
            out = np.repeat(out, 3, axis=0)
        return np.ascontiguousarray(np.moveaxis(out, 0, -1))

    # -- geometry --
    def latlon_to_pixel(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """WGS84 lat/lon -> source pixel (col, row), continuous: pixel ``i`` spans ``[i, i + 1)``."""
        xs, ys = self.rio.warp.transform("EPSG:4326", self.crs, np.ravel(lon).tolist(), np.ravel(lat).tolist())
        inv = self.inverse
        xs, ys = np.asarray(xs), np.asarray(ys)
        col, row = inv.a * xs + inv.b * ys + inv.c, inv.d * xs + inv.e * ys + inv.f
        return col.reshape(np.shape(lat)), row.reshape(np.shape(lat))

    def pixel_to_latlon(self, col: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source pixel (col, row), continuous -> WGS84 lat/lon."""
        t = self.ds.transform
        col, row = np.asarray(col, np.float64), np.asarray(row, np.float64)
        xs, ys = t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f
        lon, lat = self.rio.warp.transform(self.crs, "EPSG:4326", xs.ravel().tolist(), ys.ravel().tolist())
        return np.asarray(lat).reshape(col.shape), np.asarray(lon).reshape(col.shape)

    def native_mpp(self) -> float:
        """Ground metres per source pixel at the raster's centre (geometric mean of its two sides)."""
        cx, cy = self.ds.width / 2, self.ds.height / 2
        lat, lon = self.pixel_to_latlon(np.array([cx, cx + 1, cx]), np.array([cy, cy, cy + 1]))
        mx = distance_m((lat[0], lon[0]), (lat[1], lon[1]))
        my = distance_m((lat[0], lon[0]), (lat[2], lon[2]))
        return math.sqrt(mx * my)

    def bounds_latlon(self, steps: int = 32) -> tuple[float, float, float, float]:
        """(south, north, west, east) degrees of the raster's outline, densified so curved edges are covered."""
        w, h, s = self.ds.width, self.ds.height, np.linspace(0, 1, steps + 1)
        col = np.concatenate([s * w, np.full_like(s, w), s[::-1] * w, np.zeros_like(s)])
        row = np.concatenate([np.zeros_like(s), s * h, np.full_like(s, h), s[::-1] * h])
        lat, lon = self.pixel_to_latlon(col, row)
        if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
            raise DatasetError(f"{self.path}: its outline does not convert to lat/lon (CRS {self.crs}); reproject it "
                               "to a projected CRS or EPSG:4326 first")
        if lon.max() - lon.min() > 180:
            raise DatasetError(f"{self.path} spans the antimeridian; split it at 180° longitude first")
        return float(lat.min()), float(lat.max()), float(lon.min()), float(lon.max())

    # -- one tile --
    def read_tile(self, lat0: float, lon0: float, tile_px: int, mpp: float) -> tuple[np.ndarray, float] | None:
        """The (tile_px, tile_px, 3) uint8 tile centred on (lat0, lon0) and its valid fraction; None when it lies
        wholly outside the raster."""
        from scipy.ndimage import map_coordinates

        ds = self.ds
        nodes = np.linspace(0.5, tile_px - 0.5, LATTICE)  # pixel centres of the lattice
        east, north = np.meshgrid((nodes - tile_px / 2) * mpp, (tile_px / 2 - nodes) * mpp)
        lat, lon = enu_to_latlon(east, north, lat0, lon0)
        col, row = self.latlon_to_pixel(lat, lon)
        if not (np.isfinite(col).all() and np.isfinite(row).all()):
            return None
        # source pixels per tile pixel: the Jacobian's area, so a rotation does not count
        span = nodes[-1] - nodes[0]
        dc_dx, dr_dx = (col[:, -1] - col[:, 0]).mean() / span, (row[:, -1] - row[:, 0]).mean() / span
        dc_dy, dr_dy = (col[-1] - col[0]).mean() / span, (row[-1] - row[0]).mean() / span
        factor = math.sqrt(abs(dc_dx * dr_dy - dr_dx * dc_dy))
        pad = 2.0 + 2.0 * max(1.0, factor)  # the edge tile pixels' footprint plus the interpolation's reach
        c0, c1 = max(0, math.floor(col.min() - pad)), min(ds.width, math.ceil(col.max() + pad))
        r0, r1 = max(0, math.floor(row.min() - pad)), min(ds.height, math.ceil(row.max() + pad))
        if c1 - c0 < 1 or r1 - r0 < 1:
            return None
        win_w, win_h = c1 - c0, r1 - r0
        shape = (win_h, win_w) if factor <= 1.25 else (max(1, math.ceil(win_h / factor)),
                                                        max(1, math.ceil(win_w / factor)))
        window = self.rio.windows.Window(c0, r0, win_w, win_h)
        rs = self.rio.enums.Resampling
        resampling = rs.nearest if self.lut is not None or shape == (win_h, win_w) else rs.average
        values = self._colour(ds.read(self.bands, window=window, out_shape=(len(self.bands), *shape),
                                      resampling=resampling))
        mask = None if self.all_valid else \
            (ds.dataset_mask(window=window, out_shape=shape, resampling=rs.nearest) > 0).astype(np.float32)
        # every tile pixel's position in the read array (its index i holds source position c0 + (i + 0.5) * k)
        ci = (_upsample(col, tile_px) - c0) * (shape[1] / win_w) - 0.5
        ri = (_upsample(row, tile_px) - r0) * (shape[0] / win_h) - 0.5
        coords = np.stack([ri, ci]).astype(np.float32)
        order = 0 if self.lut is not None else 1

        def sample(a: np.ndarray) -> np.ndarray:
            return map_coordinates(a, coords, order=order, mode="nearest", prefilter=False)

        # inside the window read (outside it is outside the raster), and not nodata/masked there
        h, w = shape
        valid = (ri >= -0.5) & (ri <= h - 0.5) & (ci >= -0.5) & (ci <= w - 0.5)
        out = np.empty((values.shape[0], tile_px, tile_px), np.float32)
        if mask is None:
            for b in range(values.shape[0]):
                out[b] = sample(values[b])
        else:
            weight = sample(mask)
            valid &= weight >= 0.5
            for b in range(values.shape[0]):  # normalised by the mask's weight so nodata does not bleed in
                out[b] = sample(values[b] * mask) / np.maximum(weight, 1e-6)
        image = self.to_uint8(out)
        image[~valid] = 0
        return image, float(valid.mean())


def _upsample(lattice: np.ndarray, n: int) -> np.ndarray:
    """Values on the LATTICE x LATTICE grid of pixel centres -> every pixel of an n x n tile, bilinearly."""
    pos = np.arange(n) * (LATTICE - 1) / (n - 1)  # pixel centre i + 0.5 sits at lattice position pos[i]
    j = np.clip(np.floor(pos).astype(np.intp), 0, LATTICE - 2)
    f = pos - j
    rows = lattice[:, j] * (1 - f) + lattice[:, j + 1] * f  # (LATTICE, n)
    return rows[j] * (1 - f)[:, None] + rows[j + 1] * f[:, None]


def _centres(extent_m: float, size_m: float, step_m: float) -> list[float]:
    """Distances of tile centres from the start of an ``extent_m`` span: every ``step_m``, the last flush."""
    if extent_m <= size_m:
        return [extent_m / 2]
    out = list(np.arange(size_m / 2, extent_m - size_m / 2 + 1e-9, step_m))
    if extent_m - size_m / 2 - out[-1] > 1e-6 * size_m:
        out.append(extent_m - size_m / 2)
    return [float(v) for v in out]


def tile_plan(src: _Source, tile_px: int, overlap: float, mpp: float) -> list[tuple[int, int, float, float]]:
    """Every candidate tile of an open raster, in order: (row, column, centre lat, centre lon); rows of constant
    latitude from north to south, ``tile_px * (1 - overlap)`` pixels of ``mpp`` metres apart."""
    south, north, west, east = src.bounds_latlon()
    size_m = tile_px * mpp
    step_m = max(1, round(tile_px * (1 - overlap))) * mpp
    m_lat, _ = radii((south + north) / 2)
    plan = []
    for r, d in enumerate(_centres(math.radians(north - south) * m_lat, size_m, step_m)):
        lat = north - math.degrees(d / m_lat)
        _, m_lon = radii(lat)
        cols = _centres(math.radians(east - west) * m_lon, size_m, step_m)
        plan += [(r, c, lat, west + math.degrees(e / m_lon)) for c, e in enumerate(cols)]
    return plan


def tile_id(r: int, c: int) -> str:
    return f"r{r:04d}_c{c:04d}"


def save_tile(path: Path, image: np.ndarray, compress_level: int = 6) -> Path:
    """Write a cut tile (H, W, 3 uint8) as a PNG, atomically (lossless: read back, it is the array cut)."""
    from PIL import Image

    im = Image.fromarray(image)
    return atomic_write(path, lambda p: im.save(p, format="PNG", compress_level=compress_level))


class OpenRaster:
    """A raster opened for tiling (a context manager): ``.source`` (its :class:`_Source`), ``.mpp``,
    ``.plan`` (:func:`tile_plan`, made on first use), ``read(k)`` -> tile ``k``'s (image, valid fraction) or None,
    and ``read_at(lat, lon)`` the same for the tile centred there (a plan entry's centre gives that tile)."""

    def __init__(self, source: Path, tile_px: int, overlap: float, mpp: float | None,
                 options: RasterOptions = RasterOptions()):
        self.path, self.tile_px, self.options = Path(source), int(tile_px), options
        self.rio = import_rasterio(self.path)
        self._env = self.rio.Env(GDAL_CACHEMAX=int(options.cache_mb) * 2**20)
        self._env.__enter__()
        try:
            self.ds = _open(self.rio, self.path)
            self.source = _Source(self.rio, self.ds, self.path, options)
            self.mpp = float(mpp or self.source.native_mpp())
        except BaseException:
            self.close()
            raise
        self.overlap = float(overlap)
        self._plan: list[tuple[int, int, float, float]] | None = None

    @property
    def plan(self) -> list[tuple[int, int, float, float]]:
        if self._plan is None:
            self._plan = tile_plan(self.source, self.tile_px, self.overlap, self.mpp)
        return self._plan

    def read(self, k: int) -> tuple[np.ndarray, float] | None:
        r, c, lat, lon = self.plan[k]
        return self.read_at(lat, lon)

    def read_at(self, lat: float, lon: float) -> tuple[np.ndarray, float] | None:
        return self.source.read_tile(lat, lon, self.tile_px, self.mpp)

    def close(self) -> None:
        if getattr(self, "ds", None) is not None:
            self.ds.close()
            self.ds = None
        self._env.__exit__(None, None, None)

    def __enter__(self) -> OpenRaster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tile_raster(source: Path, out: Path, tile_px: int, overlap: float, mpp: float | None,
                options: RasterOptions = RasterOptions()) -> tuple[list[Tile], dict[str, Any]]:
    """Cut a geo-referenced raster into north-up ``tile_px`` tiles under ``out/tiles``.

    ``mpp``: the tiles' metres per pixel (default: the raster's own ground resolution at its centre).
    Returns the tiles and what the manifest records about the source (CRS, size, bands, stretch, skipped tiles).
    """
    from crossview.progress import progress

    rasterio = import_rasterio(source)
    if not 0 <= options.min_valid <= 1:
        raise ConfigError(f"--min-valid {options.min_valid}: a fraction from 0 to 1")
    with rasterio.Env(GDAL_CACHEMAX=int(options.cache_mb) * 2**20), _open(rasterio, source) as ds:
        src = _Source(rasterio, ds, source, options)
        native = src.native_mpp()
        mpp = float(mpp or native)
        south, north, west, east = src.bounds_latlon()
        size_m = tile_px * mpp
        plan = tile_plan(src, tile_px, overlap, mpp)
        tiles, empty = [], 0
        bar = progress(total=len(plan), desc="tiles", unit="tile")
        for r, c, lat, lon in plan:
            bar.update(1)
            got = src.read_tile(lat, lon, tile_px, mpp)
            if got is None or got[1] < options.min_valid:
                empty += 1
                continue
            tid = tile_id(r, c)
            path = save_tile(out / "tiles" / f"{tid}.png", got[0])
            tiles.append(Tile(tid, path, lat, lon, mpp, tile_px, tile_px, square_footprint(lat, lon, size_m, size_m)))
        bar.close()
        info = {"source": {"crs": ds.crs.to_string(), "width": ds.width, "height": ds.height, "count": ds.count,
                           "dtype": ds.dtypes[0], "native_mpp": native, "bands": src.bands,
                           "palette": src.lut is not None, "overviews": ds.overviews(src.bands[0]),
                           "bounds": {"south": south, "north": north, "west": west, "east": east},
                           "stretch": {"kind": src.kind,
                                       "lo": None if src.lo is None else [float(v) for v in src.lo],
                                       "hi": None if src.hi is None else [float(v) for v in src.hi]}},
                "skipped": {"mostly_empty": empty, "min_valid": options.min_valid, "considered": len(plan)}}
    if not tiles:
        raise DatasetError(f"{source}: none of its {len(plan)} tiles has {options.min_valid:.0%} valid pixels (the "
                           "rest is nodata, masked or outside the raster); lower --min-valid or --tile-px")
    return tiles, info


def _open(rasterio, path: Path):
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise DatasetError(f"cannot open {path} as a raster: {exc}") from exc
