"""Nearest-tile search over descriptor sets: exact (faiss ``IndexFlatIP``) or compressed (IVF-PQ).

An index is saved as two files written atomically: ``INDEX`` (the faiss index) and ``INDEX.json`` (the
sidecar: kind and parameters, descriptor dimension, the identity of the model that made the descriptors —
name, config and weights hashes, preprocessing per view — and the ids and GPS of every row, plus the SHA-1 of
the index file so a mismatched pair is detected). Loading for a query model whose identity differs is
refused with a message naming both.

IVF-PQ here = optional OPQ rotation (off by default: its training is slow, and the exact re-ranking below
already recovers the recall) → inverted lists (``nlist`` coarse centroids) → product quantiser
(``m`` sub-vectors × ``nbits``), searched with ``nprobe`` lists, and by default re-ranked exactly
(``refine="flat"``: the top ``k × k_factor`` PQ candidates are re-scored with the stored full vectors),
which brings recall@10 against exact search above 0.95 (see ``benchmarks/bench_faiss.py``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossview.errors import ConfigError, CrossviewError
from crossview.io import atomic_write, write_json_atomic
from crossview.search.faiss_lib import faiss_module
from crossview.search.shards import describe_model, same_model

KINDS = ("flat", "ivfpq")
SIDECAR_FORMAT = "crossview-index/1"


def _as_f32(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").float().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


@dataclass
class Index:
    """A faiss index with the ids, GPS and model identity of its rows."""

    faiss_index: Any
    ids: list[str]
    gps: np.ndarray  # (N, 2) lat/lon WGS84, NaN where unknown
    meta: dict[str, Any] = field(default_factory=dict)  # model identity (see crossview.search.embed)
    params: dict[str, Any] = field(default_factory=dict)  # kind, nlist, m, nbits, nprobe, ...

    @property
    def dim(self) -> int:
        return int(self.faiss_index.d)

    def __len__(self) -> int:
        return int(self.faiss_index.ntotal)

    def set_nprobe(self, nprobe: int) -> None:
        if self.params.get("kind") == "ivfpq":
            faiss_module().extract_index_ivf(self.faiss_index).nprobe = int(nprobe)
            self.params["nprobe"] = int(nprobe)

    def search_rows(self, q: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (n, k) float32, rows (n, k) int64)``; row -1 where fewer than k results exist."""
        q = _as_f32(q)
        if q.ndim == 1:
            q = q[None]
        if q.shape[1] != self.dim:
            raise ConfigError(f"query descriptors have dimension {q.shape[1]}, the index {self.dim}")
        return self.faiss_index.search(q, int(k))

    def search(self, q: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (n, k), ids (n, k))``: inner-product scores, best first, and the rows' ids (None if absent)."""
        scores, rows = self.search_rows(q, k)
        if getattr(self, "_id_table", None) is None or len(self._id_table) != len(self.ids) + 1:
            self._id_table = np.asarray(self.ids + [None], dtype=object)  # built once, not per query
        return scores, self._id_table[np.where(rows < 0, len(self.ids), rows)]

    def check_query_model(self, query_meta: dict[str, Any], what: str = "the query model") -> None:
        """Refuse queries embedded by a model other than the one that made the index."""
        if not same_model(self.meta, query_meta):
            raise ConfigError(
                f"index built with model {describe_model(self.meta)} but {what} is {describe_model(query_meta)}; "
                "descriptors of different models are not comparable: query with the index's model, or rebuild "
                "the index from tiles embedded with this one (crossview embed, then crossview index build)")


