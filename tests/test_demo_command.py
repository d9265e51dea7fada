"""`crossview demo` end to end at the tiny scale with minimal training: every stage runs and reports."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path, capsys):
    from crossview.cli import main

    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--scale", "tiny", "--set", "epochs=1", "--set", "batch_size=8",
                 "--fine", "pillarmatch-tiny-test", "--locate", "3", "--gps-noise", "30"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "search all tiles" in printed and "near a GPS fix off by up to 30 m" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["references"] == 64
    r = summary["retrieval"]  # the training run's last held-out evaluation
    assert r["chance_R@1"] == pytest.approx(100 / 64)  # one tile of the 64 by chance
    hits = r["R@1"] * r["queries"] / 100  # a percentage of whole queries
    assert r["queries"] > 0 and hits == pytest.approx(round(hits), abs=1e-6) and r["R@1"] <= r["R@5"] <= r["R@10"]
    gps = summary["locate"]["locate_gps"]
    assert gps["photos"] == 3 and gps["gps_noise_m"] == 30.0 and gps["gps_fix"]["median_m"] <= 30.0
    assert gps["fine"]["median_m"] is not None and summary["locate"]["locate"]["fine"]["median_m"] is not None
    assert (out / "pairs.png").is_file() and (out / "fine" / "checkpoint.pt").is_file()
    assert (out / "locate_gps" / "per_photo.jsonl").is_file()
    # phone photos and panoramas near the fix, placed by the committed search-area posterior
    for camera, words in (("pinhole", "phone photos (pinhole)"), ("panorama", "panoramas near")):
        located = summary["locate"][f"locate_{camera}_posterior_gps"]
        assert words in printed and located["camera"] == camera and located["photos"] == 3
        assert located["fine_search"] == "posterior" and located["fine"]["median_m"] is not None
