"""Inference speed of the fine-grained localizers (frames per second, batch 1) at VIGOR sizes.

    python benchmarks/bench_fine.py --device cuda --out benchmarks/results/fine_fps_cuda.json

FG² at its released sizes (ground 714×1428, tile 630, DINOv2 ViT-L/14, 41×41 BEV × 11 heights, 1024 matches);
GeoDistill's localizer at its released sizes (ground 322×644, tile 518, DINOv2 ViT-B/14). Weights are random
(``pretrained=False``): speed does not depend on them and the GPU machine has no internet. ``--sizes synthetic``
times the CPU presets instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from crossview.fine.presets import PRESETS
from crossview.fine.train import build_model


def _batch(model, camera: str, device, batch: int) -> dict:
    cfg = model.cfg
    h, w = cfg.ground_size
    s = cfg.aerial_size
    return {"ground": torch.rand(batch, 3, h, w, device=device), "aerial": torch.rand(batch, 3, s, s, device=device),
            "camera": [camera] * batch, "fov": torch.full((batch,), 360.0, device=device),
            "tile_m": torch.full((batch,), 72.0, device=device), "eye_height": torch.full((batch,), 2.0, device=device),
            "heading": torch.zeros(batch, device=device)}


def time_model(preset: str, device: str, iters: int, warmup: int, batch: int, ransac: bool = False,
               half: bool = False) -> dict:
    cfg = dict(PRESETS[preset]["model"], pretrained=False)
    model = build_model(PRESETS[preset]["method"], cfg).to(device).eval()
    b = _batch(model, "panorama", device, batch)
    autocast = torch.autocast("cuda", dtype=torch.float16) if half and device.startswith("cuda") else None

    def run():
        with torch.no_grad():
            if autocast is not None:
                with autocast:
                    return model.predict(b, ransac=ransac) if ransac else model.predict(b)
            return model.predict(b, ransac=ransac) if ransac else model.predict(b)

    for _ in range(warmup):
        run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    secs = (time.perf_counter() - t0) / iters
    out = {"preset": preset, "batch": batch, "ransac": ransac, "fp16": half, "seconds_per_batch": secs,
           "fps": batch / secs, "ground_size": list(model.cfg.ground_size), "aerial_size": model.cfg.aerial_size,
           "backbone": model.cfg.backbone,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    if device.startswith("cuda"):
        out["max_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", choices=("vigor", "synthetic"), default="vigor")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--fp16", action="store_true", help="autocast fp16 on CUDA (FG² runs its DINOv2 in fp16)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    presets = (["fg2-vigor-same", "geodistill-vigor-same"] if args.sizes == "vigor"
               else ["fg2-synthetic-cpu", "geodistill-synthetic-cpu"])
    rows = []
    for p in presets:
        rows.append(time_model(p, args.device, args.iters, args.warmup, args.batch, half=args.fp16))
        print(json.dumps(rows[-1]), flush=True)
    if args.sizes == "vigor":
        rows.append(time_model("fg2-vigor-same", args.device, max(3, args.iters // 4), 1, 1, ransac=True,
                               half=args.fp16))
        print(json.dumps(rows[-1]), flush=True)
    report = {"device": args.device, "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
              "torch": torch.__version__, "host": platform.node(), "results": rows}
    if args.out:
        from crossview.io import write_json_atomic

        write_json_atomic(args.out, report)


if __name__ == "__main__":
    main()
