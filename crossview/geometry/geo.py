"""Metres <-> tile pixels <-> latitude/longitude.

Tile pixels: (x right, y down), origin at the top-left corner, north-up tile of ``size`` = (width, height) pixels
at ``mpp`` metres per pixel; tile metres: x east, y north of the tile centre. Lat/lon: WGS84 degrees, converted
through the WGS84 tangent plane at the reference point (``crossview.geometry.geodesy``: millimetres over a tile);
distances are WGS84 geodesics.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from crossview.geometry.geodesy import MEAN_RADIUS_M, enu_to_latlon, geodesic_m, latlon_to_enu

if TYPE_CHECKING:  # annotations only: these conversions need numpy, not torch
    from crossview.geometry.types import ArrayLike, Size2

EARTH_RADIUS_M = MEAN_RADIUS_M  # 6,371,008.8 m (IUGG mean radius; HC-Net's reports use 6 371 004)
WEB_MERCATOR_EQUATOR_MPP = 156543.03392  # metres per pixel at zoom 0 on the equator, 256-px tiles
VIGOR_MPP_640 = {"NewYork": 0.113248, "Seattle": 0.100817, "SanFrancisco": 0.118141, "Chicago": 0.111262}


def tile_pixel_to_metres(px: ArrayLike, py: ArrayLike, size: Size2, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Tile pixel (x right, y down) -> metres (east, north) of the tile centre."""
    w, h = size
    return (np.asarray(px, dtype=float) - w / 2) * mpp, (h / 2 - np.asarray(py, dtype=float)) * mpp


def metres_to_tile_pixel(x_m: ArrayLike, y_m: ArrayLike, size: Size2, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Metres (east, north) of the tile centre -> tile pixel (x right, y down)."""
    w, h = size
    return np.asarray(x_m, dtype=float) / mpp + w / 2, h / 2 - np.asarray(y_m, dtype=float) / mpp


def offset_to_latlon(lat0: float, lon0: float, east_m: ArrayLike, north_m: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
    """WGS84 tangent-plane offset (metres east, north) from (lat0, lon0) -> (lat, lon) degrees."""
    return enu_to_latlon(east_m, north_m, lat0, lon0)


def latlon_to_offset(lat0: float, lon0: float, lat: ArrayLike, lon: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
    """(lat, lon) degrees -> WGS84 tangent-plane offset (east, north) metres from (lat0, lon0)."""
    return latlon_to_enu(lat, lon, lat0, lon0)


def distance_m(*points: ArrayLike | tuple[ArrayLike, ArrayLike]) -> float | np.ndarray:
    """The WGS84 geodesic distance in metres (``crossview.geometry.geodesy.geodesic_m``) between two points given as
    ``distance_m((lat1, lon1), (lat2, lon2))`` or ``distance_m(lat1, lon1, lat2, lon2)`` (arrays broadcast); a
    float for single points."""
    if len(points) == 2:
        (lat1, lon1), (lat2, lon2) = points
    elif len(points) == 4:
        lat1, lon1, lat2, lon2 = points
    else:
        raise TypeError(f"distance_m takes two (lat, lon) points or four coordinates, not {len(points)} arguments")
    return geodesic_m(lat1, lon1, lat2, lon2)


def haversine_m(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike,
                radius: float = EARTH_RADIUS_M) -> np.ndarray:
    """Great-circle distance on a sphere of ``radius`` (HC-Net's reports use 6,371,004 m); prefer ``distance_m``."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2, dtype=float) - np.asarray(lon1, dtype=float))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * radius * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def web_mercator_mpp(lat: float, zoom: int, scale: int = 1) -> float:
    """Ground metres per pixel of a Web-Mercator tile at ``lat``, ``zoom`` (Google ``scale`` 2 = retina)."""
    return WEB_MERCATOR_EQUATOR_MPP * math.cos(math.radians(lat)) / 2**zoom / scale


def vigor_delta_to_pixel(dr: float, dc: float, size: int = 640) -> tuple[float, float]:
    """VIGOR label offsets (dr, dc) at 640 px -> tile pixel (x, y) at ``size`` px: row = 320 + dr, col = 320 − dc."""
    k = size / 640.0
    return (320.0 - dc) * k, (320.0 + dr) * k
