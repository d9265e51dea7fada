"""Build a north-up, overlapping aerial tile set with a ``manifest.json`` from geo-referenced imagery.

Three kinds of source:

- a GeoTIFF (read with rasterio, an optional dependency: ``pip install rasterio``);
- a PNG/JPEG plus the lat/lon of its north-west and south-east corners (``corners``), assumed linear in
  lat/lon between them (fine over the few kilometres an orthophoto covers);
- a folder of geo-tagged tiles named like VIGOR's ``satellite_<lat>_<lon>.png`` (the name gives the tile
  centre), with their metres per pixel from ``mpp``, a ``crossview_meta.json`` above them, or VIGOR's
  per-city values. These are already tiles: they are listed, not cut again.

Frames: pixel (x right, y down, origin top-left); lat/lon WGS84 degrees; local metres east/north on the
tangent plane at a tile's centre. The manifest is written last and atomically, so a folder with a
``manifest.json`` is complete; a second call with the same parameters returns at once.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossview.errors import ConfigError, CrossviewError, DatasetError
from crossview.geometry.geo import VIGOR_MPP_640, offset_to_latlon
from crossview.geometry.geodesy import geodesic_m
from crossview.io import atomic_write, write_json_atomic

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GEOTIFF_SUFFIXES = (".tif", ".tiff", ".gtif", ".gtiff")
_TILE_NAME = re.compile(r"^satellite_(-?\d+(?:\.\d+)?)_(-?\d+(?:\.\d+)?)\.(?:png|jpe?g)$", re.IGNORECASE)

LatLon = tuple[float, float]


def _offset(lat0: float, lon0: float, east_m: float, north_m: float) -> LatLon:
    lat, lon = offset_to_latlon(lat0, lon0, east_m, north_m)
    return float(lat), float(lon)


def distance_m(a: LatLon, b: LatLon) -> float:
    """WGS84 geodesic distance in metres between two (lat, lon) points."""
    return float(geodesic_m(a[0], a[1], b[0], b[1]))


# --- the manifest ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tile:
    """One north-up aerial tile: its file, centre (lat, lon), metres per pixel and corner lat/lons."""

    id: str
    path: Path
    lat: float
    lon: float
    mpp: float
    width: int
    height: int
    footprint: dict[str, LatLon]  # "nw", "ne", "se", "sw" -> (lat, lon) of the image corners

    def to_json(self, root: Path) -> dict[str, Any]:
        try:
            file = self.path.relative_to(root).as_posix()
        except ValueError:
            file = str(self.path)
        return {"id": self.id, "file": file, "lat": self.lat, "lon": self.lon, "mpp": self.mpp,
                "width": self.width, "height": self.height,
                "footprint": {k: list(v) for k, v in self.footprint.items()}}

    def pixel_of(self, east_m: float, north_m: float) -> tuple[float, float]:
        """Pixel (x right, y down) of a point ``east_m``/``north_m`` metres from the tile centre."""
        return self.width / 2 + east_m / self.mpp, self.height / 2 - north_m / self.mpp


def read_manifest(path: str | os.PathLike) -> list[Tile]:
    """The tiles of a ``manifest.json`` (or of the folder holding one), paths resolved against its folder."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        data = json.loads(path.read_text())
        root = path.parent
        tiles = []
        for t in data["tiles"]:
            file = Path(t["file"])
            tiles.append(Tile(str(t["id"]), file if file.is_absolute() else root / file, float(t["lat"]),
                              float(t["lon"]), float(t["mpp"]), int(t["width"]), int(t["height"]),
                              {k: (float(v[0]), float(v[1])) for k, v in t["footprint"].items()}))
    except FileNotFoundError as exc:
        raise DatasetError(f"no tile manifest at {path}; build one with `crossview tiles SOURCE --out DIR`") from exc
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise DatasetError(f"tile manifest {path} is malformed ({exc!r}); rebuild it with `crossview tiles`") from exc
    return tiles


