"""The four benchmark readers on hand-written tiny trees in the real formats, and the GPS-neighbour tables."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fixtures_real import (
    CVACT_IDS,
    CVACT_SETS,
    CVACT_UTM,
    CVUSA_IDS,
    CVUSA_LOCATIONS,
    U1652,
    VIGOR_CITIES,
    VIGOR_TILE,
    make_cvact,
    make_cvusa,
    make_u1652,
    make_vigor,
    vigor_offsets,
)

from crossview.data import load_gps_neighbours, nearest_neighbours, read_dataset
from crossview.data.neighbours import haversine_m
from crossview.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def vigor(tmp_path_factory):
    return make_vigor(tmp_path_factory.mktemp("vigor"))


def _expected_xy(city_i: int, pano_i: int, corrected: bool = False) -> list[tuple[float, float]]:
    s = VIGOR_TILE / 640
    return [(VIGOR_TILE / 2 - dc * s, VIGOR_TILE / 2 + dr * s) for dr, dc in vigor_offsets(city_i, pano_i, corrected)]


# ---------------------------------------------------------------- VIGOR
def test_vigor_same_area_indices_offsets_gps(vigor):
    split = read_dataset("vigor", vigor, "train", area="same")
    # official order: Chicago, NewYork, SanFrancisco, Seattle; 4 tiles each
    assert [r.group for r in split.references] == [c for c in VIGOR_CITIES for _ in range(4)]
    assert [r.index for r in split.references] == list(range(16))
    # train = every panorama of a city except its last one
    assert [r.query_id for r in split.records] == ["chiA", "nyA", "nyB", "seA"]
    ny_b = split.records[2]
    # nyB (NewYork = city 1, panorama 1): positive = tile 1 of NewYork = index 4 + 1; semi-positives tiles 0, 2, 3
    assert ny_b.positives == (5,) and ny_b.semi_positives == (4, 6, 7)
    assert ny_b.gps == (40.75007, -73.99002) and ny_b.heading_deg == 0.0 and ny_b.query_view == "ground"
    assert np.allclose(ny_b.pixel_xy, _expected_xy(1, 1))
    # hand check of the convention: (dr, dc) = (40, -30) at 640 px -> row 16 + 2, col 16 + 1.5 at 32 px
    assert ny_b.pixel_xy[0] == pytest.approx((17.5, 18.0))
    ref = split.references[5]
    assert ref.gps == (40.7501, -73.99) and ref.view == "aerial"
    assert ref.metres_per_pixel == pytest.approx(0.113248 * 640 / VIGOR_TILE)
    assert ref.path.name == "satellite_40.7501_-73.99.png"
    assert split.references[0].metres_per_pixel == pytest.approx(0.111262 * 20)
    assert split.meta["tile_px"] == {c: VIGOR_TILE for c in VIGOR_CITIES}
    test = read_dataset("vigor", vigor, "test", area="same")
    assert [r.query_id for r in test.records] == ["chiB", "nyC", "sfA", "seB"]
    assert test.records[2].positives == (8,)  # sfA: SanFrancisco tile 0 = index 8


def test_vigor_cross_area_city_sets(vigor):
    train = read_dataset("vigor", vigor, "train", area="cross")
    test = read_dataset("vigor", vigor, "test", area="cross")
    assert [r.group for r in train.references] == ["NewYork"] * 4 + ["Seattle"] * 4
    assert [r.group for r in test.references] == ["Chicago"] * 4 + ["SanFrancisco"] * 4
    assert {r.group for r in train.records} == {"NewYork", "Seattle"} and len(train) == 5
    assert {r.group for r in test.records} == {"Chicago", "SanFrancisco"} and len(test) == 3
    se_b = next(r for r in train.records if r.query_id == "seB")
    assert se_b.positives == (4 + 1,) and se_b.semi_positives == (4, 6, 7)  # indices are setting-specific
    assert train.name == "cross-train" and train.meta["cities"] == ["NewYork", "Seattle"]


def test_vigor_corrected_labels(vigor):
    orig = read_dataset("vigor", vigor, "train", area="same")
    corr = read_dataset("vigor", vigor, "train", area="same", label_set="corrected")
    assert corr.meta["label_set"] == "corrected"
    assert [r.positives for r in corr.records] == [r.positives for r in orig.records]
    assert np.allclose(corr.records[2].pixel_xy, _expected_xy(1, 1, corrected=True))
    # the fixture's correction is (dr + 2, dc - 4) at 640 px: x moves by +0.2, y by +0.1 at 32 px
    dx, dy = np.subtract(corr.records[2].pixel_xy[0], orig.records[2].pixel_xy[0])
    assert (dx, dy) == pytest.approx((0.2, 0.1))


def test_vigor_missing_city_is_an_error_unless_asked(tmp_path):
    root = make_vigor(tmp_path / "v", corrected=False, cities=("NewYork", "Seattle"))
    with pytest.raises(DatasetError) as err:
        read_dataset("vigor", root, "train", area="same")
    assert "Chicago" in str(err.value) and "SanFrancisco" in str(err.value)
    assert "cities=" in str(err.value)
    cross = read_dataset("vigor", root, "train", area="cross")  # cross-area train needs only these two
    assert len(cross) == 5
    sub = read_dataset("vigor", root, "train", area="same", cities=["Seattle"])
    assert [r.group for r in sub.references] == ["Seattle"] * 4 and [r.query_id for r in sub.records] == ["seA"]


def test_vigor_official_release_layout_and_synthetic_meta(tmp_path):
    root = make_vigor(tmp_path / "v", corrected=False)
    for city in VIGOR_CITIES:  # <City>/panorama and <City>/satellite, as released
        (root / city).mkdir()
        shutil.move(root / "ground" / city, root / city / "panorama")
        shutil.move(root / "satellite" / city, root / city / "satellite")
    split = read_dataset("vigor", root, "train")
    assert split.records[0].query_path == root / "Chicago" / "panorama" / "chiA,41.88002,-87.63002,.jpg"
    assert split.references[0].path.parent == root / "Chicago" / "satellite"
    # a synthetic world declares m/px per city and gives offsets at its native tile size
    mpp = {"Chicago": 0.5, "NewYork": 0.25, "SanFrancisco": 1, "Seattle": 2}
    meta = {"cities": {c: {"metres_per_pixel": v} for c, v in mpp.items()}, "tile_size": VIGOR_TILE}
    (root / "crossview_meta.json").write_text(json.dumps(meta))
    split = read_dataset("vigor", root, "train")
    assert [r.metres_per_pixel for r in split.references[::4]] == [0.5, 0.25, 1.0, 2.0]
    dr, dc = vigor_offsets(0, 0)[0]
    assert split.records[0].pixel_xy[0] == (VIGOR_TILE / 2 - dc, VIGOR_TILE / 2 + dr)


def test_vigor_malformed_lines_are_all_reported(tmp_path):
    root = make_vigor(tmp_path / "v", corrected=False)
    label = root / "splits" / "NewYork" / "same_area_balanced_train.txt"
    lines = label.read_text().splitlines()
    label.write_text(" ".join(lines[0].split()[:10]) + "\n" + lines[1].replace(",40.75007,", ",north,") + "\n")
    sat_list = root / "splits" / "Seattle" / "satellite_list.txt"
    sat_list.write_text(sat_list.read_text() + "satellite_47.6_west.png\n")
    with pytest.raises(DatasetError) as err:
        read_dataset("vigor", root, "train")
    problems = err.value.problems
    assert problems[0] == (f"{sat_list}:5: malformed satellite name 'satellite_47.6_west.png'; "
                           "expected satellite_<lat>_<lon>.png")
    assert len(problems) == 3
    assert any(f"{label}:1: expected 13 columns" in p and "found 10" in p for p in problems)
    assert any(f"{label}:2: malformed panorama name" in p for p in problems)


# ---------------------------------------------------------------- CVUSA
@pytest.mark.parametrize("at_root", [False, True])
def test_cvusa_pairs_and_gps(tmp_path, at_root):
    root = make_cvusa(tmp_path / "cvusa", locations_at_root=at_root)
    train = read_dataset("cvusa", root, "train")
    assert [r.query_id for r in train.records] == [f"{i:07d}" for i in CVUSA_IDS["train"]]
    assert [r.positives for r in train.records] == [(i,) for i in range(4)]
    assert train.references[2].path == root / "bingmap" / "19" / "0000004.jpg"
    assert train.records[2].query_path == root / "streetview" / "panos" / "0000004.jpg"
    # all.csv row id-1: ground lat/lon (columns 3-4) on the record, satellite (columns 1-2) on the reference
    assert train.records[2].gps == CVUSA_LOCATIONS[4]
    assert train.references[2].gps == pytest.approx(np.add(CVUSA_LOCATIONS[4], 1e-5))
    assert train.meta["ids"] == CVUSA_IDS["train"]
    test = read_dataset("cvusa", root, "test")  # val-19zl.csv is the official test set
    assert [r.query_id for r in test.records] == ["0000003", "0000006"] and test.records[1].gps == (35.0, -90.0)


def test_cvusa_wrong_column_count(tmp_path):
    root = make_cvusa(tmp_path / "cvusa")
    csv = root / "splits" / "train-19zl.csv"
    rows = csv.read_text().splitlines()
    rows[1] = rows[1] + ",extra"
    rows[3] = rows[3].split(",")[0]
    csv.write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError) as err:
        read_dataset("cvusa", root, "train")
    assert [p for p in err.value.problems if "expected 3 comma-separated columns" in p] == [
        f"{csv}:2: expected 3 comma-separated columns (satellite, panorama, annotation), found 4",
        f"{csv}:4: expected 3 comma-separated columns (satellite, panorama, annotation), found 1",
    ]


# ---------------------------------------------------------------- CVACT
@pytest.mark.parametrize("field_names", [True, False])
def test_cvact_splits_from_mat(tmp_path, field_names):
    root = make_cvact(tmp_path / "cvact", missing_train_sat="idBB", field_names=field_names)
    train = read_dataset("cvact", root, "train")
    # trainInd 1,2,4,6 (1-based) -> idA, idBB, idD, idF; idBB has no aerial image: skipped as officially
    assert [r.query_id for r in train.records] == ["idA", "idD", "idF"]
    assert [r.positives for r in train.records] == [(0,), (1,), (2,)]
    assert train.meta["skipped"] == 1
    assert np.array_equal(train.meta["utm"], CVACT_UTM[[0, 3, 5]])
    assert train.records[1].query_path == root / "ANU_data_small" / "streetview" / "idD_grdView.jpg"
    assert train.references[1].path == root / "ANU_data_small" / "satview_polish" / "idD_satView_polish.jpg"
    assert all(r.gps is None for r in train.records)
    val = read_dataset("cvact", root, "val")
    assert [r.query_id for r in val.records] == [CVACT_IDS[k - 1] for k in CVACT_SETS["val"]]
    test = read_dataset("cvact", root, "test")
    assert [r.query_id for r in test.records] == ["idE", "idG", "idC"]
    assert test.records[0].query_path.parent == root / "ANU_data_test" / "streetview"


def test_cvact_crop_needs_prepare(tmp_path):
    root = make_cvact(tmp_path / "cvact")
    with pytest.raises(DatasetError, match="--crop"):
        read_dataset("cvact", root, "train", crop=True)


def test_cvact_missing_mat_says_where_to_get_it(tmp_path):
    root = make_cvact(tmp_path / "cvact")
    (root / "ACT_data.mat").unlink()
    with pytest.raises(DatasetError, match="ACT_data.mat.*CVFT"):
        read_dataset("cvact", root, "train")


# ---------------------------------------------------------------- University-1652
def test_university1652_protocols(tmp_path):
    root = make_u1652(tmp_path / "University-Release")
    train = read_dataset("university1652", root, "train")
    assert len(train) == sum(U1652["train"].values()) and len(train.references) == 3
    assert [r.label for r in train.references] == [1, 2, 5]
    assert all(r.query_view == "drone" and r.positives == (train.references[[1, 2, 5].index(r.label)].index,)
               for r in train.records)
    d2s = read_dataset("university1652", root, "drone2sat")
    assert len(d2s) == 5 and [r.label for r in d2s.references] == [10, 11, 900, 901]  # distractors kept
    assert {r.positives for r in d2s.records} == {(0,), (1,)}
    s2d = read_dataset("university1652", root, "sat2drone")
    assert [r.query_view for r in s2d.records] == ["aerial", "aerial"]
    assert s2d.references[0].view == "drone" and len(s2d.references) == 7
    assert s2d.records[0].positives == (0, 1, 2) and s2d.records[1].positives == (3, 4)
    assert [r.label for r in s2d.references[5:]] == [902, 902]


def test_bad_arguments(tmp_path):
    root = make_cvusa(tmp_path / "cvusa")
    with pytest.raises(ConfigError):
        read_dataset("kitti", root, "train")
    with pytest.raises(ConfigError):
        read_dataset("cvusa", root, "train", label_set="corrected")
    with pytest.raises(ConfigError):
        read_dataset("cvusa", root, "val")
    with pytest.raises(DatasetError, match="not a folder"):
        read_dataset("cvusa", tmp_path / "nowhere", "train")


# ---------------------------------------------------------------- GPS neighbours
def test_neighbours_use_radians():
    # At 60°N a degree of longitude is half a degree of latitude: C (1.2° east) is nearer to A than B (0.8° north).
    # Feeding degrees into the radians formula (the official scripts' slip) ranks B first.
    pts = np.array([[60.0, 0.0], [60.8, 0.0], [60.0, 1.2]])
    nb = nearest_neighbours(pts, k=2)
    assert nb[0].tolist() == [2, 1]
    assert haversine_m(pts[0], pts[2]) < haversine_m(pts[0], pts[1])


def test_neighbours_match_brute_force():
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(40, 41, 300), rng.uniform(-74, -73, 300)]
    nb = nearest_neighbours(pts, k=10)
    for i in range(0, 300, 23):
        d = np.array([haversine_m(pts[i], p) if j != i else np.inf for j, p in enumerate(pts)])
        assert nb[i].tolist() == np.argsort(d, kind="stable")[:10].tolist()
    assert not np.any(nb == np.arange(300)[:, None])  # self excluded
    # a regular grid of tiles (many equal distances) plus a duplicate point: distances match brute force
    grid = np.array([(47.6 + 0.0005 * i, -122.33 + 0.0007 * j) for i in range(12) for j in range(12)])
    grid = np.vstack([grid, grid[:1]])
    nb = nearest_neighbours(grid, k=20)
    for i in (0, 5, 77, len(grid) - 1):
        want = sorted(haversine_m(grid[i], p) for j, p in enumerate(grid) if j != i)[:20]
        assert np.allclose([haversine_m(grid[i], grid[j]) for j in nb[i]], want, atol=1e-6)
        assert i not in nb[i]
    assert nb[0][0] == len(grid) - 1 and nb[-1][0] == 0  # the duplicate is the nearest, self is not listed
    utm = rng.uniform(0, 1000, (50, 2))
    nb = nearest_neighbours(utm, k=5, metric="euclidean")
    d = np.linalg.norm(utm[:, None] - utm[None], axis=-1) + np.diag(np.full(50, np.inf))
    assert np.array_equal(nb, np.argsort(d, axis=1, kind="stable")[:, :5])


def test_load_gps_neighbours_vigor_and_cache(vigor, tmp_path, monkeypatch):
    split = read_dataset("vigor", vigor, "train")
    table = load_gps_neighbours("vigor", vigor, area="same", split=split)
    keys = sorted({r.positives[0] for r in split.records})
    assert sorted(table) == keys == [0, 4, 5, 12]
    for key, row in table.items():
        d = [haversine_m(split.references[key].gps, split.references[int(o)].gps) for o in row]
        assert sorted(row.tolist()) == sorted(k for k in keys if k != key) and d == sorted(d)
    files = list((vigor / "crossview_neighbours").glob("vigor-same-train-k128-*.npz"))
    assert len(files) == 1
    again = load_gps_neighbours("vigor", vigor, area="same", split=split)
    assert all(np.array_equal(again[k], table[k]) for k in table)
    # read-only dataset root: the table goes to the user cache folder instead
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("crossview.data.neighbours.os.access", lambda *a, **k: False)
    cross = load_gps_neighbours("vigor", vigor, area="cross")
    assert sorted(cross) == [0, 1, 2, 4, 5] and list((tmp_path / "xdg").rglob("vigor-cross-train-*.npz"))


def test_load_gps_neighbours_cvusa_cvact_u1652(tmp_path):
    cvusa = make_cvusa(tmp_path / "cvusa")
    table = load_gps_neighbours("cvusa", cvusa)
    # train ids 1, 2, 4, 5 at references 0..3; from id 1 (40, -100): id 2 is 111 m, id 4 is 256 m, id 5 far
    assert table[0].tolist() == [1, 2, 3]
    cvact = make_cvact(tmp_path / "cvact")
    table = load_gps_neighbours("cvact", cvact)  # UTM, Euclidean: train idA (0,0), idBB (10,0), idD (0,20), idF (3,4)
    assert table[0].tolist() == [3, 1, 2] and table[1].tolist() == [3, 0, 2]
    with pytest.raises(ConfigError, match="no GPS"):
        load_gps_neighbours("university1652", make_u1652(tmp_path / "u"))
