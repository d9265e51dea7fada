"""Geometry with known answers: cameras, BEV projection, rigid transforms, Procrustes, RANSAC, geo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossview.geometry import bev, geo
from crossview.geometry.cameras import PanoramaCamera, PinholeCamera, fov_mask, roll_panorama
from crossview.geometry.procrustes import weighted_procrustes
from crossview.geometry.ransac import ransac_procrustes
from crossview.geometry.transforms import (
    angle_diff_deg,
    apply_rigid,
    invert_rigid,
    pose_to_rigid,
    rigid_to_pose,
    rotation_matrix,
)


def _random_pixels(w, h, n=200, seed=0, margin=0.5):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g, dtype=torch.float64) * (w - 2 * margin) + margin
    v = torch.rand(n, generator=g, dtype=torch.float64) * (h - 2 * margin) + margin
    return u, v


@pytest.mark.parametrize("camera", [PanoramaCamera(512, 256), PinholeCamera(320, 240, 90.0),
                                    PinholeCamera(200, 100, 60.0, pitch_deg=-30.0),
                                    PinholeCamera(128, 128, 90.0, pitch_deg=-90.0)])
def test_pixel_ray_pixel_round_trip(camera):
    u, v = _random_pixels(camera.width, camera.height)
    ray = camera.pixel_to_ray(u, v)
    assert torch.allclose(ray.norm(dim=-1), torch.ones_like(u))
    u2, v2, valid = camera.ray_to_pixel(ray * 3.7)  # any positive scale
    assert valid.all()
    assert torch.allclose(u2, u, atol=1e-9) and torch.allclose(v2, v, atol=1e-9)


def test_panorama_directions_known_answers():
    cam = PanoramaCamera(360, 180)
    # centre column looks forward at the horizon; a quarter to the right looks right; top row looks up
    assert torch.allclose(cam.pixel_to_ray(180.0, 90.0), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64),
                          atol=1e-12)
    assert torch.allclose(cam.pixel_to_ray(270.0, 90.0), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
                          atol=1e-12)
    assert torch.allclose(cam.pixel_to_ray(10.0, 0.0)[2], torch.tensor(1.0, dtype=torch.float64))
    # 45° below the horizon: row 3/4 of the height
    u, v, _ = cam.ray_to_pixel(torch.tensor([0.0, 1.0, -1.0]))
    assert float(u) == pytest.approx(180.0) and float(v) == pytest.approx(135.0)


def test_pinhole_fov_edges():
    cam = PinholeCamera(200, 100, 90.0)
    u, v, valid = cam.ray_to_pixel(torch.tensor([[1.0, 1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, -1.0, 0.0]]))
    assert u[0] == pytest.approx(200.0) and u[1] == pytest.approx(0.0)
    assert valid.tolist() == [True, True, False]  # the point behind the camera is invalid


def test_ground_point_bev_round_trip():
    """Ground pixel -> ground point -> BEV pixel -> metres -> projected pixel gives the start pixel back."""
    for cam in (PanoramaCamera(512, 256), PinholeCamera(256, 192, 80.0)):
        u, v = _random_pixels(cam.width, cam.height, seed=1)
        v = cam.height * 0.55 + (v / cam.height) * cam.height * 0.4  # below the horizon
        xy, valid = bev.pixel_to_ground(cam, u, v, camera_height_m=1.7)
        assert valid.all()
        px = bev.metres_to_bev_pixel(xy, 64, 0.5)
        xy2 = bev.bev_pixel_to_metres(px, 64, 0.5)
        pts = torch.cat([xy2, torch.full_like(xy2[..., :1], -1.7)], -1)
        u2, v2, ok = cam.ray_to_pixel(pts)
        assert ok.all()
        assert torch.allclose(u2, u, atol=1e-8) and torch.allclose(v2, v, atol=1e-8)


def test_bev_grid_layout():
    g = bev.bev_grid(4, 2.0)
    assert g[0, 0].tolist() == [-3.0, 3.0]  # top-left = west, north
    assert g[3, 3].tolist() == [3.0, -3.0]
    px = bev.metres_to_bev_pixel(g, 4, 2.0)
    assert px[0, 0].tolist() == [0.5, 0.5]


def test_warp_to_bev_reads_the_right_pixels():
    """A panorama whose pixel values encode their own column/row is warped to the BEV; each BEV cell reads the
    column of its azimuth and the row of its depression angle."""
    cam = PanoramaCamera(360, 180, heading_deg=30.0)
    uu, vv = torch.meshgrid(torch.arange(180.0) + 0.5, torch.arange(360.0) + 0.5, indexing="ij")
    img = torch.stack([vv, uu]).unsqueeze(0).double()  # channel 0 = u, 1 = v
    grid, valid = bev.ground_plane_grid(cam, 8, 2.0, camera_height_m=2.0, world=True, dtype=torch.float64)
    out = bev.warp_to_bev(img, grid, valid)[0]
    xy = bev.bev_grid(8, 2.0, torch.float64)
    bearing = torch.rad2deg(torch.atan2(xy[..., 0], xy[..., 1]))  # clockwise from north
    rel = torch.remainder(bearing - 30.0 + 180.0, 360.0)  # column of that bearing, 1 px per degree
    dist = xy.norm(dim=-1)
    row = 90.0 + torch.rad2deg(torch.atan2(torch.full_like(dist, 2.0), dist))
    interior = (rel > 1) & (rel < 359)
    assert torch.allclose(out[0][interior], rel[interior], atol=0.02)
    assert torch.allclose(out[1], row, atol=0.02)


def test_roll_panorama_heading_and_fov_mask():
    img = torch.arange(8.0).view(1, 1, 8)
    rolled, applied = roll_panorama(img, 90.0)
    assert applied == 90.0
    # new centre column (index 4 spans azimuth 0..45 of the new view) shows what was 90° to the right before
    assert rolled[0, 0, 4] == img[0, 0, 6]
    m = fov_mask(8, -90.0, 180.0)
    assert m.tolist() == [0, 0, 1, 1, 1, 1, 0, 0]


def test_pose_rigid_round_trip_and_meaning():
    r, t = pose_to_rigid(torch.tensor(3.0), torch.tensor(-4.0), torch.tensor(90.0))
    # a landmark 10 m east of the camera is straight ahead when the camera faces east
    g = apply_rigid(r, t, torch.tensor([[13.0, -4.0]]))
    assert torch.allclose(g, torch.tensor([[0.0, 10.0]]), atol=1e-5)
    x, y, h = rigid_to_pose(r, t)
    assert (float(x), float(y), float(h)) == pytest.approx((3.0, -4.0, 90.0), abs=1e-4)
    ri, ti = invert_rigid(r, t)
    assert torch.allclose(apply_rigid(ri, ti, g), torch.tensor([[13.0, -4.0]]), atol=1e-5)
    assert float(angle_diff_deg(350.0, 10.0)) == pytest.approx(20.0)


def _planted(n=50, seed=0, theta=0.7, t=(3.0, -2.0), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    src = torch.randn(n, 2, generator=g, dtype=dtype) * 10
    r = rotation_matrix(torch.tensor(theta, dtype=dtype))
    dst = apply_rigid(r, torch.tensor(t, dtype=dtype), src)
    return src, dst, r, torch.tensor(t, dtype=dtype)


def test_procrustes_exact_without_noise():
    src, dst, r, t = _planted()
    w = torch.rand(50, dtype=torch.float64) + 0.1
    r2, t2, ok = weighted_procrustes(src, dst, w)
    assert ok and torch.allclose(r2, r, atol=1e-12) and torch.allclose(t2, t, atol=1e-12)
    # batched, and a rotation beyond ±90° (where a naive sign would pick the reflection)
    src2, dst2, rr, tt = _planted(seed=1, theta=2.9, t=(-30.0, 12.0))
    rb, tb, okb = weighted_procrustes(torch.stack([src, src2]), torch.stack([dst, dst2]))
    assert okb.all() and torch.allclose(rb[1], rr, atol=1e-12) and torch.allclose(tb[1], tt, atol=1e-10)
    # known rotation: translation only
    _, t3, _ = weighted_procrustes(src, dst, fixed_rotation=r)
    assert torch.allclose(t3, t, atol=1e-12)


def test_procrustes_flags_degenerate_input():
    src = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    _, _, ok = weighted_procrustes(src, src)
    assert not ok
    _, _, ok = weighted_procrustes(src, src, torch.zeros(3))
    assert not ok


def test_procrustes_gradcheck():
    src, dst, _, _ = _planted(n=6)
    dst = dst + 0.3 * torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    w = torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) + 0.2
    src.requires_grad_(True)
    dst.requires_grad_(True)
    w.requires_grad_(True)

    def fn(s, d, ww):
        r, t, _ = weighted_procrustes(s, d, ww)
        return r, t

    assert torch.autograd.gradcheck(fn, (src, dst, w))


def test_ransac_recovers_pose_with_outliers():
    src, dst, r, t = _planted(n=200, seed=5, theta=-1.2, t=(10.0, 4.0))
    g = torch.Generator().manual_seed(0)
    noisy = dst + 0.05 * torch.randn(dst.shape, generator=g, dtype=dst.dtype)
    out = torch.rand(200, generator=g) < 0.4  # 40 % gross outliers
    noisy[out] = torch.rand(int(out.sum()), 2, generator=g, dtype=dst.dtype) * 60 - 30
    r_ls, t_ls, _ = weighted_procrustes(src, noisy)
    assert (t_ls - t).norm() > 1.0  # plain least squares is pulled off by the outliers
    r2, t2, inliers, _ = ransac_procrustes(src, noisy, iterations=200, generator=g)
    assert (t2 - t).norm() < 0.05 and abs(float(torch.atan2(r2[1, 0], r2[0, 0])) + 1.2) < 2e-3
    assert (inliers == ~out).float().mean() > 0.97


def test_geo_conversions():
    lat0, lon0 = 40.7128, -74.006
    lat, lon = geo.offset_to_latlon(lat0, lon0, 30.0, -40.0)
    e, n = geo.latlon_to_offset(lat0, lon0, lat, lon)
    assert (float(e), float(n)) == pytest.approx((30.0, -40.0), abs=1e-6)
    assert float(geo.distance_m(lat0, lon0, lat, lon)) == pytest.approx(50.0, rel=1e-6)
    assert float(geo.haversine_m(0.0, 0.0, 1.0, 0.0)) == pytest.approx(math.pi / 180 * geo.EARTH_RADIUS_M)
    px, py = geo.metres_to_tile_pixel(10.0, 5.0, (640, 640), 0.1)
    assert (float(px), float(py)) == (420.0, 270.0)
    x, y = geo.tile_pixel_to_metres(px, py, (640, 640), 0.1)
    assert (float(x), float(y)) == pytest.approx((10.0, 5.0))
    # VIGOR: 640 px at zoom 20 around New York's latitude is about 0.113 m/px with scale 1... (Google scale 2 → /2)
    assert geo.web_mercator_mpp(40.7, 20, 1) == pytest.approx(0.1133, abs=2e-3)
    assert geo.vigor_delta_to_pixel(10, 20) == (300.0, 330.0)
    assert np.isclose(geo.web_mercator_mpp(49.015, 18, 2), 0.1958, atol=5e-4)


def test_ransac_with_known_rotation_solves_translation_only():
    src, dst, r, t = _planted(n=100, seed=6, theta=0.4, t=(-5.0, 7.0))
    g = torch.Generator().manual_seed(1)
    noisy = dst.clone()
    noisy[:40] = torch.rand(40, 2, generator=g, dtype=dst.dtype) * 60 - 30
    r2, t2, inliers, _ = ransac_procrustes(src, noisy, iterations=50, generator=g, fixed_rotation=r)
    assert torch.equal(r2, r) and torch.allclose(t2, t, atol=1e-9) and inliers[40:].all() and not inliers[:40].any()


def test_wgs84_geodesics_known_answers():
    """Textbook WGS84 distances: a degree of latitude at the equator (110,574.389 m), a degree of longitude on
    it (a·π/180 = 111,319.491 m), the meridian quadrant (10,001,965.729 m) and Karney's Wellington–Salamanca
    example (19,959,679.267 m); the tangent plane is exactly invertible and agrees with the geodesic over a tile."""
    from crossview.geometry.geodesy import enu_to_latlon, geodesic_m, latlon_to_enu

    assert geodesic_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(110574.389, abs=1e-3)
    assert geodesic_m(0.0, 0.0, 0.0, 1.0) == pytest.approx(111319.491, abs=1e-3)
    assert geodesic_m(0.0, 0.0, 90.0, 0.0) == pytest.approx(10001965.729, abs=1e-3)
    assert geodesic_m(-41.32, 174.81, 40.96, -5.50) == pytest.approx(19959679.267, abs=1e-2)
    lat, lon = enu_to_latlon(np.array([30.0, -250.0]), np.array([-40.0, 120.0]), 40.7, -74.0)
    e, n = latlon_to_enu(lat, lon, 40.7, -74.0)
    assert np.allclose(e, [30.0, -250.0], atol=1e-6) and np.allclose(n, [-40.0, 120.0], atol=1e-6)
    d = geodesic_m(40.7, -74.0, lat, lon)
    assert np.allclose(d, np.hypot([30.0, -250.0], [-40.0, 120.0]), rtol=1e-5)  # millimetres
    # a sphere is 0.13 % off north and 0.25 % off east at 40.7°N: the reason for one ellipsoidal geodesy
    r = geo.EARTH_RADIUS_M
    assert geodesic_m(40.7, -74.0, 40.7 + 1e-3, -74.0) / (math.radians(1e-3) * r) == pytest.approx(0.99868, abs=1e-5)
    east = math.radians(1e-3) * r * math.cos(math.radians(40.7))
    assert geodesic_m(40.7, -74.0, 40.7, -74.0 + 1e-3) / east == pytest.approx(1.00255, abs=1e-5)
