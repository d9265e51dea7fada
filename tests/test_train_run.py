"""End-to-end training on the synthetic world: resume after SIGKILL is exact, and the model learns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crossview.models.loading import read_weights
from crossview.train.presets import resolve_config

TINY_RUN = {
    "epochs": 2, "batch_size": 8, "checkpoint_every": 3, "num_workers": 0, "eval_every": 0,
    "lr": 1e-3, "warmup_epochs": 0.2, "seed": 3,
}


@pytest.fixture(scope="module")
def vigor_tiny(tiny_vigor_world) -> Path:
    return tiny_vigor_world


def _train_cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crossview.cli", "train", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def _sets(cfg: dict) -> list[str]:
    return [x for k, v in cfg.items() for x in ("--set", f"{k}={json.dumps(v)}")]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(vigor_tiny, tmp_path):
    full, broken = tmp_path / "full", tmp_path / "broken"
    args = ["synthetic-cpu", "--data", str(vigor_tiny), *_sets(TINY_RUN)]
    r = _train_cli([*args, "--out", str(full)])
    assert r.returncode == 0, r.stderr
    steps = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    total = max(s["step"] for s in steps)
    kill_at = total // 2 + 1  # mid-epoch, after a checkpoint, before the end
    r = _train_cli([*args, "--out", str(broken)], env={"CROSSVIEW_TEST_KILL_AT_STEP": str(kill_at)})
    assert r.returncode == -9, (r.returncode, r.stderr)
    assert not (broken / "model.safetensors").exists()
    r = _train_cli(["--resume", str(broken)])
    assert r.returncode == 0, r.stderr
    a = read_weights(full / "model.safetensors")[0]
    b = read_weights(broken / "model.safetensors")[0]
    assert a.keys() == b.keys()
    # training moved the weights (equal runs would also come from two runs that never stepped): the layer norms
    # start at exactly 1 / 0
    norms = [k for k in a if k.endswith("pps_norm.weight")]
    assert norms and all((a[k] - 1).abs().max() > 1e-4 for k in norms)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)


def test_config_is_saved_with_command_and_version(vigor_tiny, tmp_path):
    from crossview import __version__
    from crossview.train.loop import train

    cfg = resolve_config("synthetic-cpu", {**TINY_RUN, "max_steps": 1})
    out = train(cfg, vigor_tiny, tmp_path / "run", command=["crossview", "train", "synthetic-cpu"])
    saved = json.loads((out / "config.json").read_text())
    assert saved["version"] == __version__ and saved["config"]["max_steps"] == 1
    assert saved["command"] == ["crossview", "train", "synthetic-cpu"]
    assert (out / "model.safetensors").exists() and (out / "checkpoints" / "last.pt").exists()
