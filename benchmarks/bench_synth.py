"""Wall time of the synthetic world generator (issue 2 target: VIGOR medium, 2,000 panoramas at 320x640 plus
their tiles, in under 5 minutes on 2 CPU cores).

    python -m benchmarks.bench_synth [--scales tiny small medium] [--layouts vigor ...] [--workers N]

Writes ``benchmarks/results/synth.json``: per (layout, scale) the wall time, files and bytes written, and the
machine's CPU count and load average (timings on a shared machine are upper bounds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import environment, write_result


def _tree_stats(root: Path) -> dict:
    files = [p for p in root.rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "images": sum(1 for p in files if p.suffix.lower() in (".jpg", ".jpeg", ".png"))}


def polar_baseline(root: Path, n: int = 300) -> dict:
    """Difficulty probe on a CVACT-like tree (centre-aligned, full panoramas): no learning, just project each
    aerial image onto the panorama's ground rows (flat-ground polar warp) and rank by colour correlation."""
    import numpy as np
    from PIL import Image

    meta = json.loads((root / "crossview_meta.json").read_text())
    S, H, W = meta["tile_size"], meta["panorama_size"]["height"], meta["panorama_size"]["width"]
    mpp, eye = next(iter(meta["metres_per_pixel"].values())), meta["eye_height_m"]
    poses = [json.loads(x) for x in (root / "crossview_poses.jsonl").read_text().splitlines()][:n]
    rows = np.arange(H // 2 + H // 20, H - H // 16)  # about 8 to 79 degrees below the horizon
    el = np.radians(90 - (rows + 0.5) / H * 180)
    az = np.radians(((np.arange(W) + 0.5) / W - 0.5) * 360)
    d = eye / np.tan(-el)
    x = S / 2 + d[:, None] * np.sin(az)[None, :] / mpp
    y = S / 2 - d[:, None] * np.cos(az)[None, :] / mpp
    ok = (x >= 0) & (x < S) & (y >= 0) & (y < S)
    xi, yi = np.clip(x.astype(int), 0, S - 1), np.clip(y.astype(int), 0, S - 1)

    def unit(a):
        a = a - a.mean()
        return (a / (np.linalg.norm(a) + 1e-9)).ravel()

    g = np.stack([unit(np.asarray(Image.open(root / p["image"]), float)[rows][ok]) for p in poses])
    t = np.stack([unit(np.asarray(Image.open(root / p["tiles"][0]["tile"]), float)[yi, xi][ok]) for p in poses])
    sim = g @ t.T
    rank = (sim > np.diag(sim)[:, None]).sum(1)
    return {"n": len(poses), "R@1": float((rank < 1).mean()), "R@5": float((rank < 5).mean()),
            "chance_R@1": 1 / len(poses)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", nargs="+", default=["tiny", "small", "medium"])
    ap.add_argument("--layouts", nargs="+", default=["vigor"])
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "synth.json"))
    ap.add_argument("--merge", action="store_true",
                    help="keep runs already in --out for other (layout, scale) pairs")
    args = ap.parse_args()

    from crossview.synth import GENERATOR_VERSION, generate
    from crossview.synth.common import resolve_workers

    runs = []
    for layout in args.layouts:
        for scale in args.scales:
            tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
            try:
                load0 = os.getloadavg()[0]
                t0, c0 = time.perf_counter(), os.times()
                root = generate(layout, tmp / layout, scale=scale, seed=args.seed, workers=args.workers)
                wall, c1 = time.perf_counter() - t0, os.times()
                cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user) + \
                    (c1.children_system - c0.children_system)
                meta = json.loads((root / "crossview_meta.json").read_text())
                run = {"layout": layout, "scale": scale, "seed": args.seed, "wall_s": round(wall, 2),
                       "cpu_s": round(cpu, 2), "workers": resolve_workers(args.workers, scale),
                       "load_avg_1min_before": round(load0, 2), "load_avg_1min_after": round(os.getloadavg()[0], 2),
                       **_tree_stats(root)}
                if layout == "cvact":
                    run["polar_colour_baseline"] = polar_baseline(root)
                for k in ("tile_size", "panorama_size", "pinhole_size"):
                    if k in meta:
                        run[k] = meta[k]
                runs.append(run)
                print(json.dumps(run), flush=True)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    if args.merge and Path(args.out).exists():
        done = {(r["layout"], r["scale"]) for r in runs}
        old = json.loads(Path(args.out).read_text()).get("runs", [])
        runs = [r for r in old if (r["layout"], r["scale"]) not in done] + runs
    result = {"benchmark": "synth", "generator_version": GENERATOR_VERSION,
              "environment": environment(cpus_available=len(os.sched_getaffinity(0))
                                         if hasattr(os, "sched_getaffinity") else None), "runs": runs,
              "target": "vigor medium (2,000 panoramas 320x640 + tiles) < 300 s on 2 CPU cores",
              "note": "wall times on a shared machine: compare load_avg with cpu_count before trusting them"}
    write_result(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
