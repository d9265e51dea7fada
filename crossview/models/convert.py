"""Official MFRGN / MFRGN-U / Sample4Geo state dicts -> our parameter names, strictly.

Our names (``docs/models.md`` lists them) against the official ones (MFRGN @37ad6e6, Sample4Geo @498c651):

=====================================================  =========================================================
official                                               ours
=====================================================  =========================================================
``backbone.backbone.*`` (MFRGN), ``model.*`` (S4G)      ``backbone.model.*``
``embed.input_proj.{0,1,2}.{0,1}.*``                   ``input_proj.{i}.{conv,norm}.*``
``embed.input_proj.3.{0,1}.*``                         ``s4_proj.{conv,norm}.*``
``norm1`` (satellite / MFRGN-U), ``norm2`` (ground)     ``heads.{aerial,shared}.pps_norm``, ``heads.ground.pps_norm``
``transformer_{sat,grd}_{H,L}.layers.i.*``             ``heads.{view}.scam_{high,low}.i.*`` (query_proj→q,
                                                       key_proj→k, value_proj→v, merge→out, mlp.0/3→ffn.fc1/fc2)
``proj_{sat,grd}``                                     ``heads.{view}.global_proj``
``proj_gl_{sat,grd}.i.{0,1,2,4}``                      ``heads.{view}.gpab.i.prompt.{conv1,bn1,conv2,bn2}``
``ch_{sat,grd}.i`` / ``sp_{sat,grd}.i``                ``heads.{view}.gpab.i.channel`` / ``.spatial``
``proj_local_{sat,grd}``                               ``heads.{view}.local_proj``
=====================================================  =========================================================

MFRGN-U has the same names without the ``_sat``/``_grd`` suffix and maps to ``heads.shared``.
"""

from __future__ import annotations

import re

import torch

from crossview.errors import ConfigError

_LAYER = {"query_proj": "q", "key_proj": "k", "value_proj": "v", "merge": "out", "norm1": "norm1",
          "norm2": "norm2", "mlp.0": "ffn.fc1", "mlp.3": "ffn.fc2"}
