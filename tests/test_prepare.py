"""``crossview prepare``: every problem of a broken tree reported at once, nothing written on failure; the
CVACT crop keeps exactly the middle rows; the image cache equals decode + resize."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_real import CVACT_PANO, make_cvact, make_cvusa, make_u1652, make_vigor, write_image
from PIL import Image

from crossview.cli import main
from crossview.data import prepare_dataset, read_dataset
from crossview.data.cache import ImageCache, load_resized
from crossview.data.crop import crop_panorama, middle_rows
from crossview.errors import DatasetError


def _written(root) -> set[str]:
    return {p.name for p in root.iterdir()} & {"prepare_report.json", "crossview_neighbours", "crossview_cache"}


def test_broken_vigor_tree_lists_every_problem_and_writes_nothing(tmp_path, capsys):
    root = make_vigor(tmp_path / "vigor", corrected=False)
    # 1. a missing panorama
    missing = root / "ground" / "NewYork" / "nyB,40.75007,-73.99002,.jpg"
    missing.unlink()
    # 2. a truncated label line (Seattle train line 1 loses its last semi-positive triple)
    label = root / "splits" / "Seattle" / "same_area_balanced_train.txt"
    label.write_text(" ".join(label.read_text().split()[:10]) + "\n")
    # 3. a non-image file under an image name
    tile = root / "satellite" / "Chicago" / "satellite_41.8801_-87.63.png"
    tile.write_text("not a png")
    with pytest.raises(DatasetError) as err:
        prepare_dataset("vigor", root)
    problems = err.value.problems
    text = str(err.value)
    ny_train = root / "splits" / "NewYork" / "same_area_balanced_train.txt"
    assert f"missing image {missing} (referenced by {ny_train}:2)" in problems
    assert any(p.startswith(f"{label}:1: expected 13 columns") and "found 10" in p for p in problems)
    assert any(p.startswith("not an image") and str(tile) in p and "satellite_list.txt:2" in p for p in problems)
    assert "nothing was written" in text and len(problems) == len(set(problems))
    assert _written(root) == set()
    # the CLI exits non-zero and prints the same list
    assert main(["prepare", "vigor", str(root)]) == 2
    err_out = capsys.readouterr().err
    assert str(missing) in err_out and f"{label}:1" in err_out and str(tile) in err_out
    assert _written(root) == set()


def test_broken_cvusa_tree_wrong_columns_missing_and_undecodable(tmp_path):
    root = make_cvusa(tmp_path / "cvusa")
    csv = root / "splits" / "val-19zl.csv"
    csv.write_text(csv.read_text().replace(",annotations/0000006.png", ""))
    (root / "bingmap" / "19" / "0000002.jpg").unlink()
    jpg = root / "streetview" / "panos" / "0000005.jpg"
    jpg.write_bytes(jpg.read_bytes()[:40])  # a JPEG cut short: the header survives, the pixels do not
    with pytest.raises(DatasetError) as err:
        prepare_dataset("cvusa", root, decode=True)
    problems = err.value.problems
    assert f"{csv}:2: expected 3 comma-separated columns (satellite, panorama, annotation), found 2" in problems
    train_csv = root / "splits" / "train-19zl.csv"
    assert f"missing image {root / 'bingmap/19/0000002.jpg'} (referenced by {train_csv}:2)" in problems
    assert any(str(jpg) in p and f"{train_csv}:4" in p for p in problems)
    assert len(problems) == 3 and _written(root) == set()


def test_prepare_success_report_and_neighbour_tables(tmp_path, capsys):
    root = make_vigor(tmp_path / "vigor")
    assert main(["prepare", "vigor", str(root)]) == 0
    assert "vigor/same-train/original: 4 queries, 16 references" in capsys.readouterr().out
    report = json.loads((root / "prepare_report.json").read_text())
    assert report["splits"]["vigor/cross-test/corrected"] == {"queries": 3, "references": 8, "skipped": 0}
    assert set(report["neighbours"]) == {"vigor/same-train/original", "vigor/cross-train/original"}
    assert all((root / "crossview_neighbours").glob("*.npz"))
    cvact = make_cvact(tmp_path / "cvact", missing_train_sat="idBB")
    report = prepare_dataset("cvact", cvact)  # a missing CVACT image is skipped, as officially, and reported
    assert report["splits"]["cvact/train"] == {"queries": 3, "references": 3, "skipped": 1}
    assert report["warnings"] == 1 and "idBB" in report["warning_examples"][0]
    report = prepare_dataset("university1652", make_u1652(tmp_path / "u"), out=tmp_path / "u_out")
    assert report["neighbours"] == {} and (tmp_path / "u_out" / "prepare_report.json").exists()


def test_crop_keeps_exactly_the_middle_rows():
    assert middle_rows(832) == (208, 624)
    rng = np.random.default_rng(0)
    # 512x256 panorama: the middle half (rows 64..191) is already 512x128, so the crop is the rows themselves
    arr = rng.integers(0, 256, (256, 512, 3), dtype=np.uint8)
    out = np.asarray(crop_panorama(Image.fromarray(arr)))
    assert np.array_equal(out, arr[64:192])
    # 1664x832: rows 208..623 are green, every other row red; the 512x128 box-filtered crop is pure green
    arr = np.zeros((832, 1664, 3), dtype=np.uint8)
    arr[..., 0] = 255
    arr[208:624] = (0, 255, 0)
    out = np.asarray(crop_panorama(Image.fromarray(arr)))
    assert out.shape == (128, 512, 3)
    assert np.all(out == (0, 255, 0))
    arr[207] = (0, 255, 0)  # one row too many on top: still green; one too few at the bottom shows red
    arr[623] = (255, 0, 0)
    assert np.any(np.asarray(crop_panorama(Image.fromarray(arr)))[..., 0] > 0)


def test_prepare_crop_cvact_then_read_cropped(tmp_path):
    root = make_cvact(tmp_path / "cvact")
    report = prepare_dataset("cvact", root, crop=True)
    assert report["crop"] == {"written": 9, "up_to_date": 0}  # 4 train + 2 val (small) + 3 test (ANU_data_test)
    split = read_dataset("cvact", root, "train", crop=True)
    rec = split.records[0]
    assert rec.query_path == root / "ANU_data_small" / "streetview_processed" / "idA_grdView.png"
    with Image.open(rec.query_path) as im:
        assert im.size == (512, 128)
        got = np.asarray(im)
    with Image.open(root / "ANU_data_small" / "streetview" / "idA_grdView.jpg") as im:
        assert im.size == CVACT_PANO
        assert np.array_equal(got, np.asarray(crop_panorama(im)))
    assert prepare_dataset("cvact", root, crop=True)["crop"] == {"written": 0, "up_to_date": 9}
    rec.query_path.unlink()  # an unfinished crop is an error, not a silently smaller split
    with pytest.raises(DatasetError, match="idA_grdView.png is missing but its panorama exists"):
        read_dataset("cvact", root, "train", crop=True)


def test_cache_round_trip_equals_decode_and_resize(tmp_path):
    root = make_cvusa(tmp_path / "cvusa")
    write_image(root / "streetview" / "panos" / "0000001.jpg", (60, 12), 99, fmt="JPEG")
    report = prepare_dataset("cvusa", root, out=tmp_path / "out", cache=True,
                             sizes={"ground": (8, 32), "aerial": (12, 12)})
    split = read_dataset("cvusa", root, "train")
    cache = ImageCache(report["cache"]["cvusa/train/ground"])
    assert len(cache) == len(split.records) and cache.size == (8, 32)
    for i, rec in enumerate(split.records):
        assert np.array_equal(cache[i], load_resized(rec.query_path, (8, 32)))
        with Image.open(rec.query_path) as im:  # independently: decode, RGB, antialiased bilinear resize
            ref = np.asarray(im.convert("RGB").resize((32, 8), Image.BILINEAR))
        assert np.array_equal(cache[i], ref)
    refs = ImageCache(report["cache"]["cvusa/test/aerial"])
    assert refs.size == (12, 12) and len(refs) == 2
    assert (tmp_path / "out" / "prepare_report.json").exists() and not (root / "prepare_report.json").exists()
