"""University-1652-like writer: a class is one target building, seen by one satellite image and several drone
views circling it.

Tree (University-1652's release; class folders are zero-padded integers, disjoint between train and test)::

    train/satellite/<cls>/<cls>.jpg          north-up aerial image centred on the building
    train/drone/<cls>/image-XX.jpeg          oblique drone views circling the building (XX = 01, 02, ...)
    test/query_drone/<cls>/image-XX.jpeg     test classes
    test/gallery_satellite/<cls>/<cls>.jpg   test classes + distractor classes (no queries)
    test/query_satellite/<cls>/<cls>.jpg     test classes
    test/gallery_drone/<cls>/image-XX.jpeg   test classes + distractor classes
    crossview_poses.jsonl                    one JSON per drone image (camera position, target, fov)
    crossview_meta.json
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from crossview.synth import cameras as cam
from crossview.synth.common import GENERATOR_VERSION, build_tree, item_rng, parallel_map, resolve_workers
from crossview.synth.geo import enu_to_latlon
from crossview.synth.imgio import save_image
from crossview.synth.scales import UNIVERSITY
from crossview.synth.styles import CANBERRA, CITIES
from crossview.synth.world import build_world

LAYOUT_KEY = 4
STYLES = (CITIES["NewYork"], CITIES["Seattle"], CITIES["SanFrancisco"], CITIES["Chicago"], CANBERRA)
SAT_COVERAGE_M = 90.0
FOV_RANGE = (55.0, 70.0)


def _drone_poses(rng: np.random.Generator, ce: float, cn: float, h: float, n: int, hw: tuple[int, int]):
    """``n`` look-at poses on a loose circle around the building (University-1652 drones spiral around it)."""
    start = rng.uniform(0, 360)
    out = []
    for k in range(n):
        az = np.radians(start + 360.0 * k / n + rng.uniform(-10, 10))
        dist = rng.uniform(40, 70)
        alt = h + rng.uniform(35, 75)
        target = (ce, cn, h * rng.uniform(0.3, 0.6))
        out.append(cam.DronePose((ce + dist * np.sin(az), cn + dist * np.cos(az), alt), target,
                                 float(rng.uniform(*FOV_RANGE)), hw[1], hw[0]))
    return out


def _city(job) -> list[dict]:
    seed, si, classes, scale, root = job
    cfg = UNIVERSITY[scale]
    st = STYLES[si]
    root = Path(root)
    half = cfg["half_extent"]
    world = build_world(st, half, item_rng(seed, LAYOUT_KEY, si, 0), cfg["cell"])
    bl = world.buildings
    lim = half - 50
    ok = np.nonzero((np.abs(bl.ce) < lim) & (np.abs(bl.cn) < lim) & (np.minimum(bl.hu, bl.hv) > 3.0))[0]
    pick = item_rng(seed, LAYOUT_KEY, si, 1).choice(ok, size=len(classes), replace=False)
    poses = []
    for (cls, role), b in zip(classes, pick):
        rng = item_rng(seed, LAYOUT_KEY, si, 2, cls)
        ce, cn, h = float(bl.ce[b]), float(bl.cn[b]), float(bl.height[b])
        name = f"{cls:04d}"
        sat = cam.render_tile(world, ce, cn, SAT_COVERAGE_M / cfg["sat"], cfg["sat"], rng)
        sat_dirs = {"train": ["train/satellite"], "test": ["test/gallery_satellite", "test/query_satellite"],
                    "distractor": ["test/gallery_satellite"]}[role]
        drone_dirs = {"train": ["train/drone"], "test": ["test/query_drone", "test/gallery_drone"],
                      "distractor": ["test/gallery_drone"]}[role]
        for d in sat_dirs:
            save_image(root / d / name / f"{name}.jpg", sat)
        lat, lon = enu_to_latlon(ce, cn, st.lat0, st.lon0)
        for k, pose in enumerate(_drone_poses(rng, ce, cn, h, cfg["drones"], cfg["drone_hw"]), 1):
            img = cam.render_drone(world, pose, cam.random_look(rng), rng, h_max=_local_max(world, ce, cn))
            rel = f"{drone_dirs[0]}/{name}/image-{k:02d}.jpeg"
            save_image(root / rel, img)
            for d in drone_dirs[1:]:
                (root / d / name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / rel, root / d / name / f"image-{k:02d}.jpeg")
            poses.append({"image": rel, "class": name, "city": st.name, "role": role,
                          "target_lat": float(lat), "target_lon": float(lon), "target": list(pose.target),
                          "east_m": pose.pos[0], "north_m": pose.pos[1], "up_m": pose.pos[2],
                          "fov_deg": pose.fov_deg, "camera": "drone",
                          "satellite": f"{sat_dirs[0]}/{name}/{name}.jpg"})
    return poses


def _local_max(world, ce: float, cn: float, radius: float = 120.0) -> float:
    r0, c0, _ = world.cell_of(ce - radius, cn + radius)
    r1, c1, _ = world.cell_of(ce + radius, cn - radius)
    return float(world.height[r0:r1 + 1, c0:c1 + 1].max())


def meta(scale: str, seed: int) -> dict:
    cfg = UNIVERSITY[scale]
    return {
        "layout": "university1652", "scale": scale, "seed": seed, "generator_version": GENERATOR_VERSION,
        "cities": {s.name: {"metres_per_pixel": SAT_COVERAGE_M / cfg["sat"], "origin_lat": s.lat0,
                            "origin_lon": s.lon0} for s in STYLES},
        "metres_per_pixel": {s.name: SAT_COVERAGE_M / cfg["sat"] for s in STYLES},
        "tile_size": cfg["sat"], "drone_size": {"height": cfg["drone_hw"][0], "width": cfg["drone_hw"][1]},
        "classes": {"train": cfg["train"], "test": cfg["test"], "distractors": cfg["distractors"]},
        "drones_per_class": cfg["drones"],
        "pixel_offsets": "Satellite images are north-up and centred on the target building's footprint centre "
                         "(pixel (S/2, S/2), origin at the top-left corner).",
        "headings": "Drone poses in crossview_poses.jsonl: camera position east_m/north_m/up_m (metres on the "
                    "city's tangent plane, up above ground) looking at 'target'; fov_deg is horizontal.",
    }


def write_university(out: Path, scale: str = "small", seed: int = 0, workers: int | None = None) -> Path:
    cfg = UNIVERSITY[scale]
    m = meta(scale, seed)

    def write(tmp: Path) -> None:
        n_tr, n_te, n_di = cfg["train"], cfg["test"], cfg["distractors"]
        total = n_tr + n_te + n_di
        names = item_rng(seed, LAYOUT_KEY, 99).permutation(total) + 1
        roles = ["train"] * n_tr + ["test"] * n_te + ["distractor"] * n_di
        per_city: list[list] = [[] for _ in STYLES]
        for k in range(total):
            per_city[k % len(STYLES)].append((int(names[k]), roles[k]))
        jobs = [(seed, si, c, scale, str(tmp)) for si, c in enumerate(per_city) if c]
        res = parallel_map(_city, jobs, resolve_workers(workers, scale))
        poses = sorted((p for r in res for p in r), key=lambda p: p["image"])
        with open(tmp / "crossview_poses.jsonl", "w") as f:
            for p in poses:
                f.write(json.dumps(p, sort_keys=True) + "\n")

    return build_tree(out, m, write)
