"""EXIF priors for ``locate``: GPS fix, compass direction, focal length and orientation written by Pillow, read
back through Pillow's EXIF API; bad EXIF falls back with a note; answers that contradict the priors are flagged."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from PIL import ExifTags, Image

from crossview.cli import main
from crossview.locate.exif import read_exif
from crossview.locate.photo import DEFAULT_FOV_DEG, read_photo
from crossview.locate.priors import contradictions, resolve_priors

LAT, LON = 40.0005, -74.0003  # inside the tile world below


def _dms(deg: float) -> tuple[float, float, float]:
    d = int(deg)
    m = int((deg - d) * 60)
    return float(d), float(m), round((deg - d - m / 60) * 3600, 4)


def phone_exif(lat=LAT, lon=LON, accuracy=5.0, direction=123.5, ref="T", focal35=26, orientation=None,
               focal=None, plane_res=None) -> bytes:
    """EXIF as a phone writes it: GPS IFD (position, accuracy, compass), Exif IFD (focal lengths), orientation."""
    ex = Image.Exif()
    ex[ExifTags.Base.Make] = "crossview-test"
    if orientation:
        ex[ExifTags.Base.Orientation] = orientation
    gps = ex.get_ifd(ExifTags.IFD.GPSInfo)
    if lat is not None:
        gps[ExifTags.GPS.GPSLatitudeRef] = "N" if lat >= 0 else "S"
        gps[ExifTags.GPS.GPSLatitude] = _dms(abs(lat))
        gps[ExifTags.GPS.GPSLongitudeRef] = "E" if lon >= 0 else "W"
        gps[ExifTags.GPS.GPSLongitude] = _dms(abs(lon))
    if accuracy is not None:
        gps[ExifTags.GPS.GPSHPositioningError] = accuracy
    if direction is not None:
        gps[ExifTags.GPS.GPSImgDirectionRef] = ref
        gps[ExifTags.GPS.GPSImgDirection] = direction
    sub = ex.get_ifd(ExifTags.IFD.Exif)
    if focal35 is not None:
        sub[ExifTags.Base.FocalLengthIn35mmFilm] = focal35
    if focal is not None:
        sub[ExifTags.Base.FocalLength] = focal
    if plane_res is not None:  # pixels per cm on the sensor
        sub[ExifTags.Base.FocalPlaneXResolution] = plane_res
        sub[ExifTags.Base.FocalPlaneYResolution] = plane_res
        sub[ExifTags.Base.FocalPlaneResolutionUnit] = 3
    return ex.tobytes()


def _photo(path, size=(400, 300), exif: bytes | None = None):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        path, "JPEG", **({"exif": exif} if exif else {}))
    return path


def test_phone_exif_read_back(tmp_path):
    info = read_exif(Image.open(_photo(tmp_path / "p.jpg", exif=phone_exif())))
    assert (info.lat, info.lon) == pytest.approx((LAT, LON), abs=1e-7)
    assert info.accuracy_m == 5.0 and info.direction_deg == 123.5 and info.direction_ref == "T"
    # 26 mm equivalent on a 4:3 photo: the 43.27 mm diagonal gives a 34.6 mm wide frame -> 67.3°
    assert info.fov_deg == pytest.approx(math.degrees(2 * math.atan(0.8 * math.hypot(36, 24) / 52)))
    assert info.notes == []
    south = read_exif(Image.open(_photo(tmp_path / "s.jpg", exif=phone_exif(lat=-33.8688, lon=151.2093))))
    assert (south.lat, south.lon) == pytest.approx((-33.8688, 151.2093), abs=1e-7)


def test_fov_from_focal_length_and_sensor(tmp_path):
    # 4.25 mm lens, 400 px across at 1,000 px/cm -> a 4 mm wide sensor: 2·atan(4 / 8.5) = 50.4°
    path = _photo(tmp_path / "f.jpg", exif=phone_exif(focal35=None, focal=4.25, plane_res=1000.0))
    assert read_exif(Image.open(path)).fov_deg == pytest.approx(math.degrees(2 * math.atan(4 / 8.5)), abs=1e-3)
    # turned by the orientation tag: the upright photo's width is the sensor's 3 mm side
    path = _photo(tmp_path / "o.jpg", exif=phone_exif(focal35=None, focal=4.25, plane_res=1000.0, orientation=6))
    photo = read_photo(path, "pinhole")
    assert photo.size == (300, 400) and photo.fov_from == "exif"
    assert photo.fov_deg == pytest.approx(math.degrees(2 * math.atan(3 / 8.5)), abs=1e-3)


def test_bad_exif_falls_back(tmp_path):
    absurd = read_photo(_photo(tmp_path / "a.jpg", exif=phone_exif(focal35=3)), "pinhole")
    assert (absurd.fov_deg, absurd.fov_from) == (DEFAULT_FOV_DEG, "default")
    assert any("35-mm focal length 3 mm is implausible" in n for n in absurd.notes)
    for kwargs, why in (({"lat": 0.0, "lon": 0.0}, "placeholder"), ({"direction": 400.0}, "compass")):
        info = read_exif(Image.open(_photo(tmp_path / "b.jpg", exif=phone_exif(**kwargs))))
        assert any(why in n for n in info.notes)
    # a truncated EXIF block: the APP1 segment cut to 40 bytes of its TIFF data
    raw = _photo(tmp_path / "t.jpg", exif=phone_exif()).read_bytes()
    i = raw.index(b"\xff\xe1")
    n = struct.unpack(">H", raw[i + 2:i + 4])[0]
    cut = raw[:i + 2] + struct.pack(">H", 2 + 6 + 40) + raw[i + 4:i + 4 + 6 + 40] + raw[i + 2 + n:]
    (tmp_path / "t.jpg").write_bytes(cut)
    photo = read_photo(tmp_path / "t.jpg", "pinhole", fov_deg=60)
    assert photo.fov_deg == 60 and photo.notes and "EXIF" in photo.notes[0]
    priors = resolve_priors(photo)
    assert priors.sources["fov"] == "flag" and priors.notes == photo.notes


def test_priors_sources_and_overrides(tmp_path):
    photo = read_photo(_photo(tmp_path / "p.jpg", exif=phone_exif(ref="M")), "pinhole")
    p = resolve_priors(photo)
    assert p.near == (pytest.approx(LAT), pytest.approx(LON), 20.0)  # 3 × 5 m, at least 20 m
    assert p.heading == (123.5, 30.0) and p.sources == {"fov": "exif", "near": "exif", "heading": "exif"}
    assert any("magnetic" in n for n in p.notes)
    p = resolve_priors(photo, near="40.0,-74.0±100", heading_prior="none")
    assert p.near == (40.0, -74.0, 100.0) and p.heading is None
    assert (p.sources["near"], p.sources["heading"]) == ("flag", "none")
    assert resolve_priors(photo, use_exif=False).sources == {"fov": "exif", "near": "none", "heading": "none"}
    d = resolve_priors(photo).to_dict()
    assert d["near"]["from"] == "exif" and d["exif"]["direction_ref"] == "M"


def test_contradictions():
    from crossview.locate.priors import Priors

    p = Priors(near=(40.0, -74.0, 50.0), heading=(90.0, 20.0), sources={"near": "flag", "heading": "exif"})
    assert contradictions(40.0002, -74.0, 100.0, p) == []  # 22 m away, 10° off
    flags = contradictions(40.001, -74.0, 150.0, p)  # 111 m away, 60° off
    assert len(flags) == 2 and "outside its 50 m radius (--near)" in flags[0]
    assert "60° from the compass prior 90°±20° (the photo's compass)" in flags[1]
    assert contradictions(40.0, -74.0, 150.0, p, heading_estimated=False) == []  # the prior's own heading


@pytest.fixture(scope="module")
def tile_world(tmp_path_factory):
    """A random-weight tiny retrieval model, a tile set cut from one image around (40.0005, -74.0), its index."""
    import torch

    from crossview.locate import index_tiles
    from crossview.models import create_model, save_model
    from crossview.tiles import build_tiles

    root = tmp_path_factory.mktemp("exifworld")
    torch.manual_seed(0)
    save_model(create_model("mfrgn_tiny"), root / "model.pt")
    big = (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(big).resize((256, 256), Image.NEAREST).save(root / "ortho.png")
    manifest = build_tiles(root / "ortho.png", root / "tiles", corners=(40.001, -74.001, 40.0, -73.999), tile_px=128)
    return root, index_tiles(manifest, root / "model.pt", root / "tiles.index")


def test_exif_drives_locate_without_flags(tile_world, tmp_path, capsys):
    root, index = tile_world
    photo = _photo(tmp_path / "phone.jpg", exif=phone_exif())
    assert main(["locate", str(photo), "--index", str(index), "--camera", "pinhole", "--top-k", "3",
                 "--out", str(tmp_path / "o")]) == 0
    r = json.loads(capsys.readouterr().out)
    pri = r["priors"]
    assert {k: pri[k]["from"] for k in ("near", "heading", "fov")} == {"near": "exif", "heading": "exif",
                                                                        "fov": "exif"}
    assert r["near"] == [pytest.approx(LAT), pytest.approx(LON), 20.0] and r["heading_prior"] == [123.5, 20.0]
    assert r["fov_deg"] == pytest.approx(67.3, abs=0.1) and r["heading_deg"] == 123.5
    assert json.loads((tmp_path / "o" / "locate.json").read_text())["priors"] == pri
    # the flags win, and say so
    assert main(["locate", str(photo), "--index", str(index), "--camera", "pinhole", "--near", "none",
                 "--heading-prior", "10±5", "--fov", "50"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {k: r["priors"][k]["from"] for k in ("near", "heading", "fov")} == {"near": "none", "heading": "flag",
                                                                               "fov": "flag"}
    assert r["near"] is None and r["fov_deg"] == 50


def test_exif_gps_outside_the_index_falls_back(tile_world, tmp_path, capsys):
    root, index = tile_world
    photo = _photo(tmp_path / "far.jpg", exif=phone_exif(lat=48.8584, lon=2.2945))
    assert main(["locate", str(photo), "--index", str(index), "--camera", "pinhole", "--top-k", "2"]) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert r["near"] is None and r["priors"]["near"]["from"].startswith("exif (outside the index")
    assert "outside the index" in captured.err and len(r["candidates"]) == 2
    # the same point given as a flag is the user's explicit choice: a clear error
    assert main(["locate", str(photo), "--index", str(index), "--camera", "pinhole",
                 "--near", "48.8584,2.2945±50"]) == 2
    assert "widen the radius of --near" in capsys.readouterr().err


def test_contradicting_answer_is_flagged_in_json_and_picture(tile_world, tmp_path):
    from crossview.locate import Locator

    root, index = tile_world
    # a 20 m area at the corner of the tile set: every tile centre lies outside it
    photo = _photo(tmp_path / "p.jpg", exif=phone_exif(lat=40.00095, lon=-74.0009, accuracy=1.0))
    r = Locator(index).locate(photo, camera="pinhole", top_k=2, out=tmp_path / "o")
    assert r["method"] == "retrieval" and r["confident"] is False
    assert "outside its 20 m radius (the photo's GPS)" in r["flags"][0]
    assert Image.open(tmp_path / "o" / "locate.png").height > 540  # the reasons are written under the tile


def _heic(path, size=(400, 300), exif: bytes | None = None):
    """A real HEIC file (HEVC-coded by libheif through pillow-heif), EXIF inside, as an iPhone saves photos."""
    import pillow_heif

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    heif = pillow_heif.from_pillow(img)
    heif.save(path, quality=90, **({"exif": exif} if exif else {}))
    assert path.read_bytes()[4:12] == b"ftypheic"
    return path


def test_a_heic_photo_is_located_with_its_exif_priors_through_cli_and_page(tile_world, tmp_path, capsys):
    """An iPhone-style HEIC with GPS, compass and focal length: no --camera, no flags; the CLI and the web page
    both read it, infer an ordinary (pinhole) photo and take the three priors from its EXIF."""
    import http.client
    import threading
    import uuid

    from crossview.locate import Locator
    from crossview.serve import locator_pipeline, make_server

    root, index = tile_world
    photo = _heic(tmp_path / "IMG_0001.HEIC", exif=phone_exif())
    assert main(["locate", str(photo), "--index", str(index), "--top-k", "3"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["camera"] == "pinhole" and cli["near"] == [pytest.approx(LAT), pytest.approx(LON), 20.0]
    assert {k: cli["priors"][k]["from"] for k in ("near", "heading", "fov")} == {"near": "exif", "heading": "exif",
                                                                                  "fov": "exif"}
    assert cli["heading_prior"] == [123.5, 20.0] and cli["fov_deg"] == pytest.approx(67.3, abs=0.1)
    srv = make_server(locator_pipeline(Locator(index)), tmp_path / "data", port=0)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        b = uuid.uuid4().hex
        body = (f"--{b}\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n3\r\n--{b}\r\nContent-Disposition: "
                f"form-data; name=\"photo\"; filename=\"IMG_0001.HEIC\"\r\nContent-Type: image/heic\r\n\r\n").encode() \
            + photo.read_bytes() + f"\r\n--{b}--\r\n".encode()
        conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=120)
        conn.request("POST", "/api/locate", body=body, headers={"Content-Type": f"multipart/form-data; boundary={b}"})
        resp = conn.getresponse()
        page = json.loads(resp.read())
        assert resp.status == 200, page
        assert page["camera"] == "pinhole" and page["priors"]["near"]["from"] == "exif"
        assert page["heading_prior"] == [123.5, 20.0] and (page["lat"], page["lon"]) == (cli["lat"], cli["lon"])
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_camera_kind_is_inferred_from_the_photo():
    from crossview.locate.photo import infer_camera

    assert infer_camera(Image.new("RGB", (512, 256))) == "panorama"
    assert infer_camera(Image.new("RGB", (400, 300))) == "pinhole"
    sphere = Image.new("RGB", (400, 300))
    sphere.info["xmp"] = b'<x:xmpmeta><rdf:Description GPano:ProjectionType="equirectangular"/></x:xmpmeta>'
    assert infer_camera(sphere) == "panorama"
