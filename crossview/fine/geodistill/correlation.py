"""GeoDistill's ground-plane projection, FFT correlation and losses (weak contrastive, self-distillation)."""

from __future__ import annotations

import math

import torch

_TWO_PI = 2 * math.pi


def bev_sampling_grid(side: int, height: int, width: int, cell_m: torch.Tensor, camera_height: float = 2.0,
                      device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each cell of a ``side``² ground grid around the camera looks in a (height, width) panorama map.

    Cell (i, j) (row, column; north up) lies r = √((i−c)² + (j−c)²) cells from the camera (c = side/2 − 0.5) at
    α = atan2(i − c, j − c); column u = ((α mod 2π − π/2) mod 2π)/2π · W (north = the centre column), row v =
    atan2(r·``cell_m``, −h)/π · H for a ground plane ``camera_height`` below. Computed in float32 in the official
    order. Returns ``grid_sample`` coordinates (B, side, side, 2) for align_corners=True and the validity (B, side,
    side): 0 ≤ u < W − 1 and 0 ≤ v < H − 1 (the official bilinear weights vanish at exactly W − 1 and beyond; no
    wrap-around)."""
    idx = torch.arange(side, dtype=torch.float32, device=device)
    c = side / 2 - 0.5
    di, dj = (idx - c).view(-1, 1), (idx - c).view(1, -1)
    r = torch.sqrt(di * di + dj * dj)
    alpha = torch.atan2(di.expand(side, side), dj.expand(side, side))
    alpha = torch.remainder(torch.remainder(-math.pi / 2 + torch.remainder(alpha, _TWO_PI), _TWO_PI), _TWO_PI)
    u = (alpha / _TWO_PI * width).expand(cell_m.shape[0], side, side)
    dist = r * cell_m.to(torch.float32).view(-1, 1, 1)
    v = torch.atan2(dist, torch.full_like(dist, -float(camera_height))) / math.pi * height
    valid = (u >= 0) & (u < width - 1) & (v >= 0) & (v < height - 1)
    grid = torch.stack([u / (width - 1) * 2 - 1, v / (height - 1) * 2 - 1], -1)
    return grid, valid


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size``² of a square map (torchvision ``center_crop``: offset int(round((S − size)/2)))."""
    off = int(round((x.shape[-1] - size) / 2.0))
    return x[..., off:off + size, off:off + size]


def xcorr(signal: torch.Tensor, kernel: torch.Tensor, all_pairs: bool = False,
          dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Valid cross-correlation (no flip) summed over channels, by FFT in ``dtype``.

    ``signal`` (B, C, H, W), ``kernel`` (K, C, h, w): (B, H−h+1, W−w+1) for K = B (sample b with kernel b, as
    a grouped ``conv2d``), or every pair (B, K, …) with ``all_pairs``. Returns ``dtype``."""
    hh, ww = signal.shape[-2:]
    kh, kw = kernel.shape[-2:]
    fs = torch.fft.rfft2(signal.to(dtype), s=(hh, ww))
    fk = torch.fft.rfft2(kernel.to(dtype), s=(hh, ww)).conj()
    if all_pairs:
        prod = torch.einsum("bcxy,kcxy->bkxy", fs, fk)
    else:
        if kernel.shape[0] != signal.shape[0]:
            raise ValueError(f"xcorr: {kernel.shape[0]} kernels for {signal.shape[0]} signals (use all_pairs)")
        prod = (fs * fk).sum(1)
    return torch.fft.irfft2(prod, s=(hh, ww))[..., :hh - kh + 1, :ww - kw + 1]


def cosine_map(sat: torch.Tensor, tmpl: torch.Tensor, conf: torch.Tensor | None = None, all_pairs: bool = False,
               dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(num, den) of the window-normalised correlation of templates ``tmpl`` (K, C, c, c) over satellite maps
    ``sat`` (B, C, A, A), optionally weighted by ``conf`` (K, 1, c, c): num = Σ s·t·conf², den = √(Σ s²·conf²)
    · ‖t·conf‖ (the official G2SWeakly correlation). Shapes (B, n, n), or (B, K, n, n) with ``all_pairs``."""
    w = None if conf is None else conf * conf
    num = xcorr(sat, tmpl if w is None else tmpl * w, all_pairs, dtype)
    energy_in = sat.to(dtype).pow(2).sum(1, keepdim=True)
    ones = torch.ones(1, 1, *tmpl.shape[-2:], dtype=dtype, device=sat.device)
    if w is None:
        energy = xcorr(energy_in, ones, all_pairs=True, dtype=dtype)  # (B, 1, n, n)
        tnorm = tmpl.to(dtype).flatten(1).norm(dim=1)
    else:
        energy = xcorr(energy_in, w.to(dtype), all_pairs=True, dtype=dtype)  # (B, K, n, n)
        tnorm = (tmpl.to(dtype) * conf.to(dtype)).flatten(1).norm(dim=1)
    energy = energy.clamp(min=0)  # FFT round-off around empty windows
    if all_pairs:
        den = energy.sqrt() * tnorm.view(1, -1, 1, 1)
    else:
        e = energy[:, 0] if w is None else torch.diagonal(energy, dim1=0, dim2=1).permute(2, 0, 1)
        den = e.sqrt() * tnorm.view(-1, 1, 1)
    return num, den


def g2s_weakly_loss(dmin: torch.Tensor, scale: float = 10.0) -> torch.Tensor:
    """G2SWeakly's batch contrastive loss on the per-pair minimum distances ``dmin`` (M satellites, N templates):
    Σ_{m,n} log(1 + exp(scale·(D_mm − D_mn))) / (M·(N − 1)), the diagonal terms (log 2) included."""
    m, n = dmin.shape
    pos = torch.diagonal(dmin).view(-1, 1)
    return torch.log(1 + torch.exp(scale * (pos - dmin))).sum() / (m * (n - 1))


def distillation_loss(teacher_d: torch.Tensor, student_d: torch.Tensor, tau_t: float = 0.06,
                      tau_s: float = 0.06) -> torch.Tensor:
    """−Σ softmax((1 − d_t/2)/τ_t)·log softmax((1 − d_s/2)/τ_s) / B over all positions of one level."""
    b = teacher_d.shape[0]
    p_t = torch.softmax((1 - teacher_d / 2).flatten(1) / tau_t, 1)
    return -(p_t * torch.log_softmax((1 - student_d / 2).flatten(1) / tau_s, 1)).sum() / b

