"""FG²'s pose solvers as published (utils.py of the official code; docs/fine_fg2.md): the weighted 2-D Procrustes
and the probabilistic Procrustes RANSAC, generator-exact."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from crossview.fine.fg2.config import RansacConfig

__all__ = ["official_procrustes", "official_ransac", "soft_inliers"]


def official_procrustes(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor | None = None,
                        eps: float = 1e-16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(R (B, 2, 2), t (B, 1, 2), rank_ok (B,)) with ``b ≈ R·a + t`` for point sets (B, N, 2).

    Weighted (``w`` (B, N)): centroids with w / (Σ|w| + eps), the covariance with the *raw* weights (the official
    ``use_mask`` variant); unweighted: plain means. SVD H = U S Vᵀ, Z = diag(1, sign det(U·Vᵀ)), R = V·Z·Uᵀ,
    t = b̄ − ā·Rᵀ. ``rank_ok`` is False where ``matrix_rank(H) == 1`` (the official test; rank 0 passes)."""
    if w is not None:
        wn = (w / (w.abs().sum(1, keepdim=True) + eps)).unsqueeze(-1)
        a_mean, b_mean = (wn * a).sum(1, keepdim=True), (wn * b).sum(1, keepdim=True)
        h = (a - a_mean).transpose(1, 2) @ (w.unsqueeze(-1) * (b - b_mean))
    else:
        a_mean, b_mean = a.mean(1, keepdim=True), b.mean(1, keepdim=True)
        h = (a - a_mean).transpose(1, 2) @ (b - b_mean)
    rank_ok = torch.linalg.matrix_rank(h) != 1
    u, _, vh = torch.linalg.svd(h)
    v = vh.transpose(1, 2)
    z = torch.eye(2, dtype=h.dtype, device=h.device).unsqueeze(0).repeat(h.shape[0], 1, 1)
    z[:, -1, -1] = torch.sign(torch.linalg.det(u @ v.transpose(1, 2)))
    r = v @ z @ u.transpose(1, 2)
    return r, b_mean - a_mean @ r.transpose(1, 2), rank_ok


