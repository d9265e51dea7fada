"""``crossview locate``: input checks, the pinhole->panorama canvas, and the retrieval chain on a small tile set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from doubles import NoisyTruthLocalizer, OracleRetrieval
from PIL import Image

from crossview.cli import main
from crossview.errors import ConfigError, CrossviewError
from crossview.locate import parse_heading_prior, pinhole_to_panorama, read_photo


def _save(path, size=(256, 128), exif: bytes | None = None, fmt="JPEG"):
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    kwargs = {"exif": exif} if exif is not None else {}
    im.save(path, fmt, **kwargs)
    return path


def _exif(focal35: int | None = None, orientation: int | None = None) -> bytes:
    ex = Image.Exif()
    if orientation:
        ex[0x0112] = orientation
    if focal35:
        ex.get_ifd(0x8769)[0xA405] = focal35
    return ex.tobytes()


def test_heading_prior_syntax():
    assert parse_heading_prior("90±20") == (90.0, 20.0)
    assert parse_heading_prior(" -30 +- 15.5 ") == (330.0, 15.5)
    assert parse_heading_prior("400+/-5") == (40.0, 5.0)
    assert parse_heading_prior(None) is None and parse_heading_prior("") is None
    for bad in ("90", "north±10", "90±", "90±200", "±10", "90-20"):
        with pytest.raises(ConfigError, match="heading-prior"):
            parse_heading_prior(bad)


def test_photo_checks(tmp_path):
    pano = read_photo(_save(tmp_path / "pano.jpg", (512, 256)), "panorama")
    assert pano.size == (512, 256) and pano.fov_deg is None
    (tmp_path / "notes.jpg").write_text("not an image at all")
    with pytest.raises(CrossviewError, match="not an image"):
        read_photo(tmp_path / "notes.jpg")
    data = (tmp_path / "pano.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(CrossviewError, match="damaged or truncated"):
        read_photo(tmp_path / "cut.jpg")
    with pytest.raises(CrossviewError, match="does not exist"):
        read_photo(tmp_path / "missing.jpg")
    with pytest.raises(CrossviewError, match="about 2:1"):
        read_photo(_save(tmp_path / "square.jpg", (300, 300)), "panorama")
    with pytest.raises(CrossviewError, match="--fov"):
        read_photo(tmp_path / "square.jpg", "pinhole")
    with pytest.raises(CrossviewError, match="too elongated"):
        read_photo(_save(tmp_path / "strip.png", (1000, 100), fmt="PNG"), "pinhole", fov_deg=60)
    with pytest.raises(CrossviewError, match="between 1 and 180"):
        read_photo(tmp_path / "square.jpg", "pinhole", fov_deg=200)
    with pytest.raises(ConfigError, match="--camera"):
        read_photo(tmp_path / "square.jpg", "fisheye")
    assert read_photo(tmp_path / "square.jpg", "drone").camera == "drone"


def test_exif(tmp_path):
    # FoV from the 35-mm focal length over the full-frame diagonal spread on a 4:3 photo: 2·atan(34.6 / (2·28))
    photo = read_photo(_save(tmp_path / "a.jpg", (400, 300), _exif(focal35=28)), "pinhole")
    assert photo.fov_deg == pytest.approx(math.degrees(2 * math.atan(math.hypot(36, 24) * 0.8 / 56)))
    assert photo.fov_from == "exif"
    flagged = read_photo(tmp_path / "a.jpg", "pinhole", fov_deg=50)
    assert (flagged.fov_deg, flagged.fov_from) == (50, "flag")  # the flag wins
    rotated = read_photo(_save(tmp_path / "r.jpg", (400, 300), _exif(orientation=6)), "pinhole", fov_deg=60)
    assert rotated.size == (300, 400)  # EXIF orientation 6: turned upright
    raw = (tmp_path / "a.jpg").read_bytes()
    i = raw.index(b"Exif\x00\x00")
    for patch in (slice(i + 6, i + 8), slice(i + 10, i + 14)):  # not a TIFF header; first IFD past the end
        bad = bytearray(raw)
        bad[patch] = b"XX" if patch.stop - patch.start == 2 else b"\x7f\xff\xff\xff"
        (tmp_path / "bad.jpg").write_bytes(bytes(bad))
        broken = read_photo(tmp_path / "bad.jpg", "pinhole", fov_deg=60)  # damaged EXIF: a note, not a failure
        assert broken.fov_deg == 60 and any("EXIF block is present but unreadable" in n for n in broken.notes)


def test_pinhole_to_panorama_known_columns():
    photo = np.zeros((60, 80, 3), np.uint8)
    photo[:, :40] = (255, 0, 0)  # left half red, right half green
    photo[:, 40:] = (0, 255, 0)
    pano = pinhole_to_panorama(photo, 90.0, (64, 256), heading_deg=90.0)
    # heading 90 -> the optical axis at column (90/360 + 0.5)·256 = 192; ±45° spans columns 160..224
    cols = np.flatnonzero(pano[32].sum(-1) > 0)
    assert cols.min() == 160 and cols.max() == 223
    assert tuple(pano[32, 185]) == (255, 0, 0) and tuple(pano[32, 200]) == (0, 255, 0)
    assert pano[:, :150].sum() == 0 and pano[:, 230:].sum() == 0
    # rows: the photo's vertical half-FoV is atan(30/40) = 36.9°, so rows 32 ± 13 are painted at the axis
    rows = np.flatnonzero(pano[:, 192].sum(-1) > 0)
    assert rows.min() == pytest.approx(32 - 64 * 36.87 / 180, abs=1.01)


def test_large_photo_is_reduced_before_projection(monkeypatch):
    """A 4,032-px photo of 1-px stripes lands on ~90 canvas columns: prefiltered, it paints a flat grey (the stripes
    are far above the canvas's Nyquist limit); sampled without the prefilter, bilinear sampling aliases them into
    spurious structure. A pattern the canvas can hold survives the prefilter."""
    import crossview.locate.photo as photo_mod

    fine = np.zeros((3024, 4032, 3), np.uint8)
    fine[:, ::2] = 255
    window = (slice(50, 78), slice(110, 146), 0)  # inside the footprint: columns 128 ± 25, rows 64 ± 19
    painted = pinhole_to_panorama(fine, 70.0, (128, 256)).astype(float)[window]
    assert photo_mod.reduce_for_canvas(fine, 70.0, (128, 256)).shape[1] < 200
    with monkeypatch.context() as m:  # the same projection without the prefilter
        m.setattr(photo_mod, "reduce_for_canvas", lambda image, fov, size: image)
        aliased = pinhole_to_panorama(fine, 70.0, (128, 256)).astype(float)[window]
    assert painted.mean() == pytest.approx(127.5, abs=3)
    # the energy left after removing the mean: noise-level when prefiltered, far more when aliased
    assert painted.var() < 4.0 and aliased.var() > 100 * max(painted.var(), 1.0)
    coarse = np.zeros((3024, 4032, 3), np.uint8)
    coarse[:, :2016] = 255
    kept = pinhole_to_panorama(coarse, 70.0, (128, 256))[64, :, 0].astype(float)
    assert kept[118] > 240 and kept[138] < 15  # left half white, right half black
    small = np.zeros((60, 80, 3), np.uint8)
    assert photo_mod.reduce_for_canvas(small, 90.0, (128, 256)) is small  # not finer than the canvas: untouched


def test_cli_reports_input_errors(tmp_path, capsys):
    (tmp_path / "x.jpg").write_text("hello")
    (tmp_path / "idx").write_bytes(b"")
    code = main(["locate", str(tmp_path / "x.jpg"), "--index", str(tmp_path / "idx"), "--heading-prior", "north"])
    assert code == 2 and "DEG±ERR" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tile_world(tmp_path_factory):
    """A random-weight tiny retrieval model, a 3×3 tile set cut from one image, and its index."""
    import torch

    from crossview.locate import index_tiles
    from crossview.models import create_model, save_model
    from crossview.tiles import build_tiles

    root = tmp_path_factory.mktemp("tileworld")
    torch.manual_seed(0)
    for name in ("a", "b"):
        save_model(create_model("mfrgn_tiny"), root / f"model_{name}.pt")
    rng = np.random.default_rng(1)
    big = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(big).resize((256, 256), Image.NEAREST).save(root / "ortho.png")
    manifest = build_tiles(root / "ortho.png", root / "tiles", corners=(40.001, -74.001, 40.0, -73.999), tile_px=128)
    index = index_tiles(manifest, root / "model_a.pt", root / "tiles.index")
    return root, manifest, index


@pytest.mark.slow
def test_retrieval_chain(tile_world, tmp_path):
    import torch

    from crossview.locate import Locator
    from crossview.models import input_spec, load_model
    from crossview.search.embed import embed_images
    from crossview.tiles import read_manifest

    root, manifest, index = tile_world
    loc = Locator(index, precision="fp32")  # the reference below is float32 (auto is bf16 on CPUs with AMX)
    photo = _save(tmp_path / "pano.jpg", (512, 256))
    r = loc.locate(photo, heading_prior="45±10", top_k=4, out=tmp_path / "out", thumbnails=True)
    tiles = {t.id: t for t in read_manifest(manifest)}
    # the ranking is the model's cosine ranking of the photo against every tile, recomputed here
    model = load_model(str(root / "model_a.pt")).eval()
    (h, w), mean, std = input_spec(model, "ground")
    x = torch.from_numpy(np.array(Image.open(photo).convert("RGB").resize((w, h), Image.BILINEAR)))
    from crossview.geometry.cameras import roll_panorama

    x, _ = roll_panorama(x.permute(2, 0, 1), -45.0)
    x = (x[None].float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        q = torch.nn.functional.normalize(model.embed(x, view="ground"), dim=1)
    ids = list(tiles)
    ref = embed_images(model, [tiles[i].path for i in ids], "aerial")
    sims = (ref @ q[0]).numpy()
    order = [ids[i] for i in np.argsort(-sims)[:4]]
    assert [c["tile"] for c in r["candidates"]] == order
    assert [c["score"] for c in r["candidates"]] == pytest.approx(sorted(sims, reverse=True)[:4], abs=1e-4)
    best = tiles[order[0]]
    assert (r["lat"], r["lon"], r["method"]) == (best.lat, best.lon, "retrieval")
    assert r["heading_deg"] == 45.0 and r["heading_from"] == "prior"
    assert r["uncertainty_m"] == pytest.approx(64 * best.mpp)
    saved = json.loads((tmp_path / "out" / "locate.json").read_text())
    assert saved["tile"] == r["tile"] and saved["picture"] == "locate.png"
    assert Image.open(tmp_path / "out" / "locate.png").size == (512, 540)
    assert all((tmp_path / "out" / c["thumbnail"]).is_file() for c in r["candidates"])


def test_model_mismatch_refused(tile_world):
    from crossview.locate import Locator

    root, manifest, index = tile_world
    with pytest.raises(ConfigError, match="not comparable"):
        Locator(index, model=root / "model_b.pt")


def test_cli_locate(tile_world, tmp_path, capsys):
    root, manifest, index = tile_world
    photo = _save(tmp_path / "photo.jpg", (400, 300))
    code = main(["locate", str(photo), "--index", str(index), "--camera", "pinhole", "--fov", "70",
                 "--top-k", "2", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0, out
    r = json.loads(out)
    assert len(r["candidates"]) == 2 and r["camera"] == "pinhole" and r["fov_deg"] == 70
    assert (tmp_path / "o" / "locate.png").is_file()
    # a wrong-aspect panorama: a clear error, exit code 2
    assert main(["locate", str(photo), "--index", str(index), "--camera", "panorama"]) == 2
    assert "about 2:1" in capsys.readouterr().err
    # by default a 4:3 photo is an ordinary photo: it needs a field of view (this one has no EXIF)
    assert main(["locate", str(photo), "--index", str(index)]) == 2
    assert "horizontal field of view" in capsys.readouterr().err
    # a drone image against an index whose model has no drone view
    assert main(["locate", str(photo), "--index", str(index), "--camera", "drone"]) == 2
    assert "does not embed drone images" in capsys.readouterr().err




# --- end to end on the synthetic world ---------------------------------------------------------------------
# Training a retrieval model and a fine model well enough to compare is minutes of CPU (GPU-scale work, done
# by `make demo`); here both learned stages are replaced by test doubles that know the world's truth, so what is
# tested is everything around them: tiles from the world's folder, the index, search, candidate selection by
# confidence, metres -> lat/lon at the edge, and the error accounting against crossview_poses.jsonl.


@pytest.fixture(scope="module")
def tiny_world(tiny_vigor_world):
    return tiny_vigor_world


def test_demo_locate_fine_beats_tile_centre(tiny_world, tmp_path):
    from crossview.locate import demo_locate

    world = tiny_world
    metrics = demo_locate(world, OracleRetrieval(world), NoisyTruthLocalizer(world), n=12, out=tmp_path / "demo")
    ret, fine = metrics["retrieval"], metrics["fine"]
    assert metrics["photos"] == 12 and metrics["tiles"] == 64
    assert ret["top1_contains_camera"] == 1.0
    # the positive tile holds the camera in its central quarter: its centre is 0-25 m away
    assert 3.0 < ret["median_m"] < 25.0
    # 1.5 m noise per axis -> about 1.8 m median radial error; a frame or sign slip would cost tens of metres
    assert fine["median_m"] < 3.0 < ret["median_m"]
    assert fine["heading_median_deg"] < 6.0 < ret["heading_median_deg"]  # the prior was off by up to 45°
    rows = [json.loads(line) for line in (tmp_path / "demo" / "per_photo.jsonl").read_text().splitlines()]
    assert max(r["fine_error_m"] for r in rows) < 8.0
    assert json.loads((tmp_path / "demo" / "metrics.json").read_text())["fine"] == fine


def test_fine_refinement_picks_the_confident_tile(tiny_world, tmp_path):
    """With the positive ranked below a wrong tile, refinement still answers inside a tile that holds the camera."""
    from crossview.locate import Locator, index_tiles
    from crossview.tiles import build_tiles, distance_m

    world = tiny_world
    oracle = OracleRetrieval(world)
    manifest = build_tiles(world / "satellite", tmp_path / "tiles")
    index = index_tiles(manifest, oracle, tmp_path / "tiles.index")
    rec = next(json.loads(line) for line in (world / "crossview_poses.jsonl").read_text().splitlines()
               if '"test"' in line and '"panorama"' in line)
    wrong = next(t for t in oracle.slot if not any(t in x["tile"] for x in rec["tiles"]))
    i = int(torch_argmin_row(oracle, world / rec["image"]))
    oracle.targets[i, oracle.slot[wrong]] = 1.5  # the wrong tile now ranks first
    fine = NoisyTruthLocalizer(world)
    fine.median_m = 6.0  # as if its run had been evaluated at 6 m median error: the uncertainty floor
    loc = Locator(index, model=oracle, fine_model=fine, refine=3)
    r = loc.locate(world / rec["image"], heading_prior=(rec["heading_deg"] + 20, 45), out=tmp_path / "out",
                   thumbnails=True)
    assert r["candidates"][0]["tile"] == wrong and not r["candidates"][0]["chosen"]
    assert r["tile"] != wrong and r["method"] == "fine"
    assert distance_m((r["lat"], r["lon"]), (rec["lat"], rec["lon"])) < 8.0
    assert r["uncertainty_m"] >= 6.0
    assert (tmp_path / "out" / "candidate_1.jpg").is_file()


def torch_argmin_row(oracle, path):
    """The oracle's row for the panorama at ``path``."""
    import torch

    key = oracle._pano_key(oracle._load(path, (64, 128)))
    return torch.cdist(key[None], oracle.pano_keys).argmin()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["hcnet_tiny", "pillarmatch_tiny_test"])
