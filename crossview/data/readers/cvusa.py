"""CVUSA: centre-aligned panorama / aerial pairs (layout as the official loaders read it).

Layout::

    ROOT/splits/train-19zl.csv, ROOT/splits/val-19zl.csv     (no header; satellite, panorama, annotation)
    ROOT/bingmap/19/NNNNNNN.jpg, ROOT/streetview/panos/NNNNNNN.jpg
    ROOT/split_locations/all.csv  (or ROOT/all.csv)         (row id-1: sat lat, sat lon, ground lat, ground lon, ...)

Split "train" reads train-19zl.csv, "test" reads val-19zl.csv (the official code's test set). Record i pairs
row i's panorama with reference i (row i's aerial image); the integer id in the satellite file name keys
the GPS table. GPS is optional: without ``all.csv`` records carry no GPS (GPS sampling then fails clearly).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from crossview.data.readers.common import Scan
from crossview.data.records import Record, Reference, Split
from crossview.errors import ConfigError

SPLIT_FILES = {"train": "train-19zl.csv", "test": "val-19zl.csv"}
LOCATION_FILES = ("split_locations/all.csv", "all.csv")


def _csv_rows(path: Path, scan: Scan, what: str) -> list[tuple[int, list[str]]] | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        scan.problem(f"missing file {path} ({what})")
        return None
    rows = []
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if row and any(c.strip() for c in row):
            rows.append((lineno, [c.strip() for c in row]))
    return rows


def _locations(root: Path, scan: Scan) -> tuple[Path | None, list[tuple[int, list[str]]] | None]:
    for rel in LOCATION_FILES:
        path = root / rel
        if path.exists():
            return path, _csv_rows(path, scan, "GPS of every CVUSA location")
    return None, None


def satellite_id(path: str) -> int | None:
    stem = Path(path).stem
    return int(stem) if stem.isdigit() else None


def read(root: Path, split: str, scan: Scan, **_: object) -> Split:
    if split not in SPLIT_FILES:
        raise ConfigError(f"CVUSA has splits {tuple(SPLIT_FILES)}, not {split!r}")
    csv_path = root / "splits" / SPLIT_FILES[split]
    rows = _csv_rows(csv_path, scan, f"CVUSA {split} pairs") or []
    loc_path, loc_rows = _locations(root, scan)
    if loc_path is None:
        scan.warn(f"no {' or '.join(str(root / r) for r in LOCATION_FILES)}: CVUSA records carry no GPS")
    records: list[Record] = []
    references: list[Reference] = []
    for lineno, row in rows:
        where = f"{csv_path}:{lineno}"
        if len(row) != 3:
            scan.problem(f"{where}: expected 3 comma-separated columns (satellite, panorama, annotation), "
                         f"found {len(row)}")
            continue
        sat_rel, pano_rel = row[0], row[1]
        sid = satellite_id(sat_rel)
        if sid is None:
            scan.problem(f"{where}: malformed satellite path {sat_rel!r}; expected bingmap/19/<number>.jpg")
            continue
        sat, pano = root / sat_rel, root / pano_rel
        ok = scan.image(sat, where) & scan.image(pano, where)
        if not ok:
            continue
        sat_gps = grd_gps = None
        if loc_rows is not None:
            if not 1 <= sid <= len(loc_rows):
                scan.problem(f"{where}: id {sid} has no row in {loc_path} ({len(loc_rows)} rows)")
            else:
                loc_line, loc = loc_rows[sid - 1]
                try:
                    if len(loc) < 4:
                        raise ValueError(f"expected at least 4 columns (sat lat, sat lon, ground lat, ground lon), "
                                         f"found {len(loc)}")
                    sat_gps, grd_gps = (float(loc[0]), float(loc[1])), (float(loc[2]), float(loc[3]))
                except ValueError as exc:
                    scan.problem(f"{loc_path}:{loc_line}: {exc}")
        index = len(references)
        references.append(Reference(index=index, path=sat, view="aerial", gps=sat_gps))
        records.append(Record(query_id=Path(pano_rel).stem, query_path=pano, query_view="ground",
                              positives=(index,), gps=grd_gps))
    return Split(dataset="cvusa", name=split, records=records, references=references,
                 meta={"csv": str(csv_path), "ids": [satellite_id(str(r.path)) for r in references]})
