"""Released fine-model weights from the command line, as their authors publish them (issue 32, fine half).

Per released layout — FG²'s VIGOR head with the separate DINOv2 file, FG²'s KITTI head, FG²'s first / second run,
GeoDistill's three files — files are written here in the official key names and save structure (at CPU size: the
published architectures with a DINOv2 ViT-S/14 and small heads, registered for the test only), then loaded the way
a user would: ``crossview fine-convert`` followed by ``fine-model-info`` / ``fine-eval`` / the loader ``locate``
and ``serve`` use. Each must equal loading the state dict directly; the wrong variant fails naming the right one;
FG²'s head without its backbone fails loudly, naming the file and the flag.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from crossview.cli import main
from crossview.errors import ConfigError
from crossview.fine import create_fine, fg2, load_fine, registry
from crossview.fine import geodistill as gd
from crossview.fine.data import FineDataset, collate, flat_world_samples
from crossview.fine.fg2.convert import _is_dino_key
from crossview.fine.registry import load_official_state
from crossview.locate.models import _load_fine

pytestmark = pytest.mark.usefixtures("one_thread")

DINO = "dinov2_vits14_pretrain.pth"  # the published file name of a DINOv2 ViT-S/14
_FG2_DINO = {"backbone": "vit_small_patch14_dinov2", "backbone_weights": None, "embed_dim": 384,
             "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


@pytest.fixture
def variants(monkeypatch):
    """FG² (panorama and pinhole) and GeoDistill at CPU size on a DINOv2 ViT-S/14, as test-only variants."""
    registry._ensure()
    v = registry._VARIANTS
    monkeypatch.setitem(v, "fg2_tiny_dino", {**v["fg2_tiny"], **_FG2_DINO})
    monkeypatch.setitem(v, "fg2_tiny_kitti_dino", {**v["fg2_tiny_kitti"], **_FG2_DINO})
    monkeypatch.setitem(v, "geodistill_tiny_vit", {
        **v["geodistill_vigor"], "backbone": "vit_small_patch14_dinov2", "sat_size": 128, "pano_size": [64, 128],
        "dpt_width": 8, "dpt_hidden": [8, 8, 8], "dpt_out": [8, 8, 8], "metre_scale": "exact", "ori_hidden": [16, 8],
        "ori_fusion": 16})


def _fg2_release(name: str, head_path: Path, dino_path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """An FG² release as the authors save it: ``torch.save(CVM.state_dict())`` after a CUDA run (no query grid),
    the DINOv2 weights in their own file. Returns both as one state dict (what "loading directly" reads)."""
    torch.manual_seed(seed)
    model = create_fine(name, backbone_weights="random")
    state = fg2.export_official(model, with_grid=False, with_backbone=True)
    head = {k: v for k, v in state.items() if not _is_dino_key(k)}
    head_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(head, head_path)
    torch.save({k: v for k, v in state.items() if _is_dino_key(k)}, dino_path)
    return state


def _direct(name: str, state: dict[str, torch.Tensor], converter, **over) -> torch.nn.Module:
    return load_official_state(create_fine(name, **over), dict(state), converter)


def _batch(model, camera: str = "panorama") -> dict:
    g, a = model.input_sizes(camera)
    samples = flat_world_samples(2, seed=1, tile_px=a, ground_hw=g, camera=camera,
                                 fov_deg=80.0 if camera == "pinhole" else 360.0)
    return collate([FineDataset(samples, g, a)[i] for i in range(2)])


def _same(a: torch.nn.Module, b: torch.nn.Module, camera: str = "panorama", prior: bool = True) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    batch = _batch(a, camera)
    heading = batch["heading"] if prior else None
    with torch.no_grad():
        pa, pb = a.predict(batch, heading_prior=heading), b.predict(batch, heading_prior=heading)
    for key in ("xy", "heading", "confidence"):
        assert torch.equal(pa[key], pb[key]), key


def _cli_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_fg2_vigor_head_and_dinov2_file(variants, tmp_path, capsys):
    head, dino = tmp_path / "checkpoints" / "VIGOR" / "samearea" / "model.pt", tmp_path / DINO
    state = _fg2_release("fg2_tiny_dino", head, dino)
    direct = _direct("fg2_tiny_dino", state, fg2.convert_official)
    # the head alone: an error naming the missing file and the flag, from Python, locate's loader and the CLI
    with pytest.raises(ConfigError, match=f"missing: the DINOv2 backbone \\({DINO}\\)"):
        load_fine(head, arch="fg2_tiny_dino")
    with pytest.raises(ConfigError, match="--fine-backbone"):
        _load_fine(str(head), "cpu", "fg2_tiny_dino")
    err = _cli_error(["fine-model-info", str(head), "--arch", "fg2_tiny_dino"], capsys)
    assert DINO in err and "--fine-backbone" in err and "fine-convert" in err
    # head + --fine-backbone, and the comma-joined files, through locate's loader
    _same(_load_fine(str(head), "cpu", "fg2_tiny_dino", backbone=str(dino))[0], direct)
    _same(_load_fine(f"{dino},{head}", "cpu", "fg2_tiny_dino")[0], direct)
    # fine-convert packs both; the checkpoint needs no other file once moved, the originals gone
    out = tmp_path / "fg2.safetensors"
    assert main(["fine-convert", "fg2_tiny_dino", str(head), str(dino), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{DINO}: DINOv2 backbone" in printed and "model.pt: matching head" in printed
    assert "grd_grid_queries absent" in printed and json.loads(printed.splitlines()[-1])["arch"] == "fg2_tiny_dino"
    moved = tmp_path / "elsewhere" / "fg2.safetensors"
    moved.parent.mkdir()
    shutil.move(out, moved)
    shutil.rmtree(tmp_path / "checkpoints")
    dino.unlink()
    model, name = _load_fine(str(moved), "cpu")
    assert name == "fg2_tiny_dino"
    _same(model, direct)
    assert main(["fine-model-info", str(moved)]) == 0
    assert f"from {DINO}: DINOv2 backbone" in capsys.readouterr().out


def test_checkpoints_of_ours_do_not_depend_on_the_backbone_file(variants, tmp_path):
    """A model converted with ``backbone_weights=FILE`` (the Python form) and saved in either of our formats loads
    after that file is gone: the weights are inside, and the config's path is provenance only."""
    from crossview.fine.loading import save_fine, save_release

    head, dino = tmp_path / "model.pt", tmp_path / DINO
    state = _fg2_release("fg2_tiny_dino", head, dino)
    model = load_fine(head, arch="fg2_tiny_dino", backbone_weights=str(dino))
    save_fine(model, tmp_path / "ours.pt")
    save_release(model, tmp_path / "ours.safetensors")
    dino.unlink()
    direct = _direct("fg2_tiny_dino", state, fg2.convert_official)
    for path in ("ours.pt", "ours.safetensors"):
        loaded = load_fine(tmp_path / path)
        assert loaded.config["backbone_weights"] == str(dino)
        _same(loaded, direct)


