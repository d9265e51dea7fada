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
