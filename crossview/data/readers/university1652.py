"""University-1652: drone views circling a building and the building's satellite image.

Layout (``University-Release``)::

    ROOT/train/satellite/<cls>/<one image>        ROOT/train/drone/<cls>/*
    ROOT/test/query_drone/<cls>/*                 ROOT/test/gallery_satellite/<cls>/*
    ROOT/test/query_satellite/<cls>/*             ROOT/test/gallery_drone/<cls>/*

Class id = the folder name as an integer. Splits:
- ``train``: every drone image with its class's satellite image (reference = one per class, label = class);
- ``drone2sat``: query_drone against gallery_satellite;
- ``sat2drone``: query_satellite against gallery_drone (each query has many positives).
Gallery classes without queries (distractors) stay in the references with their labels: both evaluation
protocols need them (kept as junk or as real distractors).
"""

from __future__ import annotations

from pathlib import Path

from crossview.data.readers.common import Scan, is_image_name, require_dir
from crossview.data.records import Record, Reference, Split
from crossview.errors import ConfigError

# split -> (query folder, query view, reference folder, reference view)
SPLITS = {
    "train": ("train/drone", "drone", "train/satellite", "aerial"),
    "drone2sat": ("test/query_drone", "drone", "test/gallery_satellite", "aerial"),
    "sat2drone": ("test/query_satellite", "aerial", "test/gallery_drone", "drone"),
}


def class_images(folder: Path, scan: Scan) -> dict[int, list[Path]]:
    """``{class id: sorted image paths}`` of a ``<folder>/<cls>/*`` tree, reporting malformed entries."""
    out: dict[int, list[Path]] = {}
    if not require_dir(folder, scan, "University-1652 class folders"):
        return out
    for cls_dir in sorted(folder.iterdir()):
        if cls_dir.name.startswith("."):
            continue
        if not cls_dir.is_dir():
            scan.problem(f"unexpected file {cls_dir}: {folder} must hold only class folders")
            continue
        if not cls_dir.name.isdigit():
            scan.problem(f"malformed class folder name {cls_dir}: expected an integer such as 0001")
            continue
        images = []
        for p in sorted(cls_dir.iterdir()):
            if p.name.startswith("."):
                continue
            if p.is_file() and is_image_name(p.name):
                images.append(p)
                scan.origins.setdefault(str(p), f"class folder {cls_dir}")
            else:
                scan.problem(f"not an image: {p} (class folder {cls_dir}); remove it")
        if not images:
            scan.problem(f"empty class folder {cls_dir}")
            continue
        out[int(cls_dir.name)] = images
    return out


def read(root: Path, split: str, scan: Scan, **_: object) -> Split:
    if split not in SPLITS:
        raise ConfigError(f"University-1652 has splits {tuple(SPLITS)}, not {split!r}")
    q_rel, q_view, r_rel, r_view = SPLITS[split]
    queries = class_images(root / q_rel, scan)
    gallery = class_images(root / r_rel, scan)
    references: list[Reference] = []
    by_class: dict[int, list[int]] = {}
    for cls, paths in gallery.items():
        if split == "train" and len(paths) > 1:
            scan.warn(f"{root / r_rel / paths[0].parent.name}: {len(paths)} satellite images, using {paths[0].name}")
            paths = paths[:1]
        for p in paths:
            by_class.setdefault(cls, []).append(len(references))
            references.append(Reference(index=len(references), path=p, view=r_view, label=cls,
                                        group=p.parent.name))
    records: list[Record] = []
    for cls, paths in queries.items():
        if cls not in by_class:
            scan.problem(f"class {paths[0].parent} has no images in {root / r_rel / paths[0].parent.name}")
            continue
        for p in paths:
            records.append(Record(query_id=f"{p.parent.name}/{p.stem}", query_path=p, query_view=q_view,
                                  positives=tuple(by_class[cls]), label=cls, group=p.parent.name))
    return Split(dataset="university1652", name=split, records=records, references=references,
                 meta={"query_folder": str(root / q_rel), "reference_folder": str(root / r_rel)})
