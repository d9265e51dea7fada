"""CVUSA-like writer: centre-aligned pairs of a north-up aerial image and a cropped-band panorama.

Tree (as the official CVUSA loaders read it)::

    bingmap/19/NNNNNNN.jpg            aerial image centred on the camera (id = the 7-digit number, from 1)
    streetview/panos/NNNNNNN.jpg      panorama, 1232:224 aspect: 360 deg wide, elevations +32.73 .. -32.73 deg
    splits/train-19zl.csv             no header: bingmap path, panorama path, annotation path (not written,
    splits/val-19zl.csv               as the official code never opens it); 80 % / 20 % of the ids
    split_locations/all.csv           row id-1: sat lat, sat lon, ground lat, ground lon, 0
    crossview_poses.jsonl, crossview_meta.json
"""

from __future__ import annotations

import json
from pathlib import Path

from crossview.synth import cameras as cam
from crossview.synth.common import (
    GENERATOR_VERSION,
    build_tree,
    item_rng,
    parallel_map,
    resolve_workers,
    write_lines,
)
from crossview.synth.pairs import COVERAGE_M, place_open, pose, render_pair
from crossview.synth.scales import CVUSA, EYE_HEIGHT_M
from crossview.synth.styles import CITIES
from crossview.synth.world import build_world

LAYOUT_KEY = 1
CITY_ORDER = ("NewYork", "Seattle", "SanFrancisco", "Chicago")
BAND_DEG = 360.0 * 224 / 1232 / 2  # half the vertical field of view of a 1232 x 224 panorama: 32.73 deg


def _paths(i: int) -> tuple[str, str, str]:
    return f"bingmap/19/{i:07d}.jpg", f"streetview/panos/{i:07d}.jpg", f"annotations/{i:07d}.png"


def _city(job) -> list[dict]:
    seed, city, ids, splits, scale, root = job
    cfg = CVUSA[scale]
    ci = CITY_ORDER.index(city)
    world = build_world(CITIES[city], cfg["half_extent"], item_rng(seed, LAYOUT_KEY, ci, 0), cfg["cell"])
    spots = place_open(world, cfg["half_extent"], len(ids), item_rng(seed, LAYOUT_KEY, ci, 2))
    dists = cam.ray_distances(cfg["ray_samples"])
    out = []
    for i, split, (lat, lon, e, n) in zip(ids, splits, spots):
        sat, pano, _ = _paths(i)
        render_pair(world, e, n, cfg["tile"], cfg["pano_hw"], dists, item_rng(seed, LAYOUT_KEY, ci, 3, i),
                    Path(root) / sat, Path(root) / pano, EYE_HEIGHT_M, (BAND_DEG, -BAND_DEG))
        out.append({"id": i, **pose(pano, city, lat, lon, e, n, EYE_HEIGHT_M, split, sat, cfg["tile"])})
    return out


def meta(scale: str, seed: int) -> dict:
    cfg = CVUSA[scale]
    return {
        "layout": "cvusa", "scale": scale, "seed": seed, "generator_version": GENERATOR_VERSION,
        "cities": {c: {"metres_per_pixel": COVERAGE_M / cfg["tile"], "origin_lat": CITIES[c].lat0,
                       "origin_lon": CITIES[c].lon0} for c in CITY_ORDER},
        "metres_per_pixel": {c: COVERAGE_M / cfg["tile"] for c in CITY_ORDER},
        "tile_size": cfg["tile"], "panorama_size": {"height": cfg["pano_hw"][0], "width": cfg["pano_hw"][1]},
        "panorama_elevation_deg": [BAND_DEG, -BAND_DEG], "eye_height_m": EYE_HEIGHT_M,
        "pixel_offsets": "Each aerial image is north-up and centred on its camera: the camera is at pixel "
                         "(S/2, S/2) in continuous coordinates with the origin at the top-left corner.",
        "headings": "Panoramas are north-aligned: the centre column looks north, east is at 3/4 of the width "
                    "(degrees clockwise from north); rows span the elevation band panorama_elevation_deg "
                    "(top, bottom) linearly, the horizon in the middle row.",
        "split": "ids are split 80 % train (train-19zl.csv) / 20 % test (val-19zl.csv) at random",
    }


def write_cvusa(out: Path, scale: str = "small", seed: int = 0, workers: int | None = None) -> Path:
    cfg = CVUSA[scale]
    m = meta(scale, seed)

    def write(tmp: Path) -> None:
        n = cfg["pairs"]
        perm = item_rng(seed, LAYOUT_KEY, 99).permutation(n)
        test = set((perm[: n // 5] + 1).tolist())
        split = {i: "test" if i in test else "train" for i in range(1, n + 1)}
        jobs = []
        for ci, city in enumerate(CITY_ORDER):
            ids = list(range(ci + 1, n + 1, len(CITY_ORDER)))
            jobs.append((seed, city, ids, [split[i] for i in ids], scale, str(tmp)))
        nw = resolve_workers(workers, scale)
        poses = sorted((p for r in parallel_map(_city, jobs, nw) for p in r),
                       key=lambda p: p["id"])
        write_lines(tmp / "splits" / "train-19zl.csv", [",".join(_paths(p["id"])) for p in poses
                                                       if p["split"] == "train"])
        write_lines(tmp / "splits" / "val-19zl.csv", [",".join(_paths(p["id"])) for p in poses
                                                     if p["split"] == "test"])
        write_lines(tmp / "split_locations" / "all.csv",
                    [f"{p['lat']:.7f},{p['lon']:.7f},{p['lat']:.7f},{p['lon']:.7f},0" for p in poses])
        with open(tmp / "crossview_poses.jsonl", "w") as f:
            for p in poses:
                f.write(json.dumps({k: v for k, v in p.items() if k != "id"}, sort_keys=True) + "\n")

    return build_tree(out, m, write)
