"""Safe loading (crossview.safe_load, issue 32): a checkpoint whose pickle would run code is refused by every loader
without running it, and loads (with a warning) only when trusted; the official layouts (HC-Net's best checkpoint
with a torch-1.x OneCycleLR state and a numpy best distance, GeoDistill's with a numpy loss) and our own files
(fine checkpoints, descriptor shards, training checkpoints with numpy RNG state) load without trust."""

from __future__ import annotations

import builtins
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from crossview.cli import build_parser
from crossview.errors import ConfigError, UnsafeCheckpointError
from crossview.fine import create_fine, load_fine, save_fine
from crossview.safe_load import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


class Payload:
    """Unpickling this runs ``exec``: it creates ``marker``. What a malicious download would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _poison(path: Path, marker: Path) -> Path:
    """Rewrite the (trusted, our own) file at ``path`` with a code-running entry added."""
    obj = load_checkpoint(path)
    obj["payload"] = Payload(marker)
    torch.save(obj, path)
    return path


def _refused(call, path: Path, marker: Path) -> None:
    with pytest.raises(ConfigError) as info:
        call()
    assert isinstance(info.value, UnsafeCheckpointError)
    text = str(info.value)
    assert str(path) in text and "builtins.exec" in text and "--trust-checkpoint" in text
    assert not marker.exists()


def _tiny_fine():
    torch.manual_seed(0)
    return create_fine("pillarmatch_tiny_test")


# ------------------------------------------------------------------------------------------ the helper itself
def test_helper_refuses_code_and_trust_loads_with_a_warning(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.ones(2), "payload": Payload(marker)}, path)
    _refused(lambda: load_checkpoint(path), path, marker)
    with pytest.warns(UserWarning, match="unpickled without restriction"):
        obj = load_checkpoint(path, trust=True)
    assert marker.exists() and torch.equal(obj["weight"], torch.ones(2))  # trusted: the code did run


def test_helper_refuses_other_globals_and_misused_allowed_ones(tmp_path):
    torch.save({"f": print}, tmp_path / "print.pt")
    with pytest.raises(UnsafeCheckpointError, match="builtins.print"):
        load_checkpoint(tmp_path / "print.pt")
    torch.save({"a": np.array([1, "x"], dtype=object)}, tmp_path / "objects.pt")  # numpy, but Python objects
    with pytest.raises(UnsafeCheckpointError, match="ObjectDType"):
        load_checkpoint(tmp_path / "objects.pt")
    torch.save({"w": torch.ones(1), "payload": Payload(tmp_path / "M")}, tmp_path / "legacy.pt",
               _use_new_zipfile_serialization=False)  # the pre-1.6 format names the global too
    _refused(lambda: load_checkpoint(tmp_path / "legacy.pt"), tmp_path / "legacy.pt", tmp_path / "M")


def test_helper_names_an_unreadable_file(tmp_path):
    """A foreign or missing file is a ConfigError naming it and its role (not a refusal: nothing was unpickled)."""
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for name in ("junk.pt", "absent.pt"):
        with pytest.raises(ConfigError) as info:
            load_checkpoint(tmp_path / name, what="descriptor shard")
        assert not isinstance(info.value, UnsafeCheckpointError)
        assert str(tmp_path / name) in str(info.value) and "not a readable PyTorch descriptor shard" in str(info.value)


def test_helper_reads_numpy_and_namespace(tmp_path):
    import argparse

    state = {"loss": np.float64(1.5), "n": np.int64(3), "flag": np.bool_(True), "half": np.float16(0.5),
             "array": np.arange(6, dtype=np.float32).reshape(2, 3), "rng": np.random.get_state(),
             "args": argparse.Namespace(lr=1e-4, name="x")}
    torch.save(state, tmp_path / "np.pt")
    back = load_checkpoint(tmp_path / "np.pt")
    assert back["loss"] == 1.5 and isinstance(back["loss"], np.float64) and back["n"] == 3 and back["flag"]
    np.testing.assert_array_equal(back["array"], state["array"])
    np.testing.assert_array_equal(back["rng"][1], state["rng"][1])
    assert back["args"].lr == 1e-4 and back["args"].name == "x"


# ------------------------------------------------------------------------------------------ every loader refuses
def test_load_fine_refuses_and_trusts(tmp_path):
    marker = tmp_path / "MARKER"
    model = _tiny_fine()
    path = _poison(save_fine(model, tmp_path / "run" / "checkpoint.pt"), marker)
    _refused(lambda: load_fine(tmp_path / "run"), path, marker)
    _refused(lambda: load_fine(path, arch="hcnet_vigor"), path, marker)
    with pytest.warns(UserWarning, match="unpickled without restriction"):
        again = load_fine(path, trust_checkpoint=True)
    assert marker.exists() and again.config == model.config


def test_fine_eval_run_config_and_fine_train_checks_refuse(tmp_path):
    from crossview.fine.evaluate import _run_config
    from crossview.fine.train import _same_finished_run

    marker = tmp_path / "MARKER"
    path = _poison(save_fine(_tiny_fine(), tmp_path / "checkpoint.pt", config={"area": "cross"}, finished=True),
                   marker)
    _refused(lambda: _run_config(tmp_path), path, marker)
    _refused(lambda: _same_finished_run(tmp_path, {"area": "cross"}), path, marker)
    with pytest.warns(UserWarning):
        assert _run_config(tmp_path, trust_checkpoint=True) == {"area": "cross"}
    with pytest.warns(UserWarning):
        assert _same_finished_run(tmp_path, {"area": "cross"}, trust_checkpoint=True)


def test_geodistill_packer_refuses(tmp_path):
    from crossview.fine.geodistill import pack_official

    marker = tmp_path / "MARKER"
    loc, dino = tmp_path / "loc.pth", tmp_path / "dino.pth"
    torch.save({"model_state_dict": {"SatDPT.conv_0.bias": torch.ones(2)}, "epoch": 1,
                "payload": Payload(marker)}, loc)
    torch.save({"pos_embed": torch.zeros(1, 2)}, dino)
    _refused(lambda: pack_official(str(loc), str(dino), None, str(tmp_path / "out.pt")), loc, marker)
    assert not (tmp_path / "out.pt").exists()
    with pytest.warns(UserWarning):
        out = pack_official(str(loc), str(dino), None, str(tmp_path / "out.pt"), trust_checkpoint=True)
    assert set(load_checkpoint(out)) == {"SatDPT.conv_0.bias", "pos_embed"}


def _shard_folder(folder: Path) -> tuple[object, list[str]]:
    from crossview.search.shards import ShardPlan

    ids = [f"q{i}" for i in range(5)]
    plan = ShardPlan(folder, ids, 2, {"name": "tiny", "dim": 3}, {"view": "ground"})
    plan.write_manifest()
    for i, (s, e) in enumerate(plan.ranges):
        plan.save(i, torch.randn(e - s, 3), np.zeros((e - s, 2)))
    return plan, ids


def _poison_shard(plan, i: int, marker: Path) -> Path:
    """Shard ``i`` as an earlier version wrote it (a pickled ``.pt`` dict) with a code-running entry added; the
    safetensors shard it replaces is removed (its tensors are copied first: they map the file)."""
    from crossview.search.shards import read_shard

    new = plan.path(i)
    obj = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in read_shard(new).items()}
    obj["payload"] = Payload(marker)
    old = new.with_suffix(".pt")
    torch.save(obj, old)
    new.unlink()
    return old


def test_shard_reader_and_resume_check_refuse(tmp_path):
    from crossview.search.shards import load_shards

    marker = tmp_path / "MARKER"
    plan, ids = _shard_folder(tmp_path / "ground")
    assert load_shards(plan.folder)[0] == ids and plan.is_done(1)  # our own shards: no trust needed
    path = _poison_shard(plan, 1, marker)
    _refused(lambda: load_shards(plan.folder), path, marker)
    _refused(lambda: plan.is_done(1), path, marker)
    with pytest.warns(UserWarning):
        assert load_shards(plan.folder, trust_checkpoint=True)[0] == ids
    assert marker.exists()
    plan.path(0).write_bytes(b"truncated")  # unreadable still means unfinished: recomputed
    assert not plan.is_done(0)


def _training_state(tmp_path: Path) -> tuple[Path, tuple]:
    """A retrieval training checkpoint as ``crossview.train.loop`` writes it (AdamW, LambdaLR, GradScaler, numpy
    neighbour table and RNG states)."""
    from crossview.train.checkpoint import save_checkpoint

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    path = save_checkpoint(tmp_path / "checkpoints" / "last.pt", model=model.state_dict(),
                           optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                           scaler=scaler.state_dict(), step=3, epoch=1, step_in_epoch=1,
                           neighbours=np.arange(12, dtype=np.int64).reshape(4, 3), config={"seed": 0, "lr": 1e-3})
    return path, (model, optimizer, scheduler, scaler)


def test_training_checkpoint_reader_resumes_ours_and_refuses_poison(tmp_path):
    from crossview.train.checkpoint import load_checkpoint as load_training
    from crossview.train.loop import _resume

    path, parts = _training_state(tmp_path)
    step, epoch, in_epoch, neighbours = _resume(path, 0, *parts)
    assert (step, epoch, in_epoch) == (3, 1, 1) and neighbours.shape == (4, 3)
    marker = tmp_path / "MARKER"
    _poison(path, marker)
    _refused(lambda: load_training(path), path, marker)
    _refused(lambda: _resume(path, 0, *parts), path, marker)
    with pytest.warns(UserWarning):
        assert _resume(path, 0, *parts, trust_checkpoint=True)[0] == 3


# ------------------------------------------------------------------------------------------ official layouts
@pytest.fixture(scope="module")
def hcnet_official():
    import crossview.fine.hcnet as hc

    torch.manual_seed(0)
    return hc.export_official(create_fine("hcnet_vigor", keep_unused=True))


def _old_onecycle(optimizer) -> dict:
    """A OneCycleLR ``state_dict()`` as torch 1.13 (HC-Net's) wrote it: ``anneal_func`` a bound method, which
    pickles as ``getattr(scheduler, "_annealing_linear")`` and with it the scheduler and its optimizer."""
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-4, 100, pct_start=0.05, cycle_momentum=False,
                                                anneal_strategy="linear")
    state = {k: v for k, v in sched.__dict__.items() if k != "optimizer"}
    state["anneal_func"] = types.MethodType(torch.optim.lr_scheduler.OneCycleLR._annealing_linear, sched)
    return state


def test_hcnet_best_checkpoint_layout_loads_without_trust(hcnet_official, tmp_path):
    small = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(small.parameters(), lr=1e-4)
    small(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    path = tmp_path / "best_checkpoint_same.pth"  # HC-Net's train.py: best distance from np.mean, DataParallel keys
    torch.save({"best_dis": np.float64(1.25), "steps": 40000,
                "model": {f"module.{k}": v for k, v in hcnet_official.items()},
                "optimizer": optimizer.state_dict(), "lr_schedule": _old_onecycle(optimizer)}, path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path)  # not loadable by weights_only alone
    model = load_fine(path, arch="hcnet_vigor")
    assert model.conversion_report.ok
    raw = load_checkpoint(path)
    assert raw["best_dis"] == 1.25 and raw["lr_schedule"]["anneal_func"] == "<_annealing_linear>"
    modern = tmp_path / "modern.pth"  # the same saved with today's OneCycleLR: a plain state
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-4, 100, cycle_momentum=False)
    torch.save({"model": hcnet_official, "lr_schedule": sched.state_dict(), "optimizer": optimizer.state_dict()},
               modern)
    assert load_fine(modern, arch="hcnet_vigor").conversion_report.ok


def test_geodistill_layout_loads_without_trust(hcnet_official, tmp_path):
    """GeoDistill's training scripts save ``{epoch, model_state_dict, optimizer_state_dict, lr_schedule, loss}``
    with the loss a numpy float64; load_fine and pack_official read that wrapper without trust."""
    from crossview.fine.geodistill import pack_official

    small = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(small.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10, eta_min=1e-4)

    def official(state: dict) -> dict:
        return {"epoch": 4, "model_state_dict": state, "optimizer_state_dict": optimizer.state_dict(),
                "lr_schedule": sched.state_dict(), "loss": np.float64(3.5)}

    torch.save(official(hcnet_official), tmp_path / "wrapped.pth")
    assert load_fine(tmp_path / "wrapped.pth", arch="hcnet_vigor").conversion_report.ok
    torch.save(official({"SatDPT.conv_0.bias": torch.ones(2)}), tmp_path / "loc.pth")
    torch.save({"pos_embed": torch.zeros(1, 2)}, tmp_path / "dino.pth")
    torch.save(official({"fc.4.bias": torch.ones(3)}), tmp_path / "ori.pth")
    out = pack_official(*(str(tmp_path / n) for n in ("loc.pth", "dino.pth", "ori.pth", "flat.pt")))
    assert set(load_checkpoint(out)) == {"SatDPT.conv_0.bias", "pos_embed", "fc.4.bias"}


# ------------------------------------------------------------------------------------------ the command line
@pytest.mark.parametrize("argv", [
    ["fine-eval", "RUN", "--data", "D", "--out", "O"], ["fine-train", "P", "--data", "D", "--out", "O"],
    ["locate", "PHOTO", "--index", "I"], ["serve", "--index", "I"], ["eval", "RUN", "--out", "O"],
    ["embed", "RUN", "ROOT", "--dataset", "vigor", "--out", "O"], ["train", "--resume", "RUN"],
    ["index", "build", "--shards", "S", "--out", "O"], ["index", "search", "I", "--query-shards", "Q"]])
def test_commands_take_trust_checkpoint(argv):
    parser = build_parser()
    assert parser.parse_args(argv).trust_checkpoint is False
    assert parser.parse_args([*argv, "--trust-checkpoint"]).trust_checkpoint is True


def test_index_build_cli_refuses_a_poisoned_shard(tmp_path, capsys):
    from crossview.cli import main

    marker = tmp_path / "MARKER"
    plan, _ = _shard_folder(tmp_path / "ground")
    path = _poison_shard(plan, 0, marker)
    assert main(["index", "build", "--shards", str(plan.folder), "--out", str(tmp_path / "x.index")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "--trust-checkpoint" in err and not marker.exists()
    with pytest.warns(UserWarning):
        assert main(["index", "build", "--shards", str(plan.folder), "--out", str(tmp_path / "x.index"),
                     "--trust-checkpoint"]) == 0
    assert marker.exists()
