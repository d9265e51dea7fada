"""Released retrieval weights through the command line, as the authors save them.

Each released layout is rebuilt the way the official training scripts write it: MFRGN and Sample4Geo save a bare
``model.state_dict()`` (``module.``-prefixed under DataParallel) into ``pretrained/<dataset>/...``; MFRGN's VIGOR
resume code reads ``{"model_state_dict": ...}``; a float16 copy is what people share to halve the download. The
weights are random and the backbone a one-block ConvNeXt-atto (inferred from the keys, as for a real file) so the
test runs on a CPU, but the input sizes, views and key names are the released ones. Every file goes through
``crossview locate-index --model FILE [--arch VARIANT]`` (what a user types) and must give the descriptors of the
same state dict loaded directly into the variant."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossview.cli import main
from crossview.errors import ConfigError, UnsafeCheckpointError
from crossview.models import create_model, input_spec, load_model, resolve_model, save_model
from crossview.models.convert import convert_official, export_official
from crossview.search.embed import embed_images
from crossview.search.index import load_index

FP32 = ["--precision", "fp32", "--threads", "1"]  # the reference is float32 (auto picks bf16 on CPUs with AMX)
ATTO = {"backbone": "convnext_atto", "backbone_kwargs": {"depths": (1, 1, 1, 1)}}

# variant -> (file under the tmp folder, how it is saved)
RELEASES = {
    "mfrgn_cvusa": ("pretrained/cvusa/weights_end.pth", "bare"),
    "mfrgn_cvact": ("pretrained/cvact/weights_e35_0.9081.pth", "module"),
    "mfrgn_vigor": ("pretrained/vigor_cross/weights_end.pth", "float16"),
    "mfrgn_u1652": ("pretrained/university/weights_e1_0.9515.pth", "bare"),
    "sample4geo_cvusa": ("pretrained/cvusa/convnext_base.fb_in22k_ft_in1k_384/weights_e40_98.6830.pth", "bare"),
    "sample4geo_vigor": ("pretrained/vigor_same/convnext_base.fb_in22k_ft_in1k_384/weights_e40_0.7786.pth",
                         "module"),
    "sample4geo_u1652": ("pretrained/university/convnext_base.fb_in22k_ft_in1k_384/weights_e1_0.9515.pth", "bare"),
}


def _official_state(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return export_official(create_model(variant, **ATTO))


def _save(state: dict[str, torch.Tensor], path: Path, how: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "module":
        state = {f"module.{k}": v for k, v in state.items()}
    elif how == "float16":
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    elif how == "resume":  # MFRGN's resume layout, with the optimizer state and a numpy loss beside the weights
        params = [torch.nn.Parameter(v.clone()) for v in list(state.values())[:3]]
        opt = torch.optim.AdamW(params)
        sum(p.sum() for p in params).backward()
        opt.step()
        state = {"epoch": 3, "model_state_dict": state, "optimizer_state_dict": opt.state_dict(),
                 "loss": np.float64(0.25)}
    torch.save(state, path)
    return path


def _direct(variant: str, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The variant built by hand and the state dict loaded into it, without any of our file handling."""
    model = create_model(variant, **ATTO)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(convert_official(state, model), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> tuple[Path, Path]:
    """A 2 × 2 tile set from a random orthophoto, and its folder."""
    from crossview.tiles import build_tiles

    folder = tmp_path_factory.mktemp("released_tiles")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).resize((256, 256), Image.NEAREST) \
        .save(folder / "ortho.png")
    manifest = build_tiles(folder / "ortho.png", folder / "tiles", corners=(40.001, -74.001, 40.0, -73.999),
                           tile_px=128)
    return Path(manifest), folder


