"""The web app's HTTP behaviour with a small pipeline injected: uploads, limits, no path traversal."""

from __future__ import annotations

import http.client
import io
import json
import threading
import uuid
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from crossview.errors import CrossviewError
from crossview.serve import make_server, sniff
from crossview.serve.app import parse_options


def fake_pipeline(calls: list):
    """Stands in for the locator: draws a picture and a thumbnail into out_dir, answers a fixed pose."""

    def pipeline(photo: Path, options: dict, out_dir: Path) -> dict:
        calls.append((photo, dict(options), out_dir))
        with Image.open(photo) as im:
            w, h = im.size
        if options["heading_prior"] == "explode":
            raise CrossviewError("heading prior 'explode' is not DEG±ERR")
        pic = Image.new("RGB", (64, 64), (90, 120, 90))
        ImageDraw.Draw(pic).ellipse((28, 28, 36, 36), fill=(255, 0, 0))
        pic.save(out_dir / "locate.png")
        pic.save(out_dir / "candidate_1.jpg")
        return {"lat": 40.5, "lon": -74.25, "heading_deg": 90.0, "uncertainty_m": 3.5, "confidence": 0.8,
                "method": "fine", "photo": str(photo), "picture": "locate.png", "size": [w, h],
                "candidates": [{"rank": 1, "tile": "r0000_c0000", "score": 0.9, "lat": 40.5, "lon": -74.25,
                                "file": "/secret/tile.png", "thumbnail": "candidate_1.jpg", "chosen": True},
                               {"rank": 2, "tile": "r0000_c0001", "score": 0.5, "lat": 40.6, "lon": -74.2,
                                "thumbnail": "../../etc/passwd"}]}

    return pipeline


@pytest.fixture
def server(tmp_path):
    calls: list = []
    srv = make_server(fake_pipeline(calls), tmp_path / "data", port=0, max_bytes=200_000)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.calls = calls
    yield srv
    srv.shutdown()
    srv.server_close()


