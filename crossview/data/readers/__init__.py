"""Readers for the four benchmarks in the layouts the official code expects; all yield :class:`Split`.

The synthetic world (``crossview synth``) writes the same layouts and is read by the same code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from crossview.data.readers import cvact, cvusa, university1652, vigor
from crossview.data.readers.common import Scan
from crossview.data.records import Split
from crossview.errors import ConfigError, DatasetError

READERS = {"cvusa": cvusa, "cvact": cvact, "vigor": vigor, "university1652": university1652}
SPLITS = {
    "cvusa": tuple(cvusa.SPLIT_FILES),
    "cvact": tuple(cvact.SPLITS),
    "vigor": vigor.SPLITS,
    "university1652": tuple(university1652.SPLITS),
}


def scan_dataset(
    dataset: str,
    root: str | os.PathLike,
    split: str,
    scan: Scan,
    *,
    area: str = "same",
    label_set: str = "original",
    crop: bool = False,
    cities: Sequence[str] | None = None,
) -> Split:
    """Read one split, collecting problems into ``scan`` instead of raising (used by ``prepare``)."""
    if dataset not in READERS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(READERS)}")
    root = Path(root).absolute()  # absolute paths in records: cache keys do not depend on the working directory
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a folder; point ROOT at the {dataset} tree")
    if label_set != "original" and dataset != "vigor":
        raise ConfigError(f"label_set={label_set!r} only exists for VIGOR; use label_set='original' for {dataset}")
    if crop and dataset != "cvact":
        raise ConfigError(f"crop=True is the CVACT panorama pre-crop; {dataset} has none (use crop=False)")
    if cities is not None and dataset != "vigor":
        raise ConfigError("cities=... selects VIGOR cities; leave it unset for " + dataset)
    kwargs: dict = {}
    if dataset == "vigor":
        kwargs = {"area": area, "label_set": label_set, "cities": cities}
    elif dataset == "cvact":
        kwargs = {"crop": crop}
    return READERS[dataset].read(root, split, scan, **kwargs)


def read_dataset(
    dataset: str,
    root: str | os.PathLike,
    split: str,
    *,
    area: str = "same",
    label_set: str = "original",
    crop: bool = False,
    cities: Sequence[str] | None = None,
) -> Split:
    """Read ``split`` of ``dataset`` ("cvusa", "cvact", "vigor", "university1652") under ``root``.

    Splits: cvusa train/test (test = val-19zl.csv); cvact train/val/test (test = valSetAll);
    vigor train/test with ``area`` "same"|"cross" and ``label_set`` "original"|"corrected";
    university1652 train/drone2sat/sat2drone. ``crop=True`` (CVACT only) reads the panoramas cropped by
    ``crossview prepare cvact ROOT --crop``. ``cities`` (VIGOR only) reads a subset of cities on purpose.

    Checks that every referenced image exists and every label line is well-formed, and raises one
    :class:`DatasetError` listing the problems (``crossview prepare`` also decodes the images).
    """
    scan = Scan()
    split_obj = scan_dataset(dataset, root, split, scan, area=area, label_set=label_set, crop=crop, cities=cities)
    scan.raise_if_problems(dataset, Path(root))
    if not split_obj.records:
        raise DatasetError(f"{dataset} {split} under {root} has no records; check the split files")
    return split_obj


__all__ = ["READERS", "SPLITS", "Scan", "read_dataset", "scan_dataset"]
