"""``crossview prepare``: validate a dataset tree, then build what training needs once.

Stages (each skips work already done):
1. read every split/setting of the dataset and open every referenced image (header; ``decode=True`` decodes
   fully), collecting *all* problems — missing images with the label line that referenced them, short label
   lines, wrong CSV column counts, malformed names, files that are not images. Any problem → one
   :class:`DatasetError` listing them, and nothing is written;
2. ``crop=True`` (CVACT): the SAFA-like panorama crop into ``streetview_processed/``;
3. the GPS-neighbour tables of the training splits (:mod:`crossview.data.neighbours`);
4. ``cache=True``: every split's images decoded and resized once into memory-mapped caches
   (:func:`crossview.data.cache.build_cache`) under ``OUT/crossview_cache``;
5. ``OUT/prepare_report.json`` with the counts per split (OUT defaults to the dataset root, or a user cache
   folder when the root is read-only).
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from crossview.data.readers import READERS, scan_dataset
from crossview.data.readers.common import Scan
from crossview.data.records import Split
from crossview.errors import ConfigError, DatasetError
from crossview.io import write_json_atomic

# Image sizes (height, width) per view for --cache: the official MFRGN configurations (docs/official_code_notes.md).
DEFAULT_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    "cvusa": {"ground": (128, 512), "aerial": (256, 256)},
    "cvact": {"ground": (128, 512), "aerial": (256, 256)},
    "vigor": {"ground": (320, 640), "aerial": (320, 320)},
    "university1652": {"drone": (384, 384), "aerial": (384, 384)},
}
REPORT = "prepare_report.json"


def settings(dataset: str, root: Path) -> list[dict]:
    """Every (split, area, label_set) of a dataset that this tree should provide."""
    if dataset == "vigor":
        label_sets = ["original"] + (["corrected"] if (root / "splits__corrected").is_dir() else [])
        return [{"split": s, "area": a, "label_set": ls, "train": s == "train"}
                for ls in label_sets for a in ("same", "cross") for s in ("train", "test")]
    if dataset == "cvact":
        out = [{"split": "train", "train": True}, {"split": "val", "train": False}]
        if (root / "ANU_data_test").is_dir():
            out.append({"split": "test", "train": False})
        return out
    if dataset == "cvusa":
        return [{"split": "train", "train": True}, {"split": "test", "train": False}]
    return [{"split": s, "train": s == "train"} for s in ("train", "drone2sat", "sat2drone")]


def split_key(dataset: str, setting: dict) -> str:
    parts = [dataset, setting["split"]]
    if dataset == "vigor":
        parts = [dataset, f"{setting['area']}-{setting['split']}", setting["label_set"]]
    return "/".join(parts)


def _check_image(path: str, decode: bool) -> tuple[str, str | None, tuple[int, int] | None]:
    try:
        with Image.open(path) as im:
            size = im.size
            if decode:
                im.load()
            else:
                im.verify()
        return path, None, size
    except UnidentifiedImageError:
        return path, "not an image (unrecognised format)", None
    except (OSError, ValueError, SyntaxError) as exc:
        return path, f"undecodable image ({exc})", None


def check_images(scan: Scan, decode: bool = False, workers: int = 8) -> dict[str, tuple[int, int]]:
    """Open every existing referenced image; adds a problem (with its referencing line) for each bad one."""
    paths = [p for p in scan.origins if scan.files.exists(p)]
    sizes: dict[str, tuple[int, int]] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for path, error, size in pool.map(lambda p: _check_image(p, decode), paths, chunksize=64):
            if error:
                scan.problem(f"{error}: {path} (referenced by {scan.origins[path]})")
            else:
                sizes[path] = size
    return sizes


def _check_tile_sizes(splits: list[Split], sizes: dict[str, tuple[int, int]], scan: Scan) -> None:
    """VIGOR: every tile of a city has the size the reader scaled the offsets with, and is square."""
    seen: set[str] = set()
    for split in splits:
        if split.dataset != "vigor":
            continue
        tile_px = split.meta.get("tile_px", {})
        for ref in split.references:
            key = str(ref.path)
            size = sizes.get(key)
            if size is None or key in seen:
                continue
            seen.add(key)
            want = tile_px.get(ref.group)
            if size[0] != size[1] or (want and size[0] != want):
                scan.problem(f"tile {ref.path} is {size[0]}x{size[1]} px; the other {ref.group} tiles are "
                             f"{want}x{want} (VIGOR tiles are square and one size per city)")


def default_out(dataset: str, root: Path) -> Path:
    if os.access(root, os.W_OK):
        return root
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return Path(base) / "crossview" / "prepared" / f"{dataset}-{digest}"


def prepare_dataset(
    dataset: str,
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    cache: bool = False,
    crop: bool = False,
    sizes: dict[str, tuple[int, int]] | None = None,
    decode: bool = False,
    neighbours_k: int = 128,
    workers: int = 8,
) -> dict:
    """Validate ``dataset`` at ``root`` and build its neighbour tables (and optionally crops and caches).

    Returns the report (also written to ``OUT/prepare_report.json``). Raises :class:`DatasetError` listing
    every problem found, before writing anything.
    """
    if dataset not in READERS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(READERS)}")
    if crop and dataset != "cvact":
        raise ConfigError(f"--crop is the CVACT panorama pre-crop; {dataset} has none")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a folder; point ROOT at the {dataset} tree")
    t0 = time.perf_counter()

    # 1. validate everything, writing nothing
    scan, splits = _validate(dataset, root, decode, workers)

    out = Path(out) if out is not None else default_out(dataset, root)
    report: dict = {"dataset": dataset, "root": str(root), "splits": {}, "warnings": len(scan.warnings),
                    "warning_examples": scan.warnings[:20], "neighbours": {}, "cache": {}}
    # 2. CVACT crop, then re-read the splits so the cache sees the cropped panoramas
    if crop:
        from crossview.data.crop import crop_panoramas

        pano = sorted({r.query_path for _, sp in splits for r in sp.records})
        report["crop"] = crop_panoramas(pano, workers=workers)
        rescan = Scan()
        splits = [(s, scan_dataset(dataset, root, s["split"], rescan, crop=True)) for s, _ in splits]
        rescan.raise_if_problems(dataset, root)
    for s, sp in splits:
        report["splits"][split_key(dataset, s)] = {
            "queries": len(sp.records), "references": len(sp.references), "skipped": sp.meta.get("skipped", 0)}

    # 3. GPS-neighbour tables of the training splits
    report["neighbours"] = _neighbour_tables(dataset, root, splits, neighbours_k)
    # 4. decoded image caches
    if cache:
        report["cache"] = _image_caches(dataset, splits, sizes, out / "crossview_cache", workers)

    report["seconds"] = round(time.perf_counter() - t0, 2)
    report["out"] = str(out)
    write_json_atomic(out / REPORT, report)
    return report


def _validate(dataset: str, root: Path, decode: bool, workers: int) -> tuple[Scan, list[tuple[dict, Split]]]:
    """Read every setting and open every image; (the scan, each setting with its split), or one DatasetError."""
    scan = Scan()
    splits: list[tuple[dict, Split]] = []
    for s in settings(dataset, root):
        kwargs = {k: s[k] for k in ("area", "label_set") if k in s}
        try:
            splits.append((s, scan_dataset(dataset, root, s["split"], scan, **kwargs)))
        except DatasetError as exc:  # a whole setting unusable (e.g. a missing city): keep collecting
            scan.problems.extend(exc.problems or [str(exc)])
    image_sizes = check_images(scan, decode=decode, workers=workers)
    _check_tile_sizes([sp for _, sp in splits], image_sizes, scan)
    if not scan.problems:
        for s, sp in splits:
            if not sp.records:
                scan.problem(f"{split_key(dataset, s)}: no records (check its split file)")
    problems = list(dict.fromkeys(scan.problems))
    if problems:
        raise DatasetError(f"{dataset} tree at {root}: {len(problems)} problem(s) found; nothing was written. "
                           "Fix or re-download these files, then run `crossview prepare` again", problems)
    return scan, splits


def _neighbour_tables(dataset: str, root: Path, splits: list[tuple[dict, Split]], k: int) -> dict[str, str]:
    """The GPS-neighbour table of each training split (original labels): its path, or why it was not built."""
    from crossview.data.neighbours import build_neighbour_table

    tables: dict[str, str] = {}
    for s, sp in splits:
        if not s["train"] or dataset == "university1652" or s.get("label_set", "original") != "original":
            continue
        try:
            path = build_neighbour_table(sp, root, k=k)
            tables[split_key(dataset, s)] = str(path)
        except DatasetError as exc:  # e.g. CVUSA without all.csv: training still works without GPS sampling
            tables[split_key(dataset, s)] = f"not built: {exc}"
    return tables


def _image_caches(dataset: str, splits: list[tuple[dict, Split]], sizes: dict[str, tuple[int, int]] | None,
                  folder: Path, workers: int) -> dict[str, str]:
    """Every split's images decoded and resized once into ``folder``: the cache path per split and view."""
    from crossview.data.cache import build_cache

    caches: dict[str, str] = {}
    view_sizes = {**DEFAULT_SIZES[dataset], **{k: tuple(v) for k, v in (sizes or {}).items()}}
    for s, sp in splits:
        q_view, r_view = sp.records[0].query_view, sp.references[0].view
        for view, paths in ((q_view, [r.query_path for r in sp.records]),
                            (r_view, [r.path for r in sp.references])):
            if view not in view_sizes:
                raise ConfigError(f"no cache size for view {view!r}; pass sizes={{'{view}': (H, W)}}")
            path = build_cache(paths, view_sizes[view], folder, workers=workers)
            caches[f"{split_key(dataset, s)}/{view}"] = str(path)
    return caches


def summarize(report: dict) -> str:
    """The report as a few human-readable lines (what ``crossview prepare`` prints)."""
    lines = [f"{report['dataset']} at {report['root']}: OK ({report['seconds']} s)"]
    for name, counts in report["splits"].items():
        skipped = f", {counts['skipped']} skipped" if counts.get("skipped") else ""
        lines.append(f"  {name}: {counts['queries']} queries, {counts['references']} references{skipped}")
    lines += [f"  neighbours {name}: {path}" for name, path in report["neighbours"].items()]
    lines += [f"  cache {name}: {path}" for name, path in report["cache"].items()]
    if "crop" in report:
        lines.append(f"  crop: {report['crop']['written']} written, {report['crop']['up_to_date']} up to date")
    if report["warnings"]:
        lines.append(f"  {report['warnings']} warning(s), e.g.:")
        lines += [f"    {w}" for w in report["warning_examples"][:5]]
    lines.append(f"  report: {Path(report['out']) / REPORT}")
    return "\n".join(lines)
