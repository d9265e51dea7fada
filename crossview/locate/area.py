"""The search area: a rough GPS fix ``LAT,LON±R`` and the tiles whose footprint comes within it."""

from __future__ import annotations

import re

import numpy as np

from crossview.errors import ConfigError

_NEAR = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?)\s*,\s*([+-]?\d+(?:\.\d*)?)\s*(?:±|\+-|\+/-|~|,)\s*(\d+(?:\.\d*)?)\s*$")


def parse_near(text: str | tuple | list | None) -> tuple[float, float, float] | None:
    """``"LAT,LON±RADIUS_M"`` (also ``LAT,LON,RADIUS_M``) -> (lat, lon, radius in metres): the search area."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, tuple | list):
        lat, lon, radius = (float(v) for v in text)
    else:
        m = _NEAR.match(str(text))
        if not m:
            raise ConfigError(f"--near {text!r}: write it as LAT,LON±RADIUS_M, e.g. 40.7128,-74.0060±100 (degrees "
                              "WGS84, then the radius in metres of the area the photo was taken in)")
        lat, lon, radius = (float(g) for g in m.groups())
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ConfigError(f"--near: {lat},{lon} is not a latitude,longitude pair in degrees")
    if not radius > 0:
        raise ConfigError(f"--near: the radius {radius} m must be positive")
    return lat, lon, radius


def tile_geometry(tiles: list) -> np.ndarray:
    """(N, 4) float64: centre lat, lon and half width, half height in metres of each (north-up) tile."""
    return np.array([[t.lat, t.lon, 0.5 * t.width * t.mpp, 0.5 * t.height * t.mpp] for t in tiles],
                    dtype=np.float64).reshape(-1, 4)


def tiles_near(tiles: list | np.ndarray, lat: float, lon: float, radius_m: float) -> np.ndarray:
    """Mask of the tiles (or rows of :func:`tile_geometry`) whose footprint comes within ``radius_m`` of the point."""
    from crossview.search.region import footprints_near  # the rule the region index searches by

    geo = tiles if isinstance(tiles, np.ndarray) else tile_geometry(tiles)
    return footprints_near(geo[:, :2], geo[:, 2:], lat, lon, radius_m)


