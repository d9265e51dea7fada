"""Homography utilities (crossview.geometry.homography) on planted homographies: DLT, layouts, warping."""

from __future__ import annotations

import math

import pytest
import torch

from crossview.geometry.homography import (
    dlt,
    four_point_homography,
    image_corners,
    similarity_homography,
    transform_points,
    warp_image,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small tensors run faster on one thread


def random_homographies(b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    h[:, :2, :2] += 0.3 * torch.randn(b, 2, 2, generator=g, dtype=torch.float64)
    h[:, :2, 2] = 40 * torch.randn(b, 2, generator=g, dtype=torch.float64)
    h[:, 2, :2] = 1e-3 * torch.randn(b, 2, generator=g, dtype=torch.float64)
    return h


# ---------------------------------------------------------------------------------------------------- homography


def test_four_point_dlt_recovers_planted_homographies_exactly_in_a_batch():
    h = random_homographies(16)
    src = image_corners(256, 320, dtype=torch.float64).expand(16, 4, 2)
    dst = transform_points(h, src)
    est = dlt(src, dst)
    assert est.shape == (16, 3, 3)
    assert torch.allclose(est, h / h[:, 2:, 2:], atol=1e-9)
    # float32 inputs come back float32 and still close
    est32 = dlt(src.float(), dst.float())
    assert est32.dtype == torch.float32
    probe = torch.rand(16, 50, 2, dtype=torch.float64) * 256
    assert (transform_points(est32.double(), probe) - transform_points(h, probe)).abs().max() < 1e-2


def test_least_squares_dlt_with_many_noisy_points_and_weights():
    h = random_homographies(4, seed=1)
    g = torch.Generator().manual_seed(2)
    src = torch.rand(4, 200, 2, generator=g, dtype=torch.float64) * 256
    dst = transform_points(h, src)
    assert torch.allclose(dlt(src, dst), h / h[:, 2:, 2:], atol=1e-8)
    noisy = dst + 0.5 * torch.randn(dst.shape, generator=g, dtype=torch.float64)
    probe = torch.rand(4, 50, 2, generator=g, dtype=torch.float64) * 256
    err = (transform_points(dlt(src, noisy), probe) - transform_points(h, probe)).norm(dim=-1)
    assert err.mean() < 0.3  # 200 points with 0.5 px noise average out
    # gross outliers with zero weight do not matter
    bad = noisy.clone()
    bad[:, :20] += 80.0
    w = torch.ones(4, 200, dtype=torch.float64)
    w[:, :20] = 0.0
    err_w = (transform_points(dlt(src, bad, weights=w), probe) - transform_points(h, probe)).norm(dim=-1)
    err_unw = (transform_points(dlt(src, bad), probe) - transform_points(h, probe)).norm(dim=-1)
    assert err_w.mean() < 0.3 < 5.0 < err_unw.mean()


def test_dlt_gradients_are_finite_and_match_finite_differences():
    src = image_corners(16, 16, dtype=torch.float64).expand(2, 4, 2).clone()
    disp = (torch.randn(2, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda d: dlt(src, src + d), (disp,))
    h = four_point_homography(src.float(), disp.detach().float().view(2, 2, 2, 2).permute(0, 3, 1, 2).requires_grad_())
    h.sum().backward()


def test_four_point_layouts_agree_and_warp_moves_content_where_h_says():
    src = image_corners(32, 32).expand(1, 4, 2)
    disp = torch.tensor([[[1.0, 2.0], [-3.0, 0.5], [0.0, -1.0], [2.0, 2.0]]])
    net_layout = disp.transpose(1, 2).reshape(1, 2, 2, 2)  # (dx/dy, corner row, corner col)
    assert torch.allclose(four_point_homography(src, disp), four_point_homography(src, net_layout))
    img = torch.zeros(1, 1, 32, 32)
    img[..., 10, 6] = 1.0  # pixel centre (6.5, 10.5)
    h = similarity_homography(1.0, 0.0, 5.0, -3.0).float()
    out = warp_image(img, h, (32, 32), mode="nearest")
    assert out[0, 0, 7, 11] == 1.0 and out.sum() == 1.0
    rot = similarity_homography(1.0, math.pi / 2, 0.0, 0.0, centre=(16.0, 16.0)).float()
    assert torch.allclose(transform_points(rot, torch.tensor([[[16.0, 6.0]]])), torch.tensor([[[26.0, 16.0]]]),
                          atol=1e-5)  # a point above the centre goes to its right: clockwise on screen


def test_dlt_rejects_bad_shapes():
    with pytest.raises(ValueError, match="N>=4"):
        dlt(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match=r"\(B, N, 2\)"):
        dlt(torch.zeros(4, 2), torch.zeros(4, 2))