_PROMPT = {"0": "conv1", "1": "bn1", "2": "conv2", "4": "bn2"}
_VIEW = {"sat": "aerial", "grd": "ground"}


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a ``module.`` prefix (DataParallel / DDP checkpoints) when every key has it."""
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    """``ours``, ``official_mfrgn``, ``official_mfrgn_u`` or ``official_sample4geo`` from the key names."""
    keys = set(strip_prefix(state))
    if any(k.startswith(("backbone.model.", "heads.")) for k in keys):
        return "ours"
    if any(k.startswith(("transformer_sat_", "transformer_grd_", "proj_local_sat", "proj_sat")) for k in keys):
        return "official_mfrgn"
    if any(k.startswith(("transformer_H.", "transformer_L.", "proj_local.", "embed.input_proj")) for k in keys):
        return "official_mfrgn_u"
    if any(k.startswith("model.") for k in keys):
        return "official_sample4geo"
    raise ConfigError("cannot tell the checkpoint layout: expected our keys (backbone.model.*, heads.*) or an "
                      f"official MFRGN / Sample4Geo state dict; first keys: {sorted(keys)[:5]}")


def official_arch(layout: str) -> str:
    return {"official_mfrgn": "mfrgn", "official_mfrgn_u": "mfrgn_u", "official_sample4geo": "sample4geo"}[layout]


def rename_official_key(key: str, layout: str) -> str | None:
    """Our name for one official key, or None when it has no counterpart."""
    if layout == "official_sample4geo":
        if key.startswith("model."):
            return "backbone.model." + key[len("model."):]
        return key if key == "logit_scale" else None
    if key == "logit_scale":
        return key
    if key.startswith("backbone.backbone."):
        return "backbone.model." + key[len("backbone.backbone."):]
    m = re.fullmatch(r"embed\.input_proj\.(\d)\.([01])\.(.+)", key)
    if m:
        part = "conv" if m[2] == "0" else "norm"
        return f"s4_proj.{part}.{m[3]}" if m[1] == "3" else f"input_proj.{m[1]}.{part}.{m[3]}"
    u = layout == "official_mfrgn_u"
    sfx = r"" if u else r"_(sat|grd)"

    def head(match: re.Match) -> str:
        return "heads.shared" if u else f"heads.{_VIEW[match[1]]}"

    def rest(match: re.Match, i: int) -> str:
        return match[i + (0 if u else 1)]

    m = re.fullmatch(r"norm([12])\.(.+)", key)
    if m:
        if u:
            return f"heads.shared.pps_norm.{m[2]}" if m[1] == "1" else None
        return f"heads.{'aerial' if m[1] == '1' else 'ground'}.pps_norm.{m[2]}"
    m = re.fullmatch(rf"transformer{sfx}_([HL])\.layers\.(\d+)\.(query_proj|key_proj|value_proj|merge|norm1|norm2|"
                     rf"mlp\.0|mlp\.3)\.(.+)", key)
    if m:
        level = "high" if rest(m, 1) == "H" else "low"
        return f"{head(m)}.scam_{level}.{rest(m, 2)}.{_LAYER[rest(m, 3)]}.{rest(m, 4)}"
    m = re.fullmatch(rf"proj{sfx}\.(weight|bias)", key)
    if m:
        return f"{head(m)}.global_proj.{rest(m, 1)}"
    m = re.fullmatch(rf"proj_gl{sfx}\.(\d)\.([0124])\.(.+)", key)
    if m:
        return f"{head(m)}.gpab.{rest(m, 1)}.prompt.{_PROMPT[rest(m, 2)]}.{rest(m, 3)}"
    m = re.fullmatch(rf"(ch|sp){'' if u else '_(sat|grd)'}\.(\d)\.(.+)", key)
    if m:
        kind = "channel" if m[1] == "ch" else "spatial"
        view = "shared" if u else _VIEW[m[2]]
        return f"heads.{view}.gpab.{m[2 if u else 3]}.{kind}.{m[3 if u else 4]}"
    m = re.fullmatch(rf"proj_local{sfx}\.(weight|bias)", key)
    if m:
        return f"{head(m)}.local_proj.{rest(m, 1)}"
    return None


def convert_official(state: dict[str, torch.Tensor], model: torch.nn.Module,
                     layout: str | None = None) -> dict[str, torch.Tensor]:
    """Map an official state dict (or ours) onto ``model``'s keys; strict: any unmapped, missing or misshaped key
    raises :class:`ConfigError` listing every one. Floating tensors are cast to the model's dtype."""
    state = strip_prefix(dict(state))
    layout = layout or detect_layout(state)
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    unexpected, shapes, misshaped = [], [], set()
    for key, tensor in state.items():
        new = key if layout == "ours" else rename_official_key(key, layout)
        if new is None or new not in target:
            unexpected.append(key if new is None or new == key else f"{key} (-> {new})")
            continue
        if tuple(tensor.shape) != tuple(target[new].shape):
            shapes.append(f"{key}: checkpoint {tuple(tensor.shape)} vs model {tuple(target[new].shape)}")
            misshaped.add(new)
            continue
        out[new] = tensor.to(target[new].dtype) if tensor.is_floating_point() else tensor
    missing = [k for k in target if k not in out and k not in misshaped]
    problems = []
    if missing:
        problems.append(f"missing in the checkpoint ({len(missing)}): " + _listing(missing))
    if unexpected:
        problems.append(f"unexpected in the checkpoint ({len(unexpected)}): " + _listing(unexpected))
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): " + _listing(shapes))
    if problems:
        hint = (" — check arch, backbone/backbone_kwargs and the input sizes (the global token Linear depends on "
                "aerial_size/ground_size/image_size)") if shapes else ""
        raise ConfigError(f"checkpoint ({layout}) does not match the model{hint}:\n  " + "\n  ".join(problems))
    return out


def _listing(items: list[str], limit: int = 40) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


_CONVNEXT_DIMS = {40: "convnext_atto", 48: "convnext_femto", 64: "convnext_pico", 80: "convnext_nano",
                  96: "convnext_tiny", 128: "convnext_base", 192: "convnext_large", 256: "convnext_xlarge"}
_CONVNEXT_DEPTHS = {"convnext_atto": (2, 2, 6, 2), "convnext_femto": (2, 2, 6, 2), "convnext_pico": (2, 2, 6, 2),
                    "convnext_nano": (2, 2, 8, 2), "convnext_tiny": (3, 3, 9, 3), "convnext_small": (3, 3, 27, 3),
                    "convnext_base": (3, 3, 27, 3), "convnext_large": (3, 3, 27, 3),
                    "convnext_xlarge": (3, 3, 27, 3)}


