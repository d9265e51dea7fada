"""Inference speed of registered fine-grained models (frames per second) on random images at their input sizes.

    python -m benchmarks.bench_fine --device cuda --out benchmarks/results/fine_fps_cuda.json
    python -m benchmarks.bench_fine --models hcnet_vigor --device cpu --threads 1 --iters 3

Times the whole ``predict`` path of each model (for HC-Net: panorama resize, spherical transform, both encoders,
correlation, the 6 iterations, read-out; for matching models with ``--ransac``: the solver too) on random inputs
(speed does not depend on content; weights are random — nothing is downloaded). Default models: every registered
published VIGOR variant and our designs at VIGOR sizes (``--sizes synthetic``: the CPU variants). HC-Net's README
claims 30 FPS (GPU kind not stated).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.common import environment
from crossview.fine import create_fine, fine_config, list_fine_models


def default_models(sizes: str) -> list[str]:
    names = list_fine_models()
    if sizes == "vigor":
        return [n for n in names if n.endswith("_vigor")]
    return [n for n in names if n.endswith(("_tiny", "_synthetic"))]


def random_batch(model, batch: int, device, seed: int = 0) -> dict:
    (h, w), a = model.input_sizes("panorama")
    g = torch.Generator().manual_seed(seed)
    return {"ground": torch.rand(batch, 3, h, w, generator=g).to(device),
            "aerial": torch.rand(batch, 3, a, a, generator=g).to(device), "camera": ["panorama"] * batch,
            "fov": torch.full((batch,), 360.0, device=device), "tile_m": torch.full((batch,), 72.5, device=device),
            "eye_height": torch.full((batch,), 2.0, device=device), "heading": torch.zeros(batch, device=device)}


def time_model(name: str, device: str, iters: int, warmup: int, batch: int, precision: str = "fp32",
               ransac: bool = False) -> dict:
    cfg = fine_config(name)
    no_fetch = {k: v for k, v in (("weights", None), ("pretrained", False)) if k in cfg}
    model = create_fine(name, **no_fetch).to(device).eval()
    data = random_batch(model, batch, device)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    opts = {"ransac": True} if ransac else {}

    def step():
        with torch.no_grad(), torch.autocast(device_type=torch.device(device).type, dtype=dtype,
                                             enabled=dtype is not None):
            return model.predict(data, heading_prior=torch.zeros(batch, device=device), **opts)

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    secs = (time.perf_counter() - t0) / iters
    (h, w), a = model.input_sizes("panorama")
    row = {"model": name, "arch": cfg["arch"], "batch": batch, "precision": precision, "ransac": ransac,
           "seconds_per_batch": secs, "fps": batch / secs, "ground_size": [h, w], "aerial_size": a,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "iterations": iters}
    if device.startswith("cuda"):
        row["max_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="registered fine models (default: see --sizes)")
    ap.add_argument("--sizes", choices=("vigor", "synthetic"), default="vigor")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    ap.add_argument("--ransac", action="store_true", help="matching models: time the RANSAC solver too")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.models or default_models(args.sizes):
        rows.append(time_model(name, args.device, args.iters, args.warmup, args.batch, args.precision, args.ransac))
        print(json.dumps(rows[-1]), flush=True)
    report = {"device": args.device, "environment": environment(),
              "claimed": {"hcnet": "30 FPS (HC-Net README; GPU not stated)"}, "results": rows}
    if args.out:
        from crossview.io import write_json_atomic

        write_json_atomic(args.out, report)


if __name__ == "__main__":
    main()
