"""The web app's HTTP behaviour with a small pipeline injected: uploads, limits, no path traversal."""

from __future__ import annotations

import http.client
import io
import json
import threading
import time
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


def request_with_headers(srv, body: bytes, headers: dict) -> tuple[int, str | None]:
    """POST an upload; (status, Retry-After)."""
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=120)
    conn.request("POST", "/api/locate", body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status, resp.getheader("Retry-After")


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
                       "near": (40.5, -74.25, 120.0), "fine_search": "auto"}
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
    (b"GIF89a" + b"\0" * 100, 415, "only JPEG, PNG or HEIC"),
    (b"%PDF-1.4 not an image", 415, "only JPEG, PNG or HEIC"),
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
    assert parse_options({})["fine_search"] == "auto" and parse_options({"search": "scan"})["fine_search"] == "scan"
    with pytest.raises(Exception, match="search must be one of auto, tiles, scan, posterior"):
        parse_options({"search": "everywhere"})


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
                             "--data-dir", str(data), "--queue", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
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
        # six at once with one waiting place: each is located or told to retry (503 + Retry-After), none lost
        body, headers = multipart({"camera": "panorama"}, jpeg_bytes((256, 128)))
        burst: list = []
        threads = [threading.Thread(target=lambda: burst.append(request_with_headers(srv, body, headers)))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(burst) == 6 and {s for s, _ in burst} <= {200, 503} and any(s == 200 for s, _ in burst)
        assert all(int(retry) >= 1 for s, retry in burst if s == 503)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert {p.name for p in tmp_path.iterdir()} == {"inputs", "data"}  # nothing written beside the data folder


# --- holding up: the queue, timeouts, hostile uploads, clean-up, logs, the map's data ---------------------------
def start(tmp_path, pipeline, **limits):
    from crossview.serve import Limits

    tiles = limits.pop("tiles", None)
    srv = make_server(pipeline, tmp_path / "data", port=0, limits=Limits(**{"max_bytes": 2_000_000, **limits}),
                      tiles=tiles)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


def stop(srv):
    srv.shutdown()
    srv.server_close()


def png_bomb(side: int = 30000) -> bytes:
    """A valid 1-bit PNG of ``side`` x ``side`` zeros: ~100 kB that decodes to ``side``² pixels (900 MP)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp, row = zlib.compressobj(9), b"\0" * (1 + side // 8)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_busy_queue_answers_503_with_retry_after(tmp_path):
    gate, started = threading.Event(), threading.Semaphore(0)

    def slow(photo, options, out_dir):
        started.release()
        gate.wait(10)
        return {"lat": 1.0, "lon": 2.0, "candidates": []}

    srv = start(tmp_path, slow, workers=1, queue=1)
    try:
        body, headers = multipart({}, jpeg_bytes())
        answers: list = []
        threads = [threading.Thread(target=lambda: answers.append(request(srv, "POST", "/api/locate", body, headers)))
                   for _ in range(2)]
        for t in threads:
            t.start()
        assert started.acquire(timeout=10)  # one runs, one waits: the queue is full
        deadline = time.time() + 10
        while srv.app.jobs.stats()["admitted"] < 2 and time.time() < deadline:
            time.sleep(0.02)
        conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
        conn.request("POST", "/api/locate", body=body, headers=headers)
        resp = conn.getresponse()
        data = json.loads(resp.read())
        assert resp.status == 503 and int(resp.getheader("Retry-After")) >= 1
        assert "busy" in data["error"] and f"retry in {resp.getheader('Retry-After')} s" in data["error"]
        status, _, cfg = request(srv, "GET", "/api/config")  # the page still loads while the queue is full
        assert status == 200 and json.loads(cfg)["queue"]["admitted"] == 2
        gate.set()
        for t in threads:
            t.join(10)
        assert sorted(a[0] for a in answers) == [200, 200]
    finally:
        gate.set()
        stop(srv)


def test_hostile_uploads_rejected(server, tmp_path):
    good = jpeg_bytes((400, 200))
    cases = [
        (png_bomb(), 413, "megapixels"),  # a decompression bomb: refused by its header, never decoded
        (good[: len(good) // 2], 400, "truncated or damaged"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, 415, "header is unreadable"),  # PNG magic, then garbage
        (b"MZ\x90\x00 an executable", 415, "only JPEG, PNG or HEIC"),
    ]
    for payload, status, message in cases:
        body, headers = multipart({"camera": "panorama"}, payload, filename="../../../../tmp/evil.jpg")
        got, _, data = request(server, "POST", "/api/locate", body, headers)
        assert got == status and message in json.loads(data)["error"], (got, data)
    chunked = {"Content-Type": "multipart/form-data; boundary=x", "Transfer-Encoding": "chunked"}
    status, _, data = request(server, "POST", "/api/locate", b"0\r\n\r\n", chunked)
    assert status == 411 and "Content-Length" in json.loads(data)["error"]
    body, headers = multipart({"camera": "x" * 10_000}, good)
    status, _, data = request(server, "POST", "/api/locate", body, headers)
    assert status == 400 and "too long" in json.loads(data)["error"]
    assert server.calls == []  # none of them reached the pipeline
    data_dir = tmp_path / "data"
    assert [p for p in data_dir.rglob("*") if p.is_file()] == []  # no upload or result left behind
    assert {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")} == {"data"}


def test_timeouts(tmp_path):
    import socket

    def slow(photo, options, out_dir):
        time.sleep(1.5)
        (out_dir / "late.png").write_bytes(b"x")
        return {"lat": 1.0, "lon": 2.0, "candidates": []}

    srv = start(tmp_path, slow, socket_timeout_s=0.5, upload_timeout_s=1.0, locate_timeout_s=0.5, queue=1)
    try:
        host, port = srv.server_address[:2]
        # an upload that trickles in: 408 after the upload deadline
        body, headers = multipart({}, jpeg_bytes())
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(f"POST /api/locate HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nContent-Type: "
                  f"{headers['Content-Type']}\r\n\r\n".encode())
        t0 = time.time()
        reply = b""
        for i in range(0, len(body), 64):
            try:
                s.sendall(body[i:i + 64])
            except OSError:
                break
            time.sleep(0.1)  # faster than the socket timeout, slower than the upload deadline allows
            if time.time() - t0 > 3:
                break
        s.settimeout(5)
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except OSError:
            pass
        s.close()
        assert reply.startswith(b"HTTP/1.0 408") and b"took too long" in reply, reply[:200]
        # a connection that sends nothing is dropped after the socket timeout, and the server still answers
        idle = socket.create_connection((host, port), timeout=10)
        t0 = time.time()
        assert idle.recv(100) == b"" and time.time() - t0 < 3
        idle.close()
        # a locate slower than its deadline: 504, and its folder is removed once it ends
        status, _, data = request(srv, "POST", "/api/locate", *multipart({}, jpeg_bytes()))
        assert status == 504 and "longer than 0.5 s" in json.loads(data)["error"]
        time.sleep(1.5)
        assert list(srv.app.results.iterdir()) == [] and list(srv.app.uploads.iterdir()) == []
    finally:
        stop(srv)


def test_connection_cap(tmp_path):
    import socket

    srv = start(tmp_path, fake_pipeline([]), max_connections=2, socket_timeout_s=5)
    try:
        host, port = srv.server_address[:2]
        held = [socket.create_connection((host, port), timeout=5) for _ in range(2)]
        time.sleep(0.3)
        extra = socket.create_connection((host, port), timeout=5)
        reply = extra.recv(4096)
        assert reply.startswith(b"HTTP/1.0 503") and b"Retry-After: 5" in reply and b"too many connections" in reply
        for s in [*held, extra]:
            s.close()
        time.sleep(0.3)
        assert request(srv, "GET", "/api/config")[0] == 200
    finally:
        stop(srv)


def test_results_cleaned_on_schedule_and_logs_are_json(tmp_path):
    from crossview.serve.logs import configure

    stream = io.StringIO()
    configure(stream=stream)
    srv = start(tmp_path, fake_pipeline([]), keep_s=0.3, sweep_s=0.1)
    try:
        status, _, data = request(srv, "POST", "/api/locate", *multipart({}, jpeg_bytes()))
        assert status == 200
        rid = json.loads(data)["id"]
        assert (srv.app.results / rid).is_dir()
        deadline = time.time() + 5
        while (srv.app.results / rid).exists() and time.time() < deadline:
            time.sleep(0.05)
        assert not (srv.app.results / rid).exists()  # removed by the scheduled clean-up
        request(srv, "GET", "/nowhere")
    finally:
        stop(srv)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    reqs = [e for e in lines if e["event"] == "request"]
    post = next(e for e in reqs if e["method"] == "POST")
    assert post["status"] == 200 and post["rid"] == rid and post["bytes"] > 0 and post["pixels"] == [128, 64]
    assert post["ms"] >= 0 and "locate_s" in post and post["ts"].endswith("+00:00")
    assert any(e["status"] == 404 and e["path"] == "/nowhere" for e in reqs)
    assert any(e["event"] == "cleanup" and e["results_removed"] >= 1 for e in lines)


def test_map_data_and_candidate_footprints(tmp_path):
    from crossview.serve.maps import coverage, tile_layer
    from crossview.tiles import Tile, square_footprint

    tiles = []
    for i in range(3):
        lat, lon = 40.5, -74.25 + 0.001 * i
        path = tmp_path / f"t{i}.png"
        Image.new("RGB", (640, 640), (40 * i, 90, 90)).save(path)
        tiles.append(Tile(f"r0000_c{i:04d}", path, lat, lon, 0.1, 640, 640, square_footprint(lat, lon, 64, 64)))
    srv = start(tmp_path, fake_pipeline([]), tiles=tiles)
    try:
        layer = json.loads(request(srv, "GET", "/api/tiles")[2])
        assert layer["mode"] == "images" and layer["count"] == 3 and layer["tiles"][1]["url"] == "/tiles/1.jpg"
        assert layer["tiles"][1]["bounds"][0][1] == pytest.approx(tiles[1].footprint["sw"][1])
        status, ctype, jpg = request(srv, "GET", "/tiles/1.jpg")
        assert status == 200 and ctype == "image/jpeg" and Image.open(io.BytesIO(jpg)).size == (256, 256)
        assert request(srv, "GET", "/tiles/3.jpg")[0] == 404 and request(srv, "GET", "/tiles/../t0.png")[0] == 404
        status, _, data = request(srv, "POST", "/api/locate", *multipart({}, jpeg_bytes()))
        cands = json.loads(data)["candidates"]
        assert cands[0]["footprint"] == [list(tiles[0].footprint[k]) for k in ("nw", "ne", "se", "sw")]
        assert cands[1]["footprint"] == [list(tiles[1].footprint[k]) for k in ("nw", "ne", "se", "sw")]
        assert json.loads(request(srv, "GET", "/api/config")[2])["map"]["count"] == 3
    finally:
        stop(srv)
    # many tiles: their coverage as merged rectangles that hold every tile centre
    grid = [Tile(f"g{r}_{c}", tmp_path / "x.png", 40 + r * 5e-4, -74 + c * 6e-4, 0.1, 640, 640,
                 square_footprint(40 + r * 5e-4, -74 + c * 6e-4, 64, 64)) for r in range(30) for c in range(30)
            if (r - 15) ** 2 + (c - 15) ** 2 < 200]
    layer = tile_layer(grid, max_images=100)
    assert layer["mode"] == "coverage" and layer["count"] == len(grid) and len(layer["rects"]) < len(grid) / 4
    for t in grid:
        assert any(s <= t.lat <= n and w <= t.lon <= e for (s, w), (n, e) in layer["rects"])
    assert len(coverage(grid, max_cells=50)) <= 50


LOAD_SERVER = r'''
import sys, time
from PIL import Image
from crossview.serve import Limits, make_server
from crossview.serve.logs import configure


def pipeline(photo, options, out_dir):  # a quick stand-in locator: decodes the photo, "thinks", draws a picture
    with Image.open(photo) as im:
        im.draft("RGB", (im.width // 4, im.height // 4))
        im.load()
    time.sleep(0.05)
    Image.new("RGB", (32, 32)).save(out_dir / "locate.png")
    return {"lat": 1.0, "lon": 2.0, "heading_deg": 0.0, "picture": "locate.png", "candidates": []}


configure(sys.argv[2])
srv = make_server(pipeline, sys.argv[1], port=0, limits=Limits(max_bytes=8 << 20, workers=2, queue=6))
print(srv.server_address[1], flush=True)
srv.serve_forever(poll_interval=0.05)
'''


def _rss_mb(pid: int, key: str = "VmRSS") -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(key))) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc")
def test_load_50_concurrent_uploads(tmp_path):
    """50 uploads of a 3.8 MB photo at once against a server in its own process (2 workers, 6 waiting places, a
    quick stand-in locator): every one is answered, 200 with a result or 503 with Retry-After, none is lost; the
    server's peak memory grows by far less than the 190 MB the uploads hold together (they stream to disk, the
    turned-away ones are read and dropped in chunks); ``/api/config`` answers throughout; nothing is left outside
    the data folder. Prints the figures (measured here: 0 lost, peak RSS +6 MB, /api/config at most 0.4 s)."""
    import subprocess
    import sys

    import numpy as np

    (tmp_path / "server.py").write_text(LOAD_SERVER)
    data, log_file = tmp_path / "data", tmp_path / "data" / "server.log"
    data.mkdir()
    proc = subprocess.Popen([sys.executable, str(tmp_path / "server.py"), str(data), str(log_file)],
                            stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        port = int(proc.stdout.readline())
        srv = type("Srv", (), {"server_address": ("127.0.0.1", port)})
        buf = io.BytesIO()
        noise = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
        Image.fromarray(noise).save(buf, format="JPEG", quality=90)
        body, headers = multipart({"camera": "panorama"}, buf.getvalue())
        assert request(srv, "POST", "/api/locate", body, headers)[0] == 200  # warm: imports, first decode
        base_mb = _rss_mb(proc.pid)

        n, answers, lost, config_ms, rss = 50, [], [], [], []
        go, done = threading.Barrier(n + 1), threading.Event()

        def upload(i: int) -> None:
            go.wait()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("POST", "/api/locate", body=body, headers=headers)
                resp = conn.getresponse()
                answers.append((resp.status, resp.getheader("Retry-After"), json.loads(resp.read())))
                conn.close()
            except Exception as exc:  # a reset, a timeout or a malformed answer: the upload was lost
                lost.append(f"{i}: {exc!r}")

        def watch() -> None:  # the page's own request, every 50 ms while the uploads run; and the server's RSS
            while not done.is_set():
                t0 = time.monotonic()
                status, _, cfg = request(srv, "GET", "/api/config")
                config_ms.append((status, 1000 * (time.monotonic() - t0)))
                rss.append(_rss_mb(proc.pid))
                time.sleep(0.05)

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        watcher = threading.Thread(target=watch)
        watcher.start()
        t0 = time.monotonic()
        go.wait()
        for t in threads:
            t.join(90)
        elapsed = time.monotonic() - t0
        done.set()
        watcher.join(10)
        peak_mb = _rss_mb(proc.pid, "VmHWM")
        queue = json.loads(request(srv, "GET", "/api/config")[2])["queue"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)

    ok = [a for a in answers if a[0] == 200]
    busy = [a for a in answers if a[0] == 503]
    worst_ms = max(ms for _, ms in config_ms)
    print(f"50 uploads of {len(body) / 1e6:.1f} MB in {elapsed:.1f} s: {len(ok)} located, {len(busy)} answered 503 "
          f"(Retry-After {sorted({int(a[1]) for a in busy})} s), {len(lost)} lost; server RSS {base_mb:.0f} MB "
          f"before, {max(rss, default=0):.0f} MB sampled peak, VmHWM {peak_mb:.0f} MB; /api/config {len(config_ms)} "
          f"times, slowest {worst_ms:.0f} ms")
    assert lost == [] and len(answers) == n
    assert len(ok) + len(busy) == n and len(ok) >= 8  # at least the places there were (2 workers + 6 waiting)
    assert all(a[2]["lat"] == 1.0 and a[2]["picture_url"].startswith("/results/") for a in ok)
    assert all(int(a[1]) >= 1 and "busy" in a[2]["error"] and a[2]["retry_after_s"] == int(a[1]) for a in busy)
    assert queue["done"] == len(ok) + 1 and queue["admitted"] == 0  # every admitted upload was located, once
    assert peak_mb - base_mb < 50, (base_mb, peak_mb)  # 50 uploads held in memory would be 190 MB
    assert config_ms and all(s == 200 for s, _ in config_ms) and worst_ms < 2000
    assert [p.name for p in (data / "uploads").iterdir()] == []
    assert len(list((data / "results").iterdir())) == len(ok) + 1
    assert {p.name for p in tmp_path.iterdir()} == {"server.py", "data"}
    logged = [json.loads(line) for line in log_file.read_text().splitlines()]
    posts = [e for e in logged if e["event"] == "request" and e["method"] == "POST"]
    assert len(posts) == n + 1 and sorted(e["status"] for e in posts) == sorted([200] + [a[0] for a in answers])
