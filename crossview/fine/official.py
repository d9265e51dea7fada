"""Official fixtures and checkpoints: which architecture a fixture comes from, and our outputs for it.

``reproduce_official(fixture)`` takes a fixture dict exactly as ``torch.load(path, map_location="cpu",
weights_only=True)`` returns it (``official_*.pt``: float16 weights, uint8 images; docs/official_code_notes.md),
converts its official weights with the architecture's strict converter, runs our model on its inputs as the official
forward does, and returns our outputs under the fixture's output names, with the same shapes and subsampling.
"""

from __future__ import annotations

from typing import Any

from crossview.errors import ConfigError
from crossview.fine.registry import _ARCHS, _ensure


def fixture_arch(fixture: dict[str, Any]) -> str:
    """The registered architecture whose official repository made ``fixture`` (from its ``official_commit``)."""
    _ensure()
    source = fixture.get("official_commit") or {}
    repo = str(source.get("repo", "") if isinstance(source, dict) else source).lower()
    for arch in _ARCHS.values():
        if arch.official_repo and arch.official_repo.lower() in repo:
            if arch.reproduce is None:
                break
            return arch.name
    for arch in _ARCHS.values():  # a fixture without weights (FG²'s RANSAC matrix) names its method in its keys
        probe = getattr(arch.reproduce, "accepts", None)
        if probe is not None and probe(fixture):
            return arch.name
    known = ", ".join(a.official_repo for a in _ARCHS.values() if a.official_repo and a.reproduce)
    raise ConfigError(f"fixture from {repo or 'an unknown source'}: no registered architecture reproduces it "
                      f"(known: {known})")


def reproduce_official(fixture: dict[str, Any]) -> dict[str, Any]:
    """Our outputs for an official fixture, under the fixture's output names (see the module docstring)."""
    return _ARCHS[fixture_arch(fixture)].reproduce(fixture)


def relative_error(ours: Any, ref: Any) -> float:
    """The largest error of ``ours`` against ``ref`` relative to the scale of the part it falls in: each 2-D map of
    a tensor with 3 or more dimensions (every batch element, channel and iteration apart), each row of a matrix,
    the whole of a vector; a list or tuple (e.g. stacked flow iterations) item by item. A part's scale is its
    largest |ref|, but never below 1e-3 of the whole tensor's (a part that is all but zero is not a scale). So an
    error in one small part of a large tensor is not hidden by the rest, as max |Δ| / max |ref| hides it."""
    import torch

    if isinstance(ours, list | tuple):
        return max((relative_error(a, b) for a, b in zip(ours, ref, strict=True)), default=0.0)
    ours = torch.as_tensor(ours).double()
    ref = torch.as_tensor(ref).double()
    if ours.shape != ref.shape:
        raise ConfigError(f"shapes differ: {tuple(ours.shape)} vs {tuple(ref.shape)}")
    if ref.numel() == 0:
        return 0.0
    whole = float(ref.abs().max())
    if ref.dim() >= 3:
        ours, ref = ours.reshape(-1, ref.shape[-2] * ref.shape[-1]), ref.reshape(-1, ref.shape[-2] * ref.shape[-1])
    elif ref.dim() < 2:
        ours, ref = ours.reshape(1, -1), ref.reshape(1, -1)
    scale = ref.abs().amax(dim=1).clamp(min=max(1e-3 * whole, 1e-30))
    return float(((ours - ref).abs().amax(dim=1) / scale).max())
