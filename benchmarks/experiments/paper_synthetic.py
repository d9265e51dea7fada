"""Run every synthetic twin of MFRGN's Tables 1–5 and Fig. 7 end to end on a CPU, then ``crossview report``.

1. generate small synthetic CVUSA-, CVACT- and VIGOR-like trees (``crossview synth``) and prepare them
   (validation, GPS-neighbour tables, the CVACT pre-crop);
2. train each ``paper-synthetic-*`` preset of the chosen tables for ``--steps`` optimiser steps
   (tiny models, the same switches as the paper rows);
3. evaluate each run on the other dataset where its rows need it (Table 2, 4, 5, Fig. 7: CVUSA↔CVACT, with
   the CVACT pre-crop where the row asks for it);
4. write the report (``WORK/report/report.md`` + CSVs) and ``WORK/timings.json``.

Every stage skips work already done (a finished run has its trained model, an evaluation ``metrics.json``).
The numbers are NOT paper numbers: a few steps of a tiny model on a procedural world only show that each
table's pipeline runs.

    python -m benchmarks.experiments.paper_synthetic --work paper_synth --steps 20 [--tables 1,2,3,4,5,f7]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from crossview.models.loading import run_model_file

SEEDS = {"cvusa": 0, "cvact": 1, "vigor": 2}


def resolve(preset: str, overrides: dict) -> dict:
    """The preset's config through the one merge function once the paper presets are registered there."""
    from crossview.paper.tables import PAPER_PRESETS
    from crossview.train.presets import BASE, PRESETS, resolve_config

    if preset in PRESETS:
        return resolve_config(preset, overrides)
    cfg = copy.deepcopy(BASE)  # until presets.PRESETS holds PAPER_PRESETS
    cfg.update(copy.deepcopy(PAPER_PRESETS[preset]))
    cfg["preset"] = preset
    cfg.update(overrides)
    return cfg


def make_worlds(work: Path, scale: str, datasets: set[str]) -> dict[str, Path]:
    from crossview.data import prepare_dataset
    from crossview.synth import generate

    roots = {}
    for name in sorted(datasets):
        t = time.perf_counter()
        root = generate(name, work / "data" / name, scale=scale, seed=SEEDS[name])
        if not (root / ".paper_prepared").exists():
            prepare_dataset(name, root, crop=name == "cvact", workers=2)
            (root / ".paper_prepared").write_text("ok\n")
        roots[name] = root
        print(f"[data] {name}: {root} ({time.perf_counter() - t:.1f} s)", flush=True)
    return roots


def evaluate_on(run: Path, data: Path, dataset: str, split: str, crop: bool, out: Path) -> Path:
    """Evaluate a finished run on another dataset; ``out/metrics.json`` records dataset, data and crop."""
    import torch

    from crossview.data import read_dataset
    from crossview.io import write_json_atomic
    from crossview.models import load_model

    cfg = json.loads((run / "config.json").read_text())["config"]
    model = load_model(str(run_model_file(run))).eval()
    kwargs = {"area": cfg.get("area", "same"), "label_set": cfg.get("label_set", "original")}
    if crop:
        kwargs["crop"] = True
    split_obj = read_dataset(dataset, data, split, **kwargs)
    # The same metrics as `crossview eval` (evaluate_retrieval), through the training loop's embedder so the
    # script depends on nothing but training and the metric.
    from contextlib import nullcontext

    from crossview.data.images import ImageSource
    from crossview.evaluate import evaluate_retrieval
    from crossview.models import input_spec
    from crossview.train.loop import embed_source

    qv, rv = split_obj.records[0].query_view, split_obj.references[0].view
    qs = ImageSource([str(r.query_path) for r in split_obj.records], input_spec(model, qv)[0], None)
    rs = ImageSource([str(r.path) for r in split_obj.references], input_spec(model, rv)[0], None)
    dev = torch.device("cpu")
    metrics = evaluate_retrieval(embed_source(model, qs, qv, dev, nullcontext),
                                 embed_source(model, rs, rv, dev, nullcontext),
                                 [r.positives[0] for r in split_obj.records])
    write_json_atomic(out / "metrics.json", {**metrics, "dataset": dataset, "split": split, "checkpoint": str(run),
                                             "data": str(data), "crop": crop})
    return out