# --- sources -----------------------------------------------------------------------------------------------
def parse_corners(text: str | tuple | list) -> tuple[float, float, float, float]:
    """``lat0,lon0,lat1,lon1`` (north-west then south-east corner) -> four floats, checked."""
    try:
        parts = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError as exc:
        raise ConfigError(f"--corners {text!r}: expected four numbers lat0,lon0,lat1,lon1") from exc
    if len(parts) != 4:
        raise ConfigError(f"--corners {text!r}: expected four numbers lat0,lon0,lat1,lon1 (north-west, south-east)")
    lat0, lon0, lat1, lon1 = parts
    if not (-90 <= lat1 < lat0 <= 90):
        raise ConfigError(f"--corners: the north-west latitude {lat0} must be north of the south-east one {lat1}")
    if not (-180 <= lon0 < lon1 <= 180):
        raise ConfigError(f"--corners: the north-west longitude {lon0} must be west of the south-east one {lon1}")
    return lat0, lon0, lat1, lon1


def _open_rgb(path: Path):
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def _load_geotiff(path: Path):
    """(RGB PIL image, pixel -> (lat, lon)) from a north-up GeoTIFF, via rasterio."""
    try:
        import rasterio
        import rasterio.warp
    except ImportError as exc:
        raise CrossviewError(f"{path} is a GeoTIFF: reading it needs rasterio, which is not installed. Run "
                             "`pip install rasterio`, or export a PNG and pass --corners lat0,lon0,lat1,lon1") from exc
    import numpy as np
    from PIL import Image

    with rasterio.open(path) as ds:
        if ds.crs is None:
            raise DatasetError(f"{path} has no coordinate reference system; use a PNG with --corners instead")
        t = ds.transform
        if abs(t.b) > 1e-12 or abs(t.d) > 1e-12 or t.e >= 0:
            raise DatasetError(f"{path} is rotated or not north-up; warp it north-up first (gdalwarp)")
        arr = ds.read([1, 2, 3] if ds.count >= 3 else [1])
        crs, geographic = ds.crs, ds.crs.is_geographic
    arr = np.moveaxis(arr, 0, -1)
    if arr.dtype != np.uint8:  # 16-bit or float imagery: 2-98 % stretch per band
        arr = arr.astype(np.float64)
        lo, hi = np.percentile(arr, 2, axis=(0, 1)), np.percentile(arr, 98, axis=(0, 1))
        arr = np.clip((arr - lo) / np.maximum(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)

    def pix2ll(x: float, y: float) -> LatLon:
        cx, cy = t * (x, y)
        if geographic:
            return float(cy), float(cx)
        lon, lat = rasterio.warp.transform(crs, "EPSG:4326", [cx], [cy])
        return float(lat[0]), float(lon[0])

    return Image.fromarray(arr), pix2ll


def _corner_mapping(width: int, height: int, corners) -> Callable[[float, float], LatLon]:
    lat0, lon0, lat1, lon1 = corners

    def pix2ll(x: float, y: float) -> LatLon:
        return lat0 + (lat1 - lat0) * y / height, lon0 + (lon1 - lon0) * x / width

    return pix2ll


def _starts(n: int, tile: int, step: int) -> list[int]:
    starts = list(range(0, n - tile + 1, step))
    if starts[-1] != n - tile:  # the last tile is flush with the edge so nothing is left out
        starts.append(n - tile)
    return starts


def _footprint(pix2ll, x0: float, y0: float, x1: float, y1: float) -> dict[str, LatLon]:
    return {"nw": pix2ll(x0, y0), "ne": pix2ll(x1, y0), "se": pix2ll(x1, y1), "sw": pix2ll(x0, y1)}


def _cut_raster(image, pix2ll, out: Path, tile_px: int, overlap: float, mpp: float | None) -> list[Tile]:
    from PIL import Image

    w, h = image.size
    cx, cy = w / 2, h / 2
    mx = distance_m(pix2ll(cx - 0.5, cy), pix2ll(cx + 0.5, cy))
    my = distance_m(pix2ll(cx, cy - 0.5), pix2ll(cx, cy + 0.5))
    target = mpp if mpp else (math.sqrt(mx * my) if abs(mx / my - 1) > 0.01 else None)
    if target:  # resample to square pixels of the requested size
        nw, nh = max(1, round(w * mx / target)), max(1, round(h * my / target))
        if (nw, nh) != (w, h):
            image = image.resize((nw, nh), Image.LANCZOS)
            base, sx, sy = pix2ll, w / nw, h / nh

            def pix2ll(x: float, y: float) -> LatLon:  # noqa: F811 - the resampled image's mapping
                return base(x * sx, y * sy)

        w, h = nw, nh
    if w < tile_px or h < tile_px:
        raise ConfigError(f"the image is {w}x{h} px at the chosen resolution, smaller than one {tile_px}-px tile; "
                          "lower --tile-px or pass a smaller --mpp")
    step = max(1, round(tile_px * (1 - overlap)))
    tiles_dir = out / "tiles"
    tiles = []
    from crossview.progress import progress

    rows, cols = _starts(h, tile_px, step), _starts(w, tile_px, step)
    bar = progress(total=len(rows) * len(cols), desc="tiles", unit="tile")
    for r, y0 in enumerate(rows):
        for c, x0 in enumerate(cols):
            bar.update(1)
            tid = f"r{r:04d}_c{c:04d}"
            fp = _footprint(pix2ll, x0, y0, x0 + tile_px, y0 + tile_px)
            lat, lon = pix2ll(x0 + tile_px / 2, y0 + tile_px / 2)
            tile_mpp = (distance_m(fp["nw"], fp["ne"]) + distance_m(fp["nw"], fp["sw"])) / (2 * tile_px)
            crop = image.crop((x0, y0, x0 + tile_px, y0 + tile_px))
            path = atomic_write(tiles_dir / f"{tid}.png", lambda p, im=crop: im.save(p, format="PNG"))
            tiles.append(Tile(tid, path, lat, lon, tile_mpp, tile_px, tile_px, fp))
    bar.close()
    return tiles


def _meta_mpp(folder: Path) -> dict[str, float]:
    """Per-group m/px from a ``crossview_meta.json`` in ``folder`` or above it (the synthetic world writes one)."""
    for d in [folder, *folder.parents][:4]:
        meta = d / "crossview_meta.json"
        if meta.is_file():
            try:
                data = json.loads(meta.read_text())
            except ValueError as exc:
                raise DatasetError(f"{meta} is not valid JSON: {exc}") from exc
            for key in ("mpp", "metres_per_pixel", "meters_per_pixel", "m_per_px"):
                value = data.get(key)
                if isinstance(value, dict):
                    return {str(k): float(v) for k, v in value.items()}
                if isinstance(value, int | float):
                    return {"*": float(value)}
            cities = data.get("cities")
            if isinstance(cities, dict):
                out = {}
                for name, info in cities.items():
                    for key in ("mpp", "metres_per_pixel", "meters_per_pixel", "m_per_px"):
                        if isinstance(info, dict) and isinstance(info.get(key), int | float):
                            out[str(name)] = float(info[key])
                return out
    return {}


def _list_folder(folder: Path, out: Path, mpp: float | None, copy: bool) -> list[Tile]:
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.is_file() and _TILE_NAME.match(p.name))
    if not files:
        raise DatasetError(f"{folder} holds no tiles named satellite_<lat>_<lon>.png; name them so (the name gives "
                           "the tile centre), or pass one image with --corners")
    known = {} if mpp else _meta_mpp(folder)
    tiles, problems = [], []
    for f in files:
        lat, lon = (float(v) for v in _TILE_NAME.match(f.name).groups())
        try:
            with Image.open(f) as im:
                w, h = im.size
        except OSError as exc:
            problems.append(f"{f}: unreadable ({exc})")
            continue
        group = f.parent.name
        if mpp:
            tile_mpp = mpp
        elif group in known or "*" in known:
            tile_mpp = known.get(group, known.get("*"))
        elif group in VIGOR_MPP_640:
            tile_mpp = VIGOR_MPP_640[group] * 640 / w
        else:
            problems.append(f"{f}: metres per pixel unknown for folder {group!r}; pass --mpp")
            continue
        path = f.resolve()
        if copy:
            data = f.read_bytes()
            path = atomic_write(out / "tiles" / group / f.name, lambda p, d=data: p.write_bytes(d))
        half_w, half_h = w * tile_mpp / 2, h * tile_mpp / 2
        fp = {"nw": _offset(lat, lon, -half_w, half_h), "ne": _offset(lat, lon, half_w, half_h),
              "se": _offset(lat, lon, half_w, -half_h), "sw": _offset(lat, lon, -half_w, -half_h)}
        rel = f.relative_to(folder).with_suffix("").as_posix()
        tiles.append(Tile(rel, path, lat, lon, tile_mpp, w, h, fp))
    if problems:
        raise DatasetError(f"cannot list the tiles under {folder}", problems[:20])
    return tiles


