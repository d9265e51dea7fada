"""HomoFlow (ours, not the published HC-Net: crossview.fine.homoflow): planted-geometry conventions, the untrained
model, errors, ``localize`` and a short training run on synthetic panoramas of a flat textured world."""

from __future__ import annotations

import random

import pytest
import torch

from crossview.errors import ConfigError
from crossview.fine import create_fine, fine_config, homoflow, load_fine
from crossview.fine import data as fine_data
from crossview.geometry.homography import dlt, image_corners, warp_image

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small tensors run faster on one thread


# the old hcnet_lite0_tiny variant, on which these tests were written
LITE0_TINY = {"feature_index": 2, "feature_dim": 64, "pano_size": [128, 256], "bev_size": 128, "aerial_size": 128,
              "hidden": 64, "iterations": 4}
TINY = {**LITE0_TINY, "weights": None, "feature_index": 1, "bev_size": 64, "aerial_size": 64, "pano_size": [64, 128],
        "feature_dim": 16, "hidden": 16, "iterations": 3, "bev_metres_per_pixel": 1.0, "eye_height_m": 2.0,
        "loss": {"corners": 1.0, "correlation_dense": 1.0}}


def flat_batch(n: int, seed: int, ground_hw=(128, 256), tile_px: int = 128):
    samples = fine_data.flat_world_samples(n, seed=seed, tile_px=tile_px, tile_m=64.0, ground_hw=ground_hw,
                                           random_heading=True, worlds=2)
    ds = fine_data.FineDataset(samples, ground_hw, tile_px)
    return fine_data.collate([ds[i] for i in range(n)])


def test_true_homography_lays_the_view_onto_the_tile_and_reads_back_the_pose():
    """End to end conventions: data poses, spherical transform under a wrong prior, target corners, DLT, read-out."""
    batch = flat_batch(4, seed=3, ground_hw=(256, 512))
    model = create_fine("homoflow_lite0", **LITE0_TINY, weights=None, bev_metres_per_pixel=0.5, eye_height_m=2.0)
    aerial, mpp = model.prepare(batch)
    noise = torch.tensor([0.0, 30.0, -40.0, 10.0])  # true heading − prior
    prior = batch["heading"] - noise
    bev = model.make_bev(batch["ground"], prior)
    xy_px = torch.stack([64 + batch["xy"][:, 0] / mpp, 64 - batch["xy"][:, 1] / mpp], -1)
    src = image_corners(128, 128).expand(4, 4, 2)
    h = dlt(src, homoflow.target_corners(model, xy_px, noise, mpp))
    pose = model.read_pose(h, prior, mpp)
    assert torch.allclose(pose["xy_m"], batch["xy"], atol=1e-3)
    assert hcnet_heading_err(pose["heading_deg"], batch["heading"]).max() < 1e-2
    valid = warp_image(torch.ones_like(bev[:, :1]), h, (128, 128))[:, 0] > 0.99
    for i in range(4):
        right = (warp_image(bev[i:i + 1], h[i:i + 1], (128, 128))[0] - aerial[i]).abs()[:, valid[i]].mean()
        h_off = dlt(src[:1], homoflow.target_corners(model, xy_px[i:i + 1] + 6.0, noise[i:i + 1], mpp[i:i + 1]))
        wrong = (warp_image(bev[i:i + 1], h_off, (128, 128))[0] - aerial[i]).abs()[:, valid[i]].mean()
        assert right < 0.035 and wrong > 1.8 * right  # measured: about 0.02 against 0.06–0.09


def hcnet_heading_err(a, b):
    d = torch.remainder(a - b, 360.0)
    return torch.minimum(d, 360.0 - d)


