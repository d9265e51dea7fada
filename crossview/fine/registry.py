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
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from crossview.errors import ConfigError

__all__ = ["FineLocalizer", "ConversionReport", "register_arch", "register_fine", "list_fine_models",
           "fine_config", "create_fine", "arch_info", "load_official_state", "ReleasePart", "WEIGHT_KEYS",
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
