"""The fine-grained model registry: one interface for every metric localizer, as ``crossview.models`` for retrieval.

An *architecture* (``register_arch``) is a model class with its default config, the paper it reproduces (None for
designs of our own), and, for published ones, a strict converter from the authors' checkpoint layout. A *variant*
(``register_fine``) is a named config of an architecture: the published configuration per dataset it was released
for (``hcnet_vigor``) and a tiny CPU configuration of the same architecture (``hcnet_tiny``). Each model file
registers its own variants at its end (timm's layout).

    model = create_fine("hcnet_tiny")                          # a registered variant (overrides as keywords)
    model = load_fine("runs/hc/checkpoint.pt")                 # our checkpoint (config + weights), or its run folder
    model = load_fine("HC-Net/best.pth", arch="hcnet_vigor")   # the authors' released checkpoint, converted strictly
    model = load_fine(["model.pt", "dinov2_vitl14_pretrain.pth"], arch="fg2_vigor")  # a release of several files

Every model is a :class:`FineLocalizer`: a plain-dict ``config`` (saved with every checkpoint), the camera kinds it
places, ``predict(batch, heading_prior=None)`` and ``loss(batch)``. Batches follow ``crossview.fine.data``: images
in [0, 1], metres east/north of the tile centre, headings clockwise from north.
"""

from __future__ import annotations

import copy
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from crossview.errors import ConfigError
from crossview.safe_load import load_checkpoint

__all__ = ["FineLocalizer", "ConversionReport", "ConfigView", "register_arch", "register_fine", "list_fine_models",
           "fine_config", "create_fine", "load_fine", "arch_info", "save_fine", "load_official_state", "save_release",
           "load_release", "ReleasePart", "WEIGHT_KEYS",
           "MODEL_MODULES"]

# Model files that register architectures and variants (imported on first use of the registry).
MODEL_MODULES = ["crossview.fine.hcnet", "crossview.fine.homoflow", "crossview.fine.pillarmatch",
                 "crossview.fine.planecorr", "crossview.fine.geodistill", "crossview.fine.fg2",
                 "crossview.fine.bevpost"]


@runtime_checkable
class FineLocalizer(Protocol):
    """What ``localize``, training and ``locate`` call on a fine-grained model.

    ``predict(batch, heading_prior=None)`` returns at least ``xy`` (B, 2) metres east/north of the tile centre,
    ``heading`` (B,) degrees clockwise from north of the ground image's centre column / optical axis and
    ``confidence`` (B,) in [0, 1]. ``heading_prior`` (B,) is the believed heading of each ground image (known
    orientation: the true one; a compass: the reading); None means unknown, and each model does what its paper
    does then (HC-Net assumes a north-aligned panorama). ``loss(batch)`` returns (total, parts) for training.
    """

    config: dict[str, Any]
    cameras: tuple[str, ...]

    def input_sizes(self, camera: str) -> tuple[tuple[int, int], int]:
        """(ground (H, W), aerial side) the data loader should produce for ``camera``."""
        ...

    def predict(self, batch: dict[str, Any], heading_prior: Any = None) -> dict[str, torch.Tensor]:
        """Poses of a batch: ``xy``, ``heading``, ``confidence`` (see the class docstring)."""
        ...

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The training objective on a batch: (total, named parts)."""
        ...


class ConfigView:
    """Attribute access to a config dict (``view.bev_cells`` reads and writes ``config["bev_cells"]``): the dict
    stays the one config, saved with checkpoints; the view only spares ``["..."]`` in model code."""

    __slots__ = ("_d",)

    def __init__(self, d: dict[str, Any]):
        object.__setattr__(self, "_d", d)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") or key == "_d":  # copy/pickle probes before _d is set
            raise AttributeError(key)
        try:
            return object.__getattribute__(self, "_d")[key]
        except KeyError:
            raise AttributeError(f"config has no key {key!r}") from None

    def __reduce__(self):  # copies and pickles share the (copied) dict, as the model's ``config`` does
        return (ConfigView, (self._d,))

    def __setattr__(self, key: str, value: Any) -> None:
        if key not in self._d:
            raise AttributeError(f"config has no key {key!r}")
        self._d[key] = value


@dataclass
class ConversionReport:
    """What a strict converter did with a checkpoint: keys with no counterpart are listed, never dropped."""

    source: str
    missing: list[str] = field(default_factory=list)  # ours, with no tensor in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # the checkpoint's, with no counterpart in ours
    misshaped: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # official tensors the forward never reads (accepted)

    @property
    def ok(self) -> bool:
        """True when nothing is missing, unexpected or misshaped."""
        return not (self.missing or self.unexpected or self.misshaped)

    def summary(self) -> str:
        """One line per kind of problem, with the first keys of each."""
        lines = [f"{self.source}: " + ("converted" if self.ok else "NOT converted")]
        for name in ("missing", "unexpected", "misshaped", "unused"):
            keys = getattr(self, name)
            if keys:
                shown = ", ".join(keys[:8]) + (f" … (+{len(keys) - 8})" if len(keys) > 8 else "")
                lines.append(f"  {name} ({len(keys)}): {shown}")
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """A ``ConfigError`` with the summary when the conversion is not clean."""
        if not self.ok:
            raise ConfigError(self.summary() + "\n  (check --fine-arch: the checkpoint must come from that "
                                               "architecture and configuration)")


def convert_keys(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], rename: Any,
                 report: ConversionReport) -> dict[str, torch.Tensor]:
    """The shared part of every strict converter: ``rename(key)`` gives our name, ``""`` for an official tensor
    the forward never uses (listed in ``report.unused``), or None / raises ``KeyError`` or ``ValueError`` for one
    with no counterpart (``report.unexpected``); names and shapes are checked against ``target`` (our state dict)
    and the keys of ours left without a tensor go to ``report.missing``. DataParallel's ``module.`` prefix is
    dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        k = key[len("module."):] if key.startswith("module.") else key
        try:
            new = rename(k)
        except (KeyError, ValueError) as exc:
            report.unexpected.append(f"{key} ({exc.args[0] if exc.args else exc})")
            continue
        if new == "":
            report.unused.append(key)
        elif new is None or new not in target:
            report.unexpected.append(key if new is None else f"{key} -> {new} (not in our model)")
        elif tuple(target[new].shape) != tuple(tensor.shape):
            report.misshaped.append(f"{key} -> {new}: {tuple(tensor.shape)} vs ours {tuple(target[new].shape)}")
        else:
            out[new] = tensor
    report.missing = [k for k in target if k not in out]
    return out


