"""City styles of the synthetic world: street grid, buildings, colours, vegetation, sun.

The four names are VIGOR's cities so that the benchmark's same-area / cross-area splits (train NewYork + Seattle,
test Chicago + SanFrancisco) mean "seen" versus "unseen" styles. ``vigor_mpp_640`` is VIGOR's metres per pixel at
640 px (as the official code hard-codes them); a synthetic tile of S px uses ``vigor_mpp_640 * 640 / S`` so it covers
the same ground.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CityStyle:
    name: str
    lat0: float  # origin of the city's tangent plane (WGS84 degrees)
    lon0: float
    vigor_mpp_640: float
    grid_angle_deg: float  # street grid rotation, counter-clockwise from east
    block_u: tuple[float, float]  # spacing range between streets crossing the u axis (m)
    block_v: tuple[float, float]
    road_width: float
    sidewalk: float
    lot_width: tuple[float, float]
    setback: float  # largest inset of a building from its lot edge (m)
    height_median: float
    height_sigma: float  # lognormal spread of building heights
    height_max: float
    floor_height: float
    window_spacing: float
    p_gable: float  # share of pitched roofs
    p_park: float
    p_parking: float
    p_empty_lot: float
    alley: bool
    street_tree_spacing: float  # 0 = none
    park_tree_density: float  # trees per 100 m^2
    roof_palette: tuple[tuple[float, float, float], ...]
    facade_palette: tuple[tuple[float, float, float], ...]
    grass: tuple[float, float, float]
    road: tuple[float, float, float]
    sidewalk_colour: tuple[float, float, float]
    centre_line: tuple[float, float, float]
    tree: tuple[float, float, float]
    sun_az_deg: float  # sun of the aerial acquisition (clockwise from north)
    sun_el_deg: float


_WHITE = (0.92, 0.92, 0.9)
_YELLOW = (0.9, 0.75, 0.15)

CITIES: dict[str, CityStyle] = {
    "NewYork": CityStyle(
        "NewYork", 40.7128, -74.0060, 0.113248, 29.0, (55, 80), (26, 40), 12.0, 3.0, (6, 12), 0.5,
        28.0, 0.5, 90.0, 3.4, 2.2, 0.0, 0.08, 0.05, 0.04, False, 11.0, 1.2,
        ((0.33, 0.32, 0.31), (0.45, 0.42, 0.38), (0.25, 0.25, 0.27), (0.55, 0.5, 0.45)),
        ((0.55, 0.27, 0.2), (0.62, 0.45, 0.32), (0.75, 0.7, 0.6), (0.45, 0.4, 0.38), (0.35, 0.2, 0.15)),
        (0.3, 0.45, 0.22), (0.28, 0.28, 0.3), (0.62, 0.6, 0.57), _YELLOW, (0.2, 0.38, 0.15), 150.0, 55.0),
    "Seattle": CityStyle(
        "Seattle", 47.6062, -122.3321, 0.100817, -2.0, (55, 70), (55, 70), 10.0, 2.5, (10, 22), 4.0,
        11.0, 0.6, 60.0, 3.6, 3.0, 0.2, 0.15, 0.12, 0.08, False, 8.0, 2.0,
        ((0.7, 0.7, 0.7), (0.82, 0.82, 0.8), (0.4, 0.42, 0.45), (0.3, 0.35, 0.32)),
        ((0.6, 0.62, 0.64), (0.3, 0.45, 0.5), (0.8, 0.78, 0.72), (0.35, 0.33, 0.3), (0.5, 0.55, 0.6)),
        (0.25, 0.42, 0.2), (0.33, 0.33, 0.34), (0.68, 0.68, 0.66), _WHITE, (0.13, 0.32, 0.14), 200.0, 40.0),
    "SanFrancisco": CityStyle(
        "SanFrancisco", 37.7749, -122.4194, 0.118141, -12.0, (38, 50), (80, 110), 11.0, 3.0, (6, 9), 1.5,
        9.0, 0.3, 25.0, 3.2, 1.8, 0.6, 0.06, 0.04, 0.02, False, 14.0, 0.8,
        ((0.75, 0.73, 0.7), (0.7, 0.38, 0.28), (0.6, 0.6, 0.62), (0.82, 0.8, 0.76)),
        ((0.93, 0.8, 0.82), (0.95, 0.88, 0.6), (0.7, 0.82, 0.92), (0.95, 0.95, 0.92), (0.85, 0.7, 0.55)),
        (0.45, 0.5, 0.28), (0.36, 0.35, 0.36), (0.72, 0.7, 0.66), _YELLOW, (0.25, 0.36, 0.18), 250.0, 62.0),
    "Chicago": CityStyle(
        "Chicago", 41.8781, -87.6298, 0.111262, 4.0, (95, 110), (45, 55), 14.0, 3.5, (8, 26), 2.0,
        16.0, 0.7, 100.0, 3.8, 2.6, 0.05, 0.05, 0.18, 0.06, True, 10.0, 1.0,
        ((0.35, 0.35, 0.35), (0.5, 0.48, 0.46), (0.6, 0.58, 0.55), (0.2, 0.2, 0.22)),
        ((0.7, 0.6, 0.45), (0.5, 0.5, 0.5), (0.18, 0.18, 0.2), (0.6, 0.35, 0.25), (0.82, 0.8, 0.74)),
        (0.32, 0.4, 0.2), (0.25, 0.25, 0.26), (0.6, 0.6, 0.58), _WHITE, (0.17, 0.3, 0.12), 210.0, 48.0),
}

# CVACT's city (not a VIGOR city): low-rise suburbs, wide verges, many trees.
CANBERRA = CityStyle(
    "Canberra", -35.2809, 149.1300, 0.11, 33.0, (70, 95), (45, 60), 9.0, 2.0, (15, 25), 5.0,
    6.0, 0.3, 14.0, 3.0, 2.8, 0.7, 0.2, 0.08, 0.1, False, 9.0, 2.5,
    ((0.55, 0.3, 0.22), (0.6, 0.6, 0.62), (0.35, 0.36, 0.4), (0.7, 0.55, 0.4)),
    ((0.85, 0.8, 0.7), (0.75, 0.55, 0.45), (0.9, 0.9, 0.88), (0.6, 0.6, 0.55), (0.7, 0.72, 0.65)),
    (0.45, 0.5, 0.25), (0.3, 0.3, 0.31), (0.7, 0.68, 0.62), _WHITE, (0.22, 0.33, 0.17), 20.0, 50.0)
