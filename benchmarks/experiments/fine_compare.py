"""Side by side: fine-grained presets trained on one synthetic world, evaluated on the same held-out samples.

    python -m benchmarks.experiments.fine_compare --data WORLD --work RUNS \\
        --presets hcnet-synthetic-cpu homoflow-synthetic-cpu --orientation prior --prior-deg 45 \\
        --set hcnet-synthetic-cpu:steps=1500 --out benchmarks/results/hcnet_synthetic.json

Each preset trains into ``WORK/<preset>`` (a finished run of the same config is reused), then every model is
evaluated under one protocol (orientation, prior half-width, seed, the same test samples), with the tile-centre
baseline. The JSON records the commands, configs, data, wall times and the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import environment
from crossview.config import parse_override
from crossview.fine.data import read_samples
from crossview.fine.evaluate import evaluate
from crossview.fine.loading import load_fine
from crossview.fine.presets import resolve_config
from crossview.fine.train import train
from crossview.io import write_json_atomic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a `crossview synth --layout vigor` tree")
    ap.add_argument("--work", required=True, help="folder for the run folders")
    ap.add_argument("--presets", nargs="+", required=True)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="PRESET:KEY=VALUE",
                    help="override a key of one preset (or of all with '*:KEY=VALUE')")
    ap.add_argument("--area", default="same", choices=("same", "cross"))
    ap.add_argument("--camera", default="panorama", choices=("panorama", "pinhole"))
    ap.add_argument("--orientation", default="prior", choices=("known", "prior", "unknown"))
    ap.add_argument("--prior-deg", type=float, default=45.0)
    ap.add_argument("--seed", type=int, default=17, help="seed of the test priors / yaws")
    ap.add_argument("--limit", type=int, help="evaluate on the first N test samples")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, help="JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides: dict[str, dict] = {p: {} for p in args.presets}
    for text in args.sets:
        target, _, kv = text.partition(":")
        key, value = parse_override(kv)
        for p in args.presets if target == "*" else [target]:
            overrides[p][key] = value
    test = read_samples(args.data, args.area, "test", args.camera, "corrected", args.limit)
    results = {}
    for preset in args.presets:
        cfg = resolve_config(preset, {"area": args.area, "camera": args.camera, "threads": args.threads,
                                      "final_eval": False, **overrides[preset]})
        t0 = time.time()
        run = train(cfg, args.data, Path(args.work) / preset, command=sys.argv, quiet=True)
        train_s = time.time() - t0
        model = load_fine(run)
        m = evaluate(model, test, args.orientation, args.seed, args.prior_deg, ransac=cfg.get("ransac") or None)
        results[preset] = {"model": cfg["variant"], "arch": cfg["method"], "config": cfg, "run": str(run),
                           "wall_seconds_including_training": round(train_s, 1), "metrics": m}
        print(preset, json.dumps({k: round(v, 3) for k, v in m.items()
                                  if k in ("median_m", "mean_m", "heading_median_deg",
                                           "baseline_tile_centre_median_m")}), flush=True)
    report = {"command": " ".join(sys.argv), "data": args.data, "area": args.area, "camera": args.camera,
              "orientation": args.orientation, "prior_deg": args.prior_deg if args.orientation == "prior" else None,
              "seed": args.seed, "test_samples": len(test), "positives_only": True, "threads": args.threads,
              "environment": environment(),
              "timing": "wall seconds on a shared 2-core CPU; other jobs ran at the same time", "results": results}
    write_json_atomic(args.out, report)


if __name__ == "__main__":
    main()