def test_fg2_kitti_head_and_the_wrong_variant(variants, tmp_path, capsys):
    head, dino = tmp_path / "checkpoints" / "KITTI" / "model.pt", tmp_path / DINO
    state = _fg2_release("fg2_tiny_kitti_dino", head, dino)
    # same tensor shapes as the VIGOR head: the official path tells them apart, and the error names the variant
    err = _cli_error(["fine-convert", "fg2_tiny_dino", str(head), str(dino), "--out", str(tmp_path / "x.pt")], capsys)
    assert "KITTI release" in err and "fg2_tiny_kitti_dino" in err
    assert not (tmp_path / "x.pt").exists()
    out = tmp_path / "fg2_kitti.pt"  # our torch format, read back weights-only
    assert main(["fine-convert", "fg2_tiny_kitti_dino", str(dino), str(head), "--out", str(out)]) == 0
    capsys.readouterr()
    direct = _direct("fg2_tiny_kitti_dino", state, fg2.convert_official)
    _same(_load_fine(str(out), "cpu")[0], direct, camera="pinhole", prior=False)
    # a CPU-built head (its 11 × 21 query grid stored) in a neutral folder: the tensors name the right variant
    torch.save(fg2.export_official(direct), tmp_path / "cpu_built.pt")
    with pytest.raises(ConfigError, match="convert cleanly as fg2_tiny_kitti_dino"):
        load_fine([tmp_path / "cpu_built.pt", dino], arch="fg2_tiny_dino")


def test_fg2_two_stage_release_evaluates(tiny_vigor_world, variants, tmp_path, capsys):
    """FG²'s unknown-orientation release: first_run (the heading) and second_run (the position), one DINOv2 file.
    ``fine-eval --stage2 … --stage2-arch`` on the official files equals fine-eval on the converted checkpoints."""

    root, dino = tmp_path / "checkpoints" / "VIGOR" / "samearea", tmp_path / DINO
    _fg2_release("fg2_tiny_dino", root / "first_run" / "model.pt", dino, seed=1)
    _fg2_release("fg2_tiny_dino", root / "second_run" / "model.pt", tmp_path / "unused_dino.pth", seed=2)
    world = tiny_vigor_world
    common = ["--data", str(world), "--limit", "2", "--pictures", "0", "--orientation", "unknown"]
    err = _cli_error(["fine-eval", str(root / "first_run" / "model.pt"), "--arch", "fg2_tiny_dino", "--fine-backbone",
                      str(dino), "--stage2", str(root / "second_run" / "model.pt"), "--out", str(tmp_path / "e0"),
                      *common], capsys)
    assert "--fine-arch" in err or "arch=" in err  # stage 2 is an official file: it needs its variant
    assert main(["fine-eval", str(root / "first_run" / "model.pt"), "--arch", "fg2_tiny_dino", "--fine-backbone",
                 str(dino), "--stage2", str(root / "second_run" / "model.pt"), "--stage2-arch", "fg2_tiny_dino",
                 "--out", str(tmp_path / "official"), *common]) == 0
    for run in ("first_run", "second_run"):
        assert main(["fine-convert", "fg2_tiny_dino", str(root / run / "model.pt"), str(dino), "--out",
                     str(tmp_path / f"{run}.safetensors")]) == 0
    assert main(["fine-eval", str(tmp_path / "first_run.safetensors"), "--stage2",
                 str(tmp_path / "second_run.safetensors"), "--out", str(tmp_path / "ours"), *common]) == 0
    a, b = (np.load(tmp_path / d / "predictions.npz") for d in ("official", "ours"))
    assert set(a.files) == set(b.files)
    for k in a.files:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
    m = json.loads((tmp_path / "ours" / "metrics.json").read_text())
    assert "two-stage" in m["setting"]


