"""``locate --fine-search scan``: start grid, walks, and the whole scan on a world whose answers are known.

The world: an ortho whose red channel is a ramp in the east coordinate and whose green channel a ramp in the north
coordinate, cut into tiles overlapping by half. A stand-in fine model reads where a window's centre is from the
window's centre pixel and where the camera is from the photo's colour, and answers like a model trained on
centred cameras: 70 % of the way to the camera within 25 m, nothing beyond, confidence falling with distance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from crossview.errors import ConfigError, CrossviewError
from crossview.fine.pose import Pose
from crossview.geometry.geo import latlon_to_offset, offset_to_latlon
from crossview.geometry.geodesy import radii
from crossview.locate.scan import best_walk, start_points, walk_area
from crossview.tiles import build_tiles, distance_m

LAT0, LON0 = 40.0, -74.0  # the ortho's NW corner
W, H, MPP = 1280, 960, 0.1  # 128 m x 96 m
E_PER_LEVEL, N_PER_LEVEL = W * MPP / 255, H * MPP / 255  # metres per grey level of the two ramps


def _ll(e: float, n: float) -> tuple[float, float]:
    lat, lon = offset_to_latlon(LAT0, LON0, e, n)
    return float(lat), float(lon)


def test_start_points_hand_counted():
    """Radius 50 m, spacing 20 m: the 5 x 5 grid through the centre minus its 4 corners (28.3 m x 2 > 50)."""
    pts = start_points(LAT0, LON0, 50.0, 20.0)
    assert len(pts) == 21
    assert pts[10] == pytest.approx((LAT0, LON0))
    en = [latlon_to_offset(LAT0, LON0, *p) for p in pts]
    assert max(math.hypot(e, n) for e, n in en) <= 50.0
    assert min(math.hypot(e - en[10][0], n - en[10][1]) for i, (e, n) in enumerate(en) if i != 10) == \
        pytest.approx(20.0, abs=1e-3)
    with pytest.raises(CrossviewError, match="spacing"):
        start_points(LAT0, LON0, 50.0, 0.0)


def test_walks_converge_and_the_confident_one_wins():
    """A refine that moves 70 % of the way to a target within 25 m: walks starting in that basin end within 1 m of
    it after 3 steps (0.3^3 of at most 25 m), the best walk is one of them, and a refine that cannot cut a window
    (None) ends a walk where it stands."""
    target = _ll(37.0, -52.0)

    def refine(lat, lon):
        e, n = (float(v) for v in latlon_to_offset(lat, lon, *target))  # the target from the window centre
        d = math.hypot(e, n)
        if d > 60:
            return None
        k = 0.7 if d < 25 else 0.0
        return Pose(k * e, k * n, 0.0, math.exp(-d / 10), None)

    walks = walk_area((*_ll(30.0, -45.0), 40.0), refine, spacing_m=20.0, steps=3)
    assert 0 < len(walks) <= len(start_points(*_ll(30.0, -45.0), 40.0, 20.0))
    best = best_walk(walks)
    assert distance_m(best.end, target) < 1.0
    assert all(len(w.poses) <= 3 for w in walks)
    assert any(len(w.poses) == 1 and w.confidence < 0.1 for w in walks)  # outside the basin: no move
    with pytest.raises(CrossviewError, match="outside the index"):
        best_walk([])


class RampLocalizer(torch.nn.Module):
    """The stand-in fine model described in the module docstring (pinhole photos)."""

    cameras = ("pinhole",)

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = {"name": "ramp", "arch": "ramp"}
        self.calls = 0

    def input_sizes(self, camera):
        return (16, 16), 160

    def predict(self, batch, heading_prior=None):
        self.calls += 1
        a, g = batch["aerial"][0], batch["ground"][0]
        c = a.shape[-1] // 2
        centre = a[:2, c - 1:c + 1, c - 1:c + 1].mean((1, 2)) * 255
        truth = g[:2].mean((1, 2)) * 255
        d = (truth - centre) * torch.tensor([E_PER_LEVEL, N_PER_LEVEL])
        dist = float(d.norm())
        step = d * (0.7 if dist < 25 else 0.0)
        heading = torch.zeros(1) if heading_prior is None else torch.as_tensor(heading_prior).reshape(1)
        return {"xy": step[None], "heading": heading, "confidence": torch.tensor([math.exp(-dist / 10)])}


@pytest.fixture(scope="module")
def ramp_world(tmp_path_factory):
    from crossview.locate import index_tiles
    from crossview.models import create_model

    root = tmp_path_factory.mktemp("ramp")
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    arr = np.stack([(x + 0.5) / W * 255, (H - y - 0.5) / H * 255, np.full_like(x, 90.0)], -1)
    Image.fromarray(arr.round().astype(np.uint8)).save(root / "ortho.png")
    m, _ = radii(LAT0)
    dlat = math.degrees(H * MPP / m)
    _, n = radii(LAT0 - dlat / 2)
    corners = (LAT0, LON0, LAT0 - dlat, LON0 + math.degrees(W * MPP / n))
    manifest = build_tiles(root / "ortho.png", root / "tiles", corners=",".join(map(repr, corners)), tile_px=320,
                           overlap=0.5)  # 32 m tiles every 16 m
    torch.manual_seed(0)
    index = index_tiles(manifest, create_model("mfrgn_tiny", pretrained=False).eval(), root / "tiles.index")
    return root, index


def _photo(path, e_m: float, n_from_south_m: float):
    colour = (round(e_m / E_PER_LEVEL), round(n_from_south_m / N_PER_LEVEL), 90)
    Image.fromarray(np.full((96, 128, 3), colour, dtype=np.uint8)).save(path)
    return path


def test_scan_finds_a_camera_between_tile_centres(ramp_world, tmp_path):
    """The camera sits 8 m off every tile centre (half-way between them) and the fix 14 m off the camera: the
    scan's answer is within 1.5 m of it (ramp quantisation 0.5 m), inside the area, labelled as a scan; refining
    the retrieved tiles instead stays metres off (the stand-in shrinks its answers like a real model)."""
    from crossview.locate import Locator

    root, index = ramp_world
    from crossview.models import create_model

    torch.manual_seed(0)
    retrieval = create_model("mfrgn_tiny", pretrained=False).eval()
    e, n_south = 56.0, 40.0  # tile centres every 16 m from 16 m: 8 m from the nearest in both axes
    truth = _ll(e, n_south - H * MPP)
    photo = _photo(tmp_path / "p.png", e, n_south)
    fine = RampLocalizer()
    loc = Locator(index, model=retrieval, fine_model=fine, refine=3)
    fix = _ll(e + 10.0, n_south - H * MPP - 10.0)
    r = loc.locate(photo, camera="pinhole", fov_deg=70, heading_prior=(30, 20), near=(*fix, 30.0),
                   fine_search="scan", out=tmp_path / "out")
    assert r["method"] == "fine" and r["search"] == "scan"
    assert distance_m((r["lat"], r["lon"]), truth) < 1.5
    assert r["scan"]["walks"] == len(start_points(*fix, 30.0, loc.scan_spacing_m))
    assert r["scan"]["windows"] == fine.calls
    chosen = next(c for c in r["candidates"] if c["chosen"])
    assert chosen["source"] == "scan" and chosen["tile"] == r["tile"]
    tile = loc.tiles[r["tile"]]
    assert distance_m((tile.lat, tile.lon), truth) == pytest.approx(8.0 * math.sqrt(2), abs=0.5)
    assert math.hypot(r["x_m"], r["y_m"]) == pytest.approx(8.0 * math.sqrt(2), abs=1.5)
    assert r["uncertainty"]["kind"] == "fine-scan+near" and not r["flags"]
    assert (tmp_path / "out" / "locate.json").is_file() and (tmp_path / "out" / "locate.png").is_file()
    tiles = loc.locate(photo, camera="pinhole", fov_deg=70, heading_prior=(30, 20), near=(*fix, 30.0))
    assert "search" not in tiles and distance_m((tiles["lat"], tiles["lon"]), truth) > 1.5
    with pytest.raises(ConfigError, match="search area"):
        loc.locate(photo, camera="pinhole", fov_deg=70, fine_search="scan", near="none")
    with pytest.raises(ConfigError, match="choose auto, tiles, scan, posterior"):
        loc.locate(photo, camera="pinhole", fov_deg=70, fine_search="everywhere")


def _ramp_geotiff(path, png, corners):
    """The ramp ortho ``png`` as a GeoTIFF in WGS84 degrees (the same corners as the PNG's)."""
    rasterio = pytest.importorskip("rasterio")
    from affine import Affine

    lat0, lon0, lat1, lon1 = corners
    with Image.open(png) as im:
        arr = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=3, dtype="uint8", crs="EPSG:4326",
                       transform=Affine.translation(lon0, lat0) @ Affine.scale((lon1 - lon0) / W, (lat1 - lat0) / H),
                       tiled=True, blockxsize=256, blockysize=256) as ds:
        ds.write(arr)
    return path