def test_real_fine_checkpoints_plug_in(tiny_world, tmp_path, method):
    """(Untrained) HC-Net and PillarMatch checkpoints load through --fine-model and refine the top tiles."""
    import torch

    from crossview.fine import create_fine, save_fine
    from crossview.locate import Locator, index_tiles
    from crossview.tiles import build_tiles

    world = tiny_world
    torch.manual_seed(0)
    if method == "hcnet_tiny":
        model = create_fine(method, weights=None)
    else:
        model = create_fine(method, ground_size=(32, 64), aerial_size=64, bev_cells=8, heights_m=(-2.0, 0.0, 2.0),
                            feat_dim=16, desc_dim=16, num_matches=32, pinhole_size=(32, 32))
    save_fine(model, tmp_path / "checkpoint.pt")
    oracle = OracleRetrieval(world)
    index = index_tiles(build_tiles(world / "satellite", tmp_path / "tiles"), oracle, tmp_path / "tiles.index")
    rec = next(json.loads(line) for line in (world / "crossview_poses.jsonl").read_text().splitlines()
               if '"test"' in line and '"panorama"' in line)
    loc = Locator(index, model=oracle, fine_model=tmp_path, refine=2)
    r = loc.locate(world / rec["image"], heading_prior="10±45", top_k=3)
    assert r["method"] == "fine" and r["fine_method"] == method and r["fine_model"].endswith(tmp_path.name)
    refined = [c for c in r["candidates"] if "pose" in c]
    assert len(refined) == 2 and all(0 <= c["confidence"] <= 1 for c in refined)
    chosen = next(c for c in r["candidates"] if c["chosen"])
    assert chosen["confidence"] == max(c["confidence"] for c in refined)
    tile = loc.tiles[r["tile"]]
    lats = [p[0] for p in tile.footprint.values()]
    lons = [p[1] for p in tile.footprint.values()]
    assert min(lats) - 1e-4 <= r["lat"] <= max(lats) + 1e-4 and min(lons) - 1e-4 <= r["lon"] <= max(lons) + 1e-4
    photo = _save(tmp_path / "p.jpg", (400, 300))
    r = loc.locate(photo, camera="pinhole", fov_deg=60, top_k=2)
    if method == "hcnet_tiny":  # HC-Net places panoramas only: the retrieved tile centre, and why
        assert r["method"] == "retrieval" and "not pinhole" in r["note"] and "pose" not in r["candidates"][0]
    else:  # PillarMatch places pinhole photos too
        assert r["method"] == "fine" and "pose" in r["candidates"][0]


