"""GPS-neighbour tables for hard-negative batches (the official ``calc_distance_*.py``; docs/official_code_notes.md).

For every training location (the reference index ``record.positives[0]``: the CVUSA/CVACT pair, the VIGOR
positive satellite) the table lists the other training locations nearest first, self excluded. The
training sampler (:func:`crossview.train.sampling.location_batches`) packs a seed location with its
neighbours so the InfoNCE negatives inside a batch are hard.

Distances: haversine on (lat, lon) **converted to radians**. The official ``calc_distance_*.py`` scripts
pass degrees to sklearn's haversine, which expects radians, so their ordering is only roughly geographic;
this module computes the true great-circle ordering. CVACT has only UTM coordinates: Euclidean distance in
metres there, as the official code does. Coordinates per location: VIGOR the satellite tile centre (from
its file name), CVUSA the ground camera (``all.csv`` columns 3–4, as the official code), CVACT the UTM.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from crossview.data.records import Split
from crossview.errors import ConfigError, DatasetError
from crossview.io import atomic_write

DEFAULT_K = 128  # the official dictionaries keep 128 neighbours; the sampler reads the first neighbour_range
TABLE_DIR = "crossview_neighbours"


def unit_vectors(latlon_deg: np.ndarray) -> np.ndarray:
    """(lat, lon) in degrees → points on the unit sphere (radians inside)."""
    lat, lon = np.radians(latlon_deg[:, 0]), np.radians(latlon_deg[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def nearest_neighbours(coords: np.ndarray, k: int = DEFAULT_K, metric: str = "haversine",
                       workers: int = -1) -> np.ndarray:
    """``(N, min(k, N-1))`` indices of each point's nearest other points, nearest first (ties: lower index).

    ``coords``: (N, 2) — (lat, lon) in degrees for ``metric="haversine"`` (converted to radians here), or
    planar metres (e.g. UTM easting/northing) for ``metric="euclidean"``. The great-circle (haversine)
    distance is ranked exactly through the chord between unit vectors, ``2·sin(d/2)``, which is monotone in
    it; a k-d tree in float64 finds the k nearest in O(N log N) (VIGOR's ~45k locations take about a second,
    where a dense N×N pass takes minutes).
    """
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must be (N, 2), got {coords.shape}")
    if metric not in ("haversine", "euclidean"):
        raise ValueError(f"metric must be 'haversine' or 'euclidean', not {metric!r}")
    n = len(coords)
    k = min(int(k), n - 1)
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64)
    pts = unit_vectors(coords) if metric == "haversine" else coords
    dist, idx = cKDTree(pts).query(pts, k=k + 1, workers=workers)
    dist, idx = dist.reshape(n, k + 1), idx.reshape(n, k + 1).astype(np.int64)
    drop = idx == np.arange(n)[:, None]  # self (with duplicate points it may not be first)
    drop[~drop.any(axis=1), -1] = True
    dist, idx = dist[~drop].reshape(n, k), idx[~drop].reshape(n, k)
    order = np.lexsort((idx, dist), axis=-1)
    return np.take_along_axis(idx, order, axis=1)


def haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (metres, mean-radius sphere) between two (lat, lon) points in degrees: the order the
    neighbour tables follow (``crossview.geometry.geo.haversine_m``; true distances: ``geometry.geodesy``)."""
    from crossview.geometry.geo import haversine_m as sphere

    return float(sphere(a[0], a[1], b[0], b[1]))


def location_coordinates(split: Split) -> tuple[np.ndarray, np.ndarray, str]:
    """(location keys, their (N, 2) coordinates, metric) of a training split."""
    keys = np.unique(np.asarray(split.positives(), dtype=np.int64))
    if split.dataset == "university1652":
        raise ConfigError("University-1652 has no GPS: GPS neighbour sampling is undefined there "
                          "(set gps_sample=False; similarity sampling still works)")
    if split.dataset == "cvact":
        utm = np.asarray(split.meta.get("utm", np.zeros((0, 2))), dtype=np.float64)
        if len(utm) != len(split.references):
            raise DatasetError("CVACT split carries no UTM coordinates; read it with read_dataset('cvact', ...)")
        return keys, utm[keys, :2], "euclidean"
    if split.dataset == "cvusa":
        first: dict[int, tuple[float, float] | None] = {}
        for rec in split.records:
            first.setdefault(rec.positives[0], rec.gps)
        gps = [first[int(k)] for k in keys]
    else:
        gps = [split.references[int(k)].gps for k in keys]
    if any(g is None for g in gps):
        hint = "split_locations/all.csv" if split.dataset == "cvusa" else "the satellite file names"
        raise DatasetError(f"{split.dataset} {split.name}: some locations have no GPS; GPS neighbours need "
                           f"{hint} (run `crossview prepare` to see what is missing)")
    return keys, np.asarray(gps, dtype=np.float64), "haversine"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "crossview" / "neighbours"


def table_path(split: Split, root: Path, keys: np.ndarray, coords: np.ndarray, k: int,
               cache_dir: Path | None = None) -> Path:
    """Where the table for these locations lives: ``ROOT/crossview_neighbours`` if writable, else a cache dir."""
    digest = hashlib.sha1(keys.tobytes() + np.ascontiguousarray(coords).tobytes()).hexdigest()[:12]
    name = f"{split.dataset}-{split.name}-k{k}-{digest}.npz"
    if cache_dir is not None:
        return Path(cache_dir) / name
    local = root / TABLE_DIR
    if (local.is_dir() and os.access(local, os.W_OK)) or (not local.exists() and os.access(root, os.W_OK)):
        return local / name
    return default_cache_dir() / hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12] / name


def build_neighbour_table(split: Split, root: str | os.PathLike, k: int = DEFAULT_K,
                          cache_dir: str | os.PathLike | None = None) -> Path:
    """Compute (or find) the neighbour table of a training split; returns the ``.npz`` path."""
    keys, coords, metric = location_coordinates(split)
    path = table_path(split, Path(root), keys, coords, k, Path(cache_dir) if cache_dir else None)
    if path.exists():
        return path
    rows = keys[nearest_neighbours(coords, k, metric)]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, keys=keys, neighbours=rows, metric=np.array(metric))

    return atomic_write(path, write)


def load_gps_neighbours(
    dataset: str,
    data: str | os.PathLike,
    *,
    area: str = "same",
    split: Split | None = None,
    k: int = DEFAULT_K,
    cache_dir: str | os.PathLike | None = None,
) -> dict[int, np.ndarray]:
    """``{location: other locations nearest first}`` for the training locations of ``split``.

    Locations are reference indices (``record.positives[0]``). Haversine over (lat, lon) converted to
    radians — the official scripts feed degrees to a radians formula — or Euclidean on CVACT's UTM. The
    table is cached as a file (in ``DATA/crossview_neighbours`` when writable, else ``~/.cache/crossview``),
    written atomically and keyed by a digest of the locations, so a changed split never reads a stale table.
    """
    if split is None:
        from crossview.data.readers import read_dataset

        split = read_dataset(dataset, data, "train", area=area)
    if split.dataset != dataset:
        raise ConfigError(f"split is from {split.dataset}, not {dataset}")
    path = build_neighbour_table(split, data, k, cache_dir)
    with np.load(path) as z:
        keys, rows = z["keys"], z["neighbours"]
    return {int(key): row for key, row in zip(keys, rows)}
