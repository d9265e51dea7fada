"""The fine-grained model registry: every registered variant builds and is a FineLocalizer, configs merge in one
place and refuse unknown keys, checkpoints round-trip, presets resolve. (That inference code never imports
training code is checked for the whole package in tests/test_layers.py.)"""

from __future__ import annotations

import pytest
import torch

from crossview.errors import ConfigError
from crossview.fine import FineLocalizer, create_fine, fine_config, list_fine_models, load_fine, save_fine
from crossview.fine.data import FineDataset, collate, flat_world_samples
from crossview.fine.registry import arch_info

pytestmark = pytest.mark.usefixtures("one_thread")

def test_every_variant_resolves_and_names_its_paper():
    names = list_fine_models()
    assert {"hcnet_vigor", "hcnet_tiny"} <= set(names)
    for name in names:
        cfg = fine_config(name)
        assert cfg["name"] == name and cfg["arch"] in name
        info = arch_info(name)
        if info.published:
            assert info.official_repo and info.converter and info.reproduce, name
    assert arch_info("pillarmatch").published is None  # ours: no published name, no official layout


def _tiny_batch(model, n=2):
    (h, w), a = model.input_sizes("panorama")
    samples = flat_world_samples(n, seed=0, tile_px=a, tile_m=64.0, ground_hw=(h, w))
    return collate([FineDataset(samples, (h, w), a)[i] for i in range(n)])


CPU_VARIANTS = [n for n in list_fine_models() if n.endswith(("_tiny", "_synthetic", "_tiny_test"))]


@pytest.mark.parametrize("name", CPU_VARIANTS)
def test_cpu_variants_are_fine_localizers_and_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = create_fine(name).eval()
    assert isinstance(model, FineLocalizer)
    batch = _tiny_batch(model)
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))  # predict goes through __call__: hooks see it
    with torch.no_grad():
        p = model.predict(batch, heading_prior=torch.zeros(2))
    hook.remove()
    if type(model).forward is not torch.nn.Module.forward:  # a model with a forward runs it through __call__
        assert calls, f"{name}: predict bypassed the module call (forward hooks, e.g. profilers', never ran)"
    assert p["xy"].shape == (2, 2) and p["heading"].shape == (2,) and p["confidence"].shape == (2,)
    assert torch.isfinite(p["xy"]).all() and ((p["confidence"] >= 0) & (p["confidence"] <= 1 + 1e-6)).all()
    save_fine(model, tmp_path / "checkpoint.pt")
    again = load_fine(tmp_path)  # a run folder holding checkpoint.pt
    assert again.config == model.config
    with torch.no_grad():
        q = again.predict(batch, heading_prior=torch.zeros(2))
    assert torch.allclose(p["xy"], q["xy"]) and torch.allclose(p["heading"], q["heading"])


def test_config_merge_and_errors():
    cfg = fine_config("hcnet_tiny", loss={"yaw": 5.0})
    assert cfg["loss"]["yaw"] == 5.0 and cfg["loss"]["gamma"] == 0.85  # nested dicts merge key by key
    assert fine_config({"arch": "hcnet", "iterations": 3})["iterations"] == 3
    with pytest.raises(ConfigError, match="unknown fine model 'hcnet_b7'"):
        fine_config("hcnet_b7")
    with pytest.raises(ConfigError, match="bev_cellz"):
        create_fine("pillarmatch_synthetic", bev_cellz=3)
    with pytest.raises(ConfigError, match="registered fine architectures"):
        fine_config({"arch": "nope"})
    with pytest.raises(ConfigError, match="no such fine-model checkpoint"):
        load_fine("/nonexistent/run")
    with pytest.raises(ConfigError, match="design of our own"):
        load_fine({"weight": torch.zeros(1)}, arch="pillarmatch_synthetic")


def test_presets_resolve_to_registered_models():
    from crossview.fine.presets import PRESETS, resolve_config

    for name in PRESETS:
        cfg = resolve_config(name)
        assert cfg["variant"] in list_fine_models() and cfg["method"] == fine_config(cfg["variant"])["arch"]
    cfg = resolve_config("hcnet-vigor-same")  # HC-Net's released recipe
    assert (cfg["lr"], cfg["weight_decay"], cfg["adam_eps"], cfg["batch_size"], cfg["steps"]) == \
        (3.5e-4, 5e-4, 1e-7, 16, 180_000)
    assert cfg["anneal"] == "linear" and cfg["warmup_frac"] == 0.05 and cfg["eval_prior_deg"] == 45.0
    with pytest.raises(ConfigError, match="bev_cellz"):
        resolve_config("pillarmatch-synthetic-cpu", {"model.bev_cellz": 3})


def test_reproduce_official_refuses_unknown_fixtures():
    from crossview.fine import reproduce_official

    with pytest.raises(ConfigError, match="no registered architecture"):
        reproduce_official({"official_commit": {"repo": "github.com/someone/else"}})


def test_checkpoints_of_older_versions_load(tmp_path):
    """A checkpoint whose config holds options removed since (``backbone_cpu_dtype``) loads with them dropped; a
    published FG² config without a ``name`` stays FG², while a pre-registry config of our PillarMatch, saved under
    the arch "fg2" with keys FG² does not know, is read as PillarMatch."""
    torch.manual_seed(0)
    model = create_fine("fg2_tiny", backbone=None)
    ckpt = {"method": "fg2", "state_dict": model.state_dict(),
            "model_config": {**model.config, "backbone_cpu_dtype": "auto"}}
    again = load_fine(ckpt)
    assert type(again).__name__ == "FG2" and "backbone_cpu_dtype" not in again.config
    del ckpt["model_config"]["name"]
    assert type(load_fine(ckpt)).__name__ == "FG2"
    ours = create_fine("pillarmatch_tiny_test")
    old = {k: v for k, v in ours.config.items() if k != "name"}
    old_ckpt = {"method": "fg2", "state_dict": ours.state_dict(), "model_config": {**old, "arch": "fg2"}}
    assert load_fine(old_ckpt).config["arch"] == "pillarmatch"


def test_typed_configs_build_the_models_their_dicts_build(tmp_path):
    """Every fine model reads a frozen dataclass config (``model.cfg``) and keeps the plain dict (``model.config``)
    that checkpoints store; a model built from the dataclass records the same dict and round-trips."""
    import dataclasses

    from crossview.fine.configs import FineConfig

    archs = set()
    for name in CPU_VARIANTS:
        model = create_fine(name)
        assert isinstance(model.cfg, FineConfig) and dataclasses.is_dataclass(model.cfg), name
        archs.add(model.config["arch"])
        with pytest.raises(dataclasses.FrozenInstanceError):
            model.cfg.name = "other"
        again = type(model)(model.cfg)
        assert again.cfg == model.cfg and again.config == model.config, name
        save_fine(again, tmp_path / f"{name}.pt")
        assert load_fine(tmp_path / f"{name}.pt").config == model.config, name
    assert archs == {arch_info(n).name for n in list_fine_models()}  # every architecture has a CPU variant here
