"""Streaming a GeoTIFF into a region index (``crossview locate-index RASTER --out INDEX``): tiles/s and peak memory.

Simulated: a square UTM GeoTIFF of ``--px`` x ``--px`` pixels at 0.5 m (random 8 px blocks, tiled 256 x 256,
uncompressed), the tiny retrieval model with random weights (``mfrgn_tiny``, 128 px aerial input), 256 px tiles at
half overlap, one thread, CPU. The index is built in a child process whose peak resident memory (VmHWM of the
child) is reported; the run is then killed after half its shards and resumed, and the resumed index is compared
with the uninterrupted one. The result goes under the key ``stream_<px>px`` (``stream_<px>px_full_pass`` with
``--no-resume``) of ``benchmarks/results/region_index.json``; the peak is that of the whole child, the merge into
the region index (and its IVF-PQ from 20,000 tiles) included.

    OMP_NUM_THREADS=1 python -m benchmarks.region_stream --px 6000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import RESULTS, add_work_argument, work_dir, write_random_geotiff, write_result

CHILD = r"""
import json, os, signal, sys, time
from crossview.locate import rasters
a = json.loads(sys.argv[1])
if a.get("kill_after"):
    real, n = rasters.save_shard, [0]
    def dying(*x, **k):
        out = real(*x, **k); n[0] += 1
        if n[0] >= a["kill_after"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    rasters.save_shard = dying
t = time.perf_counter()
rasters.index_rasters([a["tif"]], a["model"], a["out"], tile_px=256, overlap=0.5, shard_size=a["shard"], batch=32,
                      log=lambda *x: None)
rss = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")][0] / 1024
print(json.dumps({"s": time.perf_counter() - t, "maxrss_mb": rss}))
"""


def child(args: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CROSSVIEW_QUIET": "1"}
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"returncode": r.returncode, "stderr": r.stderr[-500:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--px", type=int, default=6000)
    p.add_argument("--shard", type=int, default=256)
    p.add_argument("--no-resume", action="store_true", help="measure the full pass only (no kill and resume)")
    add_work_argument(p, "raster, model and indexes")
    p.add_argument("--out", default=str(RESULTS / "region_index.json"))
    a = p.parse_args()
    import torch

    from crossview.models import create_model, save_model
    from crossview.search.region import load_region_index

    with work_dir(a.work, "crossview_region_stream_") as work:
        for sub in ("full", "resumed"):  # a fresh start: the resume is measured from the kill below
            shutil.rmtree(work / sub, ignore_errors=True)
        torch.manual_seed(0)
        model = save_model(create_model("mfrgn_tiny"), work / "model.pt")
        tif = work / "ortho.tif"
        t = time.perf_counter()
        write_random_geotiff(tif, a.px)
        t_tif = time.perf_counter() - t
        base = {"tif": str(tif), "model": str(model), "shard": a.shard}
        full = child({**base, "out": str(work / "full")})
        idx = load_region_index(work / "full")
        n, cand = len(idx), idx.info["extra"]["candidates"]
        shards = -(-cand // a.shard)
        kill = None
        if not a.no_resume:
            killed = child({**base, "out": str(work / "resumed"), "kill_after": max(1, shards // 2)})
            left = len(list((work / "resumed" / "shards").glob("shard-*.safetensors")))
            resumed = child({**base, "out": str(work / "resumed")})
            idx2 = load_region_index(work / "resumed")
            same = idx2.ids == idx.ids and np.array_equal(idx2.descriptors(), idx.descriptors())
            kill = {"killed_after_shards": max(1, shards // 2), "returncode": killed.get("returncode"),
                    "shards_on_disk_after_kill": left, "resumed_s": round(resumed["s"], 1),
                    "resumed_index_identical": bool(same)}
        res = {
            "raster_px": [a.px, a.px], "raster_mb": round(tif.stat().st_size / 2**20, 1),
            "write_raster_s": round(t_tif, 1),
            "tile_px": 256, "overlap": 0.5, "model": "mfrgn_tiny (random weights), 128 px aerial input",
            "tiles": n, "shards": shards, "threads": 1,
            "seconds": round(full["s"], 1), "tiles_per_s": round(cand / full["s"], 1),
            "peak_rss_mb": round(full["maxrss_mb"], 1),
            "kill": kill,
        }
    print(json.dumps(res, indent=2))
    write_result(a.out, {f"stream_{a.px}px" + ("_full_pass" if a.no_resume else ""): res}, merge=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
