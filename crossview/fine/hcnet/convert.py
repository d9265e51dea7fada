"""HC-Net's official checkpoints (xlwangDev/HC-Net layout): strict conversion both ways."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from crossview.fine.registry import ConversionReport, convert_keys, rename_by_prefix

if TYPE_CHECKING:
    from crossview.fine.hcnet.model import HCNet

__all__ = ["convert_official", "export_official"]

_OFFICIAL_PREFIX = {"sat_efficientnet.": "aerial_encoder.net.", "grd_efficientnet.": "bev_encoder.net."}


def _update_key(rest: str) -> str:
    layer, _, leaf = rest.partition(".")
    if layer == "layer10":
        return f"update.head.{leaf}"
    order = {"layer1": 0, "layer2": None, "layer3": 1, "layer4": 2}
    # CNN16 has layer1, layer3, layer4 (no layer2): the k-th present layer is our down.k
    idx = order.get(layer)
    if idx is None:
        raise KeyError(f"no counterpart for update_block_4.cnn.{layer}")
    return f"update.down.{idx}.{leaf}"


def convert_official(state: dict[str, torch.Tensor], model: HCNet) -> tuple[dict[str, torch.Tensor],
                                                                            ConversionReport]:
    """Official HC-Net state dict -> ours, strictly: every official key is mapped or reported.

    The EfficientNets' ``_conv_head``, ``_bn1`` and ``_fc`` are accepted and reported as unused (loaded when the
    model keeps them: ``keep_unused=True``). Returns (our state dict, report); ``report.ok`` is False when any key
    is missing, unexpected or misshaped."""
    from crossview.models.lite_weights import HEAD_MODULES, flat_blocks, timm_key

    target = model.state_dict()
    flats = {"aerial_encoder.net.": flat_blocks(model.aerial_encoder.net),
             "bev_encoder.net.": flat_blocks(model.bev_encoder.net)}

    def rename(k: str) -> str | None:
        for old, ours in _OFFICIAL_PREFIX.items():
            if k.startswith(old):
                new = ours + timm_key(k[len(old):], flats[ours])
                unused = k[len(old):].partition(".")[0] in HEAD_MODULES and new not in target
                return "" if unused else new
        if k.startswith("update_block_4.cnn."):
            return _update_key(k[len("update_block_4.cnn."):])
        return None

    report = ConversionReport(source="official HC-Net (xlwangDev/HC-Net @62329ddb)")
    return convert_keys(state, target, rename, report), report


def export_official(model: HCNet) -> dict[str, torch.Tensor]:
    """Our weights in the official layout (the inverse of ``convert_official``; head tensors only when kept)."""
    from crossview.models.lite_weights import official_prefixes

    inverse = {**official_prefixes(model.aerial_encoder.net, "aerial_encoder.net.", "sat_efficientnet."),
               **official_prefixes(model.bev_encoder.net, "bev_encoder.net.", "grd_efficientnet.")}
    for i, name in enumerate(("layer1", "layer3", "layer4")):
        inverse[f"update.down.{i}."] = f"update_block_4.cnn.{name}."
    inverse["update.head."] = "update_block_4.cnn.layer10."
    return rename_by_prefix(model.state_dict(), inverse)