@pytest.mark.parametrize("variant", list(RELEASES))
def test_released_layout_indexes_through_the_cli_like_the_state_dict(variant, tiles, tmp_path, one_thread):
    manifest, _ = tiles
    rel, how = RELEASES[variant]
    state = _official_state(variant)
    path = _save(state, tmp_path / rel, how)
    out = tmp_path / "tiles.index"
    # the folder names the dataset the way the official scripts save it: no --arch needed ...
    assert main(["locate-index", str(manifest), "--model", str(path), "--out", str(out), *FP32]) == 0
    index = load_index(out)
    assert index.meta["arch"] is None and load_model(str(path)).config["released_variant"] == variant
    # ... and --arch says it outright (recorded in the index, so locate rebuilds the same model)
    out2 = tmp_path / "arch.index"
    assert main(["locate-index", str(manifest), "--model", str(path), "--arch", variant, "--out", str(out2),
                 *FP32]) == 0
    index2 = load_index(out2)
    assert index2.meta["arch"] == variant
    from crossview.tiles import read_manifest

    direct = _direct(variant, state if how != "float16" else {k: v.half() for k, v in state.items()})
    want = embed_images(direct, [t.path for t in read_manifest(manifest)], "aerial").numpy()
    for got in (index, index2):
        np.testing.assert_allclose(got.faiss_index.reconstruct_n(0, len(got)), want, rtol=0, atol=2e-6)
    assert np.abs(want[0] - want[1]).max() > 1e-3  # not a constant: the comparison could fail


def test_the_mfrgn_resume_layout_loads_without_trust(tmp_path, one_thread):
    state = _official_state("mfrgn_vigor")
    path = _save(state, tmp_path / "checkpoints" / "last_checkpoint.pth", "resume")
    model = load_model(str(path)).eval()  # sizes from the token Linear: VIGOR's, with no folder hint
    assert model.config["released_variant"] == "mfrgn_vigor"
    x = torch.randn(1, 3, 320, 640)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x, "ground"), _direct("mfrgn_vigor", state).embed(x, "ground"))


@pytest.mark.parametrize(("weights", "asked", "right"), [
    ("mfrgn_vigor", "mfrgn_cvusa", "mfrgn_vigor"),
    ("mfrgn_cvusa", "mfrgn_vigor", "mfrgn_cvusa"),
    ("mfrgn_u1652", "mfrgn_cvusa", "mfrgn_u1652"),
    ("sample4geo_vigor", "mfrgn_vigor", "sample4geo_vigor"),
])
def test_the_wrong_variant_fails_naming_the_right_one(weights, asked, right, tmp_path, tiles, capsys):
    path = _save(_official_state(weights), tmp_path / "weights.pth", "bare")
    with pytest.raises(ConfigError) as err:
        load_model(str(path), arch=asked)
    assert right in str(err.value) and f"--arch {right.split('_')[0]}" in str(err.value)
    manifest, _ = tiles
    assert main(["locate-index", str(manifest), "--model", str(path), "--arch", asked,
                 "--out", str(tmp_path / "x.index")]) == 2
    assert right in capsys.readouterr().err


def test_sample4geo_weights_without_a_name_list_the_candidates(tmp_path):
    """Sample4Geo's ConvNeXt fits every input size: a file outside the official folders must be named."""
    path = _save(_official_state("sample4geo_vigor"), tmp_path / "downloads" / "s4g.pth", "bare")
    with pytest.raises(ConfigError) as err:
        load_model(str(path))
    text = str(err.value)
    assert all(n in text for n in ("sample4geo_cvusa", "sample4geo_vigor", "sample4geo_u1652")), text
    vigor = load_model(str(path), arch="sample4geo_vigor")
    assert input_spec(vigor, "ground")[0] == (384, 768)
    u = load_model(str(path), arch="sample4geo_u1652")
    assert input_spec(u, "drone")[0] == (384, 384)  # a drone / aerial model, not ground / aerial
    with pytest.raises(ConfigError, match="ground"):
        input_spec(u, "ground")


def test_a_name_the_folder_contradicts_is_warned(tmp_path):
    path = _save(_official_state("sample4geo_u1652"), tmp_path / RELEASES["sample4geo_u1652"][0], "bare")
    with pytest.warns(UserWarning, match="sample4geo_u1652"):
        model = load_model(str(path), arch="sample4geo_vigor")
    assert model.config["released_variant"] == "sample4geo_vigor"  # the user's word stands


