"""HC-Net inference speed at VIGOR sizes (FINE_SPEC §2.2: panorama -> 512×512 view, tile 640 -> 512, 6 iterations).

Times the whole ``predict`` path: panorama resize, spherical transform, both encoders, correlation, the iterative
homography and the pose read-out, on random images (speed does not depend on content). Reports frames per second
per batch size and compares with the 30 FPS the HC-Net README claims.

    python benchmarks/bench_hcnet.py --device cuda            # the GPU figure (lead)
    python benchmarks/bench_hcnet.py --device cpu --batch 1   # a CPU figure

``--synthetic DIR`` instead trains the ``hcnet-synthetic-cpu`` preset on a ``crossview synth --layout vigor`` tree
(and, with ``--flat``, on an in-memory flat textured world) and writes the held-out figures with the tile-centre
baseline to ``benchmarks/results/hcnet_synthetic.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from crossview.fine.hcnet import build_model, hcnet_config
from crossview.io import write_json_atomic

CLAIMED_FPS = 30.0


def bench(variant: str, device: str, batch: int, iters: int, warmup: int, precision: str) -> dict:
    model = build_model(hcnet_config(variant, weights=None)).to(device).eval()
    cfg = model.config
    ph, pw = cfg["pano_size"]
    g = torch.Generator().manual_seed(0)
    data = {"ground": torch.rand(batch, 3, 1024, 2048, generator=g).to(device),  # VIGOR panoramas are 2:1
            "aerial": torch.rand(batch, 3, 640, 640, generator=g).to(device),
            "tile_m": torch.full((batch,), 72.5, device=device), "heading": torch.zeros(batch, device=device),
            "camera": ["panorama"] * batch}
    prior = torch.zeros(batch, device=device)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def step():
        with torch.no_grad(), torch.autocast(device_type=torch.device(device).type, dtype=dtype,
                                             enabled=dtype is not None):
            return model.predict(data, prior)

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        out = step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    fps = batch * iters / seconds
    row = {"variant": variant, "device": device, "batch": batch, "precision": precision, "iterations": iters,
           "fps": fps, "ms_per_frame": 1000.0 / fps, "pano_input": [1024, 2048], "pano_size": [ph, pw],
           "bev_size": cfg["bev_size"], "aerial_size": cfg["aerial_size"], "refinements": cfg["iterations"],
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
           "finite": bool(torch.isfinite(out["xy"]).all()),
           "vs_claimed_30fps": fps / CLAIMED_FPS}
    if device.startswith("cuda"):
        row["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        row["gpu"] = torch.cuda.get_device_name()
    return row


def synthetic(data: str | None, work: Path, steps: int | None, flat: bool, areas: list[str], threads: int) -> dict:
    """Train + evaluate HC-Net on the synthetic world(s); returns the results record."""
    from crossview.fine import hcnet_train
    from crossview.fine.data import flat_world_samples

    torch.set_num_threads(threads)
    keys = ("count", "mean_m", "median_m", "recall@1m", "recall@3m", "recall@5m", "heading_mean_deg",
            "heading_median_deg", "heading_recall@1deg", "heading_recall@5deg", "baseline_tile_centre_mean_m",
            "baseline_tile_centre_median_m", "baseline_prior_heading_median_deg", "lateral_median_m",
            "longitudinal_median_m", "prior_deg", "prior_seed", "train_seconds", "samples_per_second")
    results: dict = {"protocol": {"positives_only": True, "orientation": "prior ±45°, per-sample yaws fixed by "
                                  "prior_seed", "label_set": "exact synthetic poses", "device": "cpu",
                                  "threads": threads, "baseline": "tile centre and the prior heading",
                                  "timing": "train_seconds are wall time on a shared 2-core CPU (one thread)"}}
    if flat:
        train = flat_world_samples(400, seed=0, tile_px=128, tile_m=64.0, ground_hw=(128, 256),
                                   random_heading=True, worlds=8)
        test = flat_world_samples(64, seed=99, tile_px=128, tile_m=64.0, ground_hw=(128, 256),
                                  random_heading=True, worlds=4)
        model = {"feature_index": 1, "bev_size": 64, "aerial_size": 64, "pano_size": [128, 256],
                 "feature_dim": 32, "hidden": 32, "bev_metres_per_pixel": 1.0, "eye_height_m": 2.0}
        cfg = {"steps": steps or 200, "batch_size": 8, "lr": 1e-3, "log_every": 20, "model": model,
               "loss": {"corners": 1.0, "correlation_dense": 1.0}}
        run = hcnet_train.train(cfg, train, work / "flat", eval_data=test)
        m = json.loads((run / "metrics.json").read_text())
        results["flat_world"] = {"config": cfg, "train_samples": len(train), **{k: m[k] for k in keys if k in m}}
    if data:
        from crossview.fine.presets import BASE

        meta_path = Path(data) / "crossview_meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        results["world"] = {k: meta.get(k) for k in ("layout", "scale", "seed", "generator_version", "tile_size",
                                                     "panorama_size", "metres_per_pixel")}

        for area in areas:
            preset = f"hcnet-synthetic-cpu{'' if area == 'same' else '-cross'}"
            cfg = {**BASE, **hcnet_train.HCNET_PRESETS[preset]}
            if steps:
                cfg["steps"] = steps
            run = hcnet_train.train_from_preset(cfg, data, work / preset)
            m = json.loads((run / "metrics.json").read_text())
            results[f"vigor_synthetic_{area}"] = {"preset": preset, "data": str(data),
                                                  "config": hcnet_train.config_from_preset(cfg),
                                                  **{k: m[k] for k in keys if k in m}}
            # The same checkpoint on the first 100 / 200 / all held-out samples (the FG²/GeoDistill presets evaluate
            # the first eval_limit ones), with the ±45° prior and with the true heading as the prior.
            subsets = {}
            model = hcnet_train.load_checkpoint(run)
            for limit in (100, 200, None):
                for prior in (45.0, 0.0):
                    r = hcnet_train.evaluate(model, data, prior_deg=prior, seed=cfg["eval_seed"], area=area,
                                             limit=limit)
                    subsets[f"first_{limit or 'all'}_prior_{prior:g}"] = {k: r[k] for k in keys if k in r}
            results[f"vigor_synthetic_{area}"]["subsets"] = subsets
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", metavar="DIR", help="train/evaluate on this synthetic VIGOR tree instead")
    ap.add_argument("--flat", action="store_true", help="with --synthetic: also the in-memory flat world")
    ap.add_argument("--areas", nargs="+", default=["same"], choices=["same", "cross"])
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    ap.add_argument("--work", default="runs/hcnet_synthetic", help="run folders for --synthetic")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: 1 for --synthetic, torch's "
                    "own for speed; on a busy machine one thread is much faster than several)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--variant", default="hcnet_b0", help="hcnet_b0 (official layout) or hcnet_lite0")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--out", default=None, help="JSON file (default benchmarks/results/hcnet_speed_<device>.json)")
    args = ap.parse_args()
    if args.synthetic or args.flat:
        res = synthetic(args.synthetic, Path(args.work), args.steps, args.flat, args.areas, args.threads or 1)
        out = Path(args.out or Path(__file__).parent / "results" / "hcnet_synthetic.json")
        write_json_atomic(out, res)
        print(json.dumps(res, indent=1))
        print(f"wrote {out}")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for b in args.batch:
        row = bench(args.variant, args.device, b, args.iters, args.warmup, args.precision)
        rows.append(row)
        print(f"{row['variant']} {row['device']} batch {b:3d} {row['precision']}: {row['fps']:8.1f} FPS "
              f"({row['ms_per_frame']:.1f} ms/frame; claimed {CLAIMED_FPS:.0f} FPS)", flush=True)
    out = Path(args.out or Path(__file__).parent / "results" / f"hcnet_speed_{args.device.split(':')[0]}.json")
    write_json_atomic(out, {"rows": rows, "torch": torch.__version__, "host": platform.node(),
                            "threads": torch.get_num_threads(),
                            "note": "random inputs; predict() end to end incl. spherical transform"})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