def build_index(desc: Any, ids: list[str], gps: Any = None, meta: dict[str, Any] | None = None, kind: str = "flat",
                *, nlist: int | None = None, m: int = 32, nbits: int = 8, opq: bool = False,
                refine: str | None = "flat", k_factor: int = 16, nprobe: int = 32, train_size: int | None = None,
                seed: int = 0) -> Index:
    """Build a ``"flat"`` (exact inner product) or ``"ivfpq"`` index over ``desc`` (N, D).

    ``ivfpq``: ``nlist`` defaults to about 4·√N (a power of two), trained on at most ``train_size``
    (default ``max(64·nlist, 50k)``) random rows. ``refine``: ``"flat"`` (exact re-ranking), ``"sq8"``
    (8-bit re-ranking, 4× less memory) or None.
    """
    faiss = faiss_module()
    x = _as_f32(desc)
    if x.ndim != 2:
        raise ValueError(f"descriptors must be (N, D), got {x.shape}")
    n, d = x.shape
    if len(ids) != n:
        raise ValueError(f"{n} descriptors but {len(ids)} ids")
    g = np.full((n, 2), np.nan) if gps is None else np.asarray(gps, dtype=np.float64).reshape(n, 2)
    if kind not in KINDS:
        raise ConfigError(f"index kind must be one of {KINDS}, got {kind!r}")
    params: dict[str, Any] = {"kind": kind}
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    else:
        if d % m:
            raise ConfigError(f"--m {m} must divide the descriptor dimension {d}")
        nlist = int(nlist or min(65536, 2 ** max(4, round(np.log2(4 * np.sqrt(n))))))
        if n < nlist * 39:
            raise ConfigError(f"{n} vectors are too few to train {nlist} IVF lists (faiss wants >= 39 per list); "
                              "use a smaller --nlist or a flat index")
        # "np": no polysemous re-ordering of the PQ centroids (only useful for Hamming filtering, and it
        # dominates training time: minutes even for 50k vectors)
        key = (f"OPQ{m}," if opq else "") + f"IVF{nlist},PQ{m}x{nbits}np"
        base = faiss.index_factory(d, key, faiss.METRIC_INNER_PRODUCT)
        if refine == "flat":
            index = faiss.IndexRefineFlat(base)
        elif refine == "sq8":
            index = faiss.IndexRefine(base, faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit,
                                                                       faiss.METRIC_INNER_PRODUCT))
        elif refine in (None, "none"):
            index = base
        else:
            raise ConfigError(f"refine must be flat, sq8 or none, got {refine!r}")
        if refine not in (None, "none"):
            index.k_factor = float(k_factor)
        ts = min(n, train_size or max(64 * nlist, 50_000))
        sample = x[np.random.default_rng(seed).choice(n, ts, replace=False)] if ts < n else x
        index.train(sample)
        faiss.extract_index_ivf(index).nprobe = int(nprobe)
        params.update(nlist=nlist, m=m, nbits=nbits, opq=opq, refine=refine or "none", k_factor=k_factor,
                      nprobe=int(nprobe), train_size=int(ts), factory=key)
    for s in range(0, n, 65536):
        index.add(x[s:s + 65536])
    return Index(index, [str(i) for i in ids], g, dict(meta or {}), params)


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_index(index: Index, path: str | Path) -> Path:
    """Write ``path`` (faiss) and ``path.json`` (sidecar), each atomically; returns ``path``."""
    faiss = faiss_module()
    path = Path(path)
    blob = faiss.serialize_index(index.faiss_index)
    digest = hashlib.sha1(blob.tobytes()).hexdigest()
    atomic_write(path, lambda p: blob.tofile(p))
    gps = [[None if np.isnan(v) else float(v) for v in row] for row in index.gps]
    write_json_atomic(sidecar_path(path), {
        "format": SIDECAR_FORMAT, "index_sha1": digest, "dim": index.dim, "count": len(index),
        "params": index.params, "model": index.meta, "ids": index.ids, "gps": gps,
    })
    return path


def load_index(path: str | Path, query_meta: dict[str, Any] | None = None) -> Index:
    """Load an index saved by :func:`save_index`, or open a region index folder
    (:class:`crossview.search.region.RegionIndex`, same search interface); with ``query_meta``, refuse a different
    query model."""
    path = Path(path)
    if path.is_dir():
        from crossview.search.region import load_region_index

        return load_region_index(path, query_meta)
    faiss = faiss_module()
    side = sidecar_path(path)
    if not path.exists() or not side.exists():
        raise CrossviewError(f"index {path} needs both {path.name} and {side.name}; build it with "
                             "`crossview index build`")
    info = json.loads(side.read_text())
    if info.get("format") != SIDECAR_FORMAT:
        raise CrossviewError(f"{side} is not a crossview index sidecar (format {info.get('format')!r})")
    raw = np.fromfile(path, dtype=np.uint8)
    if hashlib.sha1(raw.tobytes()).hexdigest() != info["index_sha1"]:
        raise CrossviewError(f"{path} does not match its sidecar {side.name} (SHA-1 differs): the pair was mixed "
                             "up or a write was interrupted; rebuild the index")
    fi = faiss.deserialize_index(raw)
    gps = np.array([[np.nan if v is None else v for v in row] for row in info["gps"]], dtype=np.float64)
    idx = Index(fi, list(info["ids"]), gps.reshape(-1, 2), info.get("model", {}), info.get("params", {}))
    if query_meta is not None:
        idx.check_query_model(query_meta)
    return idx