def build_tiles(source: str | os.PathLike, out: str | os.PathLike, *, corners=None, tile_px: int = 640,
                overlap: float = 0.5, mpp: float | None = None, copy: bool = False) -> Path:
    """Cut ``source`` into north-up tiles under ``out/tiles`` and write ``out/manifest.json``; return its path.

    ``corners``: (lat0, lon0, lat1, lon1) of the north-west and south-east image corners, for a PNG/JPEG.
    ``tile_px``: tile side in pixels; ``overlap``: fraction shared by neighbouring tiles (0 <= overlap < 1);
    ``mpp``: metres per pixel of the output (images are resampled to it; for a folder of tiles, their m/px).
    ``copy``: for a folder of tiles, copy them under ``out`` instead of pointing at the originals.
    """
    source, out = Path(source), Path(out)
    if not source.exists():
        raise ConfigError(f"tile source {source} does not exist")
    if not 0 <= overlap < 1:
        raise ConfigError(f"--overlap {overlap}: must be at least 0 and below 1")
    if tile_px < 16:
        raise ConfigError(f"--tile-px {tile_px}: too small (at least 16)")
    if mpp is not None and mpp <= 0:
        raise ConfigError(f"--mpp {mpp}: must be positive")
    params = {"source": str(source.resolve()), "corners": list(parse_corners(corners)) if corners else None,
              "tile_px": tile_px, "overlap": overlap, "mpp": mpp, "copy": copy}
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("params") == params:
                return manifest
        except ValueError:
            pass

    from PIL import Image

    if source.is_dir():
        kind = "folder"
        tiles = _list_folder(source, out, mpp, copy)
    else:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # orthophotos are legitimately huge
        try:
            if source.suffix.lower() in GEOTIFF_SUFFIXES:
                kind = "geotiff"
                image, pix2ll = _load_geotiff(source)
            elif source.suffix.lower() in IMAGE_SUFFIXES:
                kind = "image"
                if corners is None:
                    raise ConfigError(f"{source} is a plain image: pass --corners lat0,lon0,lat1,lon1 (its north-west "
                                      "and south-east corners), or use a GeoTIFF")
                image = _open_rgb(source)
                pix2ll = _corner_mapping(*image.size, parse_corners(corners))
            else:
                raise ConfigError(f"{source}: unsupported tile source; give a GeoTIFF, a PNG/JPEG with --corners, "
                                  "or a folder of satellite_<lat>_<lon>.png tiles")
            tiles = _cut_raster(image, pix2ll, out, tile_px, overlap, mpp)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    ids = [t.id for t in tiles]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{source}: two tiles share an id; rename the duplicate files")
    write_json_atomic(manifest, {"version": MANIFEST_VERSION, "kind": kind, "params": params,
                                 "frames": {"position": "lat/lon WGS84 degrees", "pixel": "x right, y down, top-left",
                                            "footprint": "lat/lon of the nw, ne, se, sw image corners"},
                                 "tiles": [t.to_json(out) for t in tiles]})
    return manifest
