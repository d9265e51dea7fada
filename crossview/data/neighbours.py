"""GPS-neighbour tables for hard-negative batches (MFRGN_SPEC c.4).

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


def _topk_rows(dist_block: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k smallest entries per row, nearest first, ties broken by the lower index."""
    part = np.argpartition(dist_block, k - 1, axis=1)[:, :k] if k < dist_block.shape[1] else \
        np.tile(np.arange(dist_block.shape[1]), (dist_block.shape[0], 1))
    part.sort(axis=1)  # index order first, so the stable sort below breaks ties by index
    vals = np.take_along_axis(dist_block, part, axis=1)
    order = np.argsort(vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def nearest_neighbours(coords: np.ndarray, k: int = DEFAULT_K, metric: str = "haversine",
                       block: int = 512) -> np.ndarray:
    """``(N, min(k, N-1))`` indices of each point's nearest other points, nearest first.

    ``coords``: (N, 2) — (lat, lon) in degrees for ``metric="haversine"`` (converted to radians here), or
    planar metres (e.g. UTM easting/northing) for ``metric="euclidean"``. Computed in row blocks so memory
    stays at ``block × N`` floats.
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must be (N, 2), got {coords.shape}")
    n = len(coords)
    k = min(int(k), n - 1)
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64)
    out = np.empty((n, k), dtype=np.int64)
    if metric == "haversine":
        lat, lon = np.radians(coords[:, 0]), np.radians(coords[:, 1])
        cos_lat = np.cos(lat)
    elif metric != "euclidean":
        raise ValueError(f"metric must be 'haversine' or 'euclidean', not {metric!r}")
    for start in range(0, n, block):
        stop = min(start + block, n)
        if metric == "haversine":
            # haversine "h"; the great-circle distance 2R·asin(sqrt(h)) is monotone in it
            dlat = lat[start:stop, None] - lat[None, :]
            dlon = lon[start:stop, None] - lon[None, :]
            d = np.sin(dlat / 2) ** 2 + cos_lat[start:stop, None] * cos_lat[None, :] * np.sin(dlon / 2) ** 2
        else:
            diff = coords[start:stop, None, :] - coords[None, :, :]
            d = np.einsum("ijk,ijk->ij", diff, diff)
        d[np.arange(stop - start), np.arange(start, stop)] = np.inf  # self excluded
        out[start:stop] = _topk_rows(d, k)
    return out


def haversine_m(a: tuple[float, float], b: tuple[float, float], radius: float = 6_371_000.0) -> float:
    """Great-circle distance in metres between two (lat, lon) points in degrees."""
    la1, lo1, la2, lo2 = map(np.radians, (a[0], a[1], b[0], b[1]))
    h = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2
    return float(2 * radius * np.arcsin(np.sqrt(h)))


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
