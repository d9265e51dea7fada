"""``crossview report RUN_DIR... [--out DIR]``: MFRGN's paper tables (Markdown + CSV) from run/eval folders."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="paper-style tables (measured vs printed) from run and evaluation folders",
        description="Group run folders (config.json + metrics.jsonl) and evaluation folders (metrics.json) by the "
                    "paper row their preset reproduces (Tables 1-5, Fig. 7 of MFRGN), and write report.md plus one "
                    "CSV per table with the measured numbers beside the paper's and the protocol of each row. "
                    "Evaluations on another dataset fill the cross-dataset columns. Synthetic-twin runs get their "
                    "own tables, marked as not comparable with the paper.")
    p.add_argument("folders", nargs="*", metavar="DIR[@ROW_ID]",
                   help="run or evaluation folders; DIR@ROW_ID places a folder on a given row")
    p.add_argument("--out", default="paper_report", help="output folder (default: paper_report)")
    p.add_argument("--all-rows", action="store_true",
                   help="also list the rows of methods this package does not implement (paper numbers only)")
    p.add_argument("--no-cost", action="store_true",
                   help="skip counting parameters/MACs/memory for Table 5 (builds each model once)")
    p.add_argument("--list-rows", action="store_true", help="print every row id with its preset and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crossview.errors import ConfigError
    from crossview.paper.report import write_report
    from crossview.paper.tables import ROWS

    if args.list_rows:
        for r in ROWS:
            print(f"{r.id:40s} table {r.table:3s} {r.block:22s} {r.method:20s} preset={r.preset} twin={r.twin}")
        return 0
    if not args.folders:
        raise ConfigError("give run or evaluation folders (crossview report runs/* --out paper_report)")
    paths = write_report(args.folders, args.out, all_rows=args.all_rows, cost=not args.no_cost)
    for name, path in paths.items():
        print(f"{name:24s} {path}")
    return 0
