"""The official -> ours converter: strict errors that list the offending keys, layout detection, Sample4Geo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import crossview
from crossview.errors import ConfigError
from crossview.models import create_model, input_spec
from crossview.models.convert import convert_official, detect_layout, rename_official_key


def official_mfrgn_state(model) -> dict[str, torch.Tensor]:
    """An official-layout state dict for one of our two-view MFRGN models (the inverse of the converter, built by
    searching, so it does not share code with it)."""
    ours = model.state_dict()
    candidates = ["logit_scale", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"]
    candidates += [f"backbone.backbone.{k[len('backbone.model.'):]}" for k in ours if k.startswith("backbone.model.")]
    candidates += [f"embed.input_proj.{i}.{j}.{p}" for i in range(4) for j in range(2) for p in ("weight", "bias")]
    for v in ("sat", "grd"):
        for level, n in (("H", 2), ("L", 1)):
            for i in range(n):
                for part in ("query_proj", "key_proj", "value_proj", "merge", "norm1", "norm2", "mlp.0", "mlp.3"):
                    candidates += [f"transformer_{v}_{level}.layers.{i}.{part}.{p}" for p in ("weight", "bias")]
        candidates += [f"proj_{v}.weight", f"proj_{v}.bias", f"proj_local_{v}.weight", f"proj_local_{v}.bias"]
        for i in range(4):
            for j in (0, 1, 2, 4):
                candidates += [f"proj_gl_{v}.{i}.{j}.{p}" for p in ("weight", "bias", "running_mean", "running_var",
                                                                    "num_batches_tracked")]
            candidates += [f"{kind}_{v}.{i}.{p}" for kind in ("ch", "sp") for p in ("weight", "bias")]
    out = {}
    for key in candidates:
        new = rename_official_key(key, "official_mfrgn")
        if new in ours:
            out[key] = ours[new].clone()
    assert len(out) == len(ours)
    return out


ATTO = dict(backbone="convnext_atto", backbone_kwargs={"depths": (1, 1, 1, 1)}, aerial_size=(64, 64),
            ground_size=(32, 128))


@pytest.fixture(scope="module")
def atto():
    torch.manual_seed(0)
    return create_model("mfrgn_cvusa", **ATTO).eval()  # the official head hyper-parameters on a small backbone


def test_official_layout_round_trip(atto):
    state = official_mfrgn_state(atto)
    assert detect_layout(state) == "official_mfrgn"
    again = crossview.load_model({f"module.{k}": v for k, v in state.items()}, arch="mfrgn", **ATTO).eval()
    x = torch.randn(2, 3, 32, 128)
    with torch.no_grad():
        torch.testing.assert_close(again.embed(x, "ground"), atto.embed(x, "ground"))


def test_a_missing_key_is_listed(atto):
    state = official_mfrgn_state(atto)
    del state["proj_grd.weight"], state["sp_sat.2.bias"]
    with pytest.raises(ConfigError) as err:
        convert_official(state, atto)
    msg = str(err.value)
    assert "missing in the checkpoint (2)" in msg
    assert "heads.ground.global_proj.weight" in msg and "heads.aerial.gpab.2.spatial.bias" in msg


def test_an_unexpected_key_is_listed(atto):
    state = official_mfrgn_state(atto)
    state["proj_extra.weight"] = torch.zeros(3)
    state["transformer_sat_H.layers.5.merge.weight"] = torch.zeros(128, 128)  # a layer the model does not have
    with pytest.raises(ConfigError, match=r"unexpected in the checkpoint \(2\).*proj_extra\.weight") as err:
        convert_official(state, atto)
    assert "heads.aerial.scam_high.5.out.weight" in str(err.value)


def test_a_size_mismatch_names_the_key_and_the_fix(atto):
    state = official_mfrgn_state(atto)
    with torch.device("meta"):
        other = create_model("mfrgn_cvusa", **{**ATTO, "ground_size": (64, 256)})
    with pytest.raises(ConfigError, match=r"(?s)ground_size.*shape mismatches \(1\): proj_grd\.weight: checkpoint"):
        convert_official(state, other)


def test_sample4geo_official_layout():
    torch.manual_seed(0)
    model = create_model("sample4geo_tiny", aerial_size=(64, 64), ground_size=(32, 128)).eval()
    state = {("model." + k[len("backbone.model."):] if k.startswith("backbone.model.") else k): v
             for k, v in model.state_dict().items()}
    assert detect_layout(state) == "official_sample4geo"
    again = crossview.load_model(state, backbone="efficientnet_lite0", aerial_size=(64, 64),
                                 ground_size=(32, 128)).eval()
    assert again.config["arch"] == "sample4geo" and input_spec(again, "aerial")[1] == input_spec(model, "aerial")[1]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.embed(x, "aerial"), model.embed(x, "aerial"))


def test_our_state_dict_without_config_needs_the_arch(atto):
    with pytest.raises(ConfigError, match="arch="):
        crossview.load_model(atto.state_dict())


def test_unknown_layout_is_a_clear_error():
    with pytest.raises(ConfigError, match="cannot tell the checkpoint layout"):
        detect_layout({"encoder.weight": torch.zeros(1)})


@pytest.mark.parametrize("name, layout", [("mfrgn_cvusa", "official_mfrgn"), ("mfrgn_u1652", "official_mfrgn_u"),
                                          ("sample4geo_cvusa", "official_sample4geo")])
def test_export_is_the_exact_inverse_of_the_converter(name, layout):
    from crossview.models.convert import export_official

    with torch.device("meta"):
        model = create_model(name, backbone="convnext_atto")
    exported = export_official(model)
    assert len(exported) == len(model.state_dict()) and detect_layout(exported) == layout
    assert {rename_official_key(k, layout) for k in exported} == set(model.state_dict())
    assert convert_official(exported, model).keys() == model.state_dict().keys()


@pytest.mark.skipif(not (Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "mfrgn_parity").exists(),
                    reason="official key lists not found in ../shared/reference/mfrgn_parity")
def test_export_reproduces_the_official_key_list():
    from crossview.models.convert import export_official

    tsv = Path(__file__).resolve().parents[1].parent / "shared/reference/mfrgn_parity" / \
        "official_state_dict_keys_cvusa_cvact_sat256_grd128x512.tsv"
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
    with torch.device("meta"):
        model = create_model("mfrgn_cvusa")
    exported = export_official(model)
    assert {k: str(tuple(v.shape)) for k, v in exported.items()} == {k: shape for k, shape, _ in rows}
