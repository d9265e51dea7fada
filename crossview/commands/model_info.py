"""``crossview model-info NAME [--set key=value ...] [--json]``: parameters per module and MACs of a model."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model-info", help="parameters per module and MACs of a registered model",
                       description="Builds the model on the meta device (no weights, no compute) and prints "
                                   "parameters per module and multiply-accumulates for one image of each view and "
                                   "for a pair, at the configured input sizes. 1 MAC = 2 FLOPs.")
    p.add_argument("name", nargs="?", help="registered model name (see --list)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config key (YAML value), e.g. --set backbone=convnext_tiny "
                        "--set 'ground_size=[128, 256]'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--list", action="store_true", help="list the registered models and exit")
    p.set_defaults(func=run)


def parse_set(text: str) -> tuple[str, object]:
    import yaml

    from crossview.errors import ConfigError

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set backbone=convnext_tiny")
    return key.strip(), yaml.safe_load(value)


def run(args: argparse.Namespace) -> int:
    from crossview.errors import ConfigError
    from crossview.models import list_models
    from crossview.models.info import format_info, model_info

    if args.list:
        print("\n".join(list_models()))
        return 0
    if not args.name:
        raise ConfigError("give a model NAME (see `crossview model-info --list`)")
    info = model_info(args.name, **dict(parse_set(t) for t in args.overrides))
    print(json.dumps(info, indent=2, default=list) if args.json else format_info(info))
    return 0