def test_run_median_error_read_from_metrics(tmp_path):
    from crossview.locate import _run_median_error

    assert _run_median_error(tmp_path) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": {"median_m": 7.5}}))
    assert _run_median_error(tmp_path) == 7.5
    (tmp_path / "metrics.json").write_text(json.dumps({"median_m": 3, "mean_m": 4}))
    assert _run_median_error(tmp_path / "checkpoint.pt") == 3.0


def test_near_syntax():
    from crossview.locate import parse_near

    assert parse_near("40.5,-74.25±150") == (40.5, -74.25, 150.0)
    assert parse_near("-33.86, 151.2 +- 80") == (-33.86, 151.2, 80.0)
    assert parse_near("1,2,3") == (1.0, 2.0, 3.0) and parse_near(None) is None
    for bad, msg in (("40.5±150", "LAT,LON±RADIUS_M"), ("95,10±5", "latitude,longitude"), ("1,2±0", "positive")):
        with pytest.raises(ConfigError, match=msg):
            parse_near(bad)


def test_tiles_near_known_answer():
    """Footprint-to-point distances by hand: a 100 m tile whose nearest edge is 30 m (or whose corner is 50 m) away."""
    from crossview.geometry.geo import offset_to_latlon
    from crossview.locate import tiles_near
    from crossview.tiles import Tile

    lat0, lon0 = 40.0, -74.0

    def tile(east, north):
        lat, lon = (float(v) for v in offset_to_latlon(lat0, lon0, east, north))
        return Tile(id=f"{east}_{north}", path=None, lat=lat, lon=lon, mpp=0.5, width=200, height=200, footprint={})

    # centres 80 m east (edge 30 m away), 80 m east + 90 m north (corner at (30, 40): 50 m), 200 m west (150 m)
    tiles = [tile(80, 0), tile(80, 90), tile(-200, 0), tile(0, 0)]
    assert tiles_near(tiles, lat0, lon0, 29.0).tolist() == [False, False, False, True]
    assert tiles_near(tiles, lat0, lon0, 31.0).tolist() == [True, False, False, True]
    assert tiles_near(tiles, lat0, lon0, 51.0).tolist() == [True, True, False, True]
    assert tiles_near(tiles, lat0, lon0, 151.0).tolist() == [True, True, True, True]