def test_a_code_running_file_is_refused_by_the_retrieval_loader(tmp_path, tiles, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    state = _official_state("mfrgn_cvusa")
    path = tmp_path / "pretrained" / "cvusa" / "weights_end.pth"
    path.parent.mkdir(parents=True)
    torch.save({**state, "extra": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError):
        load_model(str(path))
    manifest, _ = tiles
    assert main(["locate-index", str(manifest), "--model", str(path), "--out", str(tmp_path / "x.index")]) == 2
    assert "--trust-checkpoint" in capsys.readouterr().err and not marker.exists()


def test_a_registered_name_is_not_weights(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--random-weights"):
        resolve_model("mfrgn_tiny")
    a, _, _ = resolve_model("mfrgn_tiny", random_weights=7)
    b, _, _ = resolve_model("mfrgn_tiny", random_weights=7)
    c, _, _ = resolve_model("mfrgn_tiny", random_weights=8)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        da, db, dc = (m.eval().embed(x, "aerial") for m in (a, b, c))
    torch.testing.assert_close(da, db)  # seeded: the same model twice
    assert (da - dc).abs().max() > 1e-3
    root = tmp_path / "data"
    assert main(["embed", "mfrgn_tiny", str(root), "--dataset", "vigor", "--out", str(tmp_path / "e")]) == 2
    assert "--random-weights" in capsys.readouterr().err


def test_our_checkpoints_are_safetensors_and_older_files_still_load(tmp_path, one_thread):
    torch.manual_seed(0)
    model = create_model("mfrgn_tiny").eval()
    new = save_model(model, tmp_path / "model.safetensors")
    old = save_model(model, tmp_path / "model.pt")  # what earlier versions wrote
    assert Path(new).read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    x = torch.randn(2, 3, 64, 256)
    with torch.no_grad():
        want = model.embed(x, "ground")
        for path in (new, old):
            again = load_model(str(path)).eval()
            assert json.dumps(again.config, sort_keys=True) == json.dumps(model.config, sort_keys=True)
            assert torch.equal(again.embed(x, "ground"), want)
    run = tmp_path / "run"
    run.mkdir()
    save_model(model, run / "model.safetensors")
    loaded, _, _ = resolve_model(run)
    assert loaded.config["name"] == "mfrgn_tiny"
    with pytest.raises(ConfigError, match="drop --arch"):
        load_model(str(new), arch="mfrgn_vigor")


def test_commands_take_arch_and_random_weights():
    from crossview.cli import build_parser

    parser = build_parser()
    for argv in (["eval", "run", "--out", "o"], ["embed", "m", "root", "--dataset", "vigor", "--out", "o"],
                 ["index", "search", "i", "--image", "p.jpg", "--model", "m"]):
        args = parser.parse_args([*argv, "--arch", "mfrgn_vigor", "--random-weights", "3"])
        assert isinstance(args, argparse.Namespace) and args.arch == "mfrgn_vigor" and args.random_weights == 3
    for argv in (["locate-index", "t", "--model", "m", "--out", "o"],
                 ["locate", "p.jpg", "--index", "i", "--model", "m"]):
        assert parser.parse_args([*argv, "--arch", "sample4geo_vigor"]).arch == "sample4geo_vigor"


def test_locate_rebuilds_the_variant_the_index_records(tiles, tmp_path, one_thread):
    """A Sample4Geo file outside the official folders needs its name; the index keeps it, so locate (and serve)
    rebuild the same model from the index alone: the identity check inside would refuse any other."""
    from crossview.locate import Locator

    manifest, _ = tiles
    path = _save(_official_state("sample4geo_vigor"), tmp_path / "s4g.pth", "bare")
    out = tmp_path / "s4g.index"
    assert main(["locate-index", str(manifest), "--model", str(path), "--arch", "sample4geo_vigor",
                 "--out", str(out), *FP32]) == 0
    locator = Locator(out, precision="fp32")
    assert locator.model.config["released_variant"] == "sample4geo_vigor"
    assert input_spec(locator.model, "ground")[0] == (384, 768)
    rng = np.random.default_rng(2)
    photo = tmp_path / "pano.jpg"
    Image.fromarray((rng.random((256, 512, 3)) * 255).astype(np.uint8)).save(photo)
    result = locator.locate(str(photo), top_k=2, refine=0)
    assert len(result["candidates"]) == 2


def test_a_registered_fine_name_is_not_weights_either(tmp_path, capsys):
    """locate / serve / fine-eval answer with a fine model's weights: a bare registered name (random heads) is
    refused with what to give instead."""
    from crossview.locate.models import _load_fine

    with pytest.raises(ConfigError, match="registered architecture, not weights"):
        _load_fine("hcnet_tiny", "cpu")
    assert main(["fine-eval", "hcnet_tiny", "--data", str(tmp_path), "--out", str(tmp_path / "e")]) == 2
    assert "fine-convert" in capsys.readouterr().err
