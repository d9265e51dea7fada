"""End to end on the synthetic world, with trained models only: the retrieval model of the learning test
(conftest.dense_retrieval_run) finds tiles, PillarMatch (ours, FG²-style matching) trained here places the
camera inside them, and `demo_locate`
scores held-out panoramas against their exact poses.

Protocol: each photo comes with a rough GPS fix (the truth moved by up to 50 m, seeded) that limits the search to
the tiles near it (`locate --near`), and a compass heading off by up to ±20° (FG²'s second-stage range).
Retrieval alone answers the chosen tile's centre and the compass heading; fine localization must beat both.
"""

from __future__ import annotations

import json

import pytest

# PillarMatch on the dense world, stage-2 setting (trained with ±20° yaw noise); frozen ImageNet Lite0 backbone, so the
# training is a few minutes on two cores. The 8 best tiles near the fix are refined (re-ranking by fine confidence).
# Measured (2026-12-02, these models, 100 photos): retrieval alone 52.2 m, GPS fix 33.6 m, fine 7.1 m (the chosen
# tile holds the camera for 74 %), heading 2.0° (compass 9.5°); with 600 fine steps 12.9 m (68 %), too near the
# bar. With a 2-epoch retrieval model (2026-11-24): retrieval 46.7 m, fine 5.2 m (77 %); refining 3 tiles instead
# of 8: 28.2 m (61 %) - the median sits where tile choice succeeds or fails, so the test refines 8.
PM_STEPS = 1200


@pytest.mark.slow
def test_locate_with_trained_models_beats_retrieval_alone(dense_world, dense_retrieval_run, tmp_path):
    from crossview.fine.presets import resolve_config
    from crossview.fine.train import train as fine_train
    from crossview.locate import demo_locate

    fine = fine_train(resolve_config("pillarmatch-synthetic-cpu-locate", {"steps": PM_STEPS, "final_eval": False}),
                      dense_world, tmp_path / "pillarmatch", quiet=True)
    m = demo_locate(dense_world, dense_retrieval_run, fine_run=fine, n=100, out=tmp_path / "locate",
                    heading_noise_deg=20.0, gps_noise_m=50.0, refine=8, top_k=8)
    print(json.dumps({k: m[k] for k in ("retrieval", "fine", "gps_fix")}, indent=1))
    ret, fin = m["retrieval"], m["fine"]
    assert m["photos"] == 100 and m["tiles"] == 400
    # retrieval alone: a tile centre (tiles are ~70 m, spaced half a tile apart) and the compass heading
    assert ret["median_m"] > 8.0 and 5.0 < ret["heading_median_deg"] < 15.0
    # fine localization: metres, not tens of metres, and a better heading than the compass
    assert fin["median_m"] < 0.5 * ret["median_m"], (fin, ret)
    assert fin["median_m"] < 0.5 * m["gps_fix"]["median_m"]
    assert fin["heading_median_deg"] < 0.6 * ret["heading_median_deg"], (fin, ret)
    rows = [json.loads(line) for line in (tmp_path / "locate" / "per_photo.jsonl").read_text().splitlines()]
    assert len(rows) == 100 and all("fine_error_m" in r for r in rows)
