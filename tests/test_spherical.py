"""Spherical transform: a panorama of a flat textured ground warps onto the top-down view of that ground."""

from __future__ import annotations

import math

import pytest
import torch

from crossview.errors import ConfigError
from crossview.geometry.spherical import TopDownCamera, spherical_transform, spherical_uv

EYE_M = 1.7


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small tensors run faster on one thread


def ground_texture(east: torch.Tensor, north: torch.Tensor) -> torch.Tensor:
    """A flat ground: channels 0/1 are the coordinates themselves (so a sample tells where it came from), channel 2
    a smooth pattern for a photometric comparison. Shapes (...,) -> (3, ...)."""
    pattern = torch.sin(east * 0.9) * torch.cos(north * 0.7) + 0.5 * torch.sin(0.3 * east + 0.5 * north)
    return torch.stack([east, north, pattern])


def render_panorama(height: int, width: int, heading_deg: float, eye_m: float = EYE_M) -> torch.Tensor:
    """Equirectangular panorama (1, 3, H, W) of ``ground_texture`` seen from ``eye_m`` above it; sky rows are 0.

    Written from the convention alone (column u looks at heading + (u/W − 0.5)·360° clockwise from north, row v at
    polar angle v/H·180° from the zenith), independently of the code under test."""
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                          torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    az = torch.deg2rad(heading_deg + (u / width - 0.5) * 360.0)
    below = torch.deg2rad(v / height * 180.0 - 90.0)  # angle below the horizon
    dist = eye_m / torch.tan(below.clamp(min=1e-3))
    img = ground_texture(dist * torch.sin(az), dist * torch.cos(az))
    img = torch.where(below > 0, img, torch.zeros_like(img))
    return img.unsqueeze(0).float()


def expected_topdown(size: int, mpp: float) -> torch.Tensor:
    c = (torch.arange(size, dtype=torch.float64) + 0.5 - size / 2) * mpp
    north, east = torch.meshgrid(-c, c, indexing="ij")
    return ground_texture(east, north).float()


def test_flat_ground_panorama_maps_to_top_down_view_within_a_tenth_of_a_pixel():
    mpp, size = 0.1, 128  # a 12.8 m square around the camera
    cam = TopDownCamera(size=size, metres_per_pixel=mpp, eye_height_m=EYE_M)
    heading = 37.0
    pano = render_panorama(512, 1024, heading)
    bev = spherical_transform(pano, cam, heading_deg=heading)[0]
    truth = expected_topdown(size, mpp)
    err_px = (bev[:2] - truth[:2]).norm(dim=0) / mpp
    # Measured (torch 2.14, CPU): median 0.0025 px, 99th percentile 0.017 px, max 0.023 px.
    assert err_px.median() < 0.01
    assert torch.quantile(err_px.flatten(), 0.99) < 0.05
    assert err_px.max() < 0.1
    photometric = (bev[2] - truth[2]).abs().mean() / truth[2].std()
    assert photometric < 0.02


def test_far_field_error_grows_with_distance_but_stays_subpixel_inside_the_tile_scale():
    # A 64 m wide view at 0.5 m/px (about a VIGOR tile at 128 px) from a 512×1024 panorama.
    mpp, size = 0.5, 128
    cam = TopDownCamera(size=size, metres_per_pixel=mpp, eye_height_m=EYE_M)
    bev = spherical_transform(render_panorama(512, 1024, 0.0), cam)[0]
    truth = expected_topdown(size, mpp)
    err_px = (bev[:2] - truth[:2]).norm(dim=0) / mpp
    radius = torch.as_tensor(truth[:2]).norm(dim=0)
    inner = err_px[radius < 16.0]
    outer = err_px[radius >= 16.0]
    # Measured: within 16 m median 0.005 px / max 0.024 px; beyond, median 0.08 px / max 0.56 px.
    assert inner.median() < 0.02 and inner.max() < 0.1
    assert outer.median() < 0.3 and outer.max() < 1.0  # grazing rays: a panorama row spans metres of ground there
    assert outer.median() > inner.median()


