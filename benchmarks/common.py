"""What every benchmark shares: the environment stamp, a timer, the work folder, writing its result, and a
synthetic world's index.

Run the scripts as modules from the repository root (``python -m benchmarks.bench_eval``,
``python -m benchmarks.experiments.locate_pinhole``); they import crossview as installed (``make .venv/.installed``)
and its public names only.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"  # the figures the docs quote


def environment(**extra: Any) -> dict[str, Any]:
    """The machine and software a result was measured on, with the same keys in every benchmark: ``host``,
    ``machine``, ``cpu``, ``cpu_count``, ``load_avg_1min``, ``python``, ``torch``, ``threads``, ``cuda_device``
    (None on the CPU), ``crossview``, ``time`` (UTC, ISO 8601); ``extra`` adds the benchmark's own (its
    libraries' versions, its thread settings)."""
    import torch

    import crossview

    return {"host": platform.node(), "machine": platform.machine(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "crossview": getattr(crossview, "__version__", None),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}


def write_result(path: str | os.PathLike, doc: dict[str, Any], merge: bool = False) -> Path:
    """Write a benchmark's JSON ``doc`` to ``path`` atomically (its folder made); ``merge``: into the JSON already
    there, replacing only the keys ``doc`` has (benchmarks that share one results file)."""
    import json

    from crossview.io import write_text_atomic

    path = Path(path)
    if merge and path.is_file():
        doc = {**json.loads(path.read_text()), **doc}
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(doc, indent=2) + "\n")


def write_random_geotiff(path: Path, px: int) -> Path:
    """A square UTM GeoTIFF (EPSG:32619, 0.5 m pixels) of ``px`` x ``px`` random 8 px blocks, tiled 256 x 256,
    uncompressed, written 1,024 rows at a time (the region benchmarks' raster; seeded, so always the same)."""
    import numpy as np
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=px, height=px, count=3, dtype="uint8", crs="EPSG:32619",
                       transform=Affine.translation(330000.0, 4690000.0) @ Affine.scale(0.5, -0.5), tiled=True,
                       blockxsize=256, blockysize=256) as ds:
        for r0 in range(0, px, 1024):
            h = min(1024, px - r0)
            small = rng.integers(0, 255, (3, h // 8 + 1, px // 8 + 1)).astype(np.uint8)
            block = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)[:, :h, :px]
            ds.write(block, window=rasterio.windows.Window(0, r0, px, h))
    return path


class Timer:
    """Wall seconds of a ``with`` block: ``with Timer() as t: ...`` then ``t.s``."""

    def __enter__(self) -> Timer:
        self.s, self._t0 = 0.0, time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.s = time.perf_counter() - self._t0


def add_work_argument(ap: argparse.ArgumentParser, what: str = "built tiles, indexes and per-photo rows") -> None:
    """``--work DIR``: where a benchmark keeps what it builds (default: a new temporary folder)."""
    ap.add_argument("--work", type=Path, default=None, help=f"folder for the {what} (default: a new temporary "
                                                            "folder)")


def add_pinhole_scan_arguments(ap: argparse.ArgumentParser) -> None:
    """``--world``, ``--retrieval``, ``--fine``, ``--half``: the pinhole-dense world and the models its scan
    experiments locate with."""
    ap.add_argument("--world", required=True, help="crossview synth --layout vigor --scale pinhole-dense world")
    ap.add_argument("--retrieval", required=True, help="limited-FoV retrieval run (synthetic-cpu-dense-fov)")
    ap.add_argument("--fine", required=True, help="pinhole fine model (fg2-synthetic-cpu-pinhole checkpoint)")
    ap.add_argument("--half", default="first", choices=("first", "second"))


@contextmanager
def work_dir(path: str | os.PathLike | None, prefix: str = "crossview_bench_"):
    """``path`` (created), or a temporary folder removed afterwards."""
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def world_index(world: str | os.PathLike, run: str | os.PathLike, work: str | os.PathLike,
                device: str = "cpu") -> tuple[Path, Path]:
    """The tiles of a synthetic world's ``satellite/`` folder and their index with the retrieval model of ``run``
    (both kept in ``work`` and reused): (tile manifest, index)."""
    from crossview.locate import index_tiles
    from crossview.tiles import build_tiles

    work = Path(work)
    manifest = build_tiles(Path(world) / "satellite", work / "tiles")
    return Path(manifest), index_tiles(manifest, run, work / "tiles.index", device=device)


def top_ends(ends: list[dict], k: int = 5, apart_m: float = 3.0) -> list[dict]:
    """The ``k`` most confident walk ends inside the search area, at least ``apart_m`` apart."""
    from crossview.geometry.geo import distance_m

    top: list[dict] = []
    for e in sorted((e for e in ends if e["inside"]), key=lambda e: -e["conf"]):
        if all(distance_m(e["end"], t["end"]) > apart_m for t in top):
            top.append(e)
        if len(top) == k:
            break
    return top
