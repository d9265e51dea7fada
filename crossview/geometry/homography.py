"""Planar homographies: differentiable batched DLT, point mapping, image warping, flow fields.

Points are continuous pixel coordinates (x right, y down, origin at the top-left corner of the image), shape
(B, N, 2). A homography ``H`` (B, 3, 3) maps source points to destination points: ``dst ~ H · [x, y, 1]``.
The four-corner parameterisation (HC-Net, IHN) orders corners top-left, top-right, bottom-left, bottom-right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crossview.geometry.types import ArrayLike, Device, DType


def _check_points(name: str, pts: torch.Tensor) -> None:
    if pts.dim() != 3 or pts.shape[-1] != 2:
        raise ValueError(f"{name} must be (B, N, 2), got shape {tuple(pts.shape)}")


def _normaliser(pts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Similarity T (B, 3, 3) moving the weighted centroid to 0 and the mean distance to √2 (Hartley)."""
    w = weights / weights.sum(1, keepdim=True)
    centre = (w.unsqueeze(-1) * pts).sum(1)
    dist = ((pts - centre.unsqueeze(1)).norm(dim=-1) * w).sum(1).clamp(min=1e-12)
    s = (2.0 ** 0.5) / dist
    t = torch.zeros(pts.shape[0], 3, 3, dtype=pts.dtype, device=pts.device)
    t[:, 0, 0] = s
    t[:, 1, 1] = s
    t[:, 0, 2] = -s * centre[:, 0]
    t[:, 1, 2] = -s * centre[:, 1]
    t[:, 2, 2] = 1.0
    return t


def transform_points(h: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Map points (B, N, 2) through homographies (B, 3, 3) (or one (3, 3)); returns (B, N, 2)."""
    if h.dim() == 2:
        h = h.unsqueeze(0)
    ones = torch.ones_like(pts[..., :1])
    p = torch.cat([pts, ones], -1) @ h.transpose(-1, -2)
    z = p[..., 2:]
    z = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    return p[..., :2] / z


def dlt(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Homographies (B, 3, 3) with ``dst ~ H·src`` from N >= 4 correspondences (B, N, 2), normalised so H[2,2] = 1.

    With four points the 8×8 system is solved exactly (HC-Net's 4-point DLT); with more it is a weighted
    least-squares fit of the algebraic error. Points are Hartley-normalised first and the solve runs in float64,
    so it is well conditioned at image scales; gradients flow through ``torch.linalg.solve``. Degenerate inputs
    (three collinear points among four) give a singular system.
    """
    _check_points("src", src)
    _check_points("dst", dst)
    if src.shape != dst.shape or src.shape[1] < 4:
        raise ValueError(f"src and dst must both be (B, N>=4, 2), got {tuple(src.shape)} and {tuple(dst.shape)}")
    out_dtype = torch.promote_types(src.dtype, dst.dtype)
    s, d = src.double(), dst.double()
    b, n, _ = s.shape
    w = torch.ones(b, n, dtype=s.dtype, device=s.device) if weights is None else weights.double().expand(b, n)
    ts, td = _normaliser(s, w), _normaliser(d, w)
    sn, dn = transform_points(ts, s), transform_points(td, d)
    x, y = sn[..., 0], sn[..., 1]
    u, v = dn[..., 0], dn[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -x * u, -y * u], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -x * v, -y * v], -1)
    a = torch.cat([rows_u, rows_v], 1)  # (B, 2N, 8)
    rhs = torch.cat([u, v], 1).unsqueeze(-1)
    if n == 4 and weights is None:
        sol = torch.linalg.solve(a, rhs)
    else:
        ww = torch.cat([w, w], 1).unsqueeze(-1)
        sol = torch.linalg.solve(a.transpose(1, 2) @ (ww * a), a.transpose(1, 2) @ (ww * rhs))
    hn = torch.cat([sol.squeeze(-1), torch.ones(b, 1, dtype=s.dtype, device=s.device)], 1).view(b, 3, 3)
    h = torch.linalg.solve(td, hn) @ ts
    return (h / h[:, 2:, 2:]).to(out_dtype)


def image_corners(height: int, width: int, dtype: DType = torch.float32, device: Device = None) -> torch.Tensor:
    """The four image corners (4, 2) in the order top-left, top-right, bottom-left, bottom-right."""
    return torch.tensor([[0.0, 0.0], [width, 0.0], [0.0, height], [width, height]], dtype=dtype, device=device)


def four_point_homography(src_corners: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """H mapping ``src_corners`` (B, 4, 2) to ``src_corners + displacement``.

    ``displacement`` may be (B, 4, 2) or the network layout (B, 2, 2, 2) = (dx/dy, corner row, corner column).
    """
    if displacement.dim() == 4:
        displacement = displacement.flatten(2).transpose(1, 2)
    return dlt(src_corners, src_corners + displacement)


def pixel_grid(height: int, width: int, stride: float = 1.0, dtype: DType = torch.float32,
               device: Device = None) -> torch.Tensor:
    """Centres of the ``stride``-pixel cells of an image, (H/stride · W/stride, 2), row-major, in pixel units."""
    ys = (torch.arange(int(height // stride), dtype=dtype, device=device) + 0.5) * stride
    xs = (torch.arange(int(width // stride), dtype=dtype, device=device) + 0.5) * stride
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).reshape(-1, 2)


def warp_image(image: torch.Tensor, h: torch.Tensor, out_size: tuple[int, int], mode: str = "bilinear",
               padding_mode: str = "zeros") -> torch.Tensor:
    """Warp ``image`` (B, C, Hi, Wi) by ``h`` (source pixels -> output pixels) into an (B, C, *out_size) image."""
    b, _, hi, wi = image.shape
    ho, wo = out_size
    grid = pixel_grid(ho, wo, dtype=image.dtype, device=image.device).expand(b, -1, -1)
    h = h.expand(b, 3, 3) if h.dim() == 3 else h.unsqueeze(0).expand(b, 3, 3)
    src = transform_points(torch.linalg.inv(h.double()).to(image.dtype), grid)
    norm = torch.stack([src[..., 0] / wi, src[..., 1] / hi], -1) * 2 - 1
    return F.grid_sample(image, norm.view(b, ho, wo, 2), mode=mode, padding_mode=padding_mode, align_corners=False)


def similarity_homography(scale: ArrayLike, angle_rad: ArrayLike, tx: ArrayLike, ty: ArrayLike,
                          centre: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """(B, 3, 3) homographies: rotate by ``angle_rad`` (clockwise on screen, since y points down) and scale about
    ``centre``, then translate by (tx, ty). Arguments are floats or (B,) tensors."""
    args = torch.broadcast_tensors(*(torch.as_tensor(a, dtype=torch.float64) for a in (scale, angle_rad, tx, ty)))
    s, a, tx, ty = (t.reshape(-1) for t in args)
    cx, cy = centre
    c, si = s * torch.cos(a), s * torch.sin(a)
    h = torch.zeros(s.shape[0], 3, 3, dtype=torch.float64)
    h[:, 0, 0], h[:, 0, 1] = c, -si
    h[:, 1, 0], h[:, 1, 1] = si, c
    h[:, 0, 2] = cx - c * cx + si * cy + tx
    h[:, 1, 2] = cy - si * cx - c * cy + ty
    h[:, 2, 2] = 1.0
    return h
