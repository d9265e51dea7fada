"""Dataset readers, the record type, validation and caches."""

from crossview.data.records import VIEW_KINDS, Record, Reference, Split

__all__ = ["VIEW_KINDS", "Record", "Reference", "Split"]
