"""``crossview demo``: the main job on the built-in synthetic world, end to end, on a CPU.

1. generate a VIGOR-like synthetic world (``crossview synth``; default scale ``dense``: 4,000 panoramas, 400 tiles);
2. validate it and build the GPS-neighbour tables (``crossview prepare``);
3. save a picture sheet of sample pairs (tile with the camera's position and heading, and the panorama);
4. train a small MFRGN on it and evaluate retrieval on held-out panoramas (``crossview train`` / ``eval``);
5. train a fine-grained localizer (``--fine PRESET``, default ``pillarmatch-synthetic-cpu-locate``: ours, FG²-style
   matching; ``--fine none`` skips it);
6. build an index over the world's tiles, locate held-out photos (``crossview locate``) and report the median
   position and heading error in metres/degrees against the known truth: retrieval alone (tile centre) and after
   fine localization, searching all tiles and searching near a rough GPS fix (``--gps-noise`` metres); near the
   fix, held-out phone photos and panoramas are also placed by the committed search-area posterior
   (``crossview/fine/releases/``, docs/locate_posterior.md).
Each stage skips work already done, so a second run is quick.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from crossview.io import write_json_atomic


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a synthetic world (CPU, minutes)")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--scale", default="dense", choices=["tiny", "small", "dense", "medium"],
                   help="synthetic world size (default dense: 2,000 training panoramas)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-train", action="store_true", help="stop after the data stages")
    p.add_argument("--fine", default="pillarmatch-synthetic-cpu-locate", metavar="PRESET",
                   help="fine-grained localizer preset trained and used in locate (default "
                        "pillarmatch-synthetic-cpu-locate; e.g. hcnet-synthetic-cpu; none: retrieval only)")
    p.add_argument("--heading-noise", type=float, default=20.0, metavar="DEG",
                   help="compass error of the located photos: the heading prior is off by up to this (default 20)")
    p.add_argument("--gps-noise", type=float, default=50.0, metavar="M",
                   help="rough GPS fix of the located photos, off by up to this many metres (default 50; 0: only "
                        "the search over all tiles)")
    p.add_argument("--locate", type=int, default=20, metavar="N", help="held-out photos to locate (0: skip)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training config key, e.g. --set epochs=2")
    p.set_defaults(func=run)


# The retrieval preset per world scale: the dense world has 7x the panoramas, so fewer epochs.
RETRIEVAL_PRESET = {"dense": "synthetic-cpu-dense"}


def _stage(name: str):
    print(f"\n== {name}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    data, summary = _data_stages(args, out)
    if not args.no_train:
        run_dir = _train_retrieval(args, data, out, summary)
        fine_run = _train_fine(args, data, out)
        if args.locate:
            summary["locate"] = _locate_stage(args, data, out, run_dir, fine_run)
    write_json_atomic(out / "summary.json", summary)
    print(f"\nsummary: {out / 'summary.json'}")
    return 0


def _data_stages(args: argparse.Namespace, out: Path) -> tuple[Path, dict]:
    """Stages 1–3: the world, its validation and neighbour tables, the pairs sheet; (data folder, summary)."""
    from crossview.data import prepare_dataset, read_dataset
    from crossview.data.prepare import summarize
    from crossview.synth import generate
    from crossview.viz.sheets import pair_sheet

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
    return data, summary


def _train_retrieval(args: argparse.Namespace, data: Path, out: Path, summary: dict) -> Path:
    """Stage 4: train (or resume, or keep) the retrieval run and report its last held-out evaluation; the run."""
    from crossview.commands.train import run as train_run

    preset = RETRIEVAL_PRESET.get(args.scale, "synthetic-cpu")
    t = _stage(f"4. train a small MFRGN on the synthetic world (preset {preset}) and evaluate")
    run_dir = out / "run"
    from crossview.models.loading import run_model_file

    if run_model_file(run_dir) is not None:
        print(f"   {run_model_file(run_dir)} exists: skipping training (delete the folder to retrain)")
    else:
        resume = (run_dir / "checkpoints" / "last.pt").exists()
        targs = argparse.Namespace(preset=preset, data=str(data), out=str(run_dir),
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
    return run_dir


def _train_fine(args: argparse.Namespace, data: Path, out: Path) -> Path | None:
    """Stage 5: train (or keep) the ``--fine`` localizer; its run folder, or None with ``--fine none``."""
    if not args.fine or args.fine == "none":
        return None
    from crossview.fine.presets import resolve_config as fine_config
    from crossview.fine.train import train as fine_train

    t = _stage(f"5. train the fine-grained localizer (preset {args.fine})")
    fine_run = out / "fine"
    if (fine_run / "checkpoint.pt").exists():
        print(f"   {fine_run / 'checkpoint.pt'} exists: skipping (delete the folder to retrain)")
    else:
        fine_train(fine_config(args.fine, {}), data, fine_run, command=["crossview", "demo"],
                   quiet=True)  # per-step losses go to fine/metrics.jsonl
    print(f"   ({time.perf_counter() - t:.0f} s)")
    return fine_run


def _locate_stage(args: argparse.Namespace, data: Path, out: Path, run_dir: Path,
                  fine_run: Path | None) -> dict[str, dict]:
    """Stage 6: locate held-out photos over all tiles (and near a rough GPS fix); the metrics per search."""
    from crossview.locate import demo_locate

    t = _stage(f"6. locate {args.locate} held-out photos: index the tiles, retrieve, refine, compare "
               f"(compass off by up to {args.heading_noise:g} deg)")
    settings = [("all tiles", "locate", {})]
    if args.gps_noise > 0:
        settings.append((f"near a GPS fix off by up to {args.gps_noise:g} m", "locate_gps",
                         {"gps_noise_m": args.gps_noise}))
    located = {}
    for label, folder, extra in settings:
        result = demo_locate(data, run_dir, fine_run=fine_run, n=args.locate, out=out / folder,
                             heading_noise_deg=args.heading_noise, top_k=8, refine=8, **extra)
        print(f"   search {label}:")
        for name in ("gps_fix", "retrieval", "fine"):
            row = result.get(name)
            if row and row.get("median_m") is not None:
                heading = row.get("heading_median_deg")
                what = {"gps_fix": "GPS fix alone", "retrieval": "retrieval (tile centre)",
                        "fine": "+ fine localization"}[name]
                print(f"     {what:>24s}: median position error {row['median_m']:.1f} m"
                      + (f", median heading error {heading:.1f} deg" if heading is not None else ""))
        located[folder] = result
    if args.gps_noise > 0 and RELEASE.is_file():
        for camera in ("pinhole", "panorama"):
            located[f"locate_{camera}_posterior_gps"] = _locate_with_posterior(args, data, out, run_dir, camera)
    print(f"   ({time.perf_counter() - t:.0f} s)")
    return located


# The search-area posterior the demo places phone photos with (trained on the pinhole-dense world of seed 0, whose
# cities and tiles the dense world of the same seed shares): docs/locate_posterior.md
RELEASE = Path(__file__).resolve().parents[1] / "fine" / "releases" / "bevpost_lite0_pinhole_dense.safetensors"


def _locate_with_posterior(args: argparse.Namespace, data: Path, out: Path, run_dir: Path, camera: str) -> dict:
    """Held-out photos of ``camera`` near the rough GPS fix, placed by the committed search-area posterior."""
    from crossview.locate import demo_locate

    result = demo_locate(data, run_dir, fine_run=RELEASE, n=args.locate, out=out / f"locate_{camera}_posterior_gps",
                         heading_noise_deg=args.heading_noise, gps_noise_m=args.gps_noise, camera=camera,
                         fine_search="posterior")
    what = "phone photos (pinhole)" if camera == "pinhole" else "panoramas"
    print(f"   {what} near a GPS fix off by up to {args.gps_noise:g} m, search-area posterior ({RELEASE.name}):")
    for name, label in (("gps_fix", "GPS fix alone"), ("fine", "+ posterior")):
        row = result.get(name) or {}
        if row.get("median_m") is not None:
            heading = row.get("heading_median_deg")
            print(f"     {label:>24s}: median position error {row['median_m']:.1f} m"
                  + (f", median heading error {heading:.1f} deg" if heading is not None else ""))
    return result