def request(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheader("Content-Type"), data


def multipart(fields: dict[str, str], file_bytes: bytes | None, filename: str = "photo.jpg"):
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode())
    if file_bytes is not None:
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"{filename}\"\r\n"
                  "Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(file_bytes + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def jpeg_bytes(size=(128, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def test_page_and_static(server):
    status, ctype, body = request(server, "GET", "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b'id="locate-form"' in body and b"/static/app.js" in body
    for name in ("app.js", "style.css"):
        status, _, body = request(server, "GET", f"/static/{name}")
        assert status == 200 and body
    status, _, body = request(server, "GET", "/api/config")
    assert json.loads(body)["max_bytes"] == 200_000


def test_upload_locates_and_serves_pictures(server, tmp_path):
    body, headers = multipart({"camera": "panorama", "heading_prior": "90±20", "top_k": "3",
                               "near": "40.5,-74.25±120"}, jpeg_bytes(), filename="../../evil.jpg")
    status, ctype, data = request(server, "POST", "/api/locate", body, headers)
    assert status == 200, data
    result = json.loads(data)
    assert (result["lat"], result["lon"], result["heading_deg"]) == (40.5, -74.25, 90.0)
    assert result["size"] == [128, 64]  # the pipeline got the photo intact
    photo, options, out_dir = server.calls[0]
    assert options == {"camera": "panorama", "fov_deg": None, "heading_prior": "90±20", "top_k": 3,
                       "near": (40.5, -74.25, 120.0)}
    data_dir = (tmp_path / "data").resolve()
    assert out_dir.parent == data_dir / "results" and photo.parent == data_dir / "uploads"
    assert not photo.exists()  # the upload is removed once located
    assert "photo" not in result and all("file" not in c for c in result["candidates"])  # no local paths leak
    assert result["candidates"][1]["thumbnail_url"] is None  # a name outside out_dir is not published
    status, ctype, png = request(server, "GET", result["picture_url"])
    assert status == 200 and ctype == "image/png" and png.startswith(b"\x89PNG")
    status, ctype, _ = request(server, "GET", result["candidates"][0]["thumbnail_url"])
    assert status == 200 and ctype == "image/jpeg"
    assert not (tmp_path / "evil.jpg").exists() and not list(tmp_path.glob("*.jpg"))
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
    assert written == {"data"}  # nothing outside the data folder


@pytest.mark.parametrize("payload,status,message", [
    (b"GIF89a" + b"\0" * 100, 415, "only JPEG or PNG"),
    (b"%PDF-1.4 not an image", 415, "only JPEG or PNG"),
    (None, 400, "choose a photo"),
])
def test_bad_uploads_rejected(server, payload, status, message):
    body, headers = multipart({"camera": "panorama"}, payload)
    got, ctype, data = request(server, "POST", "/api/locate", body, headers)
    assert got == status and ctype == "application/json"
    assert message in json.loads(data)["error"]
    assert server.calls == []


def test_limits_and_field_errors(server):
    body, headers = multipart({}, jpeg_bytes() + b"\0" * 300_000)
    status, _, data = request(server, "POST", "/api/locate", body, headers)
    assert status == 413 and "too large" in json.loads(data)["error"]
    status, _, data = request(server, "POST", "/api/locate", b"photo=1",
                              {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "multipart" in json.loads(data)["error"]
    body, headers = multipart({"camera": "fisheye"}, jpeg_bytes())
    status, _, data = request(server, "POST", "/api/locate", body, headers)
    assert status == 400 and "camera must be" in json.loads(data)["error"]
    body, headers = multipart({"near": "somewhere in Paris"}, jpeg_bytes())
    status, _, data = request(server, "POST", "/api/locate", body, headers)
    assert status == 400 and "rough location" in json.loads(data)["error"] and "LAT,LON" in json.loads(data)["error"]
    body, headers = multipart({"heading_prior": "explode"}, jpeg_bytes())  # the pipeline's own user error
    status, _, data = request(server, "POST", "/api/locate", body, headers)
    assert status == 422 and "DEG±ERR" in json.loads(data)["error"]
    assert [p.name for p in (server.app.results).iterdir()] == []  # the failed request left nothing behind


@pytest.mark.parametrize("path", [
    "/results/../../etc/passwd", "/static/../app.py", "/static/..%2fapp.py", "/results/%2e%2e/%2e%2e/x.png",
    "/results/0123456789abcdef0123456789abcdef/../../uploads/x.png", "/results/notanid/locate.png",
    "/../../etc/passwd", "/static/__init__.py", "/results/0123456789abcdef0123456789abcdef/locate.png",
])
def test_no_path_traversal(server, path):
    status, _, data = request(server, "GET", path)
    assert status == 404 and json.loads(data) == {"error": "not found"}


def test_helpers():
    assert sniff(b"\xff\xd8\xff\xe0rest") == ("jpg", "image/jpeg")
    assert sniff(b"\x89PNG\r\n\x1a\nrest") == ("png", "image/png")
    assert sniff(b"<html>") is None
    assert parse_options({"camera": "pinhole", "fov": "75.5"})["fov_deg"] == 75.5
    with pytest.raises(Exception, match="not a number"):
        parse_options({"fov": "wide"})
    with pytest.raises(Exception, match="top-k"):
        parse_options({"top_k": "0"})


@pytest.mark.slow
def test_cli_serves_a_real_locator(tmp_path):
    """`crossview serve` in its own process, with a real (random-weight) retrieval model and tile index."""
    import subprocess
    import sys
    import time

    import torch

    from crossview.locate import index_tiles
    from crossview.models import create_model, save_model
    from crossview.tiles import build_tiles

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    torch.manual_seed(0)
    save_model(create_model("mfrgn_tiny"), inputs / "model.pt")
    Image.effect_noise((256, 256), 60).convert("RGB").save(inputs / "ortho.png")
    manifest = build_tiles(inputs / "ortho.png", inputs / "tiles", corners=(40.001, -74.001, 40.0, -73.999),
                           tile_px=128)
    index = index_tiles(manifest, inputs / "model.pt", inputs / "tiles.index")
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "crossview.cli", "serve", "--index", str(index), "--port", "0",
                             "--data-dir", str(data)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path)
    try:
        deadline, url = time.time() + 180, None
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if "http://" in line:
                url = line.split("http://", 1)[1].split("/", 1)[0]
        assert url, "crossview serve did not print its address"
        host, port = url.rsplit(":", 1)
        srv = type("Srv", (), {"server_address": (host, int(port))})
        body, headers = multipart({"camera": "panorama", "top_k": "3", "heading_prior": "30±10"},
                                  jpeg_bytes((256, 128)))
        status, _, data_bytes = request(srv, "POST", "/api/locate", body, headers)
        assert status == 200, data_bytes
        r = json.loads(data_bytes)
        assert r["method"] == "retrieval" and r["heading_deg"] == 30.0 and len(r["candidates"]) == 3
        assert sum(c["chosen"] for c in r["candidates"]) == 1 and r["candidates"][0]["chosen"]
        status, ctype, png = request(srv, "GET", r["picture_url"])
        assert status == 200 and png.startswith(b"\x89PNG")
        assert all(request(srv, "GET", c["thumbnail_url"])[0] == 200 for c in r["candidates"])
        body, headers = multipart({"camera": "panorama"}, jpeg_bytes((300, 300)))  # not 2:1
        status, _, data_bytes = request(srv, "POST", "/api/locate", body, headers)
        assert status == 422 and "about 2:1" in json.loads(data_bytes)["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert {p.name for p in tmp_path.iterdir()} == {"inputs", "data"}  # nothing written beside the data folder
