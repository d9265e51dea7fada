"""University-1652 metrics: recall@K, "Recall@top1" and mean AP (Market-1501 style), streamed.

Facts (Sample4Geo's ``evaluate/university.py``; docs/official_code_notes.md, "Retrieval evaluation"): per query
the gallery is ranked by similarity; "good" = gallery items with the query's class, "junk" = items removed before
scoring. AP uses the trapezoid rule (average of the precision just before and at each good hit); CMC starts at the
first good hit. "Recall@top1" (reported here as ``"R@1%"``) is the CMC at index ``round(0.01 × |gallery|)`` (Python
``round``, full gallery size), i.e. a hit within the first ``round(0.01 |G|) + 1`` places — the official off-by-one
is kept. Queries without any good gallery item are skipped but still count in the denominators, as officially.

Two protocols, always labelled in the output:

* ``"original"`` — the University-1652 protocol: only gallery items labelled -1 are junk; the gallery
  classes that no query shares (the 250 distractor buildings) stay in as distractors;
* ``"sample4geo"`` — what the Sample4Geo evaluation effectively does: gallery items whose class is not
  among the query classes are junk too (distractors removed); numbers come out higher.

Tie rule: a gallery item ranks above a good item only if its similarity is strictly greater (the same
optimistic rule as :mod:`crossview.evaluate.retrieval`); the official code's order for exact ties depends
on ``argsort`` and is unspecified.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from crossview.device import device_of
from crossview.evaluate.retrieval import _check, as_tensor, compute_dtype

PROTOCOLS = ("original", "sample4geo")


def junk_mask(query_labels: np.ndarray, gallery_labels: np.ndarray, protocol: str) -> np.ndarray:
    """Boolean mask of gallery items removed before scoring under ``protocol``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"University-1652 protocol must be one of {PROTOCOLS}, got {protocol!r}")
    junk = gallery_labels == -1
    if protocol == "sample4geo":
        junk |= ~np.isin(gallery_labels, np.unique(query_labels))
    return junk


@torch.no_grad()
def good_positions(
    query_desc: Any,
    query_labels: Sequence[int] | np.ndarray,
    gallery_desc: Any,
    gallery_labels: Sequence[int] | np.ndarray,
    protocol: str = "original",
    *,
    device: str | torch.device | None = None,
    block: int = 256,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per query: the first good position (-1 if the query has no good item) and its AP in [0, 1].

    Positions are 0-based places in the ranked gallery after junk removal. Returns
    ``(first_good, ap, n_junk)``.
    """
    q, g = as_tensor(query_desc), as_tensor(gallery_desc)
    _check(q, g)
    ql = np.asarray(query_labels, dtype=np.int64).reshape(-1)
    gl = np.asarray(gallery_labels, dtype=np.int64).reshape(-1)
    if ql.shape[0] != q.shape[0] or gl.shape[0] != g.shape[0]:
        raise ValueError(f"labels do not match descriptors: {ql.shape[0]} query labels for {q.shape[0]} queries, "
                         f"{gl.shape[0]} gallery labels for {g.shape[0]} gallery items")
    junk = junk_mask(ql, gl, protocol)
    dev, dtype = device_of(device, q, g), compute_dtype(q, g)
    g_dev = g.to(dev, dtype)
    gl_dev = torch.from_numpy(gl).to(dev)
    keep = torch.from_numpy(~junk).to(dev)
    n_g = g.shape[0]
    first = np.full(q.shape[0], -1, dtype=np.int64)
    ap = np.zeros(q.shape[0], dtype=np.float64)
    neg_inf = float("-inf")
    for q0 in range(0, q.shape[0], block):
        q1 = min(q0 + block, q.shape[0])
        sim = q[q0:q1].to(dev, dtype) @ g_dev.T
        lab = torch.from_numpy(ql[q0:q1]).to(dev)
        good = (gl_dev[None, :] == lab[:, None]) & keep[None, :]
        bad = ~good & keep[None, :]
        n_good = good.sum(1)
        kg = int(n_good.max())
        if kg == 0:
            continue
        # good scores, best first (padding -inf beyond each row's count)
        g_scores = sim.masked_fill(~good, neg_inf).topk(kg, dim=1).values
        # number of non-junk bad items strictly above each good score
        bad_sorted = sim.masked_fill(~bad, neg_inf).sort(dim=1).values
        above = n_g - torch.searchsorted(bad_sorted, g_scores.contiguous(), right=True)
        j = torch.arange(kg, device=dev)
        rows = (above + j[None, :]).to(torch.float64)  # 0-based places of the good items after junk removal
        valid = j[None, :] < n_good[:, None]
        prec_new = (j[None, :] + 1) / (rows + 1)
        prec_old = torch.where(rows > 0, j[None, :] / rows.clamp(min=1), torch.ones_like(rows))
        terms = torch.where(valid, (prec_old + prec_new) / 2, torch.zeros_like(rows))
        ap_b = terms.sum(1) / n_good.clamp(min=1)
        has = (n_good > 0).cpu().numpy()
        first[q0:q1] = np.where(has, above[:, 0].cpu().numpy(), -1)
        ap[q0:q1] = np.where(has, ap_b.cpu().numpy(), 0.0)
    return first, ap, int(junk.sum())


def top1_percent_index(n_gallery: int) -> int:
    """CMC index of the official "Recall@top1": ``round(0.01 × |gallery|)`` (Python rounding)."""
    return round(n_gallery * 0.01)


def evaluate_university(
    query_desc: Any,
    query_labels: Sequence[int] | np.ndarray,
    gallery_desc: Any,
    gallery_labels: Sequence[int] | np.ndarray,
    protocol: str = "original",
    ks: Sequence[int] = (1, 5, 10),
    *,
    device: str | torch.device | None = None,
    block: int = 256,
) -> dict[str, Any]:
    """R@1/5/10, R@1 % ("Recall@top1") and AP in percent for one direction under one protocol.

    Returns the metric keys plus ``"protocol"``, ``"queries"``, ``"references"`` (gallery size),
    ``"junk"`` (gallery items removed), ``"skipped_queries"`` and ``"chance_R@1"``.
    """
    first, ap, n_junk = good_positions(query_desc, query_labels, gallery_desc, gallery_labels, protocol,
                                       device=device, block=block)
    n_q, n_g = first.shape[0], as_tensor(gallery_desc).shape[0]
    hit = first >= 0
    out: dict[str, Any] = {}
    for k in ks:
        out[f"R@{k}"] = 100.0 * float(np.count_nonzero(hit & (first < k))) / n_q
    t = top1_percent_index(n_g)
    out["R@1%"] = 100.0 * float(np.count_nonzero(hit & (first <= t))) / n_q
    out["R@1%_k"] = t + 1
    out["AP"] = 100.0 * float(ap.sum()) / n_q
    out["chance_R@1"] = 100.0 / max(1, n_g - n_junk)
    out.update(protocol=protocol, queries=int(n_q), references=int(n_g), junk=n_junk,
               skipped_queries=int(np.count_nonzero(~hit)))
    return out
