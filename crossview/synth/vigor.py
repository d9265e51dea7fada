"""VIGOR-like writer: overlapping north-up tiles, panoramas anywhere inside, positives + semi-positives.

Tree (as the official VIGOR loaders expect; docs/official_code_notes.md)::

    satellite/<City>/satellite_<lat>_<lon>.png        tile centred at (lat, lon), S x S px
    ground/<City>/<panoid>,<lat>,<lon>,.jpg            north-aligned equirectangular panorama (2:1)
    pinhole/<City>/<id>.jpg                            upright limited-FoV photo at a random heading
    splits/<City>/satellite_list.txt                   one tile file name per line
    splits/<City>/same_area_balanced_{train,test}.txt  13 columns: pano, 4 x (tile, dr, dc), offsets rounded
    splits/<City>/pano_label_balanced.txt              every panorama of the city (cross-area)
    splits__corrected/<City>/<same_area_balanced_train|same_area_balanced_test|pano_label_balanced>__corrected.txt
                                                       the same lines with exact offsets (4 decimals)
    crossview_poses.jsonl                              one JSON per ground image (panoramas and pinholes)
    crossview_meta.json

Offsets (all VIGOR code agrees): camera pixel row = S/2 + dr, column = S/2 - dc at the native tile size S, with
continuous pixel coordinates whose origin is the tile's top-left corner (``cameras.tile_pixel``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crossview.synth import cameras as cam
from crossview.synth.common import (
    GENERATOR_VERSION,
    build_tree,
    is_open,
    item_rng,
    parallel_map,
    random_id,
    resolve_workers,
    write_lines,
)
from crossview.synth.geo import snap_to_name
from crossview.synth.imgio import save_image
from crossview.synth.scales import EYE_HEIGHT_M, VIGOR
from crossview.synth.styles import CITIES
from crossview.synth.world import build_world

LAYOUT_KEY = 3
CITY_ORDER = ("NewYork", "Seattle", "SanFrancisco", "Chicago")
MARGIN_M = 40.0


def tile_mpp(city: str, tile: int) -> float:
    """Metres per pixel of a synthetic VIGOR tile of ``tile`` px (VIGOR's ground coverage at 640 px)."""
    return CITIES[city].vigor_mpp_640 * 640 / tile


def world_half_extent(city: str, cfg: dict) -> float:
    cov = cfg["tile"] * tile_mpp(city, cfg["tile"])
    return (cfg["grid"] - 1) * cov / 4 + cov / 2 + MARGIN_M


def city_world(seed: int, city: str, cfg: dict):
    ci = CITY_ORDER.index(city)
    return build_world(CITIES[city], world_half_extent(city, cfg), item_rng(seed, LAYOUT_KEY, ci, 0), cfg["cell"])


def tile_centres(city: str, cfg: dict) -> list[tuple[float, float, float, float]]:
    """(lat, lon, east_m, north_m) of each tile, row-major from the north-west; spacing half a tile."""
    st = CITIES[city]
    g, S = cfg["grid"], cfg["tile"]
    half = S * tile_mpp(city, S) / 2
    out = []
    for i in range(g):
        for j in range(g):
            out.append(snap_to_name((j - (g - 1) / 2) * half, ((g - 1) / 2 - i) * half, st.lat0, st.lon0))
    return out


def tile_name(lat: float, lon: float) -> str:
    return f"satellite_{lat:.7f}_{lon:.7f}.png"


def containing_tiles(e: float, n: float, centres, mpp: float, S: int):
    """[(tile index, x, y)] of the tiles containing (e, n), the positive (centre quarter) first, then by distance."""
    hits = []
    for k, (_, _, e0, n0) in enumerate(centres):
        x, y = cam.tile_pixel(e, n, e0, n0, mpp, S)
        if 0 <= x < S and 0 <= y < S:
            hits.append((max(abs(x - S / 2), abs(y - S / 2)), k, float(x), float(y)))
    hits.sort()
    return [(k, x, y) for _, k, x, y in hits]


def place_cameras(world, centres, mpp: float, S: int, count: int, rng: np.random.Generator):
    """Camera positions: cycle over the tiles, draw a point in the tile's centre quarter on open ground, keep
    it if it lies in exactly four tiles and in exactly one centre quarter."""
    st = world.style
    order = rng.permutation(len(centres))
    out = []
    tries = 0
    k = 0
    while len(out) < count:
        tries += 1
        if tries > count * 400:
            raise RuntimeError(f"could not place {count} cameras in {st.name}")
        t = order[k % len(order)]
        k += 1  # next tile on every try, so a tile with no open ground cannot stall the loop
        _, _, e0, n0 = centres[t]
        q = S * mpp / 4
        lat, lon, e, n = snap_to_name(e0 + rng.uniform(-q, q), n0 + rng.uniform(-q, q), st.lat0, st.lon0)
        if not is_open(world, e, n):
            continue
        hits = containing_tiles(e, n, centres, mpp, S)
        pos = [h for h in hits if abs(h[1] - S / 2) < S / 4 and abs(h[2] - S / 2) < S / 4]
        if len(hits) != 4 or len(pos) != 1:
            continue
        out.append((lat, lon, e, n, hits))
    return out


def _offsets(x: float, y: float, S: int) -> tuple[float, float]:
    return y - S / 2, S / 2 - x  # (dr, dc)


def _city(job) -> dict:
    seed, city, scale, root = job
    root = Path(root)
    cfg = VIGOR[scale]
    ci = CITY_ORDER.index(city)
    S = cfg["tile"]
    mpp = tile_mpp(city, S)
    world = city_world(seed, city, cfg)
    centres = tile_centres(city, cfg)
    names = [tile_name(lat, lon) for lat, lon, _, _ in centres]
    for k, (_, _, e0, n0) in enumerate(centres):
        save_image(root / "satellite" / city / names[k], cam.render_tile(world, e0, n0, mpp, S,
                                                                         item_rng(seed, LAYOUT_KEY, ci, 1, k)))
    write_lines(root / "splits" / city / "satellite_list.txt", names)
    dists = cam.ray_distances(cfg["ray_samples"])
    H, W = cfg["pano_hw"]
    eye = EYE_HEIGHT_M
    id_rng = item_rng(seed, LAYOUT_KEY, ci, 9)
    panos = []
    for k, (lat, lon, e, n, hits) in enumerate(place_cameras(world, centres, mpp, S, cfg["panos"],
                                                             item_rng(seed, LAYOUT_KEY, ci, 2))):
        rng = item_rng(seed, LAYOUT_KEY, ci, 3, k)
        name = f"{random_id(id_rng)},{lat:.7f},{lon:.7f},.jpg"
        img = cam.render_panorama(world, e, n, eye, W, H, cam.random_look(rng), rng, dists)
        save_image(root / "ground" / city / name, img)
        panos.append({"image": f"ground/{city}/{name}", "name": name, "city": city, "lat": lat, "lon": lon,
                      "east_m": e, "north_m": n, "heading_deg": 0.0, "camera": "panorama", "eye_height_m": eye,
                      "tiles": [{"tile": f"satellite/{city}/{names[t]}", "x": x, "y": y} for t, x, y in hits],
                      "_tiles": [(names[t], x, y) for t, x, y in hits]})
    # same-area split of the city's panoramas: half train, half test
    perm = item_rng(seed, LAYOUT_KEY, ci, 6).permutation(len(panos))
    test = set(perm[len(panos) // 2:].tolist())
    for k, p in enumerate(panos):
        p["split"] = "test" if k in test else "train"
    ph, pw = cfg["pinhole_hw"]
    pins = []
    for k, (lat, lon, e, n, hits) in enumerate(place_cameras(world, centres, mpp, S, cfg["pinholes"],
                                                             item_rng(seed, LAYOUT_KEY, ci, 4))):
        rng = item_rng(seed, LAYOUT_KEY, ci, 5, k)
        heading = round(float(rng.uniform(0, 360)), 4)
        fov = round(float(rng.uniform(60, 100)), 4)
        img = cam.render_pinhole(world, e, n, eye, heading, fov, pw, ph, cam.random_look(rng), rng, dists)
        rel = f"pinhole/{city}/{random_id(id_rng)}.jpg"
        save_image(root / rel, img)
        pins.append({"image": rel, "city": city, "lat": lat, "lon": lon, "east_m": e, "north_m": n,
                     "heading_deg": heading, "camera": "pinhole", "fov_deg": fov, "eye_height_m": eye,
                     "split": "train" if rng.random() < 0.5 else "test",
                     "tiles": [{"tile": f"satellite/{city}/{names[t]}", "x": x, "y": y} for t, x, y in hits]})

    def lines(items, exact):
        out = []
        for p in items:
            cols = [p["name"]]
            for tname, x, y in p["_tiles"]:
                dr, dc = _offsets(x, y, S)
                if exact:
                    cols += [tname, f"{dr:.4f}", f"{dc:.4f}"]
                else:
                    cols += [tname, str(int(np.floor(dr + 0.5))), str(int(np.floor(dc + 0.5)))]
            out.append(" ".join(cols))
        return out

    train = [p for p in panos if p["split"] == "train"]
    testp = [p for p in panos if p["split"] == "test"]
    for fname, items in (("same_area_balanced_train", train), ("same_area_balanced_test", testp),
                         ("pano_label_balanced", panos)):
        write_lines(root / "splits" / city / f"{fname}.txt", lines(items, False))
        write_lines(root / "splits__corrected" / city / f"{fname}__corrected.txt", lines(items, True))
    for p in panos:
        del p["_tiles"], p["name"]
    return {"poses": panos + pins, "mpp": mpp, "tiles": len(centres)}


def meta(scale: str, seed: int) -> dict:
    cfg = VIGOR[scale]
    order = sorted(CITY_ORDER)  # the official same-area concatenation order (Chicago, NewYork, SanFrancisco, Seattle)
    return {
        "layout": "vigor", "scale": scale, "seed": seed, "generator_version": GENERATOR_VERSION,
        "cities": {c: {"metres_per_pixel": tile_mpp(c, cfg["tile"]), "origin_lat": CITIES[c].lat0,
                       "origin_lon": CITIES[c].lon0, "grid_angle_deg": CITIES[c].grid_angle_deg}
                   for c in order},
        "metres_per_pixel": {c: tile_mpp(c, cfg["tile"]) for c in order},
        "tile_size": cfg["tile"], "label_tile_px": cfg["tile"],
        "panorama_size": {"height": cfg["pano_hw"][0], "width": cfg["pano_hw"][1]},
        "pinhole_size": {"height": cfg["pinhole_hw"][0], "width": cfg["pinhole_hw"][1]},
        "eye_height_m": EYE_HEIGHT_M,
        "same_area_split": "each city's panoramas split half train / half test",
        "cross_area": {"train": ["NewYork", "Seattle"], "test": ["Chicago", "SanFrancisco"]},
        "pixel_offsets": (
            "Label offsets (dr, dc) at the native tile size S: camera pixel row y = S/2 + dr, column x = S/2 - dc, "
            "in continuous pixel coordinates with the origin at the tile's top-left corner (pixel (i, j) covers "
            "[j, j+1) x [i, i+1)); a tile of m metres/pixel centred at local metres (e0, n0) shows the point (e, n) "
            "at x = S/2 + (e - e0)/m, y = S/2 - (n - n0)/m. splits/ rounds offsets to whole pixels, "
            "splits__corrected/ keeps 4 decimals."),
        "headings": (
            "Degrees clockwise from north. Panoramas are north-aligned equirectangular images: the centre column "
            "looks north, east is at 3/4 of the width, the top row is +90 deg elevation, the bottom row -90. "
            "Pinhole photos are upright (zero pitch and roll); heading_deg is their optical axis, fov_deg the "
            "horizontal field of view, principal point at the image centre."),
        "local_frame": "east_m / north_m are metres on the city's tangent plane at (origin_lat, origin_lon).",
    }


def write_vigor(out: Path, scale: str = "small", seed: int = 0, workers: int | None = None) -> Path:
    if scale not in VIGOR:
        raise ValueError(f"scale must be one of {sorted(VIGOR)}")
    m = meta(scale, seed)

    def write(tmp: Path) -> None:
        nw = resolve_workers(workers, scale)
        res = parallel_map(_city, [(seed, c, scale, str(tmp)) for c in CITY_ORDER], nw)
        with open(tmp / "crossview_poses.jsonl", "w") as f:
            for r in res:
                for p in r["poses"]:
                    f.write(json.dumps(p, sort_keys=True) + "\n")

    return build_tree(out, m, write)
