"""A spatially partitioned tile index for a whole region: descriptors per H3 cell, searched near a fix exactly.

Layout of an index folder ``INDEX/``::

    INDEX/index.json                                the sidecar, written last (a folder with it is complete):
                                                    format, model identity, dim, tile count, H3 resolution,
                                                    every cell's [first row, tile count], bounds, bytes, the
                                                    global index's parameters, where the tiles came from
    INDEX/cells/<res-3 parent>/<cell>.safetensors   one H3 cell's tiles: "descriptors" (n, D) float16,
                                                    "lat_lon" (n, 2) float64 (tile centres, WGS84 degrees),
                                                    "half_m" (n, 2) float32 (half width, half height in metres),
                                                    metadata "ids" (JSON list), "cell", "offset"
    INDEX/global.ivfpq                              faiss IVF-PQ over every tile (row = global row), when the
                                                    index has at least ``IVF_MIN`` tiles; ``global.ivfdata``
                                                    holds its inverted lists when they were written on disk

Rows are numbered cell by cell (cells in ascending H3 order, tiles in input order inside a cell), so a row's cell
is found by a binary search over the cells' first rows. A tile belongs to the cell of its centre.

Search near a fix ``(lat, lon, r)``: the cells whose hexagon comes within ``r`` plus the largest tile half-diagonal
of the point are opened (memory-mapped; nothing else is read), the tiles whose footprint comes within ``r`` are
kept (the rule of :func:`footprints_near`), and those are scored exactly against the query: the same tiles and
scores as brute force restricted to the area, whatever the size of the index. Search without a fix: IVF-PQ
candidates (``k × k_factor``) re-scored exactly from the cell files; below ``IVF_MIN`` tiles every cell is
scanned exactly. This module needs numpy, h3 and faiss only (no torch), so a search process stays small.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossview.errors import ConfigError, CrossviewError
from crossview.geometry.geo import latlon_to_offset
from crossview.io import write_json_atomic
from crossview.search import stfile
from crossview.search.shards import describe_model, same_model

FORMAT = "crossview-region-index/1"
SIDECAR = "index.json"
DEFAULT_RES = 7  # H3 resolution 7: cells of about 5.2 km² (edge about 1.4 km)
IVF_MIN = 20_000  # fewer tiles: the search without a fix scans every cell exactly
ADD_BYTES = 8 << 20  # float32 descriptors per faiss add call (its working memory is about 8x this)
IVF_FILE = "global.ivfpq"
IVF_DATA = "global.ivfdata"


def _h3():
    try:
        import h3
    except ImportError as exc:  # pragma: no cover - a dependency
        raise CrossviewError("the region index needs h3: pip install h3") from exc
    return h3


def footprints_near(lat_lon: np.ndarray, half_m: np.ndarray, lat: float, lon: float, radius_m: float) -> np.ndarray:
    """Mask of the north-up tiles (centres ``lat_lon`` (N, 2), half sizes ``half_m`` (N, 2) metres east/north)
    whose footprint comes within ``radius_m`` of the point, measured on the point's tangent plane."""
    lat_lon = np.asarray(lat_lon, np.float64).reshape(-1, 2)
    half_m = np.asarray(half_m, np.float64).reshape(-1, 2)
    east, north = latlon_to_offset(lat, lon, lat_lon[:, 0], lat_lon[:, 1])
    gap_e = np.maximum(np.abs(np.asarray(east)) - half_m[:, 0], 0.0)
    gap_n = np.maximum(np.abs(np.asarray(north)) - half_m[:, 1], 0.0)
    return np.hypot(gap_e, gap_n) <= radius_m