def test_geodistill_three_files(variants, tmp_path, capsys):
    """GeoDistill's release: the localization and orientation nets as its training scripts save them
    (``{epoch, model_state_dict, optimizer_state_dict, lr_schedule, loss}``, the loss a numpy float) and torch.hub's
    DINOv2 file; ``fine-convert`` uses the weights and says what it ignored."""
    torch.manual_seed(0)
    model = create_fine("geodistill_tiny_vit")
    state = gd.export_official(model)
    parts = gd.split_official(state)
    opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, 3)

    def wrapped(sd: dict) -> dict:
        return {"epoch": 9, "model_state_dict": sd, "optimizer_state_dict": opt.state_dict(),
                "lr_schedule": sched.state_dict(), "loss": np.float64(0.25)}

    loc, ori, dino = tmp_path / "GeoDistill_vigor.pth", tmp_path / "orientation_vigor.pth", tmp_path / DINO
    torch.save(wrapped(parts["localization"]), loc)
    torch.save(wrapped(parts["orientation"]), ori)
    torch.save(parts["dinov2"], dino)
    err = _cli_error(["fine-model-info", str(loc), "--arch", "geodistill_tiny_vit"], capsys)
    assert f"the DINOv2 backbone ({DINO})" in err and "the orientation net" in err and "(584)" not in err
    out = tmp_path / "geodistill.safetensors"
    assert main(["fine-convert", "geodistill_tiny_vit", str(ori), str(dino), str(loc), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ignored GeoDistill_vigor.pth: epoch, optimizer_state_dict, lr_schedule, loss" in printed
    assert "orientation_vigor.pth: orientation net" in printed
    direct = _direct("geodistill_tiny_vit", gd.merge_official(*parts.values()), gd.convert_official)
    for prior in (True, False):  # with a heading prior, and through the orientation net
        _same(_load_fine(str(out), "cpu")[0], direct, prior=prior)
    _same(_load_fine(",".join(map(str, (loc, dino, ori))), "cpu", "geodistill_tiny_vit")[0], direct)
    # the wrong variant: the tensors say which one they are
    err = _cli_error(["fine-convert", "geodistill_tiny", str(loc), str(dino), str(ori), "--out",
                      str(tmp_path / "y.safetensors")], capsys)
    assert "convert cleanly as geodistill_tiny_vit" in err
    # its KITTI release is not registered: a file from a KITTI folder is refused, saying so
    (tmp_path / "KITTI").mkdir()
    shutil.copy(loc, tmp_path / "KITTI" / loc.name)
    with pytest.raises(ConfigError, match="no KITTI variant is registered"):
        load_fine([tmp_path / "KITTI" / loc.name, dino, ori], arch="geodistill_tiny_vit")


def test_hcnet_best_checkpoint(tmp_path, capsys):
    """HC-Net's release is one file (``{"model": …, "optimizer": …}``): fine-convert packs it alone, ignoring the
    optimizer, and the checkpoint equals the state dict loaded directly (weights only: a forward at 512 px is slow)."""
    import crossview.fine.hcnet as hc

    torch.manual_seed(0)
    state = hc.export_official(create_fine("hcnet_vigor", keep_unused=True))
    torch.save({"model": state, "optimizer": {"lr": 1e-4}}, tmp_path / "best.pth")
    out = tmp_path / "hcnet.safetensors"
    assert main(["fine-convert", "hcnet_vigor", str(tmp_path / "best.pth"), "--out", str(out)]) == 0
    assert "ignored best.pth: optimizer" in capsys.readouterr().out
    direct = _direct("hcnet_vigor", state, hc.convert_official, keep_unused=False)
    loaded = _load_fine(str(out), "cpu")[0]
    sa, sb = loaded.state_dict(), direct.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
