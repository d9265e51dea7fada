"""``crossview train PRESET --data DIR --out RUN_DIR [--set key=value ...]`` and ``--resume RUN_DIR``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crossview.safe_load import add_trust_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a retrieval model (symmetric InfoNCE, hard-negative sampling)",
                       description="Train from a preset; any config key can be overridden with --set key=value. "
                                   "Runs unchanged under torchrun for several GPUs or nodes.")
    p.add_argument("preset", nargs="?", help="preset name (see --list)")
    p.add_argument("--data", help="dataset root (e.g. a `crossview synth` tree)")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (YAML value), e.g. --set lr=3e-4 --set epochs=2")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--list", action="store_true", help="list the presets and exit")
    add_trust_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crossview.errors import ConfigError
    from crossview.train.presets import PRESETS, parse_override, resolve_config

    if args.list:
        for name, cfg in sorted(PRESETS.items()):
            print(f"{name:28s} model={cfg.get('model')} dataset={cfg.get('dataset')} epochs={cfg.get('epochs')}")
        return 0
    from crossview.train.loop import train

    if args.resume:
        run_dir = Path(args.resume)
        saved = json.loads((run_dir / "config.json").read_text())
        cfg = saved["config"]
        for text in args.overrides:
            key, value = parse_override(text)
            if key not in ("num_workers", "device", "tensorboard"):
                raise ConfigError(f"--set {key} cannot change on --resume (only num_workers, device, tensorboard)")
            cfg[key] = value
        out = train(cfg, args.data or saved["data"], run_dir, resume=True, command=sys.argv,
                    trust_checkpoint=args.trust_checkpoint)
    else:
        if not args.preset or not args.data or not args.out:
            raise ConfigError("give PRESET, --data DIR and --out RUN_DIR (or --resume RUN_DIR)")
        overrides = dict(parse_override(t) for t in args.overrides)
        cfg = resolve_config(args.preset, overrides)
        out = train(cfg, args.data, args.out, command=sys.argv)
    print(f"run folder: {out}")
    return 0
