"""FG²'s official checkpoints (vita-epfl/FG2's CVM state dict and the official DINOv2 names): strict conversion
both ways, the release's parts and the regenerated query grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from crossview.errors import ConfigError
from crossview.fine.fg2.config import OFFICIAL
from crossview.fine.registry import ConversionReport, ReleasePart, convert_keys

if TYPE_CHECKING:
    from crossview.fine.fg2.model import FG2

__all__ = ["FG2ConversionReport", "convert_official", "export_official", "official_query_grid", "release_parts"]



@dataclass
class FG2ConversionReport(ConversionReport):
    """``ConversionReport`` with notes on what the converter supplied itself (the regenerated query grid, a
    backbone not held by the checkpoint)."""

    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return super().summary() + "".join(f"\n  note: {n}" for n in self.notes)


def _official_to_ours(key: str) -> str | None:
    """Our name for an official CVM key (None: no counterpart)."""
    if key == "dustbin_score":
        return "dustbin"
    if key == "grd_grid_queries":
        return "query_grid"
    for official, ours in (("grd_projector.", "ground_head."), ("sat_projector.", "aerial_head.")):
        if key.startswith(official):
            return ours + key[len(official):]
    parts = key.split(".", 1)
    head, rest = parts[0], parts[1] if len(parts) > 1 else ""
    for prefix, inner, ours in (("grd_attention_self", "grd_attention_self.", "self_attn."),
                                ("grd_attention_cross", "grd_attention_cross.", "cross_attn.")):
        if head.startswith(prefix) and head[len(prefix):].isdigit():
            b = int(head[len(prefix):]) - 1
            if rest.startswith(inner):
                return f"blocks.{b}.{ours}{rest[len(inner):]}"
            if prefix == "grd_attention_cross" and rest.startswith("projector."):
                return f"blocks.{b}.height_score.{rest[len('projector.'):]}"
            return None
    if head.startswith("grd_ffn") and head[7:].isdigit():
        return f"blocks.{int(head[7:]) - 1}.ffn.{rest}"
    if head.startswith("grd_layer_norm") and len(head) == 16 and head[14:].isdigit():
        return f"blocks.{int(head[14]) - 1}.norm{head[15]}.{rest}"
    return None


def _ours_to_official(key: str) -> str | None:
    if key == "dustbin":
        return "dustbin_score"
    if key == "query_grid":
        return "grd_grid_queries"
    for ours, official in (("ground_head.", "grd_projector."), ("aerial_head.", "sat_projector.")):
        if key.startswith(ours):
            return official + key[len(ours):]
    if key.startswith("blocks."):
        _, b, mod, rest = key.split(".", 3)
        n = int(b) + 1
        if mod == "self_attn":
            return f"grd_attention_self{n}.grd_attention_self.{rest}"
        if mod == "cross_attn":
            return f"grd_attention_cross{n}.grd_attention_cross.{rest}"
        if mod == "height_score":
            return f"grd_attention_cross{n}.projector.{rest}"
        if mod == "ffn":
            return f"grd_ffn{n}.{rest}"
        if mod.startswith("norm"):
            return f"grd_layer_norm{n}{mod[4:]}.{rest}"
    return None


_DINO_TOP = ("cls_token", "pos_embed", "mask_token", "register_tokens")
_DINO_PREFIXES = ("backbone.", "dinov2.", "dinov2_vitl14.")


def _is_dino_key(key: str) -> bool:
    return key in _DINO_TOP or key.split(".", 1)[0] in ("patch_embed", "blocks", "norm", "head")


def _official_dino_key(key: str) -> bool:
    """An official DINOv2 key, bare or under a prefix ``convert_official`` accepts."""
    for prefix in _DINO_PREFIXES:
        if key.startswith(prefix) and _is_dino_key(key[len(prefix):]):
            return True
    return _is_dino_key(key)


def release_parts(cfg: dict[str, Any]) -> list[ReleasePart]:
    """The files of FG²'s release: the matching head (``checkpoints/VIGOR/<area>/…/model.pt``,
    ``checkpoints/KITTI/model.pt``) and, for a DINOv2 backbone, the separately published DINOv2 weights."""
    head = ReleasePart("matching head", "model.pt", lambda k: not _official_dino_key(k))
    if not (cfg["backbone"] and "dinov2" in cfg["backbone"]):
        return [head]
    from crossview.fine.dinov2 import official_filename

    return [head, ReleasePart("DINOv2 backbone", official_filename(cfg["backbone"]), _official_dino_key,
                              supplied_by="backbone_weights")]


def official_query_grid(shape: tuple[int, ...] = (41, 41, 1024), seed: int = 0, depth: int = 24, dim: int = 1024,
                        mlp_hidden: int = 4096, patch: int = 14, pos_tokens: int = 1370) -> torch.Tensor:
    """The ground query grid the released evaluation builds on a GPU (docs/fine_fg2.md): after
    ``torch.manual_seed(seed)`` the vendored DINOv2 ViT-L is constructed — its initialisation consumes the CPU
    generator — and the next draw is ``CVM``'s ``torch.rand(*shape)``. This replays the ViT-L's draws (same calls
    on tensors of the same shapes: the patch conv's and every Linear's Kaiming/uniform init, then trunc-normal
    pos_embed, normal cls_token and trunc-normal on every Linear weight) on a private generator, then draws the
    grid (its checksums, and what could not be checked: docs/fine_fg2.md)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(dim, 3, patch, patch), (dim,)]
    linears = [(3 * dim, dim), (dim, dim), (mlp_hidden, dim), (dim, mlp_hidden)]
    for _ in range(depth):
        for o, i in linears:
            shapes += [(o, i), (o,)]
    for s in shapes:  # module construction: kaiming_uniform_ / uniform_ bias
        torch.empty(s).uniform_(generator=g)
    torch.empty(1, pos_tokens, dim).uniform_(generator=g)  # trunc_normal_(pos_embed) draws uniforms
    torch.empty(1, 1, dim).normal_(generator=g)  # normal_(cls_token)
    for _ in range(depth):  # init_weights_vit_timm: trunc_normal_ on every Linear weight
        for o, i in linears:
            torch.empty(o, i).uniform_(generator=g)
    return torch.rand(*shape, generator=g)