def test_scan_on_a_raster_index_reads_the_area_only_and_answers_as_the_tile_folder(ramp_world, tmp_path):
    """The ramp ortho as a GeoTIFF, indexed two ways as region indexes (H3 resolution 12, cells of about 300 m²):
    from rasters (no tile files) and from the tile folder ``crossview tiles`` cuts from it. The scan and the
    retrieved-tiles search give the same answers from both; the raster index's locator never lists the index (no
    row table loaded), opens only the cells near each search, and cuts only the tiles it shows the fine model -
    pixel for pixel the tile folder's. A moved or changed raster is refused by name."""
    from crossview.locate import Locator, index_tiles
    from crossview.locate.rasters import index_rasters
    from crossview.models import create_model
    from crossview.tiles import read_manifest

    root, _ = ramp_world
    m, _ = radii(LAT0)
    dlat = math.degrees(H * MPP / m)
    _, n = radii(LAT0 - dlat / 2)
    corners = (LAT0, LON0, LAT0 - dlat, LON0 + math.degrees(W * MPP / n))
    tif = _ramp_geotiff(tmp_path / "ortho.tif", root / "ortho.png", corners)
    torch.manual_seed(0)
    retrieval = create_model("mfrgn_tiny", pretrained=False).eval()
    manifest = build_tiles(tif, tmp_path / "tiles", tile_px=320, overlap=0.5, mpp=MPP)
    tiles = {t.id: t for t in read_manifest(manifest)}
    by_folder = index_tiles(manifest, retrieval, tmp_path / "folder", layout="region", res=12)
    by_raster = index_rasters([tif], retrieval, tmp_path / "raster", tile_px=320, overlap=0.5, mpp=MPP, res=12,
                              log=lambda *_: None)
    fine = RampLocalizer()
    a = Locator(by_folder, model=retrieval, fine_model=fine, refine=3)
    b = Locator(by_raster, model=retrieval, fine_model=fine, refine=3, tile_cache=tmp_path / "cache")
    assert len(b.index) == len(tiles) and len(b.index.cells) > 4
    e, n_south = 56.0, 40.0
    truth = _ll(e, n_south - H * MPP)
    photo = _photo(tmp_path / "p.png", e, n_south)
    fix = _ll(e + 10.0, n_south - H * MPP - 10.0)
    for search in ("scan", "tiles"):
        ra, rb = (loc.locate(photo, camera="pinhole", fov_deg=70, heading_prior=(30, 20), near=(*fix, 30.0),
                             fine_search=search, out=tmp_path / f"{search}-{i}") for i, loc in enumerate((a, b)))
        assert (rb["lat"], rb["lon"], rb["tile"], rb["x_m"], rb["y_m"]) == (ra["lat"], ra["lon"], ra["tile"],
                                                                            ra["x_m"], ra["y_m"]), search
        assert [c["tile"] for c in rb["candidates"]] == [c["tile"] for c in ra["candidates"]]
        assert b.index.cells_opened < len(b.index.cells)
    assert distance_m((rb["lat"], rb["lon"]), truth) > 1.5 and distance_m((ra["lat"], ra["lon"]), truth) > 1.5
    scan = b.locate(photo, camera="pinhole", fov_deg=70, heading_prior=(30, 20), near=(*fix, 30.0),
                    fine_search="scan")
    assert distance_m((scan["lat"], scan["lon"]), truth) < 1.5
    assert not b.index.rows_loaded  # the row table (every id and centre) was never read
    cut = sorted((tmp_path / "cache").glob("*.png"))
    assert 0 < len(cut) < len(tiles)
    for p in cut:
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(tiles[p.stem].path)))
    # the raster it was cut from must be the one it was built from
    with open(tif, "ab") as f:
        f.write(b"\0" * 16)
    with pytest.raises(ConfigError, match="has changed"):
        Locator(by_raster, model=retrieval)
    tif.rename(tmp_path / "moved.tif")
    with pytest.raises(ConfigError, match="not there"):
        Locator(by_raster, model=retrieval)
