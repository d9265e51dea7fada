"""HC-Net: the homography utilities on planted homographies, then the model, its losses, its pose read-out and a
short training run on synthetic panoramas of a flat textured world."""

from __future__ import annotations

import json
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


# ---------------------------------------------------------------------------------------------------- model

fine_data = pytest.importorskip("crossview.fine.data")
hcnet = pytest.importorskip("crossview.fine.hcnet")

TINY = {"weights": None, "feature_index": 1, "bev_size": 64, "aerial_size": 64, "pano_size": [64, 128],
        "feature_dim": 16, "hidden": 16, "iterations": 3, "bev_metres_per_pixel": 1.0, "eye_height_m": 2.0}


def flat_batch(n: int, seed: int, ground_hw=(128, 256), tile_px: int = 128):
    samples = fine_data.flat_world_samples(n, seed=seed, tile_px=tile_px, tile_m=64.0, ground_hw=ground_hw,
                                           random_heading=True, worlds=2)
    ds = fine_data.FineDataset(samples, ground_hw, tile_px)
    return fine_data.collate([ds[i] for i in range(n)])


def test_true_homography_lays_the_view_onto_the_tile_and_reads_back_the_pose():
    """End to end conventions: data poses, spherical transform under a wrong prior, target corners, DLT, read-out."""
    batch = flat_batch(4, seed=3, ground_hw=(256, 512))
    model = hcnet.build_model(hcnet.hcnet_config("hcnet_lite0_tiny", weights=None, bev_metres_per_pixel=0.5,
                                                 eye_height_m=2.0))
    aerial, mpp = model.prepare(batch)
    noise = torch.tensor([0.0, 30.0, -40.0, 10.0])  # true heading − prior
    prior = batch["heading"] - noise
    bev = model.make_bev(batch["ground"], prior)
    xy_px = torch.stack([64 + batch["xy"][:, 0] / mpp, 64 - batch["xy"][:, 1] / mpp], -1)
    src = image_corners(128, 128).expand(4, 4, 2)
    h = dlt(src, hcnet.target_corners(model, xy_px, noise, mpp))
    pose = model.read_pose(h, prior, mpp)
    assert torch.allclose(pose["xy_m"], batch["xy"], atol=1e-3)
    assert hcnet_heading_err(pose["heading_deg"], batch["heading"]).max() < 1e-2
    valid = warp_image(torch.ones_like(bev[:, :1]), h, (128, 128))[:, 0] > 0.99
    for i in range(4):
        right = (warp_image(bev[i:i + 1], h[i:i + 1], (128, 128))[0] - aerial[i]).abs()[:, valid[i]].mean()
        h_off = dlt(src[:1], hcnet.target_corners(model, xy_px[i:i + 1] + 6.0, noise[i:i + 1], mpp[i:i + 1]))
        wrong = (warp_image(bev[i:i + 1], h_off, (128, 128))[0] - aerial[i]).abs()[:, valid[i]].mean()
        assert right < 0.035 and wrong > 1.8 * right  # measured: about 0.02 against 0.06–0.09


def hcnet_heading_err(a, b):
    d = torch.remainder(a - b, 360.0)
    return torch.minimum(d, 360.0 - d)


