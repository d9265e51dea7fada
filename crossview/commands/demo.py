"""``crossview demo``: the main job on the built-in synthetic world, end to end, on a CPU.

1. generate a small VIGOR-like synthetic world (``crossview synth``);
2. validate it and build the GPS-neighbour tables (``crossview prepare``);
3. save a picture sheet of sample pairs (tile with the camera's position and heading, and the panorama);
4. train a small MFRGN on it and evaluate retrieval on held-out panoramas (``crossview train`` / ``eval``).
Each stage skips work already done, so a second run is quick.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a synthetic world (CPU, minutes)")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--scale", default="small", choices=["tiny", "small", "medium"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-train", action="store_true", help="stop after the data stages")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training config key, e.g. --set epochs=2")
    p.set_defaults(func=run)


def _stage(name: str):
    print(f"\n== {name}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    from crossview.data import prepare_dataset, read_dataset
    from crossview.data.prepare import summarize
    from crossview.synth import generate
    from crossview.viz.sheets import pair_sheet

    out = Path(args.out)
    data = out / "data" / "vigor"
    t = _stage(f"1. synthetic VIGOR-like world ({args.scale}, seed {args.seed}) -> {data}")
    generate("vigor", data, scale=args.scale, seed=args.seed)
    print(f"   done in {time.perf_counter() - t:.1f} s")

    t = _stage("2. validate the tree and build GPS-neighbour tables (crossview prepare)")
    report = prepare_dataset("vigor", data)
    print("   " + summarize(report).replace("\n", "\n   ") + f"  ({time.perf_counter() - t:.1f} s)")

    _stage("3. picture sheet of sample pairs")
    split = read_dataset("vigor", data, "test", area="same")
    sheet = pair_sheet(split, out / "pairs.png", n=6)
    print(f"   {len(split.records)} test panoramas, {len(split.references)} tiles; sheet: {sheet}")
    summary = {"data": str(data), "pairs_sheet": str(sheet), "test_queries": len(split.records),
               "references": len(split.references)}

    if not args.no_train:
        from crossview.commands.train import run as train_run

        t = _stage("4. train a small MFRGN on the synthetic world (preset synthetic-cpu) and evaluate")
        run_dir = out / "run"
        if (run_dir / "model.pt").exists():
            print(f"   {run_dir / 'model.pt'} exists: skipping training (delete the folder to retrain)")
        else:
            resume = (run_dir / "checkpoints" / "last.pt").exists()
            targs = argparse.Namespace(preset="synthetic-cpu", data=str(data), out=str(run_dir),
                                       overrides=args.overrides, resume=str(run_dir) if resume else None,
                                       list=False)
            train_run(targs)
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        evals = [m for m in metrics if m.get("type") == "eval"]
        if evals:
            last = evals[-1]
            print("   held-out retrieval: " + "  ".join(
                f"{k} {last[k]:.1f}" for k in ("R@1", "R@5", "R@10", "R@1%", "hit_rate", "chance_R@1") if k in last))
            summary["retrieval"] = {k: v for k, v in last.items() if k not in ("type",)}
        print(f"   ({time.perf_counter() - t:.0f} s)")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nsummary: {out / 'summary.json'}")
    return 0