def _distances(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (((r @ x.transpose(2, 1)).transpose(2, 1) + t - y).pow(2).sum(-1) + 1e-6).sqrt()


def soft_inliers(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, t: torch.Tensor, th: float) -> torch.Tensor:
    """Σ sigmoid(5/th · (th − d)) over the pairs, d = √(‖R·x + t − y‖² + 1e-6); (B, 1)."""
    return torch.sigmoid(5.0 / th * (th - _distances(x, y, r, t))).sum(-1, keepdim=True)


def _minimal_sets(w: torch.Tensor, k: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` draws of ``k`` indices without replacement from weights ``w`` (B, N): (n, B, k), equal to ``n``
    successive ``torch.multinomial(w, k, generator=generator)`` calls on the CPU (one ``exponential_`` for all)."""
    if w.device.type != "cpu":
        return torch.stack([torch.multinomial(w, k, generator=generator) for _ in range(n)])
    q = torch.empty((n, *w.shape), dtype=w.dtype).exponential_(generator=generator)
    return torch.topk(w.unsqueeze(0) / q, k, dim=-1).indices


def official_ransac(prob: torch.Tensor, sat_xy: torch.Tensor, grd_xy: torch.Tensor,
                    settings: RansacConfig | None = None, *, generator: torch.Generator | None = None,
                    **overrides: Any) -> dict[str, Any]:
    """The official probabilistic Procrustes RANSAC (``e2eProbabilisticProcrustesSolver.estimate_pose``) on the
    matching score ``prob`` (B, N_sat, N_grd) with cell coordinates ``sat_xy`` (N_sat, 2), ``grd_xy`` (N_grd, 2).
    ``settings`` (default: the official ``RansacConfig``; its ``seed`` is not read: pass ``generator``), with any
    field replaced by keyword (``official_ransac(prob, a, b, it_matches=2)``).

    Every random draw is ``torch.multinomial`` (without replacement) from ``generator`` (None: the default CPU
    generator), in the official order, so that after ``torch.manual_seed(101)`` on a bit-identical score it
    returns the official pose: for each of ``it_matches`` rounds, ``num_samples`` pairs from P, then ``it_ransac``
    minimal sets of ``min_set`` pairs from their weights -> unweighted Procrustes -> skipped for the whole batch if
    any element is rank-1 or non-finite, else scored by soft inliers (threshold ``th_soft_inlier``); the best
    hypothesis per element (first maximum) is refined up to ``refinements`` times by weighted Procrustes on its
    round's hard inliers (≤ ``th_inlier``) while their count grows. Returns ``R`` (B, 2, 2), ``t`` (B, 1, 2),
    ``best_soft_inliers`` (B, 1) (threshold ``th_inlier``; (B,) zeros and a zero pose if no hypothesis was
    valid), ``valid_hypotheses``, ``inliers`` (B, num_samples) of the final refinement."""
    rc = dataclasses.replace(settings or RansacConfig(), **overrides)
    it_matches, num_samples, it_ransac, min_set = rc.it_matches, rc.num_samples, rc.it_ransac, rc.min_set
    refinements, th_inlier, th_soft_inlier = rc.refinements, rc.th_inlier, rc.th_soft_inlier
    probs = prob.detach()
    b, _, n_grd = probs.shape
    flat = probs.reshape(b, -1)
    rows = torch.arange(b, device=probs.device)
    hyp_r, hyp_t, hyp_s, hyp_round, rounds = [], [], [], [], []
    for i in range(it_matches):
        idx = torch.multinomial(flat, num_samples, generator=generator)
        x = sat_xy[torch.div(idx, n_grd, rounding_mode="trunc")]
        y = grd_xy[idx % n_grd]
        w = flat.gather(1, idx)
        rounds.append((x, y))
        # the round's it_ransac minimal sets at once, with the very draws of the official one-by-one loop:
        # torch.multinomial without replacement is top-k of w / q with q ~ Exp(1) from one exponential_ call, and
        # CPU exponential_ fills a tensor in order, so one call for the stacked shape gives the same q
        # (tests/test_fg2.py compares with the loop); Procrustes and soft inliers are then solved for all at once
        pick = _minimal_sets(w, min_set, it_ransac, generator)
        xk = x[rows[None, :, None], pick].flatten(0, 1)  # (it_ransac * B, min_set, 2)
        yk = y[rows[None, :, None], pick].flatten(0, 1)
        r, t, rank_ok = official_procrustes(xk, yk)
        r, t = r.view(it_ransac, b, 2, 2), t.view(it_ransac, b, 1, 2)
        # a hypothesis is skipped for the whole batch if any element is rank-1 or non-finite
        valid = (rank_ok.view(it_ransac, b).all(1) & torch.isfinite(r).flatten(1).all(1)
                 & torch.isfinite(t).flatten(1).all(1))
        keep = valid.nonzero().flatten()
        if len(keep) == 0:
            continue
        rv, tv = r[keep], t[keep]  # (K, B, ...)
        k = len(keep)
        sk = soft_inliers(x.repeat(k, 1, 1), y.repeat(k, 1, 1), rv.flatten(0, 1), tv.flatten(0, 1), th_soft_inlier)
        sk = sk.view(k, b, 1)
        hyp_r.extend(rv.unbind(0))
        hyp_t.extend(tv.unbind(0))
        hyp_s.extend(sk.unbind(0))
        hyp_round.extend([i] * k)
    if not hyp_r:
        return {"R": torch.zeros(b, 2, 2, dtype=probs.dtype), "t": torch.zeros(b, 1, 2, dtype=probs.dtype),
                "best_soft_inliers": torch.zeros(b, dtype=probs.dtype), "valid_hypotheses": 0,
                "inliers": torch.zeros(b, num_samples, dtype=probs.dtype)}
    scores = torch.cat(hyp_s, 1)
    best = scores.argmax(1)
    r = torch.stack(hyp_r, 1)[rows, best]
    t = torch.stack(hyp_t, 1)[rows, best]
    xb = torch.stack([rounds[hyp_round[int(best[k])]][0][k] for k in range(b)])
    yb = torch.stack([rounds[hyp_round[int(best[k])]][1][k] for k in range(b)])
    inl_ref = torch.zeros(b, num_samples, dtype=probs.dtype, device=probs.device)
    previous = min_set * torch.ones_like(scores[rows, best])
    for _ in range(refinements):
        inl = ((th_inlier - _distances(xb, yb, r, t)) >= 0).to(probs.dtype)
        count = inl.sum(-1)
        refine = (count >= min_set) & (count > previous)
        previous[refine] = count[refine]
        if not bool(refine.any()):
            break
        inl_ref[refine] = inl[refine]
        r_new, t_new, _ = official_procrustes(xb[refine], yb[refine], inl_ref[refine])
        r[refine], t[refine] = r_new, t_new
    return {"R": r, "t": t, "best_soft_inliers": soft_inliers(xb, yb, r, t, th_inlier),
            "valid_hypotheses": len(hyp_r), "inliers": inl_ref}