def test_near_restricts_the_search(tiny_world, tmp_path):
    """A wrong tile ranked first far away is excluded by a search area around a rough fix; an area with no tile
    gets an error naming --near."""
    from crossview.locate import Locator, index_tiles
    from crossview.tiles import build_tiles, distance_m

    world = tiny_world
    oracle = OracleRetrieval(world)
    index = index_tiles(build_tiles(world / "satellite", tmp_path / "tiles"), oracle, tmp_path / "tiles.index")
    recs = [json.loads(line) for line in (world / "crossview_poses.jsonl").read_text().splitlines()]
    rec = next(r for r in recs if r["split"] == "test" and r["camera"] == "panorama")
    loc = Locator(index, model=oracle, refine=0)
    truth = (rec["lat"], rec["lon"])
    far = max(loc.tiles.values(), key=lambda t: distance_m((t.lat, t.lon), truth))
    oracle.targets[int(torch_argmin_row(oracle, world / rec["image"])), oracle.slot[far.id]] = 1.5
    assert loc.locate(world / rec["image"], top_k=3)["tile"] == far.id  # the planted error, without an area
    r = loc.locate(world / rec["image"], top_k=3, near=(truth[0], truth[1], 20.0))
    assert r["tile"] != far.id and r["near"] == [truth[0], truth[1], 20.0]
    positives = {t["tile"].split("satellite/", 1)[1][:-4] for t in rec["tiles"]}
    assert r["tile"] in positives
    assert all(distance_m((c["lat"], c["lon"]), truth) < 20.0 + 0.75 * far.width * far.mpp for c in r["candidates"])
    with pytest.raises(CrossviewError, match="--near"):
        loc.locate(world / rec["image"], near=(truth[0] + 1.0, truth[1], 50.0))


