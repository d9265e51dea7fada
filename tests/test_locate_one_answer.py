"""One photo, one answer: the same photo, index and models give the same answer from the command line, the Python
API and the web page, on the default path (retrieval, then the fine model refined in the best tiles). All three
pass one :class:`crossview.locate.LocateOptions` and load the models at one precision (``auto``); the thread count
is the process's own (``--threads``): with a random tiny model, a different one can change the answer."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from crossview.errors import ConfigError
from crossview.locate import LocateOptions, OptionError


def _world(root):
    """A random tiny retrieval model over 3 × 3 tiles of one random image near 40 N 74 W, and a random tiny pinhole
    FG² release: (index, fine release, photo)."""
    from PIL import Image

    from crossview.fine.loading import save_release
    from crossview.fine.registry import create_fine
    from crossview.locate import index_tiles
    from crossview.models import create_model, save_model
    from crossview.tiles import build_tiles

    torch.manual_seed(0)
    save_model(create_model("mfrgn_tiny"), root / "retrieval.pt")
    rng = np.random.default_rng(3)
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).resize((384, 384), Image.NEAREST) \
        .save(root / "ortho.png")
    manifest = build_tiles(root / "ortho.png", root / "tiles", corners=(40.001, -74.001, 40.0, -73.999), tile_px=192)
    index = index_tiles(manifest, root / "retrieval.pt", root / "tiles.index")
    torch.manual_seed(7)
    release = save_release(create_fine("fg2_tiny_kitti"), root / "fine.safetensors")
    photo = root / "photo.jpg"
    Image.fromarray((rng.random((96, 128, 3)) * 255).astype(np.uint8)).save(photo, quality=95)
    return index, release, photo


def test_cli_api_and_page_give_one_answer_on_the_tile_path(tmp_path, capsys, one_thread, upload_photo):
    from crossview.cli import main
    from crossview.geometry.geo import distance_m
    from crossview.locate import Locator, locate
    from crossview.serve import locator_pipeline, make_server

    index, release, photo = _world(tmp_path)
    near, prior = "40.0005,-74.0±40", "90±20"
    assert main(["locate", str(photo), "--index", str(index), "--fine-model", str(release), "--camera", "pinhole",
                 "--fov", "70", "--near", near, "--heading-prior", prior, "--threads", "1"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["method"] == "fine" and cli.get("search") is None  # refined in the best retrieved tiles
    options = LocateOptions(camera="pinhole", fov_deg=70, near=near, heading_prior=prior)
    api = locate(photo, index, options, fine_model=str(release))
    srv = make_server(locator_pipeline(Locator(index, fine_model=release)), tmp_path / "data", port=0)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        page = upload_photo(srv.server_address, photo,
                            {"camera": "pinhole", "fov": "70", "near": near, "heading_prior": prior})
    finally:
        srv.shutdown()
        srv.server_close()
    for other in (api, page):
        assert other["method"] == "fine" and other["tile"] == cli["tile"]
        # the page's worker thread may sum in another order: equal to well below a millimetre
        assert distance_m((other["lat"], other["lon"]), (cli["lat"], cli["lon"])) < 1e-3
        assert other["heading_deg"] == pytest.approx(cli["heading_deg"], abs=1e-3)
        assert other["uncertainty_m"] == pytest.approx(cli["uncertainty_m"], abs=1e-3)
        assert [c["tile"] for c in other["candidates"]] == [c["tile"] for c in cli["candidates"]]
        assert other["near"] == pytest.approx(cli["near"]) and other["heading_prior"] == cli["heading_prior"]


def test_locate_options_are_checked_once_where_made():
    o = LocateOptions(near="40.0,-74.0±50", heading_prior="  ", top_k=0)
    assert o.near == (40.0, -74.0, 50.0) and o.heading_prior is None and o.top_k == 1
    assert LocateOptions.of({"camera": "pinhole", "fov_deg": 60, "other": 1}, top_k=3) == \
        LocateOptions(camera="pinhole", fov_deg=60.0, top_k=3)
    assert LocateOptions(near="none").near == "none"
    for field, kwargs in (("camera", {"camera": "fisheye"}), ("fine_search", {"fine_search": "everywhere"}),
                          ("near", {"near": "somewhere"}), ("heading_prior", {"heading_prior": "north"})):
        with pytest.raises(OptionError) as exc:
            LocateOptions(**kwargs)
        assert exc.value.option == field and isinstance(exc.value, ConfigError)
    with pytest.raises(AttributeError):
        o.top_k = 5  # frozen: one request's options do not change under it