def _polygon_distance_m(lat: float, lon: float, boundary: Sequence[tuple[float, float]]) -> float:
    """Distance (m, on the point's tangent plane) from the point to a convex cell polygon (0 inside it)."""
    b = np.asarray(boundary, np.float64)
    x, y = (np.asarray(v, np.float64) for v in latlon_to_offset(lat, lon, b[:, 0], b[:, 1]))
    x2, y2 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y2 - y * x2  # the origin's side of every edge: all one sign inside a convex polygon
    if (cross >= 0).all() or (cross <= 0).all():
        return 0.0
    dx, dy = x2 - x, y2 - y
    t = np.clip(-(x * dx + y * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return float(np.hypot(x + t * dx, y + t * dy).min())


@dataclass
class Part:
    """Rows to index, in order: tile ids, centres (N, 2) lat/lon, half sizes (N, 2) metres, descriptors (N, D)
    (any array supporting sorted fancy indexing: an ndarray, a memmap)."""

    ids: Sequence[str]
    lat_lon: np.ndarray
    half_m: np.ndarray
    descriptors: Any


def _default_m(d: int) -> int:
    m = max(1, min(64, d // 4))
    while d % m:
        m -= 1
    return m


def build_region_index(parts: Iterable[Part], out: str | Path, meta: dict[str, Any], *, res: int = DEFAULT_RES,
                       ivf: bool | None = None, nlist: int | None = None, m: int | None = None, nbits: int = 8,
                       nprobe: int = 32, k_factor: int = 16, train_size: int | None = None, ondisk: bool = False,
                       seed: int = 0, extra: dict[str, Any] | None = None, log=None) -> Path:
    """Write a region index at ``out`` (a folder) from ``parts``; returns ``out``.

    ``ivf``: build the global IVF-PQ (default: when there are at least ``IVF_MIN`` tiles); ``nlist`` defaults to
    about √N (a power of two), ``m`` to D/4 sub-vectors (at most 64, a divisor of D); ``ondisk``: its inverted lists
    go to ``global.ivfdata`` and are memory-mapped when searched (for indexes larger than memory). ``extra`` is
    recorded in the sidecar (e.g. the rasters the tiles were cut from).
    """
    from h3.api import basic_int as h3i

    h3 = _h3()
    out = Path(out)
    if not 0 <= res <= 15:
        raise ConfigError(f"--h3-res {res}: H3 resolutions run from 0 to 15")
    parts = list(parts)
    n_of = [len(p.ids) for p in parts]
    starts = np.concatenate([[0], np.cumsum(n_of)]).astype(np.int64)
    n = int(starts[-1])
    if n == 0:
        raise CrossviewError("no tiles to index")
    lat_lon = np.concatenate([np.asarray(p.lat_lon, np.float64).reshape(-1, 2) for p in parts])
    half_m = np.concatenate([np.asarray(p.half_m, np.float32).reshape(-1, 2) for p in parts])
    d = int(parts[0].descriptors.shape[1])
    t0 = time.perf_counter()
    cells = np.fromiter((h3i.latlng_to_cell(a, b, res) for a, b in lat_lon), dtype=np.uint64, count=n)
    order = np.argsort(cells, kind="stable")
    uniq, first, counts = np.unique(cells[order], return_index=True, return_counts=True)
    part_of = np.searchsorted(starts, order, side="right") - 1
    (out / "cells").mkdir(parents=True, exist_ok=True)
    (out / SIDECAR).unlink(missing_ok=True)  # a folder without its sidecar is unfinished
    table: dict[str, list[int]] = {}
    cell_bytes = 0
    for cell, s, c in zip(uniq.tolist(), first.tolist(), counts.tolist()):
        rows, owners = order[s:s + c], part_of[s:s + c]
        desc = np.empty((c, d), np.float16)
        ids: list[str] = []
        j = 0
        for p in np.unique(owners):  # rows of one part are contiguous (stable sort) and ascending
            local = rows[owners == p] - starts[p]
            desc[j:j + len(local)] = np.asarray(parts[p].descriptors[local], dtype=np.float32)
            ids.extend(str(parts[p].ids[i]) for i in local)
            j += len(local)
        hx = h3.int_to_str(cell)
        path = out / "cells" / h3.cell_to_parent(hx, min(3, res)) / f"{hx}.safetensors"
        stfile.write(path, {"descriptors": desc, "lat_lon": lat_lon[rows], "half_m": half_m[rows]},
                     {"ids": ids, "cell": hx, "offset": s})
        cell_bytes += path.stat().st_size
        table[hx] = [int(s), int(c)]
    t_cells = time.perf_counter() - t0
    info: dict[str, Any] = {
        "format": FORMAT, "model": dict(meta), "dim": d, "count": n, "dtype": "float16", "h3_resolution": res,
        "cells": table, "max_half_m": [float(v) for v in half_m.max(axis=0)],
        "bounds": {"south": float(lat_lon[:, 0].min()), "north": float(lat_lon[:, 0].max()),
                   "west": float(lat_lon[:, 1].min()), "east": float(lat_lon[:, 1].max())},
        "bytes": {"cells": int(cell_bytes)}, "seconds": {"cells": round(t_cells, 3)}, "ivf": None,
        "extra": extra or {},
    }
    if ivf is None:
        ivf = n >= IVF_MIN
    for name in (IVF_FILE, IVF_DATA):
        (out / name).unlink(missing_ok=True)
    if ivf:
        t1 = time.perf_counter()
        info["ivf"] = _build_ivf(out, info, nlist=nlist, m=m, nbits=nbits, nprobe=nprobe, k_factor=k_factor,
                                 train_size=train_size, ondisk=ondisk, seed=seed)
        info["seconds"]["ivf"] = round(time.perf_counter() - t1, 3)
        info["bytes"]["ivf"] = sum((out / f).stat().st_size for f in (IVF_FILE, IVF_DATA) if (out / f).exists())
    write_json_atomic(out / SIDECAR, info)
    if log:
        log(f"{out}: {n} tiles in {len(table)} H3 cells (resolution {res})"
            + (f", IVF-PQ {info['ivf']['factory']}" if info["ivf"] else ""))
    return out


def _cell_path(out: Path, hx: str, res: int) -> Path:
    return out / "cells" / _h3().cell_to_parent(hx, min(3, res)) / f"{hx}.safetensors"


def _build_ivf(out: Path, info: dict[str, Any], *, nlist, m, nbits, nprobe, k_factor, train_size, ondisk,
               seed) -> dict[str, Any]:
    """Train and fill the global IVF-PQ from the cell files just written (rows in index order)."""
    from crossview.search.faiss_lib import faiss_module

    faiss = faiss_module()
    n, d, res = info["count"], info["dim"], info["h3_resolution"]
    m = int(m or _default_m(d))
    if d % m:
        raise ConfigError(f"--m {m} must divide the descriptor dimension {d}")
    nlist = int(nlist or min(65536, 2 ** max(4, round(math.log2(math.sqrt(n))))))
    if n < 39 * nlist:
        raise ConfigError(f"{n} tiles are too few to train {nlist} IVF lists (faiss wants >= 39 per list)")
    cells = list(info["cells"].items())
    ts = int(min(n, train_size or max(39 * nlist, 65536)))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, ts, replace=False))
    sample = np.empty((ts, d), np.float32)
    offsets = np.array([v[0] for _, v in cells], np.int64)
    which = np.searchsorted(offsets, pick, side="right") - 1
    j = 0
    for ci in np.unique(which):
        hx, (s, _c) = cells[ci]
        local = pick[which == ci] - s
        sample[j:j + len(local)] = stfile.STFile(_cell_path(out, hx, res))["descriptors"][local]
        j += len(local)
    key = f"IVF{nlist},PQ{m}x{nbits}np"
    index = faiss.index_factory(d, key, faiss.METRIC_INNER_PRODUCT)
    index.train(sample)
    del sample
    # faiss's add works on about eight float32 copies of what it is given (1.7 GB for 24,000 descriptors of 2,048
    # floats), so the rows go in slices of about ADD_BYTES whatever the index size; the order stays the cells'
    rows = max(64, ADD_BYTES // (4 * d))
    for hx, _ in cells:
        desc = stfile.STFile(_cell_path(out, hx, res))["descriptors"]
        for s in range(0, len(desc), rows):
            index.add(np.asarray(desc[s:s + rows], np.float32))
    if ondisk:  # the filled lists move to global.ivfdata, memory-mapped when the index is read
        invl = faiss.OnDiskInvertedLists(index.nlist, index.code_size, str(out / IVF_DATA))
        lists = faiss.InvertedListsPtrVector()
        lists.push_back(index.invlists)
        ntotal = invl.merge_from_multiple(lists.data(), lists.size(), False)
        index.replace_invlists(invl, True)
        invl.this.disown()
        index.ntotal = ntotal
    faiss.write_index(index, str(out / IVF_FILE))
    return {"factory": key, "nlist": nlist, "m": m, "nbits": nbits, "nprobe": int(nprobe), "k_factor": int(k_factor),
            "train_size": ts, "file": IVF_FILE, "ondisk": bool(ondisk)}


class RegionIndex:
    """A region index opened for search: the sidecar in memory, cell files memory-mapped when a search needs them."""

    def __init__(self, path: str | Path, info: dict[str, Any]):
        self.path, self.info = Path(path), info
        self.meta: dict[str, Any] = info.get("model", {})
        self.res = int(info["h3_resolution"])
        self.cells: dict[str, list[int]] = info["cells"]
        self._hx = list(self.cells)
        self._offsets = np.array([v[0] for v in self.cells.values()], np.int64)
        self.params = {"kind": "region", "h3_resolution": self.res, **({"ivf": info["ivf"]} if info["ivf"] else {})}
        self.nprobe = int((info.get("ivf") or {}).get("nprobe", 32))
        self._ivf = None
        self._all = None
        self.cells_opened = 0  # cells read by the last search (for benchmarks and tests)

    # -- the Index interface locate uses --
    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    def __len__(self) -> int:
        return int(self.info["count"])

    def check_query_model(self, query_meta: dict[str, Any], what: str = "the query model") -> None:
        if not same_model(self.meta, query_meta):
            raise ConfigError(
                f"index built with model {describe_model(self.meta)} but {what} is {describe_model(query_meta)}; "
                "descriptors of different models are not comparable: query with the index's model, or rebuild "
                "the index with this one (crossview locate-index)")

    def set_nprobe(self, nprobe: int) -> None:
        self.nprobe = int(nprobe)
        if self._ivf is not None:
            self._faiss().extract_index_ivf(self._ivf).nprobe = self.nprobe

    def _faiss(self):
        from crossview.search.faiss_lib import faiss_module

        return faiss_module()

    # -- cells --
    def cell(self, hx: str) -> stfile.STFile:
        return stfile.STFile(_cell_path(self.path, hx, self.res))

    def cells_near(self, lat: float, lon: float, radius_m: float) -> list[str]:
        """The index's cells whose hexagon comes within ``radius_m`` plus the largest tile half-diagonal of the
        point: every tile whose footprint meets the search area has its centre in one of them."""
        h3 = _h3()
        reach = float(radius_m) + float(np.hypot(*self.info["max_half_m"]))
        edge = h3.average_hexagon_edge_length(self.res, unit="m")
        # neighbouring centres are about sqrt(3) edges apart; H3 edges vary by less than 2x around the average
        k = int(math.ceil((reach + 4.0 * edge) / (0.5 * math.sqrt(3) * edge))) + 1
        centre = h3.latlng_to_cell(lat, lon, self.res)
        out = []
        for hx in h3.grid_disk(centre, k):
            if hx in self.cells and _polygon_distance_m(lat, lon, h3.cell_to_boundary(hx)) <= reach:
                out.append(hx)
        return sorted(out, key=lambda h: self.cells[h][0])

    def near(self, lat: float, lon: float, radius_m: float, descriptors: bool = True) -> dict[str, Any]:
        """The tiles whose footprint comes within ``radius_m`` of the point, in row order: ``rows`` (n,),
        ``ids``, ``lat_lon`` (n, 2), ``half_m`` (n, 2), and unless ``descriptors=False`` (geometry only: the
        descriptors are not read) ``descriptors`` (n, D) float16."""
        rows, ids, ll, hm, desc = [], [], [], [], []
        cells = self.cells_near(lat, lon, radius_m)
        for hx in cells:
            f = self.cell(hx)
            keep = np.flatnonzero(footprints_near(f["lat_lon"], f["half_m"], lat, lon, radius_m))
            if not len(keep):
                continue
            rows.append(self.cells[hx][0] + keep)
            names = f.metadata["ids"]
            ids.extend(names[i] for i in keep)
            ll.append(np.asarray(f["lat_lon"][keep]))
            hm.append(np.asarray(f["half_m"][keep]))
            if descriptors:
                desc.append(np.asarray(f["descriptors"][keep]))
        self.cells_opened = len(cells)
        if not rows:
            got = {"rows": np.empty(0, np.int64), "ids": [], "lat_lon": np.empty((0, 2)),
                   "half_m": np.empty((0, 2), np.float32)}
            return {**got, "descriptors": np.empty((0, self.dim), np.float16)} if descriptors else got
        got = {"rows": np.concatenate(rows), "ids": ids, "lat_lon": np.concatenate(ll), "half_m": np.concatenate(hm)}
        return {**got, "descriptors": np.concatenate(desc)} if descriptors else got

    def any_near(self, lat: float, lon: float, radius_m: float) -> bool:
        return len(self.near(lat, lon, radius_m, descriptors=False)["rows"]) > 0

    def nearest(self, lat: float, lon: float) -> dict[str, Any] | None:
        """The tile whose centre is nearest to the point (ties: the lower row) as ``near`` gives one row, or None
        for an empty index. Opens the cells around the point, widening the search until a tile is found; the
        nearest centre lies within the found one's distance plus nothing farther, so one more search at that
        distance settles it."""
        if not len(self):
            return None
        reach = float(np.hypot(*self.info["max_half_m"]))
        b = self.info["bounds"]
        mid = ((b["south"] + b["north"]) / 2, (b["west"] + b["east"]) / 2)
        # every tile centre lies within this of the point
        upper = (float(np.hypot(*latlon_to_offset(lat, lon, *mid)))
                 + float(np.hypot(*latlon_to_offset(b["south"], b["west"], b["north"], b["east"]))) + reach)
        radius = 0.0
        while True:
            got = self.near(lat, lon, radius, descriptors=False)
            if len(got["rows"]):
                break
            if radius >= upper:
                return None
            radius = min(max(2.0 * radius, reach), upper)
        east, north = latlon_to_offset(lat, lon, got["lat_lon"][:, 0], got["lat_lon"][:, 1])
        d = np.hypot(east, north)
        # a centre at distance d_min from the point: every closer centre's footprint meets that radius too
        got = self.near(lat, lon, float(d.min()) + 1e-6, descriptors=False)
        east, north = latlon_to_offset(lat, lon, got["lat_lon"][:, 0], got["lat_lon"][:, 1])
        j = int(np.argmin(np.hypot(east, north)))
        return {"row": int(got["rows"][j]), "id": got["ids"][j], "lat_lon": got["lat_lon"][j],
                "half_m": got["half_m"][j]}

    # -- search --
    def search_near(self, q: Any, k: int, area: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` among the tiles whose footprint meets ``area`` = (lat, lon, radius_m): ``(scores (n, k),
        ids (n, k))``, best first, id None where the area holds fewer than ``k`` tiles."""
        q = _queries(q, self.dim)
        got = self.near(*area)
        return _top_k(q, got["descriptors"], np.asarray(got["ids"] + [None], dtype=object), k)

    def search(self, q: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` over the whole index: IVF-PQ candidates re-scored exactly from the cell files (or, without the
        IVF-PQ, an exact scan of every cell)."""
        q = _queries(q, self.dim)
        if not self.info.get("ivf"):
            desc, ids = self._everything()
            return _top_k(q, desc, ids, k)
        index = self._load_ivf()
        kf = int(self.info["ivf"].get("k_factor", 16))
        _, cand = index.search(q, int(k) * kf)
        scores = np.full((len(q), k), -np.inf, np.float32)
        out = np.full((len(q), k), None, dtype=object)
        for i in range(len(q)):
            rows = np.unique(cand[i][cand[i] >= 0])
            which = np.searchsorted(self._offsets, rows, side="right") - 1
            s_all, id_all = [], []
            for ci in np.unique(which):
                hx = self._hx[ci]
                f = self.cell(hx)
                local = rows[which == ci] - self._offsets[ci]
                s_all.append(np.asarray(f["descriptors"][local], np.float32) @ q[i])
                names = f.metadata["ids"]
                id_all.extend(names[j] for j in local)
            if not s_all:
                continue
            s = np.concatenate(s_all)
            top = np.argsort(-s, kind="stable")[:k]
            scores[i, :len(top)] = s[top]
            out[i, :len(top)] = [id_all[j] for j in top]
        return scores, out

    def _load_ivf(self):
        if self._ivf is None:
            faiss = self._faiss()
            flags = faiss.IO_FLAG_ONDISK_SAME_DIR if self.info["ivf"].get("ondisk") else 0
            self._ivf = faiss.read_index(str(self.path / self.info["ivf"]["file"]), flags)
            faiss.extract_index_ivf(self._ivf).nprobe = self.nprobe
        return self._ivf

    def _everything(self) -> tuple[np.ndarray, np.ndarray]:
        desc, ids = [], []
        for hx in self._hx:
            f = self.cell(hx)
            desc.append(np.asarray(f["descriptors"]))
            ids.extend(f.metadata["ids"])
        return np.concatenate(desc), np.asarray(ids + [None], dtype=object)

    # -- every row (small indexes, tests) --
    @property
    def rows_loaded(self) -> bool:
        """Whether every row's id and centre has been read (:meth:`rows`): a search near a fix never needs it."""
        return self._all is not None

    def rows(self) -> dict[str, Any]:
        """Every tile, in row order: ``ids`` (list), ``lat_lon`` (N, 2), ``half_m`` (N, 2). Reads every cell's
        header and geometry (not its descriptors)."""
        if self._all is None:
            ids, ll, hm = [], [], []
            for hx in self._hx:
                f = self.cell(hx)
                ids.extend(f.metadata["ids"])
                ll.append(np.asarray(f["lat_lon"]))
                hm.append(np.asarray(f["half_m"]))
            self._all = {"ids": ids, "lat_lon": np.concatenate(ll), "half_m": np.concatenate(hm)}
        return self._all

    @property
    def ids(self) -> list[str]:
        return self.rows()["ids"]

    @property
    def gps(self) -> np.ndarray:
        return self.rows()["lat_lon"]

    def descriptors(self) -> np.ndarray:
        """Every descriptor (N, D) float32 in row order (tests, small indexes)."""
        return self._everything()[0].astype(np.float32)

    def summary(self) -> dict[str, Any]:
        """What ``crossview index info`` prints."""
        h3 = _h3()
        area = sum(h3.cell_area(hx, unit="km^2") for hx in self._hx)
        b = self.info["bytes"]
        return {"path": str(self.path), "kind": "region", "tiles": len(self), "cells": len(self.cells),
                "h3_resolution": self.res, "dim": self.dim, "dtype": self.info["dtype"],
                "bytes": {**b, "total": int(sum(b.values()))}, "model": describe_model(self.meta),
                "bounds": self.info["bounds"], "cells_area_km2": round(area, 1),
                "global_search": self.info["ivf"]["factory"] if self.info.get("ivf") else "exact scan",
                "extra": self.info.get("extra", {})}


def _queries(q: Any, d: int) -> np.ndarray:
    if hasattr(q, "detach"):
        q = q.detach().to("cpu").float().numpy()
    q = np.ascontiguousarray(np.asarray(q, np.float32))
    if q.ndim == 1:
        q = q[None]
    if q.shape[1] != d:
        raise ConfigError(f"query descriptors have dimension {q.shape[1]}, the index {d}")
    return q


def _top_k(q: np.ndarray, desc: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k of ``q`` (n, D) against ``desc`` (N, D); ``ids`` has N + 1 entries (the last
    None, for empty slots)."""
    n = len(desc)
    scores = np.full((len(q), k), -np.inf, np.float32)
    rows = np.full((len(q), k), n, np.int64)
    if n:
        s = q @ np.asarray(desc, np.float32).T
        kk = min(k, n)
        top = np.argsort(-s, axis=1, kind="stable")[:, :kk]
        scores[:, :kk] = np.take_along_axis(s, top, axis=1)
        rows[:, :kk] = top
    return scores, ids[rows]


def is_region_index(path: str | Path) -> bool:
    return (Path(path) / SIDECAR).is_file()


def load_region_index(path: str | Path, query_meta: dict[str, Any] | None = None) -> RegionIndex:
    path = Path(path)
    side = path / SIDECAR
    if not side.is_file():
        raise CrossviewError(f"{path} is not a region index (no {SIDECAR}: unfinished, or not an index)")
    info = json.loads(side.read_text())
    if info.get("format") != FORMAT:
        raise CrossviewError(f"{side} is not a crossview region index (format {info.get('format')!r})")
    idx = RegionIndex(path, info)
    if query_meta is not None:
        idx.check_query_model(query_meta)
    return idx