def convert_official(state: dict[str, torch.Tensor], model: FG2) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Official FG² state dict -> ours, strictly: every official key is mapped or reported.

    ``state`` holds the official ``CVM`` keys (``official_fg2_cvm_keys.tsv``) and, optionally, the official DINOv2
    keys (``official_fg2_dinov2_vitl14_keys.tsv``, bare or prefixed ``backbone.``/``dinov2.``). The ground query
    grid, absent from GPU-made checkpoints, is regenerated by ``official_query_grid`` (a note says so). A DINOv2
    absent from the checkpoint is kept as the model has it only when ``backbone_weights`` names its file (or says
    ``"random"``; a note says so); otherwise it is reported missing: the release's backbone is a separate file.
    Returns (our state dict, report); ``report.ok`` is False when any key is missing, unexpected or misshaped."""
    target = model.state_dict()
    report = FG2ConversionReport(source=f"official FG² ({OFFICIAL})")
    dino: dict[str, torch.Tensor] = {}
    head: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        k = key[len("module."):] if key.startswith("module.") else key
        for prefix in _DINO_PREFIXES:
            if k.startswith(prefix) and _is_dino_key(k[len(prefix):]):
                k = k[len(prefix):]
                break
        (dino if _is_dino_key(k) else head)[k if _is_dino_key(k) else key] = tensor
    out = convert_keys(head, target, _official_to_ours, report)
    report.missing = []  # recomputed below, once the query grid and the backbone are placed
    if model.cfg.block4_ffn == "ffn1" and any(k.startswith("blocks.3.ffn.") for k in out):
        report.unused += [f"grd_ffn4.{k.split('ffn.', 1)[1]}" for k in out if k.startswith("blocks.3.ffn.")]
    if "query_grid" not in out and not report.misshaped:
        shape = tuple(target["query_grid"].shape)
        out["query_grid"] = official_query_grid(shape)
        report.notes.append(f"grd_grid_queries absent (a GPU-made checkpoint): regenerated as torch.rand{shape} "
                            "after manual_seed(0) and the vendored ViT-L's initialisation (official_query_grid)")
    if model.backbone.is_dino:
        if dino:
            from crossview.fine.dinov2 import convert_official_dinov2

            conv, rep = convert_official_dinov2(dino, model.backbone.dino)
            report.unexpected += rep.unexpected
            report.misshaped += rep.misshaped
            report.missing += [f"backbone.dino.{k}" for k in rep.missing]
            out.update({f"backbone.dino.{k}": v for k, v in conv.items()})
        elif model.cfg.backbone_weights is None:  # never silently random: the release's backbone is a file
            from crossview.fine.dinov2 import official_filename

            report.missing.append(f"backbone.dino.* (FG²'s release keeps its DINOv2 in the separate "
                                  f"{official_filename(model.config['backbone'])}: give it with --fine-backbone)")
        else:
            src = model.cfg.backbone_weights
            src = "random initialisation (backbone_weights='random')" if src == "random" else src
            report.notes.append(f"no DINOv2 weights in the checkpoint: the backbone is kept from {src}")
    elif dino:
        report.unexpected += [f"{k} (DINOv2 weights, but this variant's backbone is {model.config['backbone']})"
                              for k in dino]
    for k, v in target.items():
        if k.startswith("backbone.") and k not in out and not (model.backbone.is_dino and dino):
            out[k] = v
    report.missing += [k for k in target if k not in out and k not in report.missing]
    return out, report


def export_official(model: FG2, with_grid: bool = True, with_backbone: bool = False) -> dict[str, torch.Tensor]:
    """Our head in the official CVM layout (the inverse of ``convert_official``); ``with_grid``: include
    ``grd_grid_queries`` (a CPU build's checkpoint; False: as a GPU build saves it); ``with_backbone``: also the
    DINOv2 weights under their official names."""
    out = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach() if tensor.is_meta else tensor.detach().cpu()
        if key.startswith("backbone."):
            if with_backbone and model.backbone.is_dino:
                k = key[len("backbone.dino."):]
                out[k[len("vit."):] if k.startswith("vit.") else k] = tensor
            continue
        official = _ours_to_official(key)
        if official is None:
            raise ConfigError(f"no official FG² name for {key}")
        if official == "grd_grid_queries" and not with_grid:
            continue
        out[official] = tensor
    return out