def rename_by_prefix(state: dict[str, torch.Tensor], prefixes: dict[str, str]) -> dict[str, torch.Tensor]:
    """Keys renamed by their longest matching prefix in ``prefixes`` (ours -> official, for exporters)."""
    out = {}
    for key, tensor in state.items():
        prefix = max((p for p in prefixes if key.startswith(p)), key=len, default=None)
        if prefix is None:
            raise ConfigError(f"no official name for {key}")
        out[prefixes[prefix] + key[len(prefix):]] = tensor.detach().cpu()
    return out


@dataclass
class ReleasePart:
    """One file of an official release: what it is (``"DINOv2 backbone"``), the name the authors publish it under,
    which official keys are its (``owns(key)``), and the config key whose file can stand in for it (``supplied_by``:
    FG²'s ``backbone_weights``), if any."""

    name: str
    file: str
    owns: Any
    supplied_by: str | None = None


# Config keys naming where a model's pretrained sub-networks come from (a file, "lite" for the packaged weights,
# "timm", "random" or None): a checkpoint of ours carries those weights itself and never reads them again.
WEIGHT_KEYS = ("weights", "backbone_weights", "ori_weights")


@dataclass
class _Arch:
    name: str
    builder: Any
    defaults: dict[str, Any]
    published: str | None
    converter: Any = None
    exporter: Any = None
    reproduce: Any = None
    official_repo: str | None = None
    cameras: tuple[str, ...] = ("panorama",)
    official_params: int | None = None
    release_parts: Any = None  # config -> [ReleasePart]: the files the authors publish (None: one file)


_ARCHS: dict[str, _Arch] = {}
_VARIANTS: dict[str, dict[str, Any]] = {}
_LOADED = False


def _ensure() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in MODEL_MODULES:
            importlib.import_module(module)