def test_untrained_model_starts_at_the_tile_centre_and_the_prior_and_has_finite_gradients():
    model = hcnet.build_model(hcnet.hcnet_config("hcnet_lite0_tiny", **TINY))
    batch = flat_batch(2, seed=1)
    model.eval()
    with torch.no_grad():
        p = model.predict(batch, torch.tensor([10.0, 200.0]))
    assert p["xy"].abs().max() < 1e-4  # zero-initialised update head: the initial homography
    assert torch.allclose(p["heading"], torch.tensor([10.0, 200.0]), atol=1e-3)
    assert ((p["confidence"] >= 0) & (p["confidence"] <= 1)).all()
    assert p["homography"].shape == (2, 3, 3) and p["bev"].shape == (2, 3, 64, 64)
    model.train()
    loss, parts = model.loss(batch, {"corners": 1.0, "correlation_dense": 1.0}, torch.Generator().manual_seed(0))
    loss.backward()
    grads = [q.grad for q in model.parameters() if q.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.update.head.weight.grad.abs().sum() > 0
    assert {"homography", "correlation", "correlation_dense", "err_m"} <= set(parts)


def test_full_size_variant_has_the_official_shapes():
    cfg = hcnet.hcnet_config("hcnet_b0")
    model = hcnet.build_model(cfg)
    assert (model.bev_cells, model.aerial_cells) == (16, 16)  # 512 px at stride 32: the 16×16 correlation
    assert model.bev_encoder.dim == 320 and cfg["iterations"] == 6 and cfg["bev_fov_deg"] == 170.0
    assert model.update.body[0].in_channels == 2 * 81 + 2  # radius-4 window on a 2-level pyramid + flow
    assert cfg["prior_deg"] == 45.0


def test_config_errors_name_the_key():
    from crossview.errors import ConfigError

    with pytest.raises(ConfigError, match="no_such_key"):
        hcnet.hcnet_config("hcnet_lite0_tiny", no_such_key=1)
    with pytest.raises(ConfigError, match="unknown HC-Net variant"):
        hcnet.hcnet_config("hcnet_b7")
    with pytest.raises(ConfigError, match="eye_height_m"):
        hcnet.hcnet_config("hcnet_b0", bev_metres_per_pixel=0.2)
    model = hcnet.build_model(hcnet.hcnet_config("hcnet_lite0_tiny", **TINY))
    batch = flat_batch(1, seed=0)
    batch["camera"] = ["pinhole"]
    with pytest.raises(ConfigError, match="panoramas"):
        model.predict(batch)


def test_localize_returns_a_pose_in_the_shared_interface(tmp_path):
    train_mod = pytest.importorskip("crossview.fine.hcnet_train")
    from crossview.fine.pose import Pose

    model = hcnet.build_model(hcnet.hcnet_config("hcnet_lite0_tiny", **TINY)).eval()
    sample = fine_data.flat_world_samples(1, seed=4, tile_px=128, tile_m=64.0, ground_hw=(64, 128))[0]
    pose = train_mod.localize(model, sample.ground, sample.aerial, heading_prior=30.0, metres_per_pixel=0.5,
                              tile="t.png")
    assert isinstance(pose, Pose) and pose.tile == "t.png"
    assert abs(pose.x_m) < 1e-3 and abs(pose.y_m) < 1e-3 and pose.heading_deg == pytest.approx(30.0, abs=1e-3)
    assert pose.extras["pixel"] == pytest.approx((64.0, 64.0), abs=1e-2)
    assert pose.extras["homography"].shape == (3, 3)
    from crossview.errors import ConfigError

    with pytest.raises(ConfigError, match="metres_per_pixel"):
        train_mod.localize(model, sample.ground, sample.aerial)


def test_evaluation_priors_are_fixed_by_the_seed_and_inside_the_prior():
    train_mod = pytest.importorskip("crossview.fine.hcnet_train")
    headings = torch.rand(200).numpy() * 360
    a = train_mod.heading_priors(headings, 45.0, seed=17)
    b = train_mod.heading_priors(headings, 45.0, seed=17)
    c = train_mod.heading_priors(headings, 45.0, seed=18)
    assert (a == b).all() and not (a == c).all()
    err = hcnet_heading_err(torch.as_tensor(a), torch.as_tensor(headings))
    assert err.max() <= 45.0 + 1e-9 and err.mean() > 15.0  # uniform in ±45°: mean 22.5°


def test_hcnet_learns_to_place_panoramas_on_a_flat_world(tmp_path):
    """A short CPU run (about 10 s on one thread): the held-out median position error falls far below the
    tile-centre baseline and the heading error far below the ±45° prior's."""
    train_mod = pytest.importorskip("crossview.fine.hcnet_train")
    train = fine_data.flat_world_samples(96, seed=0, tile_px=64, tile_m=64.0, ground_hw=(64, 128),
                                         random_heading=True, worlds=4)
    test = fine_data.flat_world_samples(32, seed=99, tile_px=64, tile_m=64.0, ground_hw=(64, 128),
                                        random_heading=True, worlds=2)
    model = {"weights": "lite", "feature_index": 1, "bev_size": 32, "aerial_size": 32, "pano_size": [64, 128],
             "feature_dim": 32, "hidden": 32, "iterations": 3, "bev_metres_per_pixel": 2.0, "eye_height_m": 2.0,
             "feature_norm": True}
    cfg = {"steps": 150, "batch_size": 8, "lr": 3e-3, "log_every": 1000, "model": model,
           "loss": {"corners": 1.0, "correlation_dense": 1.0}}
    run = train_mod.train(cfg, train, tmp_path / "run", eval_data=test)
    m = json.loads((run / "metrics.json").read_text())
    # measured: median 1.97 m against 12.6 m; heading 3.7° against 17.1°
    assert m["baseline_tile_centre_median_m"] > 10.0
    assert m["median_m"] < 0.4 * m["baseline_tile_centre_median_m"]
    assert m["heading_median_deg"] < 0.5 * m["baseline_prior_heading_median_deg"]
    # the run folder reloads into the same predictions
    again = train_mod.evaluate(run, test, prior_deg=45.0, seed=17)
    assert again["median_m"] == pytest.approx(m["median_m"], abs=1e-4)


def test_shared_preset_configs_map_onto_hcnet_training_and_a_run_folder_evaluates(tmp_path):
    train_mod = pytest.importorskip("crossview.fine.hcnet_train")
    presets = pytest.importorskip("crossview.fine.presets")
    from crossview.errors import ConfigError

    for name, preset in train_mod.HCNET_PRESETS.items():
        cfg = {**presets.BASE, **preset}
        mine = train_mod.config_from_preset(cfg)
        assert mine["clip"] == cfg["grad_clip"] and mine["area"] == cfg["area"], name
        assert mine["prior_deg"] == 45.0
    vigor = train_mod.config_from_preset({**presets.BASE, **train_mod.HCNET_PRESETS["hcnet-vigor-same"]})
    model_cfg = hcnet.hcnet_config(vigor["variant"], **vigor["model"])
    assert model_cfg["bev_size"] == 512 and model_cfg["iterations"] == 6 and vigor["lr"] == 3.5e-4
    with pytest.raises(ConfigError, match="panorama"):
        train_mod.config_from_preset({**presets.BASE, **train_mod.HCNET_PRESETS["hcnet-synthetic-cpu"],
                                      "camera": "pinhole"})
    cfg = {**presets.BASE, **train_mod.HCNET_PRESETS["hcnet-synthetic-cpu"], "steps": 2, "batch_size": 2,
           "model": TINY}
    samples = fine_data.flat_world_samples(6, seed=5, tile_px=64, tile_m=64.0, ground_hw=(64, 128))
    run = train_mod.train_from_preset(cfg, samples[:4], tmp_path / "run")
    assert (run / "checkpoint.pt").exists() and (run / "config.json").exists()
    report = train_mod.evaluate_run(run, samples[4:], tmp_path / "eval", pictures=2)
    assert report["metrics"]["count"] == 2 and report["orientation"] == "prior±45"
    assert (tmp_path / "eval" / "metrics.json").exists() and (tmp_path / "eval" / "predictions.npz").exists()
    assert len(list((tmp_path / "eval" / "pictures").glob("*.png"))) == 2
    # a finished run with the same config is not trained again
    mtime = (run / "checkpoint.pt").stat().st_mtime_ns
    train_mod.train_from_preset(cfg, samples[:4], tmp_path / "run")
    assert (run / "checkpoint.pt").stat().st_mtime_ns == mtime
