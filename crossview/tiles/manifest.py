"""The tile manifest: :class:`Tile` records (file, centre, metres per pixel, footprint) and ``manifest.json``.

Frames: pixel (x right, y down, origin top-left, pixel ``i`` spanning ``[i, i + 1)``); lat/lon WGS84 degrees;
local metres east/north on the WGS84 tangent plane at a tile's centre (``crossview.geometry.geo``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossview.errors import DatasetError
from crossview.geometry.geo import offset_to_latlon
from crossview.io import write_json_atomic

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
FRAMES = {"position": "lat/lon WGS84 degrees", "pixel": "x right, y down, top-left",
          "footprint": "lat/lon of the nw, ne, se, sw image corners",
          "north": "north-up in true north: image columns run along the meridian through the tile centre"}

LatLon = tuple[float, float]


def square_footprint(lat: float, lon: float, width_m: float, height_m: float) -> dict[str, LatLon]:
    """Corners of a north-up ``width_m`` x ``height_m`` rectangle centred on (lat, lon), on its tangent plane."""
    hw, hh = width_m / 2, height_m / 2
    return {k: tuple(float(v) for v in offset_to_latlon(lat, lon, e, n))
            for k, e, n in (("nw", -hw, hh), ("ne", hw, hh), ("se", hw, -hh), ("sw", -hw, -hh))}


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
        """The manifest entry: ``file`` relative to ``root`` when the tile lies under it."""
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


def write_manifest(out: Path, tiles: list[Tile], kind: str, params: dict[str, Any],
                   extra: dict[str, Any] | None = None) -> Path:
    """Write ``out/manifest.json`` atomically (last, so a folder holding one is complete); return its path."""
    ids = [t.id for t in tiles]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{params.get('source')}: two tiles share an id; rename the duplicate files")
    return write_json_atomic(out / MANIFEST, {"version": MANIFEST_VERSION, "kind": kind, "params": params,
                                              "frames": FRAMES, **(extra or {}),
                                              "tiles": [t.to_json(out) for t in tiles]})
