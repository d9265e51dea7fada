"""crossview: cross-view geo-localization — retrieve the satellite tile, then place the camera inside it."""

from __future__ import annotations

__version__ = "0.1.0"

from crossview.data.records import Record, Reference, Split  # noqa: E402

__all__ = ["Record", "Reference", "Split", "__version__"]
