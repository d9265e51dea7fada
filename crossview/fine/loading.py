"""Fine models to and from files: our checkpoints (``save_fine`` / ``load_fine``), releases of our own models
(``save_release``: safetensors with the config as metadata) and the authors' releases (``load_fine`` with ``arch``,
converted by :mod:`crossview.fine.convert`; ``convert_release`` packs one into a checkpoint of ours).

Kept apart from :mod:`crossview.fine.registry` (names, configs, builders) so that the registry never imports the
converters and the converters never import the loaders.
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from crossview.errors import ConfigError
from crossview.fine.convert import build_official, read_official, release_files
from crossview.fine.registry import _ARCHS, _VARIANTS, WEIGHT_KEYS, _ensure, create_fine, list_fine_models
from crossview.safe_load import load_checkpoint

__all__ = ["save_fine", "load_fine", "save_release", "load_release", "refuse_bare_name", "convert_release"]


def save_fine(model: torch.nn.Module, path: str | os.PathLike, **extra: Any) -> Path:
    """Write ``{"model_config", "state_dict", **extra}`` atomically: ``load_fine(path)`` rebuilds the model."""
    from crossview.io import save_torch_atomic

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_torch_atomic(path, {"method": model.config["arch"], "model_config": copy.deepcopy(model.config),
                                    "state_dict": state, **extra})


# Runs written before the registry (their config has no "name") saved our designs under the published methods'
# names. Such a config is read as our design only when it holds keys of our design that the published architecture
# does not know, so a published model's checkpoint is never taken for ours.
_PRE_REGISTRY_NAMES = {"fg2": "pillarmatch", "geodistill": "planecorr", "hcnet": "homoflow"}


def _pre_registry_arch(cfg: dict[str, Any], method: str | None) -> str | None:
    old = cfg.get("arch") or method
    ours = _PRE_REGISTRY_NAMES.get(old)
    if ours is None:
        return None
    published = set(_ARCHS[old].defaults) if old in _ARCHS else set()
    return ours if (set(cfg) - published) & set(_ARCHS[ours].defaults) else None


def _current_keys(cfg: dict[str, Any]) -> dict[str, Any]:
    """A stored config without the keys older versions wrote and this one no longer has (options removed since)."""
    _ensure()
    if cfg.get("arch") not in _ARCHS:
        return cfg
    known = set(_ARCHS[cfg["arch"]].defaults) | {"name"}
    return {k: v for k, v in cfg.items() if k in known}


def _from_checkpoint(ckpt: dict[str, Any], where: str, overrides: dict[str, Any]) -> torch.nn.Module:
    cfg = dict(ckpt["model_config"])
    legacy = _pre_registry_arch(cfg, ckpt.get("method")) if "name" not in cfg else None
    if legacy is not None:
        cfg = {**cfg, "arch": legacy, "name": legacy}
    elif cfg.get("arch") not in _ARCHS:
        raise ConfigError(f"{where}: checkpoint of unknown architecture {cfg.get('arch') or ckpt.get('method')!r}; "
                          f"registered: {', '.join(sorted(_ARCHS))}")
    cfg = _current_keys(cfg)
    # the state dict carries every weight: nothing is read from the files the config names (they may have moved)
    no_fetch = {k: None for k in WEIGHT_KEYS if k in _ARCHS[cfg["arch"]].defaults}
    if "pretrained" in _ARCHS[cfg["arch"]].defaults:
        no_fetch["pretrained"] = False  # the state dict carries every weight
    model = create_fine(cfg, **{**no_fetch, **overrides})
    model.load_state_dict(ckpt["state_dict"], strict=True)
    for key in set(no_fetch) - set(overrides):  # the config keeps recording where the weights first came from
        model.config[key] = cfg.get(key, model.config[key])
    return model


def save_release(model: torch.nn.Module, path: str | os.PathLike, **info: Any) -> Path:
    """A release of a model of ours: its tensors as safetensors (the parameters that come with the package, under
    the model's ``packaged_prefixes``, left out), with the config and ``info`` (JSON strings) in the file's
    metadata; :func:`load_fine` reads it back."""
    import json

    from safetensors.torch import save_file

    from crossview.io import atomic_write

    skip = _packaged_parameters(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in skip}
    meta = {"model_config": json.dumps(model.config), **{k: json.dumps(v) for k, v in info.items()}}
    return atomic_write(path, lambda p: save_file(state, str(p), metadata=meta))


def _packaged_parameters(model: torch.nn.Module) -> set[str]:
    """The parameters whose values come with the package (under the model's ``packaged_prefixes``): a release
    leaves them out. Buffers (batch-norm statistics) are always kept: they may differ from the package's."""
    prefixes = tuple(getattr(model, "packaged_prefixes", ()))
    return {n for n, _ in model.named_parameters() if prefixes and n.startswith(prefixes)}


def load_release(path: str | os.PathLike, **overrides: Any) -> torch.nn.Module:
    """A model from :func:`save_release`'s file: built from its config (packaged backbone weights included), its
    tensors loaded strictly: every tensor of the file must be the model's, and every tensor of the model the file
    lacks must come with the package (the model's ``packaged_prefixes``)."""
    import json

    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # not a safetensors file
        raise ConfigError(f"{path}: not a readable safetensors file ({exc})") from exc
    if "model_config" not in meta:
        raise ConfigError(f"{path}: a safetensors file without a model_config in its metadata is not a crossview "
                          "release; official checkpoints are .pth files given with --fine-arch")
    cfg = _current_keys(json.loads(meta["model_config"]))
    # weights the file holds are not read from where the config says they first came from (that file may be gone)
    no_fetch = {k: None for k in WEIGHT_KEYS if cfg.get(k) not in (None, "lite") and k not in overrides}
    model = create_fine(cfg, **no_fetch, **overrides)
    model.config.update({k: cfg[k] for k in no_fetch})
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    skip = _packaged_parameters(model)
    missing = [k for k in own if k not in state and k not in skip]
    misshaped = [k for k in state if k in own and own[k].shape != state[k].shape]
    if unexpected or missing or misshaped:
        raise ConfigError(f"{path}: does not fit its config: unexpected {unexpected[:5]}, missing {missing[:5]}, "
                          f"misshaped {misshaped[:5]}")
    model.load_state_dict(state, strict=False)
    model.release_info = {k: json.loads(v) for k, v in meta.items() if k != "model_config"}
    return model


def refuse_bare_name(source: Any, flag: str = "--fine-model") -> None:
    """A command that answers with a fine model must be given weights: a registered name alone builds random heads
    (and, for the published models, a random backbone), so it is refused, naming what to give instead. Python
    callers who mean it use :func:`create_fine`."""
    if isinstance(source, str) and "," not in source and not Path(source).exists():
        _ensure()
        if source in _VARIANTS:
            raise ConfigError(f"{flag} {source}: a registered architecture, not weights; give a training run or "
                              f"checkpoint (crossview fine-train ...), or the authors' files with --fine-arch {source} "
                              "(crossview fine-convert packs them); create_fine() builds random weights from Python")


def load_fine(source: str | os.PathLike | dict[str, Any] | list | tuple, arch: str | None = None,
              device: str | torch.device = "cpu", trust_checkpoint: bool = False,
              backbone: str | os.PathLike | None = None, **overrides: Any) -> torch.nn.Module:
    """A fine model in eval mode from any of:

    - a registered variant name (random or packaged weights, as the variant says);
    - our checkpoint (file, run folder holding ``checkpoint.pt``, or its dict): config + weights;
    - an official state dict (file or dict; ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers and
      ``module.`` prefixes accepted) with ``arch`` naming the variant it was trained as (``hcnet_vigor``): converted
      by the architecture's strict converter, which lists missing / unexpected / misshaped keys and fails on any;
    - an official release of several files (a list, or their paths joined by commas; ``backbone`` adds one: FG²'s
      ``dinov2_vitl14_pretrain.pth``), with ``arch``: merged, then converted the same way
      (:mod:`crossview.fine.convert`). A release missing one of its files is refused, naming the file.

    Files load without running code from them (:mod:`crossview.safe_load`): one naming other code raises
    :class:`~crossview.errors.UnsafeCheckpointError` unless ``trust_checkpoint=True`` (``--trust-checkpoint``).
    """
    _ensure()
    files = release_files(source, backbone)
    if files is not None:
        items = read_official(files, trust_checkpoint)
        return build_official(items, arch, overrides).to(device)
    if isinstance(source, str) and source in _VARIANTS and not Path(source).exists():
        return create_fine(source, **overrides).to(device).eval()
    where = "<dict>"
    if not isinstance(source, dict):
        path = Path(source)
        if path.is_dir():
            path = path / "checkpoint.pt"
        if not path.exists():
            raise ConfigError(f"{path}: no such fine-model checkpoint; give a run folder from `crossview fine-train`, "
                              f"a checkpoint file, an official checkpoint with --fine-arch, or a registered name "
                              f"({', '.join(list_fine_models())})")
        where = str(path)
        if path.suffix == ".safetensors":
            return load_release(path, **overrides).to(device).eval()
        source = load_checkpoint(path, trust=trust_checkpoint, what="fine-model checkpoint")
    if not isinstance(source, dict):
        raise ConfigError(f"{where}: expected a dict checkpoint, got {type(source).__name__}")
    if "model_config" in source and "state_dict" in source:
        return _from_checkpoint(source, where, overrides).to(device).eval()
    return build_official([(where, source)], arch, overrides).to(device)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_release(arch: str, files: list[str | os.PathLike], out: str | os.PathLike,
                    trust_checkpoint: bool = False) -> dict[str, Any]:
    """Pack an official release (its files, in any order) as variant ``arch`` into one checkpoint of ours at
    ``out``, written atomically: ``.safetensors`` (tensors + config and provenance as JSON metadata, like
    ``crossview fine-release``) or else our torch format (read back weights-only). ``load_fine(out)`` then needs no
    other file. Returns what was used and ignored (file names, SHA-256, parts, ignored entries, converter notes)."""
    if not files:
        raise ConfigError("give the files of the official release")
    model = load_fine([Path(f) for f in files], arch=arch, trust_checkpoint=trust_checkpoint)
    report = model.conversion_report
    used = [{**r, "file": Path(r["file"]).name, "sha256": _sha256(r["file"])} for r in model.release_files]
    provenance = {"arch": model.config["name"], "source": report.source, "files": used,
                  "unused_official_tensors": list(report.unused), "notes": list(getattr(report, "notes", []))}
    out = Path(out)
    if out.suffix == ".safetensors":
        save_release(model, out, converted_from=provenance)
    else:
        save_fine(model, out, converted_from=provenance)
    return {"checkpoint": str(out), **provenance}
