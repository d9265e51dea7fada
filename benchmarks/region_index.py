"""The region index (``crossview.search.region``) at state scale: build, disk, and searches near a fix and without.

Simulated (stated in the JSON): a square region of north-up 100 m tiles every 50 m (half overlap) centred on
Massachusetts (42.25 N, 71.8 W), ``--sizes`` tiles (10 M tiles = 3,162 x 3,162 centres, 158 km x 158 km,
25,000 km²). Descriptors are random, not a model's: ``--dim``-d, a random cluster centre (norm about 1, one of
``--clusters``) plus N(0, ``--noise``²) per dimension, L2-normalised, stored as float16. Measured per size:

- build: the cell files (H3 resolution 7) and the global IVF-PQ (trained and filled from the cell files), seconds
  and bytes on disk;
- ``--near ±100 m``: ``--queries`` searches at random fixes inside the region, each in a fresh process that opens
  the index (sidecar only) and searches: latency per search and the process's peak resident memory (VmHWM,
  including Python, numpy, h3 and faiss); recall against brute force over every tile whose footprint meets the
  area (same float16 descriptors): the fraction of queries whose top-10 ids are identical;
- the tile nearest each fix (``RegionIndex.nearest``, what ``locate`` reports an answer in): latency, and
  whether it is the nearest centre of all (brute force over every tile);
- global (no fix): IVF-PQ (nprobe from the index) + exact re-scoring of k x 16 candidates from the cell files,
  latency, peak memory, recall@10 against exact search over all tiles.

    OMP_NUM_THREADS=1 python -m benchmarks.region_index   # -> benchmarks/results/region_index.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, add_work_argument, environment, work_dir, write_result

LAT0, LON0 = 42.25, -71.8
STEP_M, HALF_M = 50.0, 50.0


class GridIds:
    """Tile ids of the simulated grid, made on demand (10 M strings would be 700 MB of Python objects)."""

    def __init__(self, nx: int, n: int):
        self.nx, self.n = nx, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> str:
        return f"r{int(i) // self.nx:05d}_c{int(i) % self.nx:05d}"


def grid(n: int) -> tuple[np.ndarray, int]:
    """(lat_lon (n, 2), nx): centres of a square-ish grid, rows north to south, on the tangent plane at the centre."""
    from crossview.geometry.geodesy import enu_to_latlon

    nx = int(math.ceil(math.sqrt(n)))
    i = np.arange(n)
    east = (i % nx - nx / 2) * STEP_M
    north = (nx / 2 - i // nx) * STEP_M
    lat, lon = enu_to_latlon(east, north, LAT0, LON0)
    return np.stack([lat, lon], 1), nx


def descriptors(path: Path, n: int, d: int, clusters: int, noise: float, seed: int) -> np.memmap:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32) / math.sqrt(d)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, d))
    for s in range(0, n, 1 << 20):
        e = min(n, s + (1 << 20))
        x = centres[rng.integers(clusters, size=e - s)] + noise * rng.standard_normal((e - s, d)).astype(np.float32)
        mm[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    mm.flush()
    return mm


SEARCH = r"""
import json, sys, time
import numpy as np
import faiss
faiss.omp_set_num_threads(1)
from crossview.search.region import load_region_index
args = json.loads(sys.argv[1])
t0 = time.perf_counter()
idx = load_region_index(args["index"])
t_open = time.perf_counter() - t0
q = np.asarray(args["q"], np.float32)
lat = []
ids = []
opened = []
nearest, nearest_s = [], []
for i, area in enumerate(args["areas"] or [None] * len(q)):
    t = time.perf_counter()
    s, got = idx.search_near(q[i], 10, tuple(area)) if area else idx.search(q[i], 10)
    lat.append(time.perf_counter() - t)
    ids.append([g for g in got[0].tolist() if g is not None])
    opened.append(idx.cells_opened)
    if area:  # the tile whose centre is nearest the fix (what locate reports an answer in), from the cells around
        t = time.perf_counter()
        nearest.append(idx.nearest(area[0], area[1])["id"])
        nearest_s.append(time.perf_counter() - t)
# VmHWM: this process's own peak (ru_maxrss would include the parent's pages at fork, before exec)
hwm = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")][0] / 1024
print(json.dumps({"open_s": t_open, "latency_s": lat, "ids": ids, "cells_opened": opened, "maxrss_mb": hwm,
                  "nearest": nearest, "nearest_s": nearest_s, "rows_table_read": idx.rows_loaded}))
