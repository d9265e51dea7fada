"""The synthetic world is read by the benchmark readers with no special case, and agrees with its own poses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crossview.data import read_dataset


def _poses(root: Path) -> dict[str, dict]:
    lines = (root / "crossview_poses.jsonl").read_text().splitlines()
    return {p["image"]: p for p in map(json.loads, lines)}


@pytest.fixture(scope="module")
def vigor(tmp_path_factory) -> Path:
    from crossview.synth import generate

    return Path(generate("vigor", tmp_path_factory.mktemp("synth") / "vigor", scale="tiny", seed=0))


@pytest.mark.parametrize("label_set, tol", [("original", 0.5 + 1e-9), ("corrected", 1e-4)])
def test_synth_vigor_every_split_matches_poses(vigor, label_set, tol):
    meta = json.loads((vigor / "crossview_meta.json").read_text())
    poses = _poses(vigor)
    panos = {k: p for k, p in poses.items() if p["camera"] == "panorama"}
    settings = (("same", "train", None), ("same", "test", None),
                ("cross", "train", {"NewYork", "Seattle"}), ("cross", "test", {"Chicago", "SanFrancisco"}))
    for area, split, cities in settings:
        sp = read_dataset("vigor", vigor, split, area=area, label_set=label_set)
        want = [p for p in panos.values() if (cities is None and p["split"] == split) or
                (cities is not None and p["city"] in cities)]
        assert len(sp) == len(want), (area, split)
        n_tiles = sum(1 for c in (cities or meta["cities"]) for _ in (vigor / "satellite" / c).iterdir())
        assert len(sp.references) == n_tiles
        for rec in sp.records:
            pose = poses[rec.query_path.relative_to(vigor).as_posix()]
            assert rec.group == pose["city"] and rec.heading_deg == pose["heading_deg"] == 0.0
            assert rec.gps == pytest.approx((pose["lat"], pose["lon"]), abs=1e-7)
            refs = [sp.references[i] for i in rec.positives + rec.semi_positives]
            assert [r.path.relative_to(vigor).as_posix() for r in refs] == [t["tile"] for t in pose["tiles"]]
            want_xy = [(t["x"], t["y"]) for t in pose["tiles"]]
            assert np.abs(np.subtract(rec.pixel_xy, want_xy)).max() <= tol
            for ref in refs:
                assert ref.metres_per_pixel == pytest.approx(meta["cities"][ref.group]["metres_per_pixel"])
