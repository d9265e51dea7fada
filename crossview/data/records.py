"""The one record type every reader (four benchmarks + the synthetic world) yields.

Conventions (see README, "Conventions"):
- pixel coordinates are (x right, y down), origin at the top-left corner of the image, at the image's
  native (on-disk) resolution;
- headings are degrees clockwise from north; for an equirectangular panorama ``heading_deg`` is the
  heading of its centre column (benchmark panoramas are north-aligned: 0);
- GPS is (lat, lon) in WGS84 degrees.
Nothing downstream of a reader knows which dataset a record came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

VIEW_KINDS = ("ground", "pinhole", "drone", "aerial")


@dataclass(frozen=True)
class Reference:
    """One reference (gallery) image, usually an aerial tile.

    ``index`` is its row in the split's reference list; records point at references by that index.
    """

    index: int
    path: Path
    view: str = "aerial"
    gps: tuple[float, float] | None = None  # (lat, lon) of the image centre
    metres_per_pixel: float | None = None  # at the native resolution of the file
    label: int | None = None  # class id (University-1652); None elsewhere
    group: str | None = None  # city / area / class folder


@dataclass(frozen=True)
class Record:
    """One query image and its matching reference(s).

    ``positives[0]`` is the primary match (the VIGOR positive, the CVUSA pair); University-1652
    satellite→drone queries have many positives. ``pixel_xy[i]`` is the camera's pixel position in
    reference ``(positives + semi_positives)[i]`` when known (VIGOR, synthetic world).
    """

    query_id: str
    query_path: Path
    query_view: str
    positives: tuple[int, ...]
    semi_positives: tuple[int, ...] = ()
    gps: tuple[float, float] | None = None
    heading_deg: float | None = None
    pixel_xy: tuple[tuple[float, float], ...] | None = None
    fov_deg: float | None = None  # horizontal field of view for pinhole queries
    label: int | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        if self.query_view not in VIEW_KINDS:
            raise ValueError(f"query_view must be one of {VIEW_KINDS}, got {self.query_view!r}")
        if self.pixel_xy is not None and len(self.pixel_xy) != len(self.positives) + len(self.semi_positives):
            raise ValueError(
                f"record {self.query_id}: pixel_xy has {len(self.pixel_xy)} entries for "
                f"{len(self.positives) + len(self.semi_positives)} references"
            )


@dataclass
class Split:
    """A query set against a reference set: what training and evaluation consume."""

    dataset: str  # "cvusa" | "cvact" | "vigor" | "university1652"
    name: str  # "train" | "test" | "val" | ... (VIGOR: "same-train", "cross-test", ...)
    records: list[Record]
    references: list[Reference]
    meta: dict = field(default_factory=dict)  # e.g. {"label_set": "original", "area": "same"}

    def __len__(self) -> int:
        return len(self.records)

    def positives(self) -> list[int]:
        """The primary positive reference index of every record, in record order."""
        return [r.positives[0] for r in self.records]
