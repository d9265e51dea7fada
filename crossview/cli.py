"""The ``crossview`` command line: a thin layer over the package's functions.

Each sub-command lives in ``crossview/commands/<name>.py`` and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit
code. Heavy imports (torch, timm) happen inside those callables, so ``crossview --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from crossview.errors import CrossviewError


def command_modules() -> list[str]:
    """Every ``crossview/commands/*.py`` module (sorted), each registering one or more sub-commands."""
    import pkgutil

    import crossview.commands as pkg

    names = (m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    return sorted(f"crossview.commands.{name}" for name in names)


def build_parser() -> argparse.ArgumentParser:
    from crossview import __version__

    parser = argparse.ArgumentParser(
        prog="crossview",
        description="Cross-view geo-localization: retrieve the satellite tile, then place the camera in it.",
    )
    parser.add_argument("--version", action="version", version=f"crossview {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (they are off anyway when stderr "
                                                              "is not a terminal)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.quiet:
        from crossview.progress import set_quiet

        set_quiet(True)
    try:
        return int(args.func(args) or 0)
    except CrossviewError as exc:
        print(f"crossview {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