"""


def run_searches(index: Path, q: np.ndarray, areas) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", SEARCH, json.dumps({"index": str(index), "q": q.tolist(),
                                                                  "areas": areas})],
                       capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_size(n: int, args, work: Path) -> dict:
    import faiss

    from crossview.geometry.geo import latlon_to_offset
    from crossview.search.region import Part, build_region_index, footprints_near

    rng = np.random.default_rng(args.seed + 1)
    ll, nx = grid(n)
    hm = np.full((n, 2), HALF_M, np.float32)
    t = time.perf_counter()
    desc = descriptors(work / f"desc_{n}.npy", n, args.dim, args.clusters, args.noise, args.seed)
    t_gen = time.perf_counter() - t
    out = work / f"index_{n}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    build_region_index([Part(GridIds(nx, n), ll, hm, desc)], out, {"name": "simulated", "dim": args.dim},
                       ivf=True, nprobe=args.nprobe)
    t_build = time.perf_counter() - t
    info = json.loads((out / "index.json").read_text())
    # --near: fixes inside the region (away from its edge), ±radius
    q = desc[rng.integers(n, size=args.queries)].astype(np.float32)
    q += 0.05 * rng.standard_normal(q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    picks = rng.integers(n, size=args.queries)
    areas = [[float(ll[j, 0]), float(ll[j, 1]), float(args.radius)] for j in picks]
    near = run_searches(out, q, areas)
    same = 0
    n_area = []
    nearest_ok = 0
    for i, (la, lo, r) in enumerate(areas):
        east, north = latlon_to_offset(la, lo, ll[:, 0], ll[:, 1])
        d = np.hypot(east, north)
        r_, c_ = (int(v[1:]) for v in near["nearest"][i].split("_"))  # GridIds -> row
        nearest_ok += int(d[r_ * nx + c_] <= d.min() + 1e-6)
        mask = footprints_near(ll, hm, la, lo, r)
        rows = np.flatnonzero(mask)
        s = np.asarray(desc[rows], np.float32) @ q[i]
        top = rows[np.argsort(-s, kind="stable")[:10]]
        want = [GridIds(nx, n)[j] for j in top]
        same += int(want == near["ids"][i])
        n_area.append(len(rows))
    # global: IVF-PQ + exact re-scoring, against exact search over every tile
    g = run_searches(out, q[: args.global_queries], None)
    exact = np.full((args.global_queries, 10), -1, np.int64)
    best = np.full((args.global_queries, 10), -np.inf, np.float32)
    for s0 in range(0, n, 1 << 20):
        block = np.asarray(desc[s0:s0 + (1 << 20)], np.float32)
        sc = q[: args.global_queries] @ block.T
        allv = np.concatenate([best, sc], 1)
        alli = np.concatenate([exact, np.arange(s0, s0 + len(block))[None].repeat(len(sc), 0)], 1)
        top = np.argsort(-allv, axis=1)[:, :10]
        best, exact = np.take_along_axis(allv, top, 1), np.take_along_axis(alli, top, 1)
    ids = GridIds(nx, n)
    recall = np.mean([len({ids[j] for j in exact[i]} & set(g["ids"][i])) / 10 for i in range(args.global_queries)])
    lat_near, lat_g = np.array(near["latency_s"]) * 1e3, np.array(g["latency_s"]) * 1e3
    lat_nn = np.array(near["nearest_s"]) * 1e3
    res = {
        "tiles": n, "grid": [nx, int(math.ceil(n / nx))],
        "area_km2": round(n * STEP_M * STEP_M / 1e6, 1),
        "cells": len(info["cells"]), "h3_resolution": info["h3_resolution"],
        "generate_s": round(t_gen, 2), "build_s": round(t_build, 2), "build_parts_s": info["seconds"],
        "disk_bytes": du(out), "disk_bytes_parts": info["bytes"], "ivf": info["ivf"],
        "near": {"radius_m": args.radius, "queries": args.queries,
                 "open_s": round(near["open_s"], 4),
                 "latency_ms": {"median": round(float(np.median(lat_near)), 2),
                                "p95": round(float(np.percentile(lat_near, 95)), 2),
                                "max": round(float(lat_near.max()), 2), "first": round(float(lat_near[0]), 2)},
                 "peak_rss_mb": round(near["maxrss_mb"], 1),
                 "tiles_in_area": {"median": float(np.median(n_area)), "max": int(max(n_area))},
                 "cells_opened": {"median": float(np.median(near["cells_opened"])), "max": max(near["cells_opened"])},
                 "recall_vs_brute_force_in_area": same / args.queries,
                 "rows_table_read": near["rows_table_read"]},
        "nearest_tile": {"queries": args.queries,
                         "latency_ms": {"median": round(float(np.median(lat_nn)), 2),
                                        "p95": round(float(np.percentile(lat_nn, 95)), 2)},
                         "correct_vs_brute_force": nearest_ok / args.queries},
        "global": {"queries": args.global_queries, "nprobe": args.nprobe,
                   "latency_ms": {"median": round(float(np.median(lat_g)), 2),
                                  "p95": round(float(np.percentile(lat_g, 95)), 2),
                                  "first": round(float(lat_g[0]), 2)},
                   "peak_rss_mb": round(g["maxrss_mb"], 1), "recall_at_10_vs_exact": round(float(recall), 4)},
    }
    del desc
    (work / f"desc_{n}.npy").unlink()
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(res), flush=True)
    faiss.omp_set_num_threads(1)
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100000,1000000,10000000")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--clusters", type=int, default=4096)
    p.add_argument("--noise", type=float, default=0.08)
    p.add_argument("--radius", type=float, default=100.0)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--global-queries", type=int, default=20)
    p.add_argument("--nprobe", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    add_work_argument(p, "descriptors and indexes")
    p.add_argument("--keep", action="store_true", help="keep the built indexes under --work")
    p.add_argument("--out", default=str(RESULTS / "region_index.json"))
    args = p.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    with work_dir(args.work, "crossview_region_bench_") as work:
        results = [bench_size(int(s), args, work) for s in args.sizes.split(",")]
    doc = {
        "what": "crossview.search.region at 100k / 1M / 10M tiles, one thread",
        "simulated": ("a square region of north-up 100 m tiles every 50 m (half overlap) around 42.25 N 71.8 W; "
                      f"random {args.dim}-d descriptors (a cluster centre of {args.clusters} + N(0, {args.noise}^2) "
                      "per dimension, L2-normalised, float16), no imagery and no model"),
        "dim": args.dim, "threads": 1, "environment": environment(),
        "sizes": results,
        "note": ("near-search peak memory is the whole search process's VmHWM (Python + numpy + h3 + faiss "
                 "imports included); latencies exclude opening the index (open_s)."),
    }
    write_result(args.out, doc, merge=True)  # region_stream's keys stay
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
