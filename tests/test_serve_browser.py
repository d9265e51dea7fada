"""The web page in a real headless Chromium (Debian's package), driven by Playwright.

Needs ``/usr/bin/chromium`` (``.ci/install_browser.sh`` installs it) and the ``playwright`` Python package; never
downloads a browser. Screenshots land in the test's tmp folder and are copied to ``tests/artifacts/``.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from crossview.serve import make_server

CHROMIUM = Path(os.environ.get("CROSSVIEW_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).parent / "artifacts"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: run .ci/install_browser.sh (apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


def pipeline(photo: Path, options: dict, out_dir: Path) -> dict:
    """A stand-in locator: the tile picture with a dot and heading arrow, and two candidate thumbnails."""
    tile = Image.new("RGB", (256, 256), (96, 128, 96))
    d = ImageDraw.Draw(tile)
    d.rectangle((40, 40, 120, 200), fill=(150, 150, 150))
    d.ellipse((150, 110, 166, 126), fill=(230, 30, 30))
    d.line((158, 118, 210, 118), fill=(255, 230, 0), width=5)
    tile.save(out_dir / "locate.png")
    tile.resize((96, 96)).save(out_dir / "candidate_1.jpg")
    tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((96, 96)).save(out_dir / "candidate_2.jpg")
    return {"lat": 40.7128, "lon": -74.006, "heading_deg": 90.0, "uncertainty_m": 4.2, "confidence": 0.87,
            "method": "fine", "picture": "locate.png", "note": "refined inside 2 of the 2 tiles",
            "candidates": [{"rank": 1, "tile": "r0001_c0002", "score": 0.91, "lat": 40.7128, "lon": -74.006,
                            "confidence": 0.87, "thumbnail": "candidate_1.jpg", "chosen": True},
                           {"rank": 2, "tile": "r0003_c0000", "score": 0.55, "lat": 40.7131, "lon": -74.0071,
                            "confidence": 0.2, "thumbnail": "candidate_2.jpg"}]}


@pytest.fixture
def site(tmp_path):
    srv = make_server(pipeline, tmp_path / "data", port=0, max_bytes=300_000)
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
            sync_api.expect(page.locator("#latlon")).to_have_text("40.712800, -74.006000")
            sync_api.expect(page.locator("#heading")).to_contain_text("90.0°")
            sync_api.expect(page.locator("#confidence")).to_have_text("0.870")
            sync_api.expect(page.locator("#candidates li")).to_have_count(2)
            sync_api.expect(page.locator("#note")).to_have_text("refined inside 2 of the 2 tiles")
            page.wait_for_function("document.getElementById('picture').naturalWidth === 256")
            page.wait_for_function("[...document.querySelectorAll('#candidates img')].every(i => i.naturalWidth > 0)")
            assert page.locator("#error").is_hidden()
            assert _save(page, tmp_path, "serve_result.png").stat().st_size > 10_000

            page.set_input_files("#photo", str(not_image))
            page.click("#submit")
            error = page.locator("#error")
            sync_api.expect(error).to_be_visible(timeout=15_000)
            sync_api.expect(error).to_contain_text("only JPEG or PNG")
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
