"""Weighted 2-D Procrustes (Kabsch) in closed form, differentiable, batched.

For weights w and point pairs (a_i, g_i) it finds the rotation R and translation t minimising
``Σ w_i ‖R·a_i + t − g_i‖²``. In 2-D the optimum rotation angle has a closed form,
``θ = atan2(Σ w (a'_x g'_y − a'_y g'_x), Σ w (a'·g'))`` with centred points a', g' — the same answer as the SVD of the
weighted cross-covariance with the determinant sign fix, but with no reflection case and smooth gradients
everywhere except where both sums vanish (a degenerate configuration, flagged by ``ok``).
"""

from __future__ import annotations

import torch

from crossview.geometry.transforms import rotation_matrix


def weighted_procrustes(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None,
                        fixed_rotation: torch.Tensor | None = None,
                        eps: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rigid (R, t) with ``dst ≈ R·src + t``.

    Args:
        src, dst: (..., N, 2) corresponding points.
        weights: (..., N) non-negative; uniform when None.
        fixed_rotation: (..., 2, 2) to solve the translation only (known orientation).
    Returns:
        R (..., 2, 2), t (..., 2), ok (...) — False when the weights are all zero or the weighted source
        points are (nearly) collinear, so the rotation is not determined (FG²'s rank check).
    """
    if src.shape != dst.shape or src.shape[-1] != 2:
        raise ValueError(f"src and dst must both be (..., N, 2); got {tuple(src.shape)} and {tuple(dst.shape)}")
    if weights is None:
        weights = torch.ones(src.shape[:-1], dtype=src.dtype, device=src.device)
    wsum = weights.sum(-1, keepdim=True)
    w = weights / wsum.clamp(min=eps)
    mu_s = (w.unsqueeze(-1) * src).sum(-2)
    mu_d = (w.unsqueeze(-1) * dst).sum(-2)
    a = src - mu_s.unsqueeze(-2)
    g = dst - mu_d.unsqueeze(-2)
    cov = torch.einsum("...n,...ni,...nj->...ij", w, a, a)
    # Smallest eigenvalue of the 2×2 covariance relative to its trace: ~0 when the points are collinear.
    tr = cov[..., 0, 0] + cov[..., 1, 1]
    det = cov[..., 0, 0] * cov[..., 1, 1] - cov[..., 0, 1] * cov[..., 1, 0]
    disc = torch.sqrt(((tr / 2) ** 2 - det).clamp(min=0))
    lam_min = tr / 2 - disc
    ok = (wsum.squeeze(-1) > eps) & (lam_min > 1e-6 * tr.clamp(min=eps))
    if fixed_rotation is None:
        s = (w * (a[..., 0] * g[..., 1] - a[..., 1] * g[..., 0])).sum(-1)
        c = (w * (a * g).sum(-1)).sum(-1)
        r = rotation_matrix(torch.atan2(s, c))
    else:
        r = fixed_rotation.to(src.dtype).expand(*src.shape[:-2], 2, 2)
        ok = wsum.squeeze(-1) > eps
    t = mu_d - (r @ mu_s.unsqueeze(-1)).squeeze(-1)
    return r, t, ok
