"""``crossview synth``: write a synthetic cross-view dataset in one of the benchmarks' layouts."""

from __future__ import annotations

import argparse
import time

from crossview.synth.scales import SCALES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a synthetic dataset tree (cvusa, cvact, vigor, university1652)",
                       description="Render a procedural geo-referenced world and write it in the on-disk layout of a "
                                   "real benchmark, so every reader and trainer runs without downloads.")
    p.add_argument("--layout", required=True, choices=["cvusa", "cvact", "vigor", "university1652"])
    p.add_argument("--out", required=True, help="output folder (created; must be new or empty)")
    p.add_argument("--scale", default="small", choices=list(SCALES),
                   help="tiny: tests (seconds); small: CPU training (< 1 min); dense (vigor only): small with 4,000 "
                        "panoramas (CPU learning runs); pinhole (vigor only): small with 2,400 pinhole photos "
                        "(limited-FoV fine-grained runs); pinhole-dense (vigor only): pinhole with 12,000 photos; "
                        "medium: 2,000 panoramas at 320x640")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: available CPUs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crossview.synth import generate

    t = time.perf_counter()
    out = generate(args.layout, args.out, scale=args.scale, seed=args.seed, workers=args.workers)
    print(f"{args.layout} ({args.scale}, seed {args.seed}) -> {out}  [{time.perf_counter() - t:.1f} s]")
    return 0
