"""Peak memory of ``crossview tiles`` on a 20,000 x 20,000 GeoTIFF: windowed reads keep it bounded.

Writes a ``--size`` x ``--size`` raster (3 bands, 16-bit by default, UTM, 0.3 m pixels, DEFLATE-compressed,
internally tiled 512 x 512) strip by strip into a temporary folder, tiles it in a child process (the figure is the
child's own peak resident set, ``VmHWM``, sampled also from outside every 0.2 s), then deletes the raster and
the tiles. A whole-raster read would need ``size² x 3 x 2`` bytes for the 16-bit array alone (2.4 GB at 20,000 px)
and 8x that for a float64 copy.

    python -m benchmarks.bench_tiles                           # -> benchmarks/results/tiles.json
    python -m benchmarks.bench_tiles --size 4000 --out tiles_4000.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, environment, write_result

LIMIT_MB = 1024

# The child's peak is its VmHWM: ru_maxrss would not do, Linux carries the parent's high-water mark (the raster
# writer's) over fork and exec into it.
CHILD = r"""
import json, sys, time


def status_mb(key):
    return next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith(key)) / 1024


t0 = time.time()
from crossview.tiles import build_tiles, read_manifest
base = status_mb("VmHWM")
t1 = time.time()
manifest = build_tiles(sys.argv[1], sys.argv[2], tile_px=int(sys.argv[3]), overlap=float(sys.argv[4]))
info = json.loads(open(manifest).read())
print(json.dumps({"peak_rss_mb": status_mb("VmHWM"), "import_s": t1 - t0, "tile_s": time.time() - t1,
                  "rss_after_import_mb": base, "tiles": len(info["tiles"]), "skipped": info["skipped"],
                  "source": info["source"]}))
"""


def write_raster(path: Path, size: int, dtype: str, seed: int = 0) -> float:
    """A UTM (zone 18N) raster of smooth fields plus a little noise, written 512 rows at a time; seconds taken."""
    import rasterio
    from rasterio.transform import Affine

    rng = np.random.default_rng(seed)
    top = 255 if dtype == "uint8" else 4095
    t0 = time.time()
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": dtype, "crs": "EPSG:32618",
               "transform": Affine(0.3, 0, 450000, 0, -0.3, 4430000), "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate", "zlevel": 1, "predictor": 2, "BIGTIFF": "YES"}
    x = np.arange(size, dtype=np.float32) / size
    with rasterio.open(path, "w", **profile) as ds:
        for r0 in range(0, size, 512):
            h = min(512, size - r0)
            y = (np.arange(r0, r0 + h, dtype=np.float32) / size)[:, None]
            for b in range(3):
                field = 0.5 + 0.25 * np.sin(2 * math.pi * (7 + b) * x[None, :] + 3 * y) * np.cos(
                    2 * math.pi * (5 + 2 * b) * y)
                noise = rng.integers(0, 16, size=(h, size), dtype=np.int32) / 4095
                ds.write((np.clip(field + noise, 0, 1) * top).astype(dtype), b + 1,
                         window=rasterio.windows.Window(0, r0, size, h))
    return time.time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=20000, help="raster side in pixels (default 20000)")
    ap.add_argument("--dtype", default="uint16", choices=("uint8", "uint16"))
    ap.add_argument("--tile-px", type=int, default=640)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--workdir", help="where the raster and tiles go while the benchmark runs (default: $TMPDIR)")
    ap.add_argument("--out", default=str(RESULTS / "tiles.json"))
    args = ap.parse_args()

    need_gb = args.size**2 * 3 * np.dtype(args.dtype).itemsize / 1e9
    work = Path(tempfile.mkdtemp(prefix="crossview-bench-tiles-", dir=args.workdir))
    free_gb = shutil.disk_usage(work).free / 1e9
    if free_gb < 1.5 * need_gb:
        print(f"need about {1.5 * need_gb:.1f} GB free under {work} (raster + tiles), {free_gb:.1f} GB there; "
              "pass --workdir on a larger disk", file=sys.stderr)
        shutil.rmtree(work)
        return 2
    try:
        raster = work / "ortho.tif"
        print(f"writing a {args.size} x {args.size} x 3 {args.dtype} GeoTIFF ({need_gb:.2f} GB uncompressed)...",
              flush=True)
        write_s = write_raster(raster, args.size, args.dtype)
        raster_mb = raster.stat().st_size / 2**20
        print(f"  {write_s:.0f} s, {raster_mb:.0f} MB on disk; tiling in a child process...", flush=True)
        env = {**os.environ, "CROSSVIEW_QUIET": "1"}
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(raster), str(work / "tiles"), str(args.tile_px),
                                 str(args.overlap)], stdout=subprocess.PIPE, text=True, env=env)
        samples, t0 = [], time.time()
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
                samples.append((round(time.time() - t0, 1), round(rss / 1024, 1)))
            except (OSError, StopIteration):
                pass
            time.sleep(0.2)
        out, _ = proc.communicate()
        if proc.returncode:
            print(f"the tiling child failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        child = json.loads(out.strip().splitlines()[-1])
        tiles_mb = sum(p.stat().st_size for p in (work / "tiles" / "tiles").iterdir()) / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)
    step = max(1, len(samples) // 40)
    peak_mb = max([child["peak_rss_mb"], *(s[1] for s in samples)])
    result = {
        "benchmark": "peak resident memory of `crossview tiles` (rasterio, windowed reads) on a large GeoTIFF",
        "environment": environment(), "note": "CPU cores shared with other jobs (timings are noisy)",
        "raster": {"width": args.size, "height": args.size, "bands": 3, "dtype": args.dtype, "crs": "EPSG:32618",
                   "pixel_m": 0.3, "uncompressed_gb": round(need_gb, 2), "file_mb": round(raster_mb, 1),
                   "layout": "GeoTIFF, 512x512 internal tiles, DEFLATE level 1, no overviews", "write_s":
                       round(write_s, 1)},
        "tiling": {"tile_px": args.tile_px, "overlap": args.overlap, "tiles": child["tiles"],
                   "skipped": child["skipped"], "stretch": child["source"]["stretch"], "seconds": round(
                       child["tile_s"], 1), "tiles_per_s": round(child["tiles"] / child["tile_s"], 2),
                   "tiles_mb": round(tiles_mb, 1)},
        # the larger of the child's VmHWM when tiling ended and the RSS sampled until it exited (its teardown too)
        "memory": {"peak_rss_mb": round(peak_mb, 1),
                   "tiling_vm_hwm_mb": round(child["peak_rss_mb"], 1),
                   "rss_after_imports_mb": round(child["rss_after_import_mb"], 1),
                   "peak_rss_sampled_mb": max((s[1] for s in samples), default=None),
                   "limit_mb": LIMIT_MB, "under_limit": peak_mb < LIMIT_MB,
                   "whole_raster_array_mb": round(need_gb * 1e9 / 2**20, 1),
                   "rss_over_time_s_mb": samples[::step]},
    }
    write_result(args.out, result)
    print(json.dumps({k: result[k] for k in ("raster", "tiling")}, indent=1))
    print(f"peak RSS {result['memory']['peak_rss_mb']:.0f} MB (limit {LIMIT_MB} MB) -> {args.out}")
    return 0 if result["memory"]["under_limit"] else 1


if __name__ == "__main__":
    sys.exit(main())