def test_demo_locate_with_a_rough_gps_fix(tiny_world, tmp_path):
    from crossview.locate import demo_locate

    metrics = demo_locate(tiny_world, OracleRetrieval(tiny_world), NoisyTruthLocalizer(tiny_world), n=8,
                          out=tmp_path / "demo", gps_noise_m=30.0)
    assert metrics["gps_noise_m"] == 30.0 and metrics["near_radius_m"] == 30.0
    assert 0 < metrics["gps_fix"]["median_m"] <= 30.0
    rows = [json.loads(line) for line in (tmp_path / "demo" / "per_photo.jsonl").read_text().splitlines()]
    assert all(r["gps_error_m"] <= 30.0 + 1e-6 for r in rows)
    assert metrics["fine"]["median_m"] < 3.0 and metrics["fine"]["tile_contains_camera"] == 1.0


def test_recentre_refines_again_in_the_tile_centred_on_the_answer(tiny_world, tmp_path):
    """Retrieval picks a semi-positive (the camera near its edge); the answer is refined again in the tile whose
    centre is nearest to it, the positive one, and that answer is kept because the two agree."""
    from crossview.locate import Locator, index_tiles
    from crossview.tiles import build_tiles, distance_m

    world = tiny_world
    oracle = OracleRetrieval(world)
    index = index_tiles(build_tiles(world / "satellite", tmp_path / "tiles"), oracle, tmp_path / "tiles.index")
    recs = [json.loads(line) for line in (world / "crossview_poses.jsonl").read_text().splitlines()]
    rec = next(r for r in recs if r["camera"] == "panorama" and len(r["tiles"]) > 1)
    positive, semi = (t["tile"].split("satellite/", 1)[1][:-4] for t in rec["tiles"][:2])
    row = int(torch_argmin_row(oracle, world / rec["image"]))
    oracle.targets[row] = 0.0
    oracle.targets[row, oracle.slot[semi]] = 1.0  # only the semi-positive looks right to retrieval
    fine = NoisyTruthLocalizer(world)
    loc = Locator(index, model=oracle, fine_model=fine, refine=1)
    plain = loc.locate(world / rec["image"], heading_prior=(0, 10), top_k=1, recentre=False)
    again = loc.locate(world / rec["image"], heading_prior=(0, 10), top_k=1)
    assert plain["tile"] == semi and again["tile"] == positive
    chosen = next(c for c in again["candidates"] if c["chosen"])
    assert chosen["source"] == "recentre" and chosen["score"] is None and len(again["candidates"]) == 2
    truth = (rec["lat"], rec["lon"])
    assert distance_m((again["lat"], again["lon"]), truth) < 8.0