def register_arch(name: str, builder: Any, defaults: dict[str, Any], published: str | None = None,
                  converter: Any = None, exporter: Any = None, reproduce: Any = None,
                  official_repo: str | None = None, cameras: tuple[str, ...] = ("panorama",),
                  official_params: int | None = None, release_parts: Any = None) -> None:
    """Register an architecture: ``builder(config) -> model``; ``published`` names the paper (None: ours);
    ``release_parts(config) -> [ReleasePart]``: the files its official release consists of, when more than one."""
    if name in _ARCHS:
        raise ValueError(f"fine architecture {name!r} registered twice")
    if defaults.get("arch") != name:
        raise ValueError(f"defaults of {name!r} must carry arch={name!r}")
    _ARCHS[name] = _Arch(name, builder, copy.deepcopy(defaults), published, converter, exporter, reproduce,
                         official_repo, tuple(cameras), official_params, release_parts)


def register_fine(name: str, arch: str, **overrides: Any) -> None:
    """Register variant ``name`` of ``arch``: its defaults updated with ``overrides`` (checked now)."""
    if name in _VARIANTS:
        raise ValueError(f"fine model {name!r} registered twice")
    if arch not in _ARCHS:
        raise ValueError(f"register architecture {arch!r} before its variant {name!r}")
    _check_keys(arch, overrides, f"variant {name!r}")
    _VARIANTS[name] = {"arch": arch, **copy.deepcopy(overrides)}


def _check_keys(arch: str, overrides: dict[str, Any], where: str) -> None:
    known = set(_ARCHS[arch].defaults) | {"name", "arch"}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"{where}: unknown {arch} config keys {sorted(unknown)}; known: {sorted(known)}")


def list_fine_models(pattern: str | None = None, arch: str | None = None) -> list[str]:
    """Registered variant names (those containing ``pattern``, of ``arch``), sorted."""
    _ensure()
    return sorted(n for n, v in _VARIANTS.items()
                  if (pattern is None or pattern in n) and (arch is None or v["arch"] == arch))


def arch_info(arch_or_name: str) -> _Arch:
    """The architecture record of an architecture or variant name."""
    _ensure()
    arch = _VARIANTS[arch_or_name]["arch"] if arch_or_name in _VARIANTS else arch_or_name
    if arch not in _ARCHS:
        raise ConfigError(f"unknown fine architecture or model {arch_or_name!r}; architectures: "
                          f"{', '.join(sorted(_ARCHS))}; models: {', '.join(list_fine_models())}")
    return _ARCHS[arch]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def fine_config(name_or_cfg: str | dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The resolved config: architecture defaults ← variant ← ``overrides`` (nested dicts merged key by key;
    unknown keys refused). A dict with an ``arch`` key (e.g. a checkpoint's) is resolved the same way."""
    _ensure()
    if isinstance(name_or_cfg, dict):
        arch = name_or_cfg.get("arch")
        if arch not in _ARCHS:
            raise ConfigError(f"config has arch {arch!r}; registered fine architectures: {', '.join(sorted(_ARCHS))}")
        variant, name = dict(name_or_cfg), name_or_cfg.get("name")
    else:
        if name_or_cfg not in _VARIANTS:
            raise ConfigError(f"unknown fine model {name_or_cfg!r}; registered: {', '.join(list_fine_models())}")
        variant, name = _VARIANTS[name_or_cfg], name_or_cfg
        arch = variant["arch"]
    _check_keys(arch, variant, f"config of {name or arch}")
    _check_keys(arch, overrides, "overrides")
    cfg = _merge(_merge(_ARCHS[arch].defaults, variant), overrides)
    cfg["arch"], cfg["name"] = arch, name or arch
    return cfg


def create_fine(name_or_cfg: str | dict[str, Any], **overrides: Any) -> torch.nn.Module:
    """Build a fine model from a registered name or a config dict, with config ``overrides``."""
    cfg = fine_config(name_or_cfg, **overrides)
    return _ARCHS[cfg["arch"]].builder(cfg)


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
    from crossview.fine.convert import build_official, read_official, release_files

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


def load_official_state(model: torch.nn.Module, state: dict[str, Any], converter: Any) -> torch.nn.Module:
    """``model`` with an official state dict loaded through its strict ``converter`` (float16 tensors cast to
    float32; non-tensor entries ignored); raises on any missing, unexpected or misshaped key. The report is kept
    as ``model.conversion_report``; the model is returned in eval mode."""
    tensors = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items() if torch.is_tensor(v)}
    converted, report = converter(tensors, model)
    report.raise_if_failed()
    model.load_state_dict(converted, strict=True)
    model.conversion_report = report
    return model.eval()
