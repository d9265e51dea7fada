"""``crossview tiles``: coordinates in the manifest checked against hand computations."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from PIL import Image

from crossview.cli import main
from crossview.errors import ConfigError, CrossviewError, DatasetError
from crossview.geometry.geo import latlon_to_offset
from crossview.geometry.geodesy import radii
from crossview.tiles import build_tiles, distance_m, read_manifest

LAT0, LON0 = 40.0, -74.0


def _corners(width_m: float, height_m: float) -> tuple[float, float, float, float]:
    """NW/SE corners of an image ``width_m`` x ``height_m`` metres whose NW corner is (LAT0, LON0)."""
    m, _ = radii(LAT0)
    dlat = math.degrees(height_m / m)
    _, n = radii(LAT0 - dlat / 2)
    dlon = math.degrees(width_m / n)
    return LAT0, LON0, LAT0 - dlat, LON0 + dlon


def _gradient(w: int, h: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x % 256, y % 256, (x // 256 + 16 * (y // 256)) % 256], -1).astype(np.uint8)


def test_png_with_corners_hand_computed(tmp_path):
    arr = _gradient(1280, 960)
    src = tmp_path / "ortho.png"
    Image.fromarray(arr).save(src)
    corners = _corners(128.0, 96.0)  # 0.1 m/px both ways
    manifest = build_tiles(src, tmp_path / "set", corners=",".join(map(repr, corners)), tile_px=640, overlap=0.5)
    tiles = {t.id: t for t in read_manifest(manifest)}
    # step 320 px: columns start at 0, 320, 640; rows at 0, 320 (the last one flush with the bottom edge)
    assert sorted(tiles) == [f"r{r:04d}_c{c:04d}" for r in range(2) for c in range(3)]
    lat1, lon1 = corners[2], corners[3]
    t = tiles["r0001_c0002"]  # pixels x 640..1280, y 320..960: centre pixel (960, 640)
    assert t.lat == pytest.approx(LAT0 + (lat1 - LAT0) * 640 / 960, abs=1e-12)
    assert t.lon == pytest.approx(LON0 + (lon1 - LON0) * 960 / 1280, abs=1e-12)
    assert t.footprint["nw"] == pytest.approx((LAT0 + (lat1 - LAT0) * 320 / 960, LON0 + (lon1 - LON0) * 0.5))
    assert t.footprint["se"] == pytest.approx((lat1, lon1))
    assert t.mpp == pytest.approx(0.1, rel=1e-4)
    assert (t.width, t.height) == (640, 640)
    np.testing.assert_array_equal(np.asarray(Image.open(t.path)), arr[320:960, 640:1280])
    # the manifest is plain JSON with relative file names
    data = json.loads(manifest.read_text())
    assert data["tiles"][0]["file"] == "tiles/r0000_c0000.png"
    assert set(data["tiles"][0]["footprint"]) == {"nw", "ne", "se", "sw"}


def test_resample_to_mpp_and_square_pixels(tmp_path):
    src = tmp_path / "ortho.jpg"
    Image.fromarray(_gradient(1280, 960)).save(src, quality=95)
    corners = _corners(128.0, 96.0)
    tiles = read_manifest(build_tiles(src, tmp_path / "a", corners=corners, tile_px=320, overlap=0.0, mpp=0.2))
    assert len(tiles) == 4  # resampled to 640x480: columns 0, 320; rows 0, 160 (flush)
    t = next(t for t in tiles if t.id == "r0000_c0000")
    assert t.mpp == pytest.approx(0.2, rel=1e-4)  # centre pixel (160, 160) at 0.2 m/px = source pixel (320, 320)
    assert t.lat == pytest.approx(LAT0 + (corners[2] - LAT0) * 320 / 960, abs=1e-12)
    assert t.lon == pytest.approx(LON0 + (corners[3] - LON0) * 320 / 1280, abs=1e-12)
    # non-square source pixels (0.1 m across, 0.2 m down) come out square
    Image.fromarray(_gradient(1280, 480)).save(src)
    tiles = read_manifest(build_tiles(src, tmp_path / "b", corners=_corners(128.0, 96.0), tile_px=200))
    fp = tiles[0].footprint
    assert distance_m(fp["nw"], fp["ne"]) == pytest.approx(distance_m(fp["nw"], fp["sw"]), rel=2e-3)
    assert tiles[0].mpp == pytest.approx(math.sqrt(0.1 * 0.2), rel=2e-3)


def test_folder_of_vigor_tiles(tmp_path):
    folder = tmp_path / "satellite"
    for city, (lat, lon) in {"NewYork": (40.75, -73.98), "Seattle": (47.6, -122.33)}.items():
        (folder / city).mkdir(parents=True)
        Image.fromarray(_gradient(64, 64)).save(folder / city / f"satellite_{lat}_{lon}.png")
    tiles = {t.id: t for t in read_manifest(build_tiles(folder, tmp_path / "m"))}
    ny = tiles["NewYork/satellite_40.75_-73.98"]
    assert (ny.lat, ny.lon) == (40.75, -73.98)
    assert ny.mpp == pytest.approx(0.113248 * 10)  # VIGOR's 640-px value for a 64-px file
    east, north = latlon_to_offset(ny.lat, ny.lon, *ny.footprint["nw"])
    assert (east, north) == pytest.approx((-32 * ny.mpp, 32 * ny.mpp))
    assert ny.path == (folder / "NewYork" / "satellite_40.75_-73.98.png").resolve()
    tiles = read_manifest(build_tiles(folder, tmp_path / "m2", mpp=0.5, copy=True))
    assert all(t.mpp == 0.5 and t.path.is_relative_to(tmp_path / "m2") for t in tiles)
    (folder / "Elsewhere").mkdir()
    Image.fromarray(_gradient(64, 64)).save(folder / "Elsewhere" / "satellite_1.0_2.0.png")
    with pytest.raises(DatasetError, match="pass --mpp"):
        build_tiles(folder, tmp_path / "m3")


def test_resume_and_errors(tmp_path, monkeypatch):
    src = tmp_path / "ortho.png"
    Image.fromarray(_gradient(256, 256)).save(src)
    corners = _corners(25.6, 25.6)
    m = build_tiles(src, tmp_path / "s", corners=corners, tile_px=128)
    stamp = m.stat().st_mtime_ns
    assert build_tiles(src, tmp_path / "s", corners=corners, tile_px=128) == m
    assert m.stat().st_mtime_ns == stamp  # same parameters: nothing redone
    with pytest.raises(ConfigError, match="--corners"):
        build_tiles(src, tmp_path / "x")
    with pytest.raises(ConfigError, match="north"):
        build_tiles(src, tmp_path / "x", corners=(39.0, -74.0, 40.0, -73.0))
    with pytest.raises(ConfigError, match="smaller than one"):
        build_tiles(src, tmp_path / "x", corners=corners, tile_px=512)
    monkeypatch.setitem(sys.modules, "rasterio", None)  # as if rasterio were not installed
    (tmp_path / "dem.tif").write_bytes(b"II*\x00")
    with pytest.raises(CrossviewError, match=r"pip install -e '\.\[geo\]'"):
        build_tiles(tmp_path / "dem.tif", tmp_path / "x")
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_cli(tmp_path, capsys):
    src = tmp_path / "ortho.png"
    Image.fromarray(_gradient(256, 256)).save(src)
    corners = ",".join(map(str, _corners(25.6, 25.6)))
    assert main(["tiles", str(src), "--out", str(tmp_path / "o"), "--corners", corners, "--tile-px", "128"]) == 0
    assert "9 tiles" in capsys.readouterr().out
    assert main(["tiles", str(src), "--out", str(tmp_path / "o2")]) == 2
    assert "--corners" in capsys.readouterr().err


def test_mosaic_window_anywhere_equals_the_source_crop(tmp_path):
    """A window centred between tile centres, cut from four overlapping tiles, equals the source ortho's crop
    there (a smooth ramp, so sub-pixel georeferencing error stays far below one grey level); off the tiles it
    is an error."""
    from crossview.geometry.geo import offset_to_latlon
    from crossview.tiles.mosaic import Mosaic

    y, x = np.mgrid[0:960, 0:1280].astype(np.float64)
    arr = np.stack([x / 1280 * 255, y / 960 * 255, 0.1 * x + 0.05 * y], -1).round().astype(np.uint8)
    src = tmp_path / "ortho.png"
    Image.fromarray(arr).save(src)
    corners = _corners(128.0, 96.0)  # 0.1 m/px
    tiles = read_manifest(build_tiles(src, tmp_path / "set", corners=",".join(map(repr, corners)), tile_px=640,
                                      overlap=0.5))
    mosaic = Mosaic(tiles)
    # the window's centre: the corner between source pixels (cx - 1, cy - 1) and (cx, cy)
    cx, cy, s = 700, 500, 300
    lat, lon = offset_to_latlon(LAT0, LON0, cx * 0.1, -cy * 0.1)
    win = mosaic.window(float(lat), float(lon), s)
    assert win.shape == (s, s, 3) and win.dtype == np.uint8
    ref = arr[cy - s // 2: cy + s // 2, cx - s // 2: cx + s // 2].astype(int)
    assert np.abs(win.astype(int) - ref).max() <= 1
    assert mosaic.mpp_near(float(lat), float(lon)) == pytest.approx(0.1, rel=1e-4)
    far = offset_to_latlon(LAT0, LON0, 500.0, 500.0)
    with pytest.raises(CrossviewError, match="outside the tiles"):
        mosaic.window(float(far[0]), float(far[1]), 64)
