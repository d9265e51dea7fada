"""Local metres <-> WGS84 lat/lon on a tangent plane (east = x, north = y).

The plane touches the WGS84 ellipsoid at a city origin ``(lat0, lon0)``; a point ``east_m`` metres east and
``north_m`` metres north of the origin is at ``lat = lat0 + north_m / M``, ``lon = lon0 + east_m / (N cos lat0)``
(M, N: meridional and prime-vertical radii of curvature at ``lat0``). Over the few hundred metres of a synthetic
city this differs from a true local ENU frame by millimetres, and it is exactly invertible, so positions written
as lat/lon in file names convert back to the very metres the renderer used.
"""

from __future__ import annotations

import math

import numpy as np

WGS84_A = 6378137.0
WGS84_E2 = 6.69437999014e-3


def radii(lat0_deg: float) -> tuple[float, float]:
    """(metres per radian of latitude, metres per radian of longitude) at latitude ``lat0_deg``."""
    s = math.sin(math.radians(lat0_deg))
    w = math.sqrt(1.0 - WGS84_E2 * s * s)
    m = WGS84_A * (1.0 - WGS84_E2) / w**3
    n = WGS84_A / w
    return m, n * math.cos(math.radians(lat0_deg))


def enu_to_latlon(east_m, north_m, lat0: float, lon0: float):
    """Local metres (east, north) of the origin ``(lat0, lon0)`` -> (lat, lon) in degrees (arrays or floats)."""
    m, n = radii(lat0)
    return lat0 + np.degrees(np.asarray(north_m, dtype=np.float64) / m), lon0 + np.degrees(
        np.asarray(east_m, dtype=np.float64) / n)


def latlon_to_enu(lat, lon, lat0: float, lon0: float):
    """(lat, lon) in degrees -> local metres (east, north) of the origin ``(lat0, lon0)``."""
    m, n = radii(lat0)
    return np.radians(np.asarray(lon, dtype=np.float64) - lon0) * n, np.radians(
        np.asarray(lat, dtype=np.float64) - lat0) * m


def snap_to_name(east_m: float, north_m: float, lat0: float, lon0: float, decimals: int = 7):
    """Round a position to the lat/lon written in a file name and return (lat, lon, east_m, north_m) of the
    rounded point, so that names and rendered geometry agree exactly (7 decimals ~ 1 cm)."""
    lat, lon = enu_to_latlon(east_m, north_m, lat0, lon0)
    lat, lon = round(float(lat), decimals), round(float(lon), decimals)
    e, n = latlon_to_enu(lat, lon, lat0, lon0)
    return lat, lon, float(e), float(n)
