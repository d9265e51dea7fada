"""Local metres <-> WGS84 lat/lon for the synthetic world: ``crossview.geometry.geodesy``'s tangent plane.

Local metres (east = x, north = y) <-> WGS84 lat/lon on a tangent plane.

The plane touches the WGS84 ellipsoid at a city origin ``(lat0, lon0)``; a point ``east_m`` metres east and
``north_m`` metres north of the origin is at ``lat = lat0 + north_m / M``, ``lon = lon0 + east_m / (N cos lat0)``
(M, N: meridional and prime-vertical radii of curvature at ``lat0``). Over the few hundred metres of a synthetic
city this differs from a true local ENU frame by millimetres, and it is exactly invertible, so positions written
as lat/lon in file names convert back to the very metres the renderer used.
"""

from __future__ import annotations

from crossview.geometry.geodesy import WGS84_A, WGS84_E2, enu_to_latlon, latlon_to_enu, radii  # noqa: F401


def snap_to_name(east_m: float, north_m: float, lat0: float, lon0: float, decimals: int = 7):
    """Round a position to the lat/lon written in a file name and return (lat, lon, east_m, north_m) of the
    rounded point, so that names and rendered geometry agree exactly (7 decimals ~ 1 cm)."""
    lat, lon = enu_to_latlon(east_m, north_m, lat0, lon0)
    lat, lon = round(float(lat), decimals), round(float(lon), decimals)
    e, n = latlon_to_enu(lat, lon, lat0, lon0)
    return lat, lon, float(e), float(n)