def test_wrong_heading_rotates_the_view_by_the_error():
    mpp, size = 0.1, 96
    cam = TopDownCamera(size=size, metres_per_pixel=mpp, eye_height_m=EYE_M)
    true_heading, assumed = 10.0, -20.0  # the transform believes the centre column looks 30° further left
    bev = spherical_transform(render_panorama(512, 1024, true_heading), cam, heading_deg=assumed)[0]
    truth = expected_topdown(size, mpp)
    delta = math.radians(true_heading - assumed)
    # The output pixel at BEV offset (e, n) shows the ground at the offset rotated clockwise by delta.
    e, n = truth[0].double(), truth[1].double()
    rot_e = e * math.cos(delta) + n * math.sin(delta)
    rot_n = -e * math.sin(delta) + n * math.cos(delta)
    err_px = ((bev[0] - rot_e) ** 2 + (bev[1] - rot_n) ** 2).sqrt() / mpp
    assert err_px.median() < 0.02
    unrotated = ((bev[0] - e) ** 2 + (bev[1] - n) ** 2).sqrt() / mpp
    assert unrotated.median() > 5.0


def test_rolling_the_panorama_a_quarter_turn_rotates_the_view_by_ninety_degrees():
    cam = TopDownCamera(size=64, fov_deg=170.0)
    pano = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(0))
    bev = spherical_transform(pano, cam)
    # Rolling right by W/4 brings the content from the left: the centre column now shows what was at −90°, i.e.
    # the camera turned 90° anticlockwise, equivalently the ground turns 90° clockwise in a north-up view with
    # the heading left at 0.
    rolled = spherical_transform(torch.roll(pano, 32, dims=-1), cam)
    assert torch.allclose(rolled, torch.rot90(bev, k=-1, dims=(-2, -1)), atol=1e-5)
    # ... and telling the transform about the roll (heading −90°) undoes it.
    undone = spherical_transform(torch.roll(pano, 32, dims=-1), cam, heading_deg=-90.0)
    assert torch.allclose(undone, bev, atol=1e-4)  # float32 sampling-grid rounding (seen: 1.2e-5)


def test_fov_camera_focal_and_batched_headings():
    cam = TopDownCamera(size=(512, 512), fov_deg=170.0)
    assert cam.focal == pytest.approx(256 / math.tan(math.radians(85)))
    assert cam.field_deg == pytest.approx(170.0)
    metric = TopDownCamera(size=100, metres_per_pixel=0.2, eye_height_m=2.0)
    assert metric.focal == pytest.approx(10.0) and metric.fov_deg is None
    uv = spherical_uv(cam, torch.tensor([0.0, 90.0, 450.0]))
    assert uv.shape == (3, 512, 512, 2)
    assert torch.allclose(uv[1], uv[2], atol=1e-6)
    assert ((uv >= 0) & (uv <= 1)).all()
    pano = torch.rand(3, 2, 32, 64, requires_grad=True)
    out = spherical_transform(pano, TopDownCamera(size=16, fov_deg=120.0), torch.tensor([0.0, 45.0, -45.0]))
    out.sum().backward()
    assert out.shape == (3, 2, 16, 16) and torch.isfinite(pano.grad).all() and pano.grad.abs().sum() > 0


def test_bad_camera_settings_are_refused():
    with pytest.raises(ConfigError, match="metres_per_pixel and eye_height_m"):
        TopDownCamera(size=8, metres_per_pixel=0.1)
    with pytest.raises(ConfigError, match="fov_deg"):
        TopDownCamera(size=8, fov_deg=180.0)


def test_agrees_with_the_shared_panorama_camera_model():
    from crossview.geometry import cameras

    pano = cameras.PanoramaCamera(width=1024, height=512)
    cam = TopDownCamera(size=32, metres_per_pixel=0.3, eye_height_m=EYE_M)
    uv = spherical_uv(cam, 0.0, dtype=torch.float64)[0]
    c = (torch.arange(32, dtype=torch.float64) + 0.5 - 16) * 0.3
    north, east = torch.meshgrid(-c, c, indexing="ij")
    rays = torch.stack([east, north, torch.full_like(east, -EYE_M)], -1)
    u, v, _ = pano.ray_to_pixel(rays)
    du = torch.remainder(uv[..., 0] * 1024 - u + 512, 1024) - 512
    assert du.abs().max() < 1e-6
    assert (uv[..., 1] * 512 - v).abs().max() < 1e-6
