"""Locating on a region index cut from rasters: start-up and one photo, against the row table start-up used to read.

Simulated (stated in the JSON): a UTM GeoTIFF of ``--px`` x ``--px`` pixels at 0.5 m (random 8 px blocks, the
raster of ``benchmarks.region_stream``), whose tile plan (``--tile-px`` tiles at half overlap, as ``crossview
locate-index`` cuts it) is written as a region index with **random descriptors** of the tiny retrieval model's
size (2,048-d float16) instead of embedding every tile: what is measured - opening the index, the cells around a
fix, cutting tiles from the raster - does not depend on the descriptors' values. The retrieval model is
``mfrgn_tiny`` with random weights (its identity is what the index records). Per size, in a fresh process, one
thread:

- ``Locator(index)``: seconds and resident memory added (the model's load included);
- one panorama located with ``--near ±50 m`` (retrieval; the answer drawn on its tile): seconds, cells opened, tiles
  cut from the raster, whether the row table was read;
- what start-up read before this version: every tile's id and centre (``RegionIndex.rows()``): seconds and memory.

    OMP_NUM_THREADS=1 python -m benchmarks.region_locate --px 4000,16000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import RESULTS, add_work_argument, environment, work_dir, write_random_geotiff, write_result

CHILD = r"""
import json, sys, time
from pathlib import Path
a = json.loads(sys.argv[1])
def rss():
    return [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmRSS")][0] / 1024
import torch
from crossview.locate import Locator
r0, t = rss(), time.perf_counter()
loc = Locator(a["index"], precision="fp32", tile_cache=a["cache"])
start_s, r1 = time.perf_counter() - t, rss()
t = time.perf_counter()
res = loc.locate(a["photo"], camera="panorama", near=tuple(a["near"]), out=a["out"])
photo_s = time.perf_counter() - t
got = {"start_s": start_s, "start_mb": r1 - r0, "photo_s": photo_s, "cells_opened": loc.index.cells_opened,
       "tiles_cut": len(list(Path(a["cache"]).glob("*.png"))), "rows_table_read": loc.index.rows_loaded,
       "answer_tile": res["tile"], "rss_after_photo_mb": rss()}
r2, t = rss(), time.perf_counter()
rows = loc.index.rows()
got.update(rows_s=time.perf_counter() - t, rows_mb=rss() - r2, rows=len(rows["ids"]))
print(json.dumps(got))
"""


def build(work, px: int, tile_px: int, model_path, seed: int) -> dict:
    """The GeoTIFF and its region index with random descriptors (see the module notes)."""
    from crossview.locate.models import retrieval_identity
    from crossview.models import load_model
    from crossview.search.region import Part, build_region_index
    from crossview.tiles.raster import OpenRaster, RasterOptions, tile_id

    tif = work / f"ortho_{px}.tif"
    t = time.perf_counter()
    write_random_geotiff(tif, px)
    t_tif = time.perf_counter() - t
    ident = retrieval_identity(load_model(str(model_path)))
    with OpenRaster(tif, tile_px, 0.5, None) as raster:
        plan, mpp = raster.plan, raster.mpp
    n, d = len(plan), int(ident["dim"])
    rng = np.random.default_rng(seed)
    desc = np.empty((n, d), np.float16)
    for s in range(0, n, 65536):
        x = rng.standard_normal((min(n, s + 65536) - s, d)).astype(np.float32)
        desc[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    half = 0.5 * tile_px * mpp
    part = Part([tile_id(r, c) for r, c, _, _ in plan], np.array([[la, lo] for _, _, la, lo in plan]),
                np.full((n, 2), half, np.float32), desc)
    meta = {**ident, "checkpoint": str(model_path), "arch": None, "tiles_manifest": None, "precision": "fp32",
            "view": "aerial"}
    extra = {"rasters": [{"path": str(tif), "bytes": tif.stat().st_size, "mtime_ns": tif.stat().st_mtime_ns,
                          "candidates": n, "mpp": mpp}], "tile_px": tile_px, "overlap": 0.5,
             "raster": RasterOptions().to_json(), "candidates": n, "skipped": 0}
    t = time.perf_counter()
    index = build_region_index([part], work / f"index_{px}", meta, ivf=False, extra=extra)
    center = plan[len(plan) // 2]
    return {"index": index, "tif": tif, "tiles": n, "tif_s": t_tif, "build_s": time.perf_counter() - t,
            "fix": (center[2], center[3]), "mpp": mpp}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--px", default="4000,16000", help="raster sides to measure, comma-separated")
    p.add_argument("--tile-px", type=int, default=64)
    p.add_argument("--radius", type=float, default=50.0)
    p.add_argument("--seed", type=int, default=0)
    add_work_argument(p, "rasters, model and indexes")
    p.add_argument("--out", default=str(RESULTS / "region_locate.json"))
    args = p.parse_args()
    import torch
    from PIL import Image

    from crossview.models import create_model, save_model

    sizes = []
    with work_dir(args.work, "crossview_region_locate_") as work:
        torch.manual_seed(args.seed)
        model = save_model(create_model("mfrgn_tiny"), work / "model.pt")
        photo = work / "photo.jpg"
        Image.fromarray(np.random.default_rng(args.seed).integers(0, 255, (256, 512, 3), dtype=np.uint8)).save(photo)
        for px in (int(v) for v in args.px.split(",")):
            b = build(work, px, args.tile_px, model, args.seed)
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            a = {"index": str(b["index"]), "cache": str(work / f"cache_{px}"), "photo": str(photo),
                 "near": [*b["fix"], args.radius], "out": str(work / f"out_{px}")}
            r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(a)], capture_output=True, text=True, env=env,
                               check=True)
            got = json.loads(r.stdout.strip().splitlines()[-1])
            row = {"raster_px": px, "area_km2": round((px * 0.5 / 1000) ** 2, 2), "tiles": b["tiles"],
                   "write_raster_s": round(b["tif_s"], 1), "build_index_s": round(b["build_s"], 1),
                   "locator_start_s": round(got["start_s"], 3), "locator_start_mb": round(got["start_mb"], 1),
                   "photo_s": round(got["photo_s"], 3), "cells_opened": got["cells_opened"],
                   "tiles_cut": got["tiles_cut"], "rows_table_read": got["rows_table_read"],
                   "rss_after_photo_mb": round(got["rss_after_photo_mb"], 1),
                   "row_table_s": round(got["rows_s"], 3), "row_table_mb": round(got["rows_mb"], 1)}
            print(json.dumps(row), flush=True)
            sizes.append(row)
    doc = {"what": "crossview locate on a region index cut from a raster: start-up and one photo near a fix",
           "simulated": (f"a UTM GeoTIFF at 0.5 m of random 8 px blocks; its {args.tile_px} px tiles at half overlap "
                         "as a region index with random 2,048-d float16 descriptors (not embedded); mfrgn_tiny "
                         f"with random weights; --near ±{args.radius:g} m, retrieval only, the answer drawn"),
           "threads": 1, "environment": environment(), "sizes": sizes,
           "note": ("locator_start includes loading the retrieval model; row_table is what start-up read before "
                    "(every tile's id and centre), measured after the photo in the same process")}
    write_result(args.out, doc)
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
