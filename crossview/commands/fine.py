"""``crossview fine-train PRESET --data DIR --out RUN [--set k=v]`` and
``crossview fine-eval RUN --data DIR --out EVAL [--area same|cross] [--orientation known|unknown]``."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fine-train", help="train a fine-grained localizer (FG², GeoDistill)",
                       description="Train FG² or GeoDistill from a preset; override any key with --set key=value "
                                   "(dotted keys reach the model: --set model.bev_cells=16).")
    p.add_argument("preset", nargs="?", help="preset name (see --list)")
    p.add_argument("--data", help="dataset root: a `crossview synth --layout vigor` tree or real VIGOR")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--list", action="store_true", help="list the presets and exit")
    p.set_defaults(func=run_train)

    e = sub.add_parser("fine-eval", help="evaluate a fine-grained run: metres, degrees, pictures",
                       description="Evaluate a run folder on the test split; prints a table, writes metrics.json, "
                                   "predictions.npz and a picture per sample (true pose green, estimate red).")
    e.add_argument("run", help="run folder written by `crossview fine-train`")
    e.add_argument("--data", required=True, help="dataset root")
    e.add_argument("--out", required=True, help="folder for metrics.json and pictures")
    e.add_argument("--area", choices=("same", "cross"), help="default: the run's")
    e.add_argument("--orientation", choices=("known", "unknown"),
                   help="known: panoramas as they are; unknown: rolled by a random yaw fixed by --seed")
    e.add_argument("--stage2", metavar="RUN", help="FG² two-stage: the second-stage run (±20° model)")
    e.add_argument("--camera", choices=("panorama", "pinhole"), help="default: the run's")
    e.add_argument("--limit", type=int, help="evaluate at most this many test samples")
    e.add_argument("--pictures", type=int, default=16, help="pictures to draw (0 = none)")
    e.add_argument("--ransac", action="store_true", help="FG²: RANSAC at test time")
    e.add_argument("--seed", type=int, default=0, help="seed of the unknown-orientation test yaws")
    e.add_argument("--matches", type=int, help="FG²: matches sampled at test time (default: the model's)")
    e.add_argument("--fix-heading", action="store_true",
                   help="FG², known orientation: solve the translation only, at the known heading")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=run_eval)


def run_train(args: argparse.Namespace) -> int:
    from crossview.errors import ConfigError
    from crossview.fine.presets import PRESETS, parse_override, resolve_config

    if args.list:
        for name, cfg in sorted(PRESETS.items()):
            print(f"{name:30s} method={cfg['method']} area={cfg.get('area', 'same')} "
                  f"orientation={cfg.get('orientation', 'known')} steps={cfg.get('steps')}")
        return 0
    if not args.preset or not args.data or not args.out:
        raise ConfigError("give PRESET, --data DIR and --out RUN_DIR (list presets with --list)")
    from crossview.fine.train import train

    cfg = resolve_config(args.preset, dict(parse_override(t) for t in args.overrides))
    out = train(cfg, args.data, args.out, command=sys.argv)
    print(f"run folder: {out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from crossview.fine.train import evaluate_run

    evaluate_run(args.run, args.data, args.out, area=args.area, orientation=args.orientation, stage2=args.stage2,
                 limit=args.limit, pictures=args.pictures, ransac=args.ransac or None, device=args.device,
                 seed=args.seed, camera=args.camera, fix_heading=args.fix_heading,
                 num_matches=args.matches)
    print(f"metrics: {args.out}/metrics.json")
    return 0