def test_demo_locate_pinhole_photos(tiny_world, tmp_path):
    """``camera="pinhole"``: the world's held-out pinhole photos (not its panoramas), each located as a pinhole with
    its own field of view; with a fine localizer that places pinholes and a GPS fix, the answers come from it."""
    import torch

    from crossview.locate import demo_locate
    from crossview.models import create_model

    torch.manual_seed(0)
    fine = NoisyTruthLocalizer(tiny_world)
    fine.cameras = ("pinhole",)
    recs = [json.loads(s) for s in (tiny_world / "crossview_poses.jsonl").read_text().splitlines()]
    pins = [r for r in recs if r["split"] == "test" and r.get("camera") == "pinhole"]
    metrics = demo_locate(tiny_world, create_model("mfrgn_tiny", pretrained=False).eval(), fine, n=4,
                          out=tmp_path / "pin", camera="pinhole", gps_noise_m=30.0, heading_noise_deg=20.0)
    rows = [json.loads(line) for line in (tmp_path / "pin" / "per_photo.jsonl").read_text().splitlines()]
    assert metrics["camera"] == "pinhole" and metrics["photos"] == len(rows) == min(4, len(pins))
    assert all(r["image"].startswith("pinhole/") for r in rows)
    assert all("fine_error_m" in r for r in rows)  # the pinhole-capable fine stage answered every photo
    with pytest.raises(Exception, match="no test-split drone photos"):
        demo_locate(tiny_world, create_model("mfrgn_tiny", pretrained=False).eval(), fine, n=2,
                    out=tmp_path / "none", camera="drone")