def main(argv: list[str] | None = None) -> int:
    from crossview.paper.report import write_report
    from crossview.paper.tables import PAPER_PRESETS, ROWS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="paper_synthetic", help="working folder (data, runs, report)")
    ap.add_argument("--steps", type=int, default=20, help="optimiser steps per run (default 20)")
    ap.add_argument("--tables", default="1,2,3,4,5,f7", help="comma list of 1,2,3,4,5,f7")
    ap.add_argument("--scale", default="small", choices=["tiny", "small", "medium"])
    ap.add_argument("--batch", type=int, default=None,
                    help="override the twins' batch size (default 32; 8 at --scale tiny)")
    ap.add_argument("--no-cost", action="store_true", help="skip Table 5's parameter/MAC counts")
    args = ap.parse_args(argv)

    from crossview.train.loop import train

    work = Path(args.work)
    tables = {t.strip() for t in args.tables.split(",") if t.strip()}
    rows = [r for r in ROWS if r.table in tables and r.twin]
    presets = list(dict.fromkeys(r.twin for r in rows))
    datasets = {PAPER_PRESETS[p]["dataset"] for p in presets}
    datasets |= {r.cross_eval["dataset"] for r in rows if r.cross_eval and any(
        m.startswith("cross:") for m in r.measure.values())}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    roots = make_worlds(work, args.scale, datasets)
    timings["data"] = time.perf_counter() - t0

    folders, failures = [], {}
    batch = args.batch or (8 if args.scale == "tiny" else None)  # tiny trees hold about 20 training pairs
    overrides = {"max_steps": args.steps, **({"batch_size": batch} if batch else {})}
    for preset in presets:
        cfg = resolve(preset, overrides)
        run = work / "runs" / preset
        if run_model_file(run) is None:
            t = time.perf_counter()
            print(f"[train] {preset} ({cfg['model']}, {cfg['dataset']}, {args.steps} steps)", flush=True)
            try:
                train(cfg, roots[cfg["dataset"]], run, resume=(run / "checkpoints" / "last.pt").exists(),
                      command=[sys.executable, *sys.argv])
            except Exception as exc:  # keep going: the report shows which rows are missing
                failures[preset] = f"{type(exc).__name__}: {exc}"
                print(f"[fail] {preset}: {failures[preset]}", flush=True)
                continue
            timings[f"train {preset}"] = time.perf_counter() - t
        folders.append(str(run))
        for r in rows:
            if r.twin != preset or not r.cross_eval or not any(m.startswith("cross:") for m in r.measure.values()):
                continue
            ds, split, crop = r.cross_eval["dataset"], r.cross_eval["split"], bool(r.cross_eval.get("crop"))
            out = run / f"eval-{ds}{'-crop' if crop else ''}"
            if str(out) in folders:
                continue
            if not (out / "metrics.json").exists():
                t = time.perf_counter()
                print(f"[eval] {preset} on {ds}:{split}{' (crop)' if crop else ''}", flush=True)
                try:
                    evaluate_on(run, roots[ds], ds, split, crop, out)
                except Exception as exc:
                    failures[str(out)] = f"{type(exc).__name__}: {exc}"
                    print(f"[fail] {out}: {failures[str(out)]}", flush=True)
                    continue
                timings[f"eval {preset} {ds}{' crop' if crop else ''}"] = time.perf_counter() - t
            folders.append(str(out))
    t = time.perf_counter()
    paths = write_report(folders, work / "report", cost=not args.no_cost)
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    (work / "timings.json").write_text(json.dumps({**timings, "failures": failures}, indent=2) + "\n")
    for name, path in paths.items():
        print(f"{name:28s} {path}")
    for name, why in failures.items():
        print(f"FAILED {name}: {why}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
