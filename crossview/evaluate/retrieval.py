"""Streaming retrieval metrics: recall@K, recall@1 %, VIGOR hit rate, with bounded memory on CPU or GPU.

The official evaluation (``calculate_scores`` in Sample4Geo / MFRGN) builds the whole query × reference
similarity matrix and loops over queries in Python. Here similarities are computed one block of queries
(and, optionally, one block of references) at a time and only per-query counters are kept, so memory is
``O(block × references)`` (or ``O(block × ref_block)``) whatever the dataset size.

Definitions (docs/official_code_notes.md, "Retrieval evaluation"), kept exactly:

* similarity = dot product of the given descriptors (they are expected to be L2-normalised already);
* rank of query i = number of references whose similarity is **strictly greater** than the similarity to
  its positive (ties count in the query's favour, as in the official code);
* R@K = percentage of queries with rank < K;
* R@1 % uses ``K = R // 100`` (integer division, R = number of references; CVUSA R = 8,884 → K = 88).
  With fewer than 100 references K = 0 and R@1 % is 0, exactly as the official code reports it;
  the K used is returned as ``"R@1%_k"``;
* VIGOR hit rate = percentage of queries for which no reference other than the semi-positives is strictly
  more similar than the positive — the official code's rule (mask the semi-positives among the references
  above the positive; a hit if none remain). Note this is stricter than "the top-1 is the positive or a
  semi-positive": a semi-positive at the top with a wrong tile between it and the positive is a miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from crossview.device import device_of

DEFAULT_BLOCK = 1024
MAX_BLOCK_WIDTH = 2**24  # counts are summed in float32: exact while a block row has fewer than 2**24 entries


def as_tensor(x: Any) -> torch.Tensor:
    """A torch view of a numpy array / memmap / tensor (no copy where possible)."""
    if isinstance(x, torch.Tensor):
        return x
    arr = np.asarray(x)
    if not arr.flags.writeable:  # memmaps opened read-only: torch wants writeable memory
        arr = np.array(arr)
    return torch.from_numpy(arr)


def compute_dtype(*xs: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, otherwise float32 (float16 storage is widened before the matmul)."""
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


def _check(query: torch.Tensor, ref: torch.Tensor) -> None:
    if query.ndim != 2 or ref.ndim != 2:
        raise ValueError(f"descriptors must be 2-D (N, D); got query {tuple(query.shape)}, references "
                         f"{tuple(ref.shape)}")
    if query.shape[1] != ref.shape[1]:
        raise ValueError(f"query descriptors have dimension {query.shape[1]} but references {ref.shape[1]}: "
                         "were both embedded with the same model?")
    if ref.shape[0] == 0 or query.shape[0] == 0:
        raise ValueError("need at least one query and one reference")