def infer_convnext(state: dict[str, torch.Tensor], prefix: str) -> tuple[str, dict] | None:
    """(timm name, kwargs) of the ConvNeXt under ``prefix`` from its stem width and block counts, or None."""
    stem = state.get(prefix + "stem.0.weight")
    if stem is None or stem.shape[0] not in _CONVNEXT_DIMS:
        return None
    name = _CONVNEXT_DIMS[int(stem.shape[0])]
    depths = []
    for i in range(4):
        blocks = {int(k[len(prefix):].split(".")[3]) for k in state if k.startswith(f"{prefix}stages.{i}.blocks.")}
        depths.append(len(blocks))
    depths = tuple(depths)
    if name == "convnext_tiny" and depths == (3, 3, 27, 3):
        name = "convnext_small"
    return (name, {}) if _CONVNEXT_DEPTHS[name] == depths else (name, {"depths": depths})


_LAYER_BACK = {v: k for k, v in _LAYER.items()}
_PROMPT_BACK = {v: k for k, v in _PROMPT.items()}
_VIEW_BACK = {"aerial": "sat", "ground": "grd", "shared": ""}


def official_key(key: str, arch: str) -> str:
    """The official name of one of our keys (the inverse of :func:`rename_official_key`), for exporting a model
    to the official code. Raises for keys the official models do not have (e.g. ablation-only layouts)."""
    if key == "logit_scale":
        return key
    if key.startswith("backbone.model."):
        return ("model." if arch == "sample4geo" else "backbone.backbone.") + key[len("backbone.model."):]
    m = re.fullmatch(r"input_proj\.(\d)\.(conv|norm)\.(.+)", key)
    if m:
        return f"embed.input_proj.{m[1]}.{0 if m[2] == 'conv' else 1}.{m[3]}"
    m = re.fullmatch(r"s4_proj\.(conv|norm)\.(.+)", key)
    if m:
        return f"embed.input_proj.3.{0 if m[1] == 'conv' else 1}.{m[2]}"
    m = re.fullmatch(r"heads\.(aerial|ground|shared)\.(.+)", key)
    if not m:
        raise ConfigError(f"{key}: no counterpart in the official {arch} model")
    view, rest = m[1], m[2]
    sfx = f"_{_VIEW_BACK[view]}" if view != "shared" else ""
    for pattern, name in _HEAD_EXPORT:
        hit = re.fullmatch(pattern, rest)
        if hit:
            return name(hit, view, sfx)
    raise ConfigError(f"{key}: no counterpart in the official {arch} model")


# our per-view head keys (after ``heads.<view>.``) -> the official names; ``sfx`` is the view's suffix
_HEAD_EXPORT = [
    (r"pps_norm\.(.+)", lambda m, view, sfx: f"norm{2 if view == 'ground' else 1}.{m[1]}"),
    (r"scam_(high|low)\.(\d+)\.(q|k|v|out|norm1|norm2|ffn\.fc1|ffn\.fc2)\.(.+)",
     lambda m, view, sfx: f"transformer{sfx}_{'H' if m[1] == 'high' else 'L'}.layers.{m[2]}."
                          f"{_LAYER_BACK[m[3]]}.{m[4]}"),
    (r"global_proj\.(.+)", lambda m, view, sfx: f"proj{sfx}.{m[1]}"),
    (r"gpab\.(\d)\.prompt\.(conv1|bn1|conv2|bn2)\.(.+)",
     lambda m, view, sfx: f"proj_gl{sfx}.{m[1]}.{_PROMPT_BACK[m[2]]}.{m[3]}"),
    (r"gpab\.(\d)\.(channel|spatial)\.(.+)",
     lambda m, view, sfx: f"{'ch' if m[2] == 'channel' else 'sp'}{sfx}.{m[1]}.{m[3]}"),
    (r"local_proj\.(.+)", lambda m, view, sfx: f"proj_local{sfx}.{m[1]}"),
]


def export_official(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict under the official key names (MFRGN ``TimmModel``/``TimmModel_u``, Sample4Geo)."""
    arch = model.config["arch"]
    return {official_key(k, arch): v for k, v in model.state_dict().items()}