def test_region_index_gives_the_same_answers_as_the_flat_index(tiny_world, tmp_path):
    """The demo world indexed both ways (flat faiss, and per-H3-cell region index): locate returns the same tiles,
    scores and answer, with a --near area and without."""
    from crossview.locate import Locator, index_tiles
    from crossview.tiles import build_tiles

    world = tiny_world
    oracle = OracleRetrieval(world)
    manifest = build_tiles(world / "satellite", tmp_path / "tiles")
    flat = Locator(index_tiles(manifest, oracle, tmp_path / "flat.index"), model=oracle, refine=0)
    region = Locator(index_tiles(manifest, oracle, tmp_path / "region", layout="region", res=9), model=oracle,
                     refine=0)
    assert region.index.params["kind"] == "region" and len(region.index.cells) > 1
    recs = [json.loads(line) for line in (world / "crossview_poses.jsonl").read_text().splitlines()]
    recs = [r for r in recs if r["split"] == "test" and r["camera"] == "panorama"][:6]
    for rec in recs:
        for near in (None, (rec["lat"], rec["lon"], 30.0)):
            a = flat.locate(world / rec["image"], top_k=4, near=near)
            b = region.locate(world / rec["image"], top_k=4, near=near)
            sa, sb = ([c["score"] for c in r["candidates"]] for r in (a, b))
            assert sb == pytest.approx(sa, abs=2e-3)
            # the oracle scores many tiles alike (0.8 for every semi-positive): tied tiles may come in another
            # order, so compare the tiles at each score (those tied at the k-th score may be other tied tiles)
            for score in set(sa) - {sa[-1]}:
                assert {c["tile"] for c in a["candidates"] if c["score"] == score} == \
                    {c["tile"] for c in b["candidates"] if abs(c["score"] - score) < 2e-3}
            if sa.count(sa[0]) == 1:
                assert (a["lat"], a["lon"], a["tile"]) == (b["lat"], b["lon"], b["tile"])
    # with fine refinement of the 3 best tiles (and the re-centring step, which looks up the nearest tile): the
    # same pose. Ties broken first (every tile its own score, the same in both), since tied tiles come in index
    # order, which differs between the two; the stand-in's noise is drawn per call, in order.
    import torch

    oracle.targets = oracle.targets + 0.005 * torch.arange(oracle.targets.shape[1])
    flat_f = Locator(tmp_path / "flat.index", model=oracle, fine_model=NoisyTruthLocalizer(world), refine=3)
    region_f = Locator(tmp_path / "region", model=oracle, fine_model=NoisyTruthLocalizer(world), refine=3)
    for k, rec in enumerate(recs):
        near = (rec["lat"], rec["lon"], 30.0)
        flat_f.fine, region_f.fine = NoisyTruthLocalizer(world, seed=k), NoisyTruthLocalizer(world, seed=k)
        a, b = (loc.locate(world / rec["image"], top_k=4, near=near) for loc in (flat_f, region_f))
        assert [c["tile"] for c in b["candidates"]] == [c["tile"] for c in a["candidates"]]
        assert a["method"] == b["method"] == "fine"
        assert (b["lat"], b["lon"], b["heading_deg"], b["tile"]) == (a["lat"], a["lon"], a["heading_deg"], a["tile"])
        assert b["uncertainty_m"] == a["uncertainty_m"]
