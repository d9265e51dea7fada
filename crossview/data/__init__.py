"""Dataset readers, the record type, validation and caches."""

from crossview.data.neighbours import load_gps_neighbours, nearest_neighbours
from crossview.data.prepare import prepare_dataset
from crossview.data.readers import read_dataset
from crossview.data.records import VIEW_KINDS, Record, Reference, Split

__all__ = [
    "VIEW_KINDS",
    "Record",
    "Reference",
    "Split",
    "load_gps_neighbours",
    "nearest_neighbours",
    "prepare_dataset",
    "read_dataset",
]
