"""``crossview eval --fov DEG [--orientation known|unknown]``: the limited-FoV protocol beside full panoramas."""

from __future__ import annotations

import json

import pytest
import torch

from crossview.cli import main


@pytest.fixture(scope="module")
def world_and_model(tmp_path_factory, tiny_vigor_world):
    from crossview.models import create_model, save_model

    root = tmp_path_factory.mktemp("fov_eval")
    world = tiny_vigor_world
    torch.manual_seed(0)
    save_model(create_model("mfrgn_tiny"), root / "model.pt")
    return world, root / "model.pt"


@pytest.mark.slow
def test_eval_fov_cli(world_and_model, tmp_path, capsys):
    world, model = world_and_model
    assert main(["eval", str(model), "--data", str(world), "--dataset", "vigor", "--device", "cpu",
                 "--fov", "90", "--orientation", "known", "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "FoV 90° (known orientation)" in out and "full panorama" in out
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["fov_deg"] == 90 and m["orientation"] == "known" and m["queries"] > 0
    assert set(m["limited_fov"]) >= {"R@1", "R@5"} and set(m["full"]) >= {"R@1", "R@5"}
    assert main(["eval", str(model), "--data", str(world), "--dataset", "vigor", "--device", "cpu",
                 "--fov", "400", "--out", str(tmp_path / "bad")]) == 2
    assert "--fov 400" in capsys.readouterr().err


def test_full_circle_is_the_panorama(world_and_model):
    from crossview.data import read_dataset
    from crossview.evaluate.limited_fov import embed_limited_fov
    from crossview.models import load_model
    from crossview.search.embed import embed_images

    world, path = world_and_model
    model = load_model(str(path)).eval()
    split = read_dataset("vigor", world, "test", area="same")
    full = embed_limited_fov(model, split, 360.0, "known")
    plain = embed_images(model, [r.query_path for r in split.records], "ground")
    assert torch.allclose(full, plain, atol=1e-5)
    assert not torch.allclose(embed_limited_fov(model, split, 90.0, "unknown"), plain, atol=1e-2)
