"""The answer of ``locate``: typed records instead of dictionaries mutated in place; ``to_dict`` gives the JSON
written to ``locate.json`` and served by the web app (keys absent when they do not apply, as before)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FinePose:
    """A fine localizer's answer inside one candidate tile: metres east/north of its centre, WGS84 lat/lon, heading
    (degrees clockwise from north, None when not estimated), confidence; ``in_area`` when a search area was given."""

    x_m: float
    y_m: float
    lat: float
    lon: float
    heading_deg: float | None
    confidence: float
    in_area: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``in_area`` only with a search area)."""
        d = {"x_m": self.x_m, "y_m": self.y_m, "lat": self.lat, "lon": self.lon, "heading_deg": self.heading_deg,
             "confidence": self.confidence}
        if self.in_area is not None:
            d["in_area"] = self.in_area
        return d


@dataclass
class Candidate:
    """One retrieved tile (``rank`` by retrieval ``score``; ``source="recentre"`` for the tile re-centring added),
    its fine pose when it was refined, and whether it holds the answer."""

    rank: int
    tile: str
    score: float | None
    lat: float
    lon: float
    mpp: float
    file: str
    source: str | None = None
    pose: FinePose | None = None
    chosen: bool = False
    thumbnail: str | None = None

    @property
    def confidence(self) -> float | None:
        """The fine pose's confidence (None when the tile was not refined)."""
        return None if self.pose is None else self.pose.confidence

    @property
    def in_area(self) -> bool:
        """False only for a refined answer outside the search area."""
        return self.pose is None or self.pose.in_area is not False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``source``, ``pose``, ``confidence``, ``thumbnail`` only when they apply)."""
        d: dict[str, Any] = {"rank": self.rank, "tile": self.tile, "score": self.score, "lat": self.lat,
                             "lon": self.lon, "mpp": self.mpp, "file": self.file}
        if self.source is not None:
            d["source"] = self.source
        if self.pose is not None:
            d["pose"] = self.pose.to_dict()
            d["confidence"] = self.pose.confidence
        d["chosen"] = self.chosen
        if self.thumbnail is not None:
            d["thumbnail"] = self.thumbnail
        return d


@dataclass
class Result:
    """Where the photo was taken: WGS84 lat/lon, metres east/north of the chosen ``tile``'s centre, heading,
    confidence and an uncertainty radius in metres (the calibrated 68 % radius when the locator is calibrated;
    ``uncertainty`` holds the 68 % and 95 % radii); ``method`` is ``fine`` or ``retrieval`` (the tile centre)."""

    method: str
    lat: float
    lon: float
    x_m: float
    y_m: float
    heading_deg: float | None
    confidence: float | None
    uncertainty_m: float
    tile: str
    photo: str
    camera: str
    fov_deg: float | None
    heading_prior: list[float] | None
    near: list[float] | None
    candidates: list[Candidate] = field(default_factory=list)
    index: str = ""
    model: str | None = None
    fine_model: str | None = None
    fine_method: str | None = None
    heading_from: str | None = None  # "prior" when the heading is the user's prior
    note: str | None = None
    picture: str | None = None
    precision: str | None = None  # the inference precision, fp32 | bf16 (crossview.device.cpu_precision)
    priors: dict[str, Any] | None = None  # each prior's value and origin (flag | exif | none), EXIF notes
    flags: list[str] = field(default_factory=list)  # how the answer contradicts the user's priors
    uncertainty: dict[str, Any] | None = None  # {"68": r68, "95": r95 (m), "calibrated", "raw_m", "kind"}
    search: str | None = None  # "scan" / "posterior" when the fine answer came from that --fine-search
    scan: dict[str, Any] | None = None  # the scan's walks, windows, grid spacing, steps, chosen start
    posterior: dict[str, Any] | None = None  # --fine-search posterior: modes, credible radii, window, heat map

    @property
    def confident(self) -> bool:
        """False when the answer contradicts the user's own priors (``flags``): never a confident fix then."""
        return not self.flags

    def to_dict(self) -> dict[str, Any]:
        """The JSON written to ``locate.json`` and served by the web app."""
        d: dict[str, Any] = {k: getattr(self, k) for k in (
            "method", "lat", "lon", "x_m", "y_m", "heading_deg", "confidence", "uncertainty_m")}
        for k in ("note", "heading_from"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        d.update({"confident": self.confident, "flags": list(self.flags)})
        if self.uncertainty is not None:
            d["uncertainty"] = self.uncertainty
        d.update({"tile": self.tile, "photo": self.photo, "camera": self.camera, "fov_deg": self.fov_deg,
                  "heading_prior": self.heading_prior, "near": self.near,
                  "candidates": [c.to_dict() for c in self.candidates], "index": self.index, "model": self.model,
                  "fine_model": self.fine_model, "fine_method": self.fine_method})
        if self.priors is not None:
            d["priors"] = self.priors
        if self.picture is not None:
            d["picture"] = self.picture
        if self.precision is not None:
            d["precision"] = self.precision
        for k in ("search", "scan", "posterior"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d
