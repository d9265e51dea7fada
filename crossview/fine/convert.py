"""Official releases, exactly as their authors publish them, into models and into one checkpoint of ours.

A release is one file (HC-Net's ``best.pth``) or several: FG²'s matching head ``model.pt`` runs on the separately
published DINOv2 ViT-L ``dinov2_vitl14_pretrain.pth``; GeoDistill's is its localization net, its orientation net
and the DINOv2 ViT-B ``dinov2_vitb14_pretrain.pth``. Here:

- :func:`read_official` reads the files without running code from them (:mod:`crossview.safe_load`);
- :func:`build_official` unwraps training-script wrappers (``{"epoch", "model_state_dict",
  "optimizer_state_dict", "lr_schedule", "loss"}``: everything but the weights is listed as ignored), merges the
  files, refuses a release with a part missing (naming the file and the flag), refuses files whose path or tensors
  say they are another variant (naming it), and converts strictly with the architecture's converter;

:func:`crossview.fine.loading.convert_release` then writes such a model as one self-contained checkpoint
(``crossview fine-convert``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from crossview.errors import ConfigError
from crossview.fine.registry import (
    _VARIANTS,
    WEIGHT_KEYS,
    arch_info,
    create_fine,
    fine_config,
    list_fine_models,
)
from crossview.safe_load import load_checkpoint

__all__ = ["release_files", "read_official", "build_official"]

_WRAPPERS = ("model_state_dict", "state_dict", "model")


def release_files(source: Any, backbone: str | os.PathLike | None = None) -> list[Path] | None:
    """The files of a release given as several (a list, or paths joined by commas, plus ``backbone``); None when
    ``source`` is a single checkpoint, name or dict and no ``backbone`` is given."""
    if isinstance(source, list | tuple):
        files = list(source)
    elif isinstance(source, str | os.PathLike) and "," in str(source) and not Path(source).exists():
        files = [s.strip() for s in str(source).split(",") if s.strip()]
    elif backbone is not None and isinstance(source, str | os.PathLike):
        files = [source]
    elif backbone is not None:
        raise ConfigError("a backbone file goes with the files of an official release, not with a state dict")
    else:
        return None
    return [Path(f) for f in files] + ([Path(backbone)] if backbone is not None else [])


def read_official(files: list[Path], trust_checkpoint: bool = False) -> list[tuple[str, Any]]:
    """(path, contents) of each file of an official release, read without running code from it unless
    ``trust_checkpoint``; a crossview checkpoint among them is refused (it already holds every weight)."""
    items = []
    for path in files:
        if not path.is_file():
            raise ConfigError(f"{path}: no such file (the files of an official release, each given once)")
        if path.suffix == ".safetensors":
            raise ConfigError(f"{path}: a crossview release holds every weight; give it alone, without other files")
        obj = load_checkpoint(path, trust=trust_checkpoint, what="official checkpoint")
        if isinstance(obj, dict) and "model_config" in obj:
            raise ConfigError(f"{path}: a crossview checkpoint holds every weight (backbone included); give it "
                              "alone, without other files or --fine-backbone")
        items.append((str(path), obj))
    return items


def _merge(items: list[tuple[str, Any]]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]], list[set]]:
    """One state dict from the files' (unwrapped, ``module.``-stripped) tensors; per file a record of what it gave
    and what was ignored, and its key set."""
    state: dict[str, torch.Tensor] = {}
    owner: dict[str, str] = {}
    records, keysets = [], []
    for where, obj in items:
        if not isinstance(obj, dict):
            raise ConfigError(f"{where}: expected a state dict, got {type(obj).__name__}")
        inner, ignored = obj, []
        for wrapper in _WRAPPERS:
            if isinstance(obj.get(wrapper), dict):
                inner, ignored = obj[wrapper], [k for k in obj if k != wrapper]
                break
        ignored += [k for k, v in inner.items() if not torch.is_tensor(v)]
        tensors = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in inner.items()
                   if torch.is_tensor(v)}
        clash = sorted(set(tensors) & set(state))
        if clash:
            raise ConfigError(f"{where} repeats tensors of {owner[clash[0]]} (e.g. {clash[:3]}): give each file "
                              "of the release once")
        state.update(tensors)
        owner.update(dict.fromkeys(tensors, where))
        records.append({"file": where, "tensors": len(tensors), "ignored": [str(k) for k in ignored]})
        keysets.append(set(tensors))
    return state, records, keysets


def _camera(cfg: dict[str, Any], info: Any) -> str:
    return cfg.get("camera", info.cameras[0])


def _check_dataset(records: list[dict[str, Any]], cfg: dict[str, Any], name: str, info: Any) -> None:
    """Refuse files whose path names the other dataset's release (``checkpoints/KITTI/model.pt`` given as a VIGOR
    variant): FG²'s VIGOR and KITTI heads have the same tensor shapes, only the path tells them apart."""
    words = {part.lower() for r in records for part in Path(r["file"]).parts}
    said = {"kitti", "vigor"} & words
    if len(said) != 1:
        return
    dataset = said.pop()
    want = "pinhole" if dataset == "kitti" else "panorama"
    if _camera(cfg, info) == want:
        return
    tiny = "tiny" in name.split("_")
    siblings = [v for v in list_fine_models(arch=info.name) if _camera(fine_config(v), info) == want]
    siblings = [v for v in siblings if ("tiny" in v.split("_")) == tiny] or siblings
    hint = (f"use --fine-arch {' or '.join(siblings)}" if siblings else
            f"{info.published or info.name}: no {dataset.upper()} variant is registered here "
            "(docs/released_fine_weights.md)")
    raise ConfigError(f"{', '.join(r['file'] for r in records)}: the path says this is the {dataset.upper()} release "
                      f"but {name} is the {_camera(cfg, info)} model; {hint}")


