"""``crossview prepare DATASET ROOT``: validate a dataset tree and build the neighbour tables (and caches)."""

from __future__ import annotations

import argparse

DATASETS = ("cvusa", "cvact", "vigor", "university1652")


def _size(text: str) -> tuple[str, tuple[int, int]]:
    try:
        view, hw = text.split("=")
        h, w = hw.lower().split("x")
        return view, (int(h), int(w))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--size expects VIEW=HxW (e.g. ground=128x512), got {text!r}") from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="validate a dataset tree; build GPS-neighbour tables, image caches, crops",
                       description="Validate a benchmark tree (every missing or malformed file is listed), then "
                                   "build the GPS-neighbour tables used for hard-negative sampling.")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("root", help="the dataset folder (the layout the official code expects)")
    p.add_argument("--out", default=None, help="where the report and caches go (default: ROOT if writable)")
    p.add_argument("--cache", action="store_true", help="decode and resize every image once into OUT/crossview_cache")
    p.add_argument("--crop", action="store_true",
                   help="CVACT: write the SAFA-like crop (middle half of the rows, 512x128) of every panorama")
    p.add_argument("--size", dest="sizes", action="append", type=_size, default=[], metavar="VIEW=HxW",
                   help="cache size per view (ground, aerial, drone); default: the official MFRGN sizes")
    p.add_argument("--decode", action="store_true", help="fully decode every image (slow) instead of headers")
    p.add_argument("--workers", type=int, default=8)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crossview.data.prepare import prepare_dataset, summarize

    report = prepare_dataset(args.dataset, args.root, args.out, cache=args.cache, crop=args.crop,
                             sizes=dict(args.sizes) or None, decode=args.decode, workers=args.workers)
    print(summarize(report))
    return 0
