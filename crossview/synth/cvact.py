"""CVACT-like writer: one city (Canberra style), 2:1 panoramas, splits in a MATLAB ``ACT_data.mat``.

Tree (as the official CVACT loaders read it)::

    ACT_data.mat        panoIds (N equal-length id strings), utm (N x 2: easting, northing in metres),
                        trainSet{trainNum, trainInd}, valSet{valNum, valInd}, valSetAll{valNumAll, valIndAll};
                        index arrays are 1-based column vectors (the official code does mat['trainSet'][0][0][1]-1)
    ANU_data_small/streetview/<id>_grdView.jpg              train + val panoramas (2:1, north-aligned)
    ANU_data_small/satview_polish/<id>_satView_polish.jpg   aerial images centred on the camera
    ANU_data_test/{streetview,satview_polish}/...           test (valSetAll) images
    crossview_poses.jsonl, crossview_meta.json

``utm`` holds the tangent-plane metres plus a constant false origin near Canberra's UTM zone 55 coordinates;
differences between rows are metres, as the official distance code needs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from crossview.synth import cameras as cam
from crossview.synth.common import (
    GENERATOR_VERSION,
    build_tree,
    item_rng,
    parallel_map,
    random_id,
    resolve_workers,
)
from crossview.synth.pairs import COVERAGE_M, place_open, pose, render_pair
from crossview.synth.scales import CVACT, EYE_HEIGHT_M
from crossview.synth.styles import CANBERRA
from crossview.synth.world import build_world

LAYOUT_KEY = 2
UTM_FALSE_ORIGIN = (692_000.0, 6_094_000.0)
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: crossview synth".ljust(116, b" ")
_SHARED: dict = {}  # the world, built once in the parent and inherited by forked workers


def _chunk(job) -> None:
    seed, scale, root, items = job
    cfg = CVACT[scale]
    world, dists = _SHARED["world"], _SHARED["dists"]
    for k, folder, pid, (_, _, e, n) in items:
        base = Path(root) / folder
        render_pair(world, e, n, cfg["tile"], cfg["pano_hw"], dists, item_rng(seed, LAYOUT_KEY, 3, k),
                    base / "satview_polish" / f"{pid}_satView_polish.jpg", base / "streetview" / f"{pid}_grdView.jpg",
                    EYE_HEIGHT_M)


def meta(scale: str, seed: int) -> dict:
    cfg = CVACT[scale]
    st = CANBERRA
    return {
        "layout": "cvact", "scale": scale, "seed": seed, "generator_version": GENERATOR_VERSION,
        "cities": {st.name: {"metres_per_pixel": COVERAGE_M / cfg["tile"], "origin_lat": st.lat0,
                             "origin_lon": st.lon0}},
        "metres_per_pixel": {st.name: COVERAGE_M / cfg["tile"]},
        "tile_size": cfg["tile"], "panorama_size": {"height": cfg["pano_hw"][0], "width": cfg["pano_hw"][1]},
        "eye_height_m": EYE_HEIGHT_M, "utm_false_origin": list(UTM_FALSE_ORIGIN),
        "pixel_offsets": "Each aerial image is north-up and centred on its camera: the camera is at pixel "
                         "(S/2, S/2) in continuous coordinates with the origin at the top-left corner.",
        "headings": "Panoramas are north-aligned equirectangular images: the centre column looks north, east is "
                    "at 3/4 of the width (degrees clockwise from north); top row +90 deg, bottom row -90 deg.",
        "utm": "utm = (east_m, north_m) on the tangent plane at the origin plus utm_false_origin",
        "split": "ANU_data_small: 80 % trainSet / 20 % valSet; ANU_data_test: valSetAll",
    }


def write_cvact(out: Path, scale: str = "small", seed: int = 0, workers: int | None = None) -> Path:
    import scipy.io

    cfg = CVACT[scale]
    m = meta(scale, seed)

    def write(tmp: Path) -> None:
        st = CANBERRA
        world = build_world(st, cfg["half_extent"], item_rng(seed, LAYOUT_KEY, 0), cfg["cell"])
        n_small, n_test = cfg["pairs"], cfg["test"]
        spots = place_open(world, cfg["half_extent"], n_small + n_test, item_rng(seed, LAYOUT_KEY, 2))
        id_rng = item_rng(seed, LAYOUT_KEY, 9)
        ids = [random_id(id_rng) for _ in spots]
        perm = item_rng(seed, LAYOUT_KEY, 99).permutation(n_small)
        val = set(perm[: n_small // 5].tolist())
        split = ["val" if k in val else "train" for k in range(n_small)] + ["test"] * n_test
        folder = ["ANU_data_test" if s == "test" else "ANU_data_small" for s in split]
        items = [(k, folder[k], ids[k], spots[k]) for k in range(len(ids))]
        _SHARED.update(world=world, dists=cam.ray_distances(cfg["ray_samples"]))
        try:
            nw = resolve_workers(workers, scale)
            chunks = [items[i::nw] for i in range(nw)]
            parallel_map(_chunk, [(seed, scale, str(tmp), c) for c in chunks], nw)
        finally:
            _SHARED.clear()
        for f in ("ANU_data_small", "ANU_data_test"):
            for sub in ("streetview", "satview_polish"):
                (tmp / f / sub).mkdir(parents=True, exist_ok=True)
        utm = np.array([[e + UTM_FALSE_ORIGIN[0], n + UTM_FALSE_ORIGIN[1]] for _, _, e, n in spots])

        def idx(name):
            return (np.array([k for k, s in enumerate(split) if s == name], np.int64) + 1).reshape(-1, 1)

        tr, va, te = idx("train"), idx("val"), idx("test")
        buf = io.BytesIO()
        scipy.io.savemat(buf, {
            "panoIds": np.array(ids),
            "utm": utm,
            "trainSet": {"trainNum": np.int64(len(tr)), "trainInd": tr},
            "valSet": {"valNum": np.int64(len(va)), "valInd": va},
            "valSetAll": {"valNumAll": np.int64(len(te)), "valIndAll": te},
        }, do_compression=False, oned_as="column")
        data = bytearray(buf.getvalue())
        data[:116] = _MAT_HEADER  # the default header carries the creation time; keep bytes reproducible
        (tmp / "ACT_data.mat").write_bytes(bytes(data))
        with open(tmp / "crossview_poses.jsonl", "w") as f:
            for k, (lat, lon, e, n) in enumerate(spots):
                grd = f"{folder[k]}/streetview/{ids[k]}_grdView.jpg"
                sat = f"{folder[k]}/satview_polish/{ids[k]}_satView_polish.jpg"
                p = pose(grd, st.name, lat, lon, e, n, EYE_HEIGHT_M, split[k], sat, cfg["tile"])
                f.write(json.dumps(p, sort_keys=True) + "\n")

    return build_tree(out, m, write)
