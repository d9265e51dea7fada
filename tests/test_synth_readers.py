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
def vigor(tiny_vigor_world) -> Path:
    return tiny_vigor_world


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


def _generate(tmp_path_factory, layout: str) -> Path:
    from crossview.synth import generate

    return Path(generate(layout, tmp_path_factory.mktemp("synth") / layout, scale="tiny", seed=0))


def _check_pairs(root: Path, sp, poses: dict[str, dict], split: str) -> None:
    """Centre-aligned pairs: each record's query and positive tile are the pose's image and tile."""
    want = {k for k, p in poses.items() if p["split"] == split}
    assert {r.query_path.relative_to(root).as_posix() for r in sp.records} == want
    for rec in sp.records:
        pose = poses[rec.query_path.relative_to(root).as_posix()]
        assert rec.positives == (rec.positives[0],) and not rec.semi_positives
        assert sp.references[rec.positives[0]].path.relative_to(root).as_posix() == pose["tiles"][0]["tile"]


def test_synth_cvusa(tmp_path_factory):
    root = _generate(tmp_path_factory, "cvusa")
    poses = _poses(root)
    for split in ("train", "test"):
        sp = read_dataset("cvusa", root, split)
        _check_pairs(root, sp, poses, split)
        for rec in sp.records:
            pose = poses[rec.query_path.relative_to(root).as_posix()]
            assert rec.gps == pytest.approx((pose["lat"], pose["lon"]), abs=1e-7)
    assert len(read_dataset("cvusa", root, "train")) + len(read_dataset("cvusa", root, "test")) == len(poses)


def test_synth_cvact(tmp_path_factory):
    root = _generate(tmp_path_factory, "cvact")
    meta = json.loads((root / "crossview_meta.json").read_text())
    poses = _poses(root)
    total = 0
    for split in ("train", "val", "test"):
        sp = read_dataset("cvact", root, split)
        _check_pairs(root, sp, poses, split)
        assert sp.meta["skipped"] == 0
        for rec, utm in zip(sp.records, sp.meta["utm"]):
            pose = poses[rec.query_path.relative_to(root).as_posix()]
            want = np.add((pose["east_m"], pose["north_m"]), meta["utm_false_origin"])
            assert np.allclose(utm, want, atol=1e-2)
        total += len(sp)
    assert total == len(poses)


def test_synth_university1652(tmp_path_factory):
    root = _generate(tmp_path_factory, "university1652")
    drones = _poses(root)  # one line per drone image, with its class and its class's satellite image
    train = read_dataset("university1652", root, "train")
    d2s = read_dataset("university1652", root, "drone2sat")
    s2d = read_dataset("university1652", root, "sat2drone")
    for split, folder in ((train, "train/drone"), (d2s, "test/query_drone")):
        want = {k for k in drones if k.startswith(folder + "/")}
        assert {r.query_path.relative_to(root).as_posix() for r in split.records} == want
        for rec in split.records:
            pose = drones[rec.query_path.relative_to(root).as_posix()]
            (pos,) = rec.positives
            assert rec.label == int(pose["class"]) == split.references[pos].label
            assert split.references[pos].path.relative_to(root).as_posix() == pose["satellite"]
    # gallery_drone = the query drone views (as in the real release) plus the distractor classes' views
    gallery = {k.replace("test/query_drone/", "test/gallery_drone/"): p for k, p in drones.items()
               if k.startswith(("test/query_drone/", "test/gallery_drone/"))}
    assert {r.path.relative_to(root).as_posix() for r in s2d.references} == set(gallery)
    for rec in s2d.records:  # every gallery drone view of the class is a positive
        want = {k for k, p in gallery.items() if p["class"] == f"{rec.label:04d}"}
        assert {s2d.references[i].path.relative_to(root).as_posix() for i in rec.positives} == want
    # distractor classes stay in both galleries, with their labels
    distractors = {int(p["class"]) for p in drones.values() if p["role"] == "distractor"}
    assert distractors and distractors <= {r.label for r in d2s.references} - {r.label for r in d2s.records}
    assert distractors <= {r.label for r in s2d.references} - {r.label for r in s2d.records}