def _check_parts(info: Any, cfg: dict[str, Any], state: dict[str, torch.Tensor], records: list[dict[str, Any]],
                 keysets: list[set], name: str) -> None:
    """Name each file's part of the release; refuse a release with a part missing, naming its file and the flag."""
    if info.release_parts is None:
        return
    parts = info.release_parts(cfg)
    for record, keys in zip(records, keysets):
        record["parts"] = [p.name for p in parts if any(p.owns(k) for k in keys)]
    missing = [p for p in parts if not any(p.owns(k) for k in state)
               and not (p.supplied_by and cfg.get(p.supplied_by))]
    if not missing:
        return
    given = ",".join(r["file"] for r in records)
    lines = [f"{given}: {name} is released as {len(parts)} files: " + "; ".join(f"{p.name} ({p.file})" for p in parts),
             "  missing: " + "; ".join(f"the {p.name} ({p.file})" for p in missing),
             f"  give every file: --fine-model {given},{','.join(p.file for p in missing)}"]
    backbone = [p for p in missing if p.supplied_by]
    if backbone and len(missing) == 1:
        lines.append(f"  or: --fine-model {given} --fine-backbone {backbone[0].file}")
    lines.append(f"  or pack them once: crossview fine-convert {name} {' '.join(p.file for p in parts)} "
                 f"--out {name}.safetensors (then --fine-model {name}.safetensors alone)")
    raise ConfigError("\n".join(lines))


def _variants_that_fit(info: Any, name: str, tensors: dict[str, torch.Tensor]) -> list[str]:
    """The other variants of the architecture the tensors convert into cleanly (built on the meta device)."""
    fits = []
    for variant in list_fine_models(arch=info.name):
        if variant == name:
            continue
        over = {k: None for k in WEIGHT_KEYS if k in info.defaults}
        over.update({"pretrained": False} if "pretrained" in info.defaults else {})
        over.update({"keep_unused": False} if "keep_unused" in info.defaults else {})
        try:
            with torch.device("meta"):
                model = create_fine(variant, **over)
            if info.converter(tensors, model)[1].ok:
                fits.append(variant)
        except Exception:  # a variant that cannot be built here (an optional dependency): not a candidate
            continue
    return fits


def build_official(items: list[tuple[str, Any]], arch: str | None, overrides: dict[str, Any]) -> torch.nn.Module:
    """The model (eval mode) of an official release's files, ``(path, contents)`` each, converted strictly as
    variant ``arch``. The conversion report is ``model.conversion_report``; what each file gave and what was
    ignored is ``model.release_files``."""
    state, records, keysets = _merge(items)
    where = ", ".join(r["file"] for r in records)
    if not arch:
        raise ConfigError(f"{where}: this is not a crossview checkpoint (no model_config); if it is an official "
                          f"release, say which variant with arch= / --fine-arch (e.g. hcnet_vigor; list: crossview "
                          f"fine-model-info --list)")
    info = arch_info(arch)
    if info.converter is None:
        raise ConfigError(f"{arch}: {info.name} is a design of our own; it has no official checkpoint layout")
    name = arch if arch in _VARIANTS else info.name
    over = {"keep_unused": False, **overrides} if "keep_unused" in info.defaults else dict(overrides)
    cfg = fine_config(name, **over)
    _check_dataset(records, cfg, name, info)
    _check_parts(info, cfg, state, records, keysets, name)
    model = create_fine(cfg)
    tensors = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    converted, report = info.converter(tensors, model)
    if not report.ok:
        fits = _variants_that_fit(info, name, tensors)
        hint = (f"these files convert cleanly as {' / '.join(fits)}: give --fine-arch {fits[0]}" if fits else
                "check --fine-arch: the files must come from that architecture and configuration, each given once")
        raise ConfigError(f"{report.summary()}\n  ({hint})")
    model.load_state_dict(converted, strict=True)
    model.conversion_report = report
    model.release_files = records
    return model.eval()
