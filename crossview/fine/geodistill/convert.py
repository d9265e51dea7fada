"""GeoDistill's official checkpoints (tongshw/GeoDistill layout): strict conversion both ways, merging and
splitting the three official files, and the release's parts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from crossview.errors import ConfigError
from crossview.fine.backbones import is_efficientnet
from crossview.fine.registry import ConversionReport, ReleasePart, convert_keys

if TYPE_CHECKING:
    from crossview.fine.geodistill.model import GeoDistill

# Official checkpoints (tongshw/GeoDistill layout)
#
# The official release is three state dicts: the localization net (``SatDPT.*``, ``GrdDPT.*``; saved by the
# training scripts as ``{"model_state_dict": ..., "epoch", "loss"}``), the frozen DINOv2 ViT-B/14 (torch.hub's
# ``dinov2_vitb14_pretrain.pth``: ``cls_token``, ``pos_embed``, ``mask_token``, ``patch_embed.*``, ``blocks.*``,
# ``norm.*``) and the orientation estimator (``sat_efficientnet.*``, ``grd_efficientnet.*``, ``fusion_layer.*``,
# ``fc.*``, also under ``model_state_dict``). Their key sets are disjoint, so ``load_fine(path,
# arch="geodistill_vigor")`` reads ONE flat state dict holding all three (``pack_official`` writes it from the three
# official files; ``merge_official`` builds it in memory).

_DPT_PREFIX = {"SatDPT.": "aerial_head.", "GrdDPT.": "ground_head."}
_ORI_PREFIX = {"sat_efficientnet.": "orienter.aerial_encoder.net.", "grd_efficientnet.": "orienter.bev_encoder.net."}
_B0_BLOCKS = 16  # the official EfficientNet-B0 keeps all 16 blocks


def _unwrap(state: Any, what: str) -> dict[str, torch.Tensor]:
    if isinstance(state, dict):
        for key in ("model_state_dict", "state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ConfigError(f"{what}: expected a state dict, got {type(state).__name__}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items() if torch.is_tensor(v)}


def merge_official(localization: Any, dinov2: Any, orientation: Any | None = None) -> dict[str, torch.Tensor]:
    """One flat official-named state dict from the three official ones (each may be wrapped in
    ``model_state_dict``/``state_dict``); refuses overlapping keys."""
    out: dict[str, torch.Tensor] = {}
    for what, state in (("localization", localization), ("dinov2", dinov2), ("orientation", orientation)):
        if state is None:
            continue
        part = _unwrap(state, what)
        clash = set(part) & set(out)
        if clash:
            raise ConfigError(f"{what} state dict repeats keys of another part, e.g. {sorted(clash)[:3]}")
        out.update(part)
    return out


def split_official(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The flat official state dict split back into ``localization`` / ``dinov2`` / ``orientation``."""
    parts: dict[str, dict[str, torch.Tensor]] = {"localization": {}, "dinov2": {}, "orientation": {}}
    for k, v in state.items():
        part = ("localization" if k.startswith(tuple(_DPT_PREFIX)) else
                "orientation" if k.startswith(tuple(_ORI_PREFIX) + ("fusion_layer.", "fc.")) else "dinov2")
        parts[part][k] = v
    return parts


def pack_official(localization: str, dinov2: str, orientation: str | None, out: str,
                  trust_checkpoint: bool = False) -> str:
    """Write the flat checkpoint ``load_fine(out, arch="geodistill_vigor")`` reads, from the official files: the
    localization net checkpoint, ``dinov2_vitb14_pretrain.pth`` and the orientation estimator checkpoint. They are
    read without running code from them (:mod:`crossview.safe_load`: their numpy losses and scheduler states are
    allowed) unless ``trust_checkpoint``."""
    from crossview.io import save_torch_atomic
    from crossview.safe_load import load_checkpoint

    def load(p: str) -> Any:
        return load_checkpoint(p, trust=trust_checkpoint, what="official GeoDistill checkpoint")

    state = merge_official(load(localization), load(dinov2), load(orientation) if orientation else None)
    return str(save_torch_atomic(out, state))


def release_parts(cfg: dict[str, Any]) -> list[ReleasePart]:
    """The files of GeoDistill's release: the localization net, the DINOv2 weights (torch.hub's file) and, with
    the orientation estimator, the orientation net."""
    ori = tuple(_ORI_PREFIX) + ("fusion_layer.", "fc.")
    parts = [ReleasePart("localization net", "the localization net checkpoint (SatDPT/GrdDPT)",
                         lambda k: k.startswith(tuple(_DPT_PREFIX)))]
    if not is_efficientnet(cfg["backbone"]):
        from crossview.fine.dinov2 import official_filename

        parts.append(ReleasePart("DINOv2 backbone", official_filename(cfg["backbone"]),
                                 lambda k: not k.startswith(tuple(_DPT_PREFIX) + ori), supplied_by="weights"))
    if cfg["orientation"]:
        parts.append(ReleasePart("orientation net", "the orientation net checkpoint",
                                 lambda k: k.startswith(ori)))
    return parts


