"""RANSAC over weighted Procrustes (FG²'s test-time option, after MicKey's scheme).

Minimal hypotheses of three pairs are drawn by the match weights, each is scored by a soft inlier count
``Σ sigmoid((soft − d)·5/soft)`` (weighted by the match weights), and the best one is refined a few times by
weighted Procrustes on its hard inliers (``d < inlier_threshold``).
"""

from __future__ import annotations

import torch

from crossview.geometry.procrustes import weighted_procrustes
from crossview.geometry.transforms import apply_rigid


def ransac_procrustes(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None,
                      iterations: int = 100, inlier_threshold: float = 2.5, soft_threshold: float = 5.0,
                      refine_steps: int = 4, generator: torch.Generator | None = None,
                      fixed_rotation: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Robust (R, t) with ``dst ≈ R·src + t`` for one set of pairs (N, 2).

    With ``fixed_rotation`` (known orientation) each hypothesis is a translation from a single pair.
    Returns R (2, 2), t (2,), the inlier mask (N,) and the best soft score.
    """
    if src.dim() != 2 or src.shape != dst.shape or src.shape[-1] != 2:
        raise ValueError(f"ransac_procrustes takes (N, 2) pairs; got {tuple(src.shape)} and {tuple(dst.shape)}")
    n = src.shape[0]
    if weights is None:
        weights = torch.ones(n, dtype=src.dtype, device=src.device)
    weights = weights.detach().clamp(min=0)
    p = weights + 1e-12
    minimal = 1 if fixed_rotation is not None else 3
    idx = torch.multinomial(p.expand(iterations, n), minimal, replacement=False, generator=generator)
    fixed = None if fixed_rotation is None else fixed_rotation.to(src.dtype).expand(iterations, 2, 2)
    r, t, ok = weighted_procrustes(src[idx], dst[idx], fixed_rotation=fixed)  # (I, 2, 2), (I, 2)
    d = (apply_rigid(r, t, src.expand(iterations, n, 2)) - dst).norm(dim=-1)  # (I, N)
    score = (torch.sigmoid((soft_threshold - d) * 5.0 / soft_threshold) * weights).sum(-1)
    score = torch.where(ok, score, torch.full_like(score, -1.0))
    best = int(score.argmax())
    rb, tb = r[best], t[best]
    inliers = d[best] < inlier_threshold
    for _ in range(refine_steps):
        if int(inliers.sum()) < 3:
            break
        r2, t2, ok2 = weighted_procrustes(src[inliers], dst[inliers], weights[inliers],
                                          fixed_rotation=None if fixed is None else fixed[0])
        if not bool(ok2):
            break
        rb, tb = r2, t2
        new = (apply_rigid(rb, tb, src) - dst).norm(dim=-1) < inlier_threshold
        if torch.equal(new, inliers):
            break
        inliers = new
    return rb, tb, inliers, score[best]