def _pad_lists(lists: Sequence[Sequence[int]] | np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Semi-positive lists → (Q, M) int64 padded with -1; duplicates and the positive itself removed.

    A (Q, M) integer array (or tensor; -1 = padding) is cleaned without a Python loop over queries."""
    if isinstance(lists, torch.Tensor):
        lists = lists.cpu().numpy()
    if isinstance(lists, np.ndarray) and lists.ndim == 2:
        arr = np.sort(np.where(lists == positives[:, None], -1, lists).astype(np.int64), axis=1)
        dup = np.zeros_like(arr, dtype=bool)
        dup[:, 1:] = arr[:, 1:] == arr[:, :-1]
        arr[dup | (arr < 0)] = -1
        return arr if arr.shape[1] else np.full((arr.shape[0], 1), -1, dtype=np.int64)
    clean = [sorted({int(j) for j in row} - {int(p)}) for row, p in zip(lists, positives)]
    width = max((len(r) for r in clean), default=0)
    out = np.full((len(clean), max(width, 1)), -1, dtype=np.int64)
    for i, row in enumerate(clean):
        out[i, : len(row)] = row
    return out


@torch.no_grad()
def positive_ranks(
    query_desc: Any,
    ref_desc: Any,
    positives: Sequence[int] | np.ndarray,
    semi_positives: Sequence[Sequence[int]] | np.ndarray | None = None,
    *,
    device: str | torch.device | None = None,
    block: int = DEFAULT_BLOCK,
    ref_block: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rank of every query's positive and, with semi-positives, the number of semi-positives above it.

    Returns ``(ranks, semi_above)``: int64 arrays of length Q (``semi_above`` is None without
    semi-positives). ``rank - semi_above == 0`` is a VIGOR hit. ``block`` queries are scored at a time
    against all references, or against ``ref_block`` references at a time when given.
    """
    q, r = as_tensor(query_desc), as_tensor(ref_desc)
    _check(q, r)
    n_q, n_r = q.shape[0], r.shape[0]
    pos = np.asarray(positives, dtype=np.int64).reshape(-1)
    if pos.shape[0] != n_q:
        raise ValueError(f"{n_q} queries but {pos.shape[0]} positives")
    if pos.size and (pos.min() < 0 or pos.max() >= n_r):
        raise ValueError(f"positives must be reference rows in [0, {n_r}); got {pos.min()}..{pos.max()}")
    semis = None
    if semi_positives is not None:
        if len(semi_positives) != n_q:
            raise ValueError(f"{n_q} queries but {len(semi_positives)} semi-positive lists")
        semis = _pad_lists(semi_positives, pos)
        if semis.max() >= n_r:
            raise ValueError(f"semi-positives must be reference rows in [0, {n_r})")

    dev = device_of(device, q, r)
    dtype = compute_dtype(q, r)
    block = max(1, int(block))
    if n_r > MAX_BLOCK_WIDTH:
        ref_block = min(ref_block or MAX_BLOCK_WIDTH, MAX_BLOCK_WIDTH)
    one_ref_block = ref_block is None or ref_block >= n_r
    rb = n_r if one_ref_block else max(1, int(ref_block))
    r_dev = r.to(dev, dtype) if one_ref_block else None  # all references resident on the device
    ranks = np.empty(n_q, dtype=np.int64)
    semi_above = np.zeros(n_q, dtype=np.int64) if semis is not None else None
    neg_inf = float("-inf")

    from crossview.progress import progress

    for q0 in progress(range(0, n_q, block), desc="rank queries", unit="block"):
        q1 = min(q0 + block, n_q)
        qb = q[q0:q1].to(dev, dtype)
        pb = torch.from_numpy(pos[q0:q1]).to(dev)
        rows = torch.arange(q1 - q0, device=dev)
        sb = torch.from_numpy(semis[q0:q1]).to(dev) if semis is not None else None
        if one_ref_block:
            sim = qb @ r_dev.T
            gt = sim[rows, pb].clone()  # the very matrix entry: ties with it are decided exactly
            blocks = [(0, sim)]
        else:  # positive's score from a row-wise dot product; its own column is excluded below
            gt = (qb * r[pos[q0:q1]].to(dev, dtype)).sum(1)
            blocks = ((r0, qb @ r[r0:r0 + rb].to(dev, dtype).T) for r0 in range(0, n_r, rb))
        count = torch.zeros(q1 - q0, dtype=torch.int64, device=dev)
        semi_count = torch.zeros_like(count) if sb is not None else None
        for r0, sim in blocks:
            width = sim.shape[1]
            local = pb - r0
            inside = (local >= 0) & (local < width)
            sim[rows[inside], local[inside]] = neg_inf  # never count the positive against itself
            if sb is not None:
                ls = sb - r0
                ok = (sb >= 0) & (ls >= 0) & (ls < width)
                vals = sim.gather(1, ls.clamp(0, width - 1))
                semi_count += ((vals > gt[:, None]) & ok).sum(1)
            # count sim > gt in place: sign(max(sim - gt, 0)) is 1 exactly where sim > gt (x - y != 0 for
            # x != y in IEEE arithmetic); no boolean/int64 temporaries the size of the block
            sim.sub_(gt[:, None]).clamp_(min=0).sign_()
            count += sim.sum(1).round_().to(torch.int64)
            del sim
        ranks[q0:q1] = count.cpu().numpy()
        if semi_above is not None:
            semi_above[q0:q1] = semi_count.cpu().numpy()
    return ranks, semi_above


def one_percent_k(n_refs: int) -> int:
    """K of "R@1 %" in the official CVUSA/CVACT/VIGOR code: ``R // 100``."""
    return n_refs // 100


def metrics_from_ranks(
    ranks: np.ndarray, n_refs: int, ks: Sequence[int] = (1, 5, 10), semi_above: np.ndarray | None = None
) -> dict[str, float | int]:
    """The metric dict of :func:`evaluate_retrieval` from per-query ranks (percentages)."""
    ranks = np.asarray(ranks)
    n_q = ranks.shape[0]
    out: dict[str, float | int] = {}
    for k in ks:
        out[f"R@{k}"] = 100.0 * float(np.count_nonzero(ranks < k)) / n_q
    k1 = one_percent_k(n_refs)
    out["R@1%"] = 100.0 * float(np.count_nonzero(ranks < k1)) / n_q
    out["R@1%_k"] = k1
    if semi_above is not None:
        out["hit_rate"] = 100.0 * float(np.count_nonzero(ranks - semi_above == 0)) / n_q
    out["chance_R@1"] = 100.0 / n_refs
    out["queries"] = int(n_q)
    out["references"] = int(n_refs)
    return out


def evaluate_retrieval(
    query_desc: Any,
    ref_desc: Any,
    positives: Sequence[int] | np.ndarray,
    semi_positives: Sequence[Sequence[int]] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    *,
    device: str | torch.device | None = None,
    block: int = DEFAULT_BLOCK,
    ref_block: int | None = None,
) -> dict[str, float | int]:
    """Recall@K, R@1 % and (with semi-positives) VIGOR hit rate of queries against references.

    ``query_desc`` (Q, D) and ``ref_desc`` (R, D): L2-normalised descriptors, torch tensors or numpy arrays
    (float16/32/64; float16 is widened block by block). ``positives[i]``: reference row of query i's true
    match; ``semi_positives[i]``: rows that also count as a top-1 hit for the hit rate (VIGOR).
    ``device``: where the similarity blocks are computed (default: where the inputs live).
    Returns ``{"R@1", "R@5", "R@10", "R@1%", ["hit_rate"], "chance_R@1"}`` in percent, plus
    ``"R@1%_k"``, ``"queries"`` and ``"references"``. Never holds the Q × R matrix.
    """
    ranks, semi_above = positive_ranks(query_desc, ref_desc, positives, semi_positives, device=device,
                                       block=block, ref_block=ref_block)
    return metrics_from_ranks(ranks, as_tensor(ref_desc).shape[0], ks, semi_above)


def recall_curve(ranks: np.ndarray, max_k: int) -> np.ndarray:
    """Recall@k in percent for k = 1..max_k (index k-1)."""
    ranks = np.asarray(ranks)
    counts = np.bincount(np.clip(ranks, 0, max_k), minlength=max_k + 1)[:max_k]
    return 100.0 * np.cumsum(counts) / max(1, ranks.shape[0])


@torch.no_grad()
def top_k(
    query_desc: Any, ref_desc: Any, k: int, *, device: str | torch.device | None = None, block: int = DEFAULT_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar references of every query, streamed: ``(scores (Q, k), rows (Q, k))``."""
    q, r = as_tensor(query_desc), as_tensor(ref_desc)
    _check(q, r)
    dev, dtype = device_of(device, q, r), compute_dtype(q, r)
    k = min(int(k), r.shape[0])
    r_dev = r.to(dev, dtype)
    scores, rows = [], []
    for q0 in range(0, q.shape[0], block):
        s, i = torch.topk(q[q0:q0 + block].to(dev, dtype) @ r_dev.T, k, dim=1)
        scores.append(s.float().cpu().numpy())
        rows.append(i.cpu().numpy())
    return np.concatenate(scores), np.concatenate(rows)
