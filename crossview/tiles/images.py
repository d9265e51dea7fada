"""Tile sources without a coordinate reference system: one PNG/JPEG plus its corners, or a folder of tiles.

- a PNG/JPEG plus the lat/lon of its north-west and south-east corners, assumed linear in lat/lon between them
  (fine over the few kilometres such an image covers), cut on its own pixel grid (the last tile of a row or
  column flush with the edge), optionally resampled to square pixels of ``mpp`` metres first;
- a folder of geo-tagged tiles named like VIGOR's ``satellite_<lat>_<lon>.png`` (the name gives the tile centre),
  with their metres per pixel from ``mpp``, a ``crossview_meta.json`` above them, or VIGOR's per-city values.
  These are already tiles: they are listed, not cut again.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from crossview.errors import ConfigError, DatasetError
from crossview.geometry.geo import VIGOR_MPP_640, distance_m
from crossview.io import atomic_write
from crossview.tiles.manifest import LatLon, Tile, square_footprint

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TILE_NAME = re.compile(r"^satellite_(-?\d+(?:\.\d+)?)_(-?\d+(?:\.\d+)?)\.(?:png|jpe?g)$", re.IGNORECASE)


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


def grid_starts(n: int, tile: int, step: int) -> list[int]:
    """Start offsets of ``tile``-long windows every ``step`` over ``n``; the last one flush with the end."""
    starts = list(range(0, n - tile + 1, step))
    if starts[-1] != n - tile:  # the last tile is flush with the edge so nothing is left out
        starts.append(n - tile)
    return starts


def _open_rgb(path: Path):
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # orthophotos are legitimately huge
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _corner_mapping(width: int, height: int, corners) -> Callable[[float, float], LatLon]:
    lat0, lon0, lat1, lon1 = corners

    def pix2ll(x: float, y: float) -> LatLon:
        return lat0 + (lat1 - lat0) * y / height, lon0 + (lon1 - lon0) * x / width

    return pix2ll


def _footprint(pix2ll, x0: float, y0: float, x1: float, y1: float) -> dict[str, LatLon]:
    return {"nw": pix2ll(x0, y0), "ne": pix2ll(x1, y0), "se": pix2ll(x1, y1), "sw": pix2ll(x0, y1)}


def cut_image(source: Path, corners: tuple[float, float, float, float], out: Path, tile_px: int, overlap: float,
              mpp: float | None) -> list[Tile]:
    """Cut a PNG/JPEG whose NW/SE ``corners`` are known into ``tile_px`` tiles under ``out/tiles``."""
    from PIL import Image

    from crossview.progress import progress

    image = _open_rgb(source)
    w, h = image.size
    pix2ll = _corner_mapping(w, h, corners)
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
        raise ConfigError(f"{source} is {w}x{h} px at the chosen resolution, smaller than one {tile_px}-px tile; "
                          "lower --tile-px or pass a smaller --mpp")
    step = max(1, round(tile_px * (1 - overlap)))
    rows, cols = grid_starts(h, tile_px, step), grid_starts(w, tile_px, step)
    tiles = []
    bar = progress(total=len(rows) * len(cols), desc="tiles", unit="tile")
    for r, y0 in enumerate(rows):
        for c, x0 in enumerate(cols):
            bar.update(1)
            tid = f"r{r:04d}_c{c:04d}"
            fp = _footprint(pix2ll, x0, y0, x0 + tile_px, y0 + tile_px)
            lat, lon = pix2ll(x0 + tile_px / 2, y0 + tile_px / 2)
            tile_mpp = (distance_m(fp["nw"], fp["ne"]) + distance_m(fp["nw"], fp["sw"])) / (2 * tile_px)
            crop = image.crop((x0, y0, x0 + tile_px, y0 + tile_px))
            path = atomic_write(out / "tiles" / f"{tid}.png", lambda p, im=crop: im.save(p, format="PNG"))
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


def list_folder(folder: Path, out: Path, mpp: float | None, copy: bool) -> list[Tile]:
    """The ``satellite_<lat>_<lon>.png`` tiles under ``folder`` (listed, or copied under ``out`` with ``copy``)."""
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.is_file() and TILE_NAME.match(p.name))
    if not files:
        raise DatasetError(f"{folder} holds no tiles named satellite_<lat>_<lon>.png; name them so (the name gives "
                           "the tile centre), or pass one image with --corners")
    known = {} if mpp else _meta_mpp(folder)
    tiles, problems = [], []
    for f in files:
        lat, lon = (float(v) for v in TILE_NAME.match(f.name).groups())
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
        rel = f.relative_to(folder).with_suffix("").as_posix()
        tiles.append(Tile(rel, path, lat, lon, tile_mpp, w, h, square_footprint(lat, lon, w * tile_mpp,
                                                                                 h * tile_mpp)))
    if problems:
        raise DatasetError(f"cannot list the tiles under {folder}", problems[:20])
    return tiles
