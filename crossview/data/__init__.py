"""Dataset readers, the record type, validation and caches.

The readers, ``prepare`` and the neighbour tables are imported on first use, so importing the record
type (and ``crossview`` itself) stays cheap.
"""

from crossview.data.records import VIEW_KINDS, Record, Reference, Split

_LAZY = {
    "read_dataset": "crossview.data.readers",
    "prepare_dataset": "crossview.data.prepare",
    "load_gps_neighbours": "crossview.data.neighbours",
    "nearest_neighbours": "crossview.data.neighbours",
}

__all__ = ["VIEW_KINDS", "Record", "Reference", "Split", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'crossview.data' has no attribute {name!r}")