def test_untrained_model_starts_at_the_tile_centre_and_the_prior_and_has_finite_gradients():
    model = create_fine("homoflow_lite0", **TINY)
    batch = flat_batch(2, seed=1)
    model.eval()
    with torch.no_grad():
        p = model.predict(batch, heading_prior=torch.tensor([10.0, 200.0]))
    assert p["xy"].abs().max() < 1e-4  # zero-initialised update head: the initial homography
    assert torch.allclose(p["heading"], torch.tensor([10.0, 200.0]), atol=1e-3)
    assert ((p["confidence"] >= 0) & (p["confidence"] <= 1)).all()
    assert p["homography"].shape == (2, 3, 3) and p["bev"].shape == (2, 3, 64, 64)
    model.train()
    loss, parts = model.loss(batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    grads = [q.grad for q in model.parameters() if q.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.update.head.weight.grad.abs().sum() > 0
    assert {"homography", "correlation", "correlation_dense", "err_m"} <= set(parts)


def test_full_size_variant_has_the_official_shapes():
    cfg = fine_config("homoflow_b0")
    model = create_fine("homoflow_b0")
    assert (model.bev_cells, model.aerial_cells) == (16, 16)  # 512 px at stride 32: the 16×16 correlation
    assert model.bev_encoder.dim == 320 and cfg["iterations"] == 6 and cfg["bev_fov_deg"] == 170.0
    assert model.update.body[0].in_channels == 2 * 81 + 2  # radius-4 window on a 2-level pyramid + flow
    assert cfg["prior_deg"] == 45.0


def test_config_errors_name_the_key():
    from crossview.errors import ConfigError

    with pytest.raises(ConfigError, match="no_such_key"):
        create_fine("homoflow_lite0", no_such_key=1)
    with pytest.raises(ConfigError, match="unknown fine model"):
        fine_config("homoflow_b7")
    with pytest.raises(ConfigError, match="eye_height_m"):
        create_fine("homoflow_b0", bev_metres_per_pixel=0.2, eye_height_m=None)
    model = create_fine("homoflow_lite0", **TINY)
    batch = flat_batch(1, seed=0)
    batch["camera"] = ["pinhole"]
    with pytest.raises(ConfigError, match="panoramas"):
        model.predict(batch)


def test_localize_returns_a_pose_in_the_shared_interface(tmp_path):
    from crossview.fine import localize
    from crossview.fine.pose import Pose

    model = create_fine("homoflow_lite0", **TINY).eval()
    sample = fine_data.flat_world_samples(1, seed=4, tile_px=128, tile_m=64.0, ground_hw=(64, 128))[0]
    pose = localize(sample.ground, sample.aerial, heading_prior=30.0, metres_per_pixel=0.5, tile="t.png", model=model)
    assert isinstance(pose, Pose) and pose.tile == "t.png"
    assert abs(pose.x_m) < 1e-3 and abs(pose.y_m) < 1e-3 and pose.heading_deg == pytest.approx(30.0, abs=1e-3)
    assert pose.extras["homography"].shape == (3, 3)
    with pytest.raises(ConfigError, match="metres_per_pixel"):
        localize(sample.ground, sample.aerial, model=model)


def test_homoflow_learns_to_place_panoramas_on_a_flat_world(tmp_path):
    """A short CPU run (about 10 s on one thread): the held-out median position error falls far below the
    tile-centre baseline and the heading error far below the ±45° prior's."""
    from crossview.fine.evaluate import evaluate
    from crossview.fine.presets import resolve_config
    from crossview.fine.train import train_loop

    train = fine_data.flat_world_samples(96, seed=0, tile_px=64, tile_m=64.0, ground_hw=(64, 128),
                                         random_heading=True, worlds=4)
    test = fine_data.flat_world_samples(32, seed=99, tile_px=64, tile_m=64.0, ground_hw=(64, 128),
                                        random_heading=True, worlds=2)
    torch.manual_seed(0)
    model = create_fine("homoflow_lite0", **{**LITE0_TINY, "feature_index": 1, "bev_size": 32, "aerial_size": 32,
                                              "pano_size": [64, 128], "feature_dim": 32, "hidden": 32,
                                              "iterations": 3, "bev_metres_per_pixel": 2.0, "eye_height_m": 2.0,
                                              "feature_norm": True,
                                              "loss": {"corners": 1.0, "correlation_dense": 1.0}})
    cfg = resolve_config("homoflow-synthetic-cpu", {"steps": 150, "lr": 3e-3, "log_every": 1000, "final_eval": False})
    train_loop(model, cfg, train, None, tmp_path, lambda *a: None, "cpu", random.Random(0), None)
    m = evaluate(model, test, "prior", seed=17, prior_deg=45.0)
    # measured: median 1.97 m against 12.6 m; heading 3.7° against 17.1°
    assert m["baseline_tile_centre_median_m"] > 10.0
    assert m["median_m"] < 0.4 * m["baseline_tile_centre_median_m"]
    assert m["heading_median_deg"] < 0.5 * m["baseline_prior_heading_median_deg"]
    again = evaluate(load_fine(tmp_path), test, "prior", seed=17, prior_deg=45.0)  # the checkpoint reloads
    assert again["median_m"] == pytest.approx(m["median_m"], abs=1e-4)
