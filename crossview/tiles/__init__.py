"""Build a north-up, overlapping aerial tile set with a ``manifest.json`` from geo-referenced imagery.

Three kinds of source:

- a geo-referenced raster (GeoTIFF, or another format GDAL reads) in any CRS, read through rasterio (the ``geo``
  extra) window by window, so memory stays bounded whatever its size; each tile is reprojected north-up in true
  north (``crossview.tiles.raster``);
- a PNG/JPEG plus the lat/lon of its north-west and south-east corners (``corners``), assumed linear in lat/lon
  between them (``crossview.tiles.images``);
- a folder of geo-tagged tiles named like VIGOR's ``satellite_<lat>_<lon>.png``, listed, not cut again.

Frames: pixel (x right, y down, origin top-left); lat/lon WGS84 degrees; local metres east/north on the
tangent plane at a tile's centre. The manifest is written last and atomically, so a folder with a
``manifest.json`` is complete; a second call with the same parameters returns at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from crossview.errors import ConfigError
from crossview.geometry.geo import distance_m  # re-exported: tile code measures with the geometry's one
from crossview.tiles.images import IMAGE_SUFFIXES, cut_image, list_folder, parse_corners
from crossview.tiles.manifest import (
    MANIFEST,
    MANIFEST_VERSION,
    LatLon,
    Tile,
    read_manifest,
    square_footprint,
    write_manifest,
)
from crossview.tiles.raster import RASTER_SUFFIXES, RasterOptions, parse_bands, parse_stretch

GEOTIFF_SUFFIXES = RASTER_SUFFIXES

__all__ = ["MANIFEST", "MANIFEST_VERSION", "IMAGE_SUFFIXES", "GEOTIFF_SUFFIXES", "RASTER_SUFFIXES", "LatLon",
           "RasterOptions", "Tile", "build_tiles", "distance_m", "parse_bands", "parse_corners", "parse_stretch",
           "read_manifest", "square_footprint"]


def build_tiles(source: str | os.PathLike, out: str | os.PathLike, *, corners=None, tile_px: int = 640,
                overlap: float = 0.5, mpp: float | None = None, copy: bool = False,
                raster: RasterOptions | None = None) -> Path:
    """Cut ``source`` into north-up tiles under ``out/tiles`` and write ``out/manifest.json``; return its path.

    ``corners``: (lat0, lon0, lat1, lon1) of the north-west and south-east image corners, for a PNG/JPEG.
    ``tile_px``: tile side in pixels; ``overlap``: fraction shared by neighbouring tiles (0 <= overlap < 1);
    ``mpp``: metres per pixel of the output (images are resampled to it; for a folder of tiles, their m/px).
    ``copy``: for a folder of tiles, copy them under ``out`` instead of pointing at the originals.
    ``raster``: for a geo-referenced raster, band choice, stretch and the valid fraction a tile needs.
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
    is_raster = source.is_file() and source.suffix.lower() in RASTER_SUFFIXES
    raster = raster or RasterOptions()
    params = {"source": str(source.resolve()), "corners": list(parse_corners(corners)) if corners else None,
              "tile_px": tile_px, "overlap": overlap, "mpp": mpp, "copy": copy}
    if is_raster:
        params["raster"] = raster.to_json()
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("params") == params:
                return manifest
        except ValueError:
            pass

    extra = None
    if source.is_dir():
        kind, tiles = "folder", list_folder(source, out, mpp, copy)
    elif is_raster:
        from crossview.tiles.raster import tile_raster

        kind = "geotiff"
        tiles, extra = tile_raster(source, out, tile_px, overlap, mpp, raster)
    elif source.suffix.lower() in IMAGE_SUFFIXES:
        if corners is None:
            raise ConfigError(f"{source} is a plain image: pass --corners lat0,lon0,lat1,lon1 (its north-west "
                              "and south-east corners), or use a GeoTIFF")
        kind, tiles = "image", cut_image(source, parse_corners(corners), out, tile_px, overlap, mpp)
    else:
        raise ConfigError(f"{source}: unsupported tile source; give a GeoTIFF ({', '.join(RASTER_SUFFIXES)}), a "
                          "PNG/JPEG with --corners, or a folder of satellite_<lat>_<lon>.png tiles")
    return write_manifest(out, tiles, kind, params, extra)
