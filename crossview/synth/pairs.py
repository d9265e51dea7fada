"""Centre-aligned ground/aerial pairs (CVUSA and CVACT): a camera on open ground and a north-up tile centred on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossview.synth import cameras as cam
from crossview.synth.common import is_open
from crossview.synth.geo import snap_to_name
from crossview.synth.imgio import save_image
from crossview.synth.world import World

COVERAGE_M = 120.0  # ground width of a pair's aerial image
VIEW_MARGIN_M = 60.0  # cameras stay this far inside the world's edge so tiles and views see the city


def place_open(world: World, half_extent: float, count: int, rng: np.random.Generator):
    """``count`` (lat, lon, east_m, north_m) camera positions on open ground, snapped to their written lat/lon."""
    st = world.style
    lim = half_extent - VIEW_MARGIN_M
    out = []
    tries = 0
    while len(out) < count:
        tries += 1
        if tries > 400 * count + 1000:
            raise RuntimeError(f"could not place {count} cameras in {st.name}")
        lat, lon, e, n = snap_to_name(rng.uniform(-lim, lim), rng.uniform(-lim, lim), st.lat0, st.lon0)
        if is_open(world, e, n):
            out.append((lat, lon, e, n))
    return out


def render_pair(world: World, e: float, n: float, tile: int, pano_hw: tuple[int, int], dists: np.ndarray,
                rng: np.random.Generator, sat_path: Path, pano_path: Path, eye: float,
                el_range: tuple[float, float] = (90.0, -90.0)) -> None:
    """Render and save the aerial tile centred on the camera and its north-aligned panorama."""
    mpp = COVERAGE_M / tile
    save_image(sat_path, cam.render_tile(world, e, n, mpp, tile, rng))
    H, W = pano_hw
    look = cam.random_look(rng)
    save_image(pano_path, cam.render_panorama(world, e, n, eye, W, H, look, rng, dists, el_top=el_range[0],
                                              el_bottom=el_range[1]))


def pose(image: str, city: str, lat: float, lon: float, e: float, n: float, eye: float, split: str, tile: str,
         size: int) -> dict:
    return {"image": image, "city": city, "lat": lat, "lon": lon, "east_m": e, "north_m": n, "heading_deg": 0.0,
            "camera": "panorama", "eye_height_m": eye, "split": split,
            "tiles": [{"tile": tile, "x": size / 2, "y": size / 2}]}
