"""Calibrated uncertainty: split-conformal factors on hand-computed cases, stated rates met on held-out draws, and
the sidecar read by ``locate`` (68 % / 95 % radii in locate.json) on the synthetic world with test doubles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crossview.locate.calibrate import (
    CALIBRATION,
    calibration_path,
    conformal_quantile,
    coverage,
    fit,
    load_calibration,
    radii,
)


def test_conformal_quantile_hand_computed():
    scores = np.arange(1.0, 11.0)[::-1]  # 10 scores, order does not matter
    assert conformal_quantile(scores, 0.68) == 8.0  # ⌈11 · 0.68⌉ = 8th smallest
    assert conformal_quantile(scores, 0.95) == 10.0  # ⌈11 · 0.95⌉ = 11 > 10: the largest
    assert fit([2.0, 4.0], [1.0, 2.0]) == {"68": 2.0, "95": 2.0, "n": 2}  # error / raw
    assert fit([2.0, 4.0, 9.0]) == {"68": 9.0, "95": 9.0, "n": 3}  # the error itself: ⌈4 · 0.68⌉ = 3rd smallest
    cal = {"factors": {"fine+near": {"68": 1.5, "95": 3.0, "n": 50}}, "normalise": True}
    assert radii(cal, "fine+near", 2.0) == {"68": 3.0, "95": 6.0}
    assert radii({**cal, "normalise": False}, "fine+near", 2.0) == {"68": 1.5, "95": 3.0}  # metres, as fitted
    assert radii(cal, "fine", 2.0) is None and radii(None, "fine", 2.0) is None


def test_stated_rates_hold_on_held_out_draws():
    """Errors whose scale the raw score only roughly tracks (2-D Gaussian, σ = raw · U(0.5, 2)): factors fitted on
    one set of draws hold their rates on another within ±3 points."""
    rng = np.random.default_rng(0)

    def draws(n):
        raw = rng.uniform(1.0, 10.0, n)
        err = np.hypot(*rng.normal(size=(2, n))) * raw * rng.uniform(0.5, 2.0, n)
        return err, raw

    f = fit(*draws(2000))
    err, raw = draws(2000)
    rows = [{"error_m": e, "uncertainty_key": "fine", "radii_m": {"68": f["68"] * s, "95": f["95"] * s}}
            for e, s in zip(err, raw)]
    cov = coverage(rows)
    assert cov["all"]["photos"] == 2000 and cov["uncalibrated"] == 0
    assert abs(cov["all"]["rate_68"] - 0.68) < 0.03 and abs(cov["fine"]["rate_95"] - 0.95) < 0.03


def test_calibration_path_and_load(tmp_path):
    (tmp_path / "run").mkdir()
    assert calibration_path(tmp_path / "run", "x/tiles.index") == tmp_path / "run" / CALIBRATION
    assert calibration_path(tmp_path / "run" / "model.pt", "x") == tmp_path / "run" / CALIBRATION
    assert calibration_path(None, tmp_path / "tiles.index") == tmp_path / "tiles.index.calibration.json"
    assert load_calibration(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert load_calibration(tmp_path / "bad.json") is None


@pytest.fixture(scope="module")
def tiny_world(tiny_vigor_world):
    return tiny_vigor_world


def test_locate_reads_its_calibration(tiny_world, tmp_path):
    """Calibrate on the first half of the test panoramas, locate the second: locate.json states 68 % and 95 % radii
    from the sidecar. (Too few photos here for rates: benchmarks/experiments/locate_calibration.py measures those.)"""
    from doubles import NoisyTruthLocalizer, OracleRetrieval

    from crossview.locate import Locator
    from crossview.locate.calibrate import calibrate, measure_coverage

    world, oracle, fine = tiny_world, OracleRetrieval(tiny_world), NoisyTruthLocalizer(tiny_world)
    cal = calibrate(world, oracle, fine, n=20, out=tmp_path / "demo", min_samples=1, gps_noise_m=30.0)
    assert cal["path"] == str(tmp_path / "demo" / "tiles.index.calibration.json")
    assert cal["score"] == "error_m" and sum(f["n"] for f in cal["factors"].values()) == cal["photos"]
    f = cal["factors"]["fine+near"]
    assert 0 < f["68"] <= f["95"]
    held = measure_coverage(world, oracle, fine, n=20, out=tmp_path / "demo", gps_noise_m=30.0)
    assert held["coverage"]["uncalibrated"] == 0 and held["coverage"]["all"]["photos"] == held["photos"]
    rec = next(json.loads(line) for line in (world / "crossview_poses.jsonl").read_text().splitlines()
               if '"test"' in line and '"panorama"' in line)
    loc = Locator(tmp_path / "demo" / "tiles.index", model=oracle, fine_model=fine)
    r = loc.locate(world / rec["image"], heading_prior=(rec["heading_deg"], 20), near=(rec["lat"], rec["lon"], 30),
                   out=tmp_path / "out")
    u = r["uncertainty"]
    assert r["flags"] == [] and u["kind"] == "fine+near"  # the oracle answers near the truth: inside the area
    assert u["calibrated"] and r["uncertainty_m"] == pytest.approx(u["68"])
    assert (u["68"], u["95"]) == (pytest.approx(f["68"]), pytest.approx(f["95"]))
    assert json.loads((tmp_path / "out" / "locate.json").read_text())["uncertainty"] == u
    # without a search area this kind of answer was not calibrated: the raw radius, said to be uncalibrated
    r = loc.locate(world / rec["image"], heading_prior=(rec["heading_deg"], 20), near="none")
    assert r["uncertainty"]["calibrated"] is False and r["uncertainty"]["68"] is None
