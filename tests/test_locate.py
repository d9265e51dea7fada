"""``crossview locate``: input checks, the pinhole->panorama canvas, and the retrieval chain on a small tile set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
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
    # FoV from the 35-mm focal length: 2·atan(36 / (2·28)) = 65.47°
    photo = read_photo(_save(tmp_path / "a.jpg", (400, 300), _exif(focal35=28)), "pinhole")
    assert photo.fov_deg == pytest.approx(math.degrees(2 * math.atan(36 / 56)))
    assert read_photo(tmp_path / "a.jpg", "pinhole", fov_deg=50).fov_deg == 50  # the flag wins
    rotated = read_photo(_save(tmp_path / "r.jpg", (400, 300), _exif(orientation=6)), "pinhole", fov_deg=60)
    assert rotated.size == (300, 400)  # EXIF orientation 6: turned upright
    raw = (tmp_path / "a.jpg").read_bytes()
    i = raw.index(b"Exif\x00\x00")
    for patch, why in ((slice(i + 6, i + 8), "not a TIFF header"), (slice(i + 10, i + 14), "points past the end")):
        bad = bytearray(raw)
        bad[patch] = b"XX" if why.startswith("not") else b"\x7f\xff\xff\xff"
        (tmp_path / "bad.jpg").write_bytes(bytes(bad))
        with pytest.raises(CrossviewError, match=f"EXIF metadata is unreadable.*{why}"):
            read_photo(tmp_path / "bad.jpg", "pinhole", fov_deg=60)


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


def test_cli_reports_input_errors(tmp_path, capsys):
    (tmp_path / "x.jpg").write_text("hello")
    (tmp_path / "idx").write_bytes(b"")
    code = main(["locate", str(tmp_path / "x.jpg"), "--index", str(tmp_path / "idx"), "--heading-prior", "north"])
    assert code == 2 and "DEG±ERR" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tile_world(tmp_path_factory):
    """A random-weight tiny retrieval model, a 3×3 tile set cut from one image, and its index."""
    pytest.importorskip("crossview.search.index", reason="crossview.search has not landed")
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


def test_retrieval_chain(tile_world, tmp_path):
    import torch

    from crossview.locate import Locator
    from crossview.models import input_spec, load_model
    from crossview.search.embed import embed_images
    from crossview.tiles import read_manifest

    root, manifest, index = tile_world
    loc = Locator(index)
    photo = _save(tmp_path / "pano.jpg", (512, 256))
    r = loc.locate(photo, heading_prior="45±10", top_k=4, out=tmp_path / "out", thumbnails=True)
    tiles = {t.id: t for t in read_manifest(manifest)}
    # the ranking is the model's cosine ranking of the photo against every tile, recomputed here
    model = load_model(str(root / "model_a.pt")).eval()
    (h, w), mean, std = input_spec(model, "ground")
    x = torch.from_numpy(np.asarray(Image.open(photo).convert("RGB").resize((w, h), Image.BILINEAR)))
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
    assert main(["locate", str(photo), "--index", str(index)]) == 2
    assert "about 2:1" in capsys.readouterr().err


