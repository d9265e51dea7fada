"""crossview: cross-view geo-localization — retrieve the satellite tile, then place the camera inside it."""

from __future__ import annotations

__version__ = "0.1.0"

from crossview.data.records import Record, Reference, Split  # noqa: E402

# Heavy entry points (torch, timm) are imported on first use so ``import crossview`` stays cheap.
_LAZY = {
    "load_model": "crossview.models",
    "create_model": "crossview.models",
    "evaluate_retrieval": "crossview.evaluate",
    "read_dataset": "crossview.data",
    "localize": "crossview.fine",
    "Pose": "crossview.fine",
}

__all__ = ["Record", "Reference", "Split", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'crossview' has no attribute {name!r}")