def _dpt_key(rest: str) -> str:
    """Official DPT names (after ``SatDPT.``) → ours (after ``aerial_head.``)."""
    head, _, leaf = rest.partition(".")
    if head.startswith("conv_"):
        return f"project.{int(head[5:])}.{leaf}"
    if head.startswith("ref_"):
        unit, _, tail = leaf.partition(".")  # resConfUnitK, conv.J.param
        conv, idx, param = tail.split(".", 2)
        if not unit.startswith("resConfUnit") or conv != "conv" or idx not in ("0", "2"):
            raise KeyError(f"unknown DPT fusion tensor {rest}")
        return f"fuse.{int(head[4:])}.unit{int(unit[11:])}.conv{1 if idx == '0' else 2}.{param}"
    if head.startswith("out_conv_"):
        return f"out.{int(head[9:]) - 1}.{leaf}"
    raise KeyError(f"unknown DPT module {head}")


def _orientation_key(rest: str, ours: str, flat: list, target: dict[str, torch.Tensor]) -> str:
    """Our name of an official estimator EfficientNet tensor (after ``sat_efficientnet.``); "" when it is one the
    forward never reads and our model does not keep (blocks after the tapped one, ``_conv_head``, ``_bn1``)."""
    from crossview.models.lite_weights import timm_key

    head, _, tail = rest.partition(".")
    if head == "_fc":
        raise KeyError("the official estimator's EfficientNets have no classifier")
    block = int(tail.partition(".")[0]) if head == "_blocks" else None
    try:
        cand = ours + timm_key(rest, flat)
    except KeyError:
        if block is not None and len(flat) <= block < _B0_BLOCKS:
            return ""
        raise
    if cand in target:
        return cand
    if head in ("_conv_head", "_bn1"):
        return ""
    return cand


def convert_official(state: dict[str, torch.Tensor], model: GeoDistill) -> tuple[dict[str, torch.Tensor],
                                                                                 ConversionReport]:
    """The flat official state dict (``merge_official``) → ours, strictly: every official key is mapped or reported.

    The estimator EfficientNets' block 15, ``_conv_head`` and ``_bn1`` (never used by its block-14 forward) are
    reported as unused and loaded only when the model keeps them (``keep_unused=True``)."""
    from crossview.models.lite_weights import flat_blocks

    target = model.state_dict()
    report = ConversionReport(source="official GeoDistill (tongshw/GeoDistill @39dcc16c): localization net + "
                                     "DINOv2 + orientation estimator")
    flats = {}
    if model.orienter is not None:
        flats = {ours: flat_blocks(getattr(model.orienter, ours.split(".")[1]).net) for ours in _ORI_PREFIX.values()}
    def rename(k: str) -> str | None:
        new: str | None = None
        for old, ours in _DPT_PREFIX.items():
            if k.startswith(old):
                new = ours + _dpt_key(k[len(old):])
        for old, ours in _ORI_PREFIX.items():
            if k.startswith(old) and ours in flats:
                new = _orientation_key(k[len(old):], ours, flats[ours], target)
        if new is None and k.startswith(("fusion_layer.", "fc.")) and model.orienter is not None:
            new = "orienter." + (k.replace("fusion_layer.", "fusion.", 1) if k.startswith("fusion_layer.") else k)
        if new is None and not k.startswith(tuple(_DPT_PREFIX) + tuple(_ORI_PREFIX) + ("fusion_layer.", "fc.")):
            new = "encoder." + (k if k == "mask_token" else f"vit.{k}")
        return new

    out = convert_keys(state, target, rename, report)
    return out, report


def export_official(model: GeoDistill) -> dict[str, torch.Tensor]:
    """Our weights as the flat official state dict (the inverse of ``convert_official``; ``split_official`` gives
    the three official files' contents)."""
    from crossview.models.lite_weights import official_prefixes

    inverse: dict[str, str] = {}
    for official, ours in _DPT_PREFIX.items():
        head = getattr(model, ours[:-1])
        for i in range(len(head.project)):
            inverse[f"{ours}project.{i}."] = f"{official}conv_{i}."
        for i, block in enumerate(head.fuse):
            for u in (1, 2):
                if getattr(block, f"unit{u}") is not None:
                    for c, j in ((1, 0), (2, 2)):
                        inverse[f"{ours}fuse.{i}.unit{u}.conv{c}."] = f"{official}ref_{i}.resConfUnit{u}.conv.{j}."
        for i in range(len(head.out)):
            inverse[f"{ours}out.{i}."] = f"{official}out_conv_{i + 1}."
    if model.orienter is not None:
        for official, ours in _ORI_PREFIX.items():
            inverse.update(official_prefixes(getattr(model.orienter, ours.split(".")[1]).net, ours, official))
        inverse["orienter.fusion."] = "fusion_layer."
        inverse["orienter.fc."] = "fc."
    inverse["encoder.vit."] = ""
    inverse["encoder.mask_token"] = "mask_token"
    out = {}
    for key, tensor in model.state_dict().items():
        prefix = max((p for p in inverse if key.startswith(p)), key=len, default=None)
        if prefix is None:
            raise ConfigError(f"no official name for {key}")
        out[inverse[prefix] + key[len(prefix):]] = tensor.detach().cpu()
    return out

