"""The web page in a real headless Chromium (Debian's package), driven by Playwright.

Needs ``/usr/bin/chromium`` (``.ci/install_browser.sh`` installs it) and the ``playwright`` Python package; never
downloads a browser. Screenshots land in the test's tmp folder and are copied to ``tests/artifacts/``.

The map test serves twelve indexed tiles (VIGOR-style long names) and a stand-in locator's answer, then checks on
the page what a person sees: the tiles drawn at their footprints, the answer's marker inside its uncertainty
circle, the heading arrow pointing east for a 90° heading, both candidates' footprints on the tiles they name, the
rough-location circle, a candidate's thumbnail on click, candidate captions that wrap instead of overrunning each
other, and not one request to another origin (every request is recorded; any other origin would also be
blocked), nor a Content-Security-Policy violation.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from crossview.serve import make_server
from crossview.tiles import Tile, square_footprint

CHROMIUM = Path(os.environ.get("CROSSVIEW_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).parent / "artifacts"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: run .ci/install_browser.sh (apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
sync_api.expect.set_options(timeout=20_000)  # generous: CI's two cores are shared with other tests

LAT0, LON0, TILE_M = 40.7128, -74.006, 51.2  # the grid's north-west tile centre; 256 px at 0.2 m



def _wait_js(page, expression: str, timeout_s: float = 20.0) -> None:
    """Poll a JavaScript expression until it is truthy. Playwright's ``wait_for_function`` re-evaluates a string
    predicate with ``eval`` inside the page when it is not true at once, which the page's Content-Security-Policy
    (``script-src 'self'``) forbids; ``page.evaluate`` runs through the debugger protocol and is allowed."""
    end = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > end:
            raise AssertionError(f"still false after {timeout_s:.0f} s: {expression}")
        time.sleep(0.05)

def make_tiles(folder: Path) -> list[Tile]:
    """A 3 x 4 grid of north-up 256-px tiles, each its own colour with its row/column written on it."""
    from crossview.geometry.geo import offset_to_latlon

    folder.mkdir(parents=True)
    tiles = []
    for r in range(3):
        for c in range(4):
            lat, lon = (float(v) for v in offset_to_latlon(LAT0, LON0, c * TILE_M, -r * TILE_M))
            tid = f"NewYork/satellite_{lat:.12f}_{lon:.12f}"
            im = Image.new("RGB", (256, 256), (60 + 50 * c, 90 + 40 * r, 120))
            d = ImageDraw.Draw(im)
            d.rectangle((8, 8, 247, 247), outline=(255, 255, 255), width=3)
            d.text((20, 20), f"r{r} c{c}", fill=(255, 255, 255))
            path = folder / f"satellite_{lat:.12f}_{lon:.12f}.png"
            im.save(path)
            tiles.append(Tile(tid, path, lat, lon, 0.2, 256, 256, square_footprint(lat, lon, TILE_M, TILE_M)))
    return tiles


def pipeline(photo: Path, options: dict, out_dir: Path) -> dict:
    """A stand-in locator: the tile picture with a dot and heading arrow, and two candidate thumbnails; the answer
    lies 10 m east and 5 m south of the centre of tile (row 0, column 1), the runner-up is tile (row 1, column 2)."""
    from crossview.geometry.geo import offset_to_latlon

    tile = Image.new("RGB", (256, 256), (96, 128, 96))
    d = ImageDraw.Draw(tile)
    d.rectangle((40, 40, 120, 200), fill=(150, 150, 150))
    d.ellipse((150, 110, 166, 126), fill=(230, 30, 30))
    d.line((158, 118, 210, 118), fill=(255, 230, 0), width=5)
    tile.save(out_dir / "locate.png")
    tile.resize((96, 96)).save(out_dir / "candidate_1.jpg")
    tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((96, 96)).save(out_dir / "candidate_2.jpg")
    best, second = TILES[1], TILES[6]
    lat, lon = (float(v) for v in offset_to_latlon(best.lat, best.lon, 10.0, -5.0))
    return {"lat": round(lat, 6), "lon": round(lon, 6), "heading_deg": 90.0, "uncertainty_m": 4.2,
            "confidence": 0.87, "method": "fine", "picture": "locate.png", "note": "refined inside 2 of the 2 tiles",
            "near": list(options["near"]) if options.get("near") else None,
            "candidates": [{"rank": 1, "tile": best.id, "score": 0.91, "lat": best.lat, "lon": best.lon,
                            "confidence": 0.87, "thumbnail": "candidate_1.jpg", "chosen": True},
                           {"rank": 2, "tile": second.id, "score": 0.55, "lat": second.lat, "lon": second.lon,
                            "confidence": 0.2, "thumbnail": "candidate_2.jpg"}]}


TILES: list[Tile] = []


@pytest.fixture
def site(tmp_path):
    TILES[:] = make_tiles(tmp_path / "tiles")
    srv = make_server(pipeline, tmp_path / "data", port=0, max_bytes=300_000, tiles=TILES)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def _save(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / name)
    return shot


def test_upload_and_errors_in_chromium(site, tmp_path):
    photo = tmp_path / "street.jpg"
    Image.new("RGB", (512, 256), (120, 160, 220)).save(photo)
    not_image = tmp_path / "notes.jpg"  # a .jpg name but not a JPEG inside
    not_image.write_text("these are my holiday notes, not a photo")
    big = tmp_path / "big.png"
    buf = io.BytesIO()
    Image.effect_noise((800, 800), 80).convert("RGB").save(buf, format="PNG")  # incompressible: > 300 kB
    big.write_bytes(buf.getvalue())

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(site)
            assert page.title().startswith("crossview")
            sync_api.expect(page.locator("#max-mb")).to_have_text("0.3")  # the limit came from /api/config

            page.set_input_files("#photo", str(photo))
            page.fill("#heading_prior", "80±30")
            page.click("#submit")
            sync_api.expect(page.locator("#result")).to_be_visible(timeout=15_000)
            sync_api.expect(page.locator("#latlon")).to_contain_text("40.71")
            sync_api.expect(page.locator("#heading")).to_contain_text("90.0°")
            sync_api.expect(page.locator("#confidence")).to_have_text("0.870")
            sync_api.expect(page.locator("#candidates li")).to_have_count(2)
            sync_api.expect(page.locator("#note")).to_have_text("refined inside 2 of the 2 tiles")
            _wait_js(page, "document.getElementById('picture').naturalWidth === 256")
            _wait_js(page, "[...document.querySelectorAll('#candidates img')].every(i => i.naturalWidth > 0)")
            assert page.locator("#error").is_hidden()
            assert _save(page, tmp_path, "serve_result.png").stat().st_size > 10_000

            page.set_input_files("#photo", str(not_image))
            page.click("#submit")
            error = page.locator("#error")
            sync_api.expect(error).to_be_visible(timeout=15_000)
            sync_api.expect(error).to_contain_text("only JPEG, PNG or HEIC")
            assert page.locator("#result").is_hidden()
            _save(page, tmp_path, "serve_bad_upload.png")

            page.set_input_files("#photo", str(big))
            page.click("#submit")
            sync_api.expect(error).to_contain_text("too large")

            page.set_input_files("#photo", str(photo))
            page.fill("#top_k", "99")  # the browser's own range check would stop this: bypass it like a script
            page.evaluate("document.getElementById('locate-form').noValidate = true")
            page.click("#submit")
            sync_api.expect(error).to_contain_text("top-k must be")
        finally:
            browser.close()


def _settled(page, locator, timeout_s: float = 20.0) -> None:
    """Wait until ``locator`` stops moving (Leaflet's zoom animation has ended): the same box 250 ms apart."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        box = locator.bounding_box()
        if box is not None and box == last:
            return
        last = box
        page.wait_for_timeout(250)
    raise AssertionError(f"{locator} still moving after {timeout_s:g} s")


def _box(locator) -> dict:
    box = locator.bounding_box()
    assert box is not None, f"{locator} is not on screen"
    return box


def test_map_in_chromium(site, tmp_path):
    photo = tmp_path / "street.jpg"
    Image.new("RGB", (512, 256), (120, 160, 220)).save(photo)
    origin = site.rstrip("/")
    requests, foreign, console = [], [], []

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 1000})
            context.set_default_timeout(30_000)

            def guard(route):  # the page may only talk to its own server: anything else is recorded and blocked
                if route.request.url.startswith(origin + "/"):
                    return route.continue_()
                foreign.append(route.request.url)
                return route.abort()

            context.route("**/*", guard)
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: console.append(m.text))
            page.on("pageerror", lambda e: console.append(f"page error: {e}"))
            page.goto(site)

            # the index on the map: 12 tiles as images at their footprints
            sync_api.expect(page.locator("#map-caption")).to_contain_text("12 aerial tiles")
            sync_api.expect(page.locator("img.cv-tile")).to_have_count(12)
            _wait_js(page, "[...document.querySelectorAll('img.cv-tile')].every(i => i.naturalWidth > 0)")

            page.set_input_files("#photo", str(photo))
            page.fill("#near", f"{LAT0:.6f},{LON0 + 0.0005:.6f}±80")
            page.click("#submit")
            sync_api.expect(page.locator("#result")).to_be_visible(timeout=15_000)
            marker = page.locator(".leaflet-marker-icon")
            sync_api.expect(marker).to_have_count(1)
            sync_api.expect(marker).to_be_visible()
            sync_api.expect(page.locator("path.cv-uncertainty")).to_have_count(1)
            sync_api.expect(page.locator("path.cv-candidate")).to_have_count(2)
            sync_api.expect(page.locator("path.cv-chosen")).to_have_count(1)
            sync_api.expect(page.locator("path.cv-heading")).to_have_count(1)
            sync_api.expect(page.locator("path.cv-near")).to_have_count(1)
            _settled(page, marker)  # the fit-to-answer zoom has ended

            # the marker's point (the icon's bottom centre) is the uncertainty circle's centre
            m, circle = _box(marker), _box(page.locator("path.cv-uncertainty"))
            tip = (m["x"] + m["width"] / 2, m["y"] + m["height"])
            centre = (circle["x"] + circle["width"] / 2, circle["y"] + circle["height"] / 2)
            assert abs(tip[0] - centre[0]) <= 2 and abs(tip[1] - centre[1]) <= 2, (tip, centre)
            # heading 90°: the arrow leaves the marker's point eastwards
            a = _box(page.locator("path.cv-heading"))
            assert a["width"] > 2 * a["height"] and a["x"] >= centre[0] - 3 and a["x"] + a["width"] > centre[0] + 40
            # each candidate footprint covers exactly the tile image it names (tiles 1 and 6 of the grid)
            tiles = page.locator("img.cv-tile")
            for poly, n in ((page.locator("path.cv-chosen"), 1), (page.locator("path.cv-candidate").nth(1), 6)):
                pb, tb = _box(poly), _box(tiles.nth(n))
                assert all(abs(pb[k] - tb[k]) <= 3 for k in ("x", "y", "width", "height")), (n, pb, tb)
            # the answer lies inside the chosen tile's footprint, 10 m east and 5 m south of its centre
            cb = _box(page.locator("path.cv-chosen"))
            assert cb["x"] + cb["width"] / 2 < centre[0] < cb["x"] + cb["width"]
            assert cb["y"] + cb["height"] / 2 < centre[1] < cb["y"] + cb["height"]

            # long candidate names wrap inside their own column
            spans = page.locator("#candidates li span")
            sync_api.expect(spans).to_have_count(2)
            for i in range(2):
                assert spans.nth(i).evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "a caption overflows"
            b0, b1 = _box(page.locator("#candidates li").nth(0)), _box(page.locator("#candidates li").nth(1))
            assert b0["x"] + b0["width"] <= b1["x"] or b0["y"] + b0["height"] <= b1["y"], (b0, b1)
            shot = tmp_path / "serve_map.png"
            page.screenshot(path=str(shot), full_page=True)

            # clicking a candidate (in the list, or its footprint on the map) shows its thumbnail
            page.locator("#candidates li").nth(1).click()
            popup_img = page.locator(".leaflet-popup img")
            sync_api.expect(popup_img).to_be_visible()
            _wait_js(page, "document.querySelector('.leaflet-popup img').naturalWidth > 0")
            assert "candidate_2.jpg" in popup_img.get_attribute("src")
            sync_api.expect(page.locator(".leaflet-popup")).to_contain_text("#2 tile NewYork/satellite_")
            page.locator("path.cv-chosen").dispatch_event("click")
            sync_api.expect(page.locator(".leaflet-popup img[src$='/candidate_1.jpg']")).to_be_visible()
            sync_api.expect(page.locator(".leaflet-popup img[src$='/candidate_2.jpg']")).to_have_count(0)
            _save(page, tmp_path, "serve_map_popup.png")
        finally:
            browser.close()
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "serve_map.png")
    assert shot.stat().st_size > 30_000
    assert foreign == [], f"the page asked another origin for {foreign}"
    assert requests and all(u.startswith(origin + "/") for u in requests), requests
    assert any("/static/vendor/leaflet/leaflet.js" in u for u in requests)
    assert not [c for c in console if "Content Security Policy" in c or "page error" in c], console

