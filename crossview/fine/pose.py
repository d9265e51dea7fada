"""The pose every fine-grained localizer returns, and the camera description it takes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Pose:
    """Camera pose inside an aerial tile.

    ``x_m``/``y_m``: metres east/north of the tile centre; ``heading_deg``: the heading of the camera (the centre
    column of a panorama, the optical axis of a pinhole camera), degrees clockwise from north in [0, 360), or None
    when the method does not estimate it; ``confidence`` in [0, 1] where the method has one (FG²: mean inlier
    weight, GeoDistill: heatmap peak probability); ``tile``: the tile it refers to (a path or id), when known.
    """

    x_m: float
    y_m: float
    heading_deg: float | None
    confidence: float
    tile: str | None = None
    extras: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON fields (``extras`` left out)."""
        d = asdict(self)
        d.pop("extras")
        return d

    def pixel(self, size: tuple[int, int], metres_per_pixel: float) -> tuple[float, float]:
        """Position as a tile pixel (x right, y down) for a tile of ``size`` = (width, height)."""
        return size[0] / 2 + self.x_m / metres_per_pixel, size[1] / 2 - self.y_m / metres_per_pixel

    def latlon(self, tile_lat: float, tile_lon: float) -> tuple[float, float]:
        """Position in WGS84 through the tangent plane at the tile centre."""
        from crossview.geometry.geo import offset_to_latlon

        lat, lon = offset_to_latlon(tile_lat, tile_lon, self.x_m, self.y_m)
        return float(lat), float(lon)


@dataclass(frozen=True)
class CameraSpec:
    """What kind of ground camera took the image: ``panorama`` (equirectangular, 360°) or ``pinhole`` with a
    horizontal field of view. ``eye_height_m`` is used by ground-plane methods (GeoDistill's base localizer)."""

    kind: str = "panorama"
    fov_deg: float = 360.0
    eye_height_m: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in ("panorama", "pinhole"):
            raise ValueError(f"camera kind must be 'panorama' or 'pinhole', got {self.kind!r}")
        if self.kind == "pinhole" and not 0 < self.fov_deg < 180:
            raise ValueError(f"a pinhole camera needs 0 < fov_deg < 180, got {self.fov_deg}")

    def model(self, width: int, height: int, heading_deg: float = 0.0) -> Any:
        """The geometry camera for an image of ``width`` × ``height``."""
        from crossview.geometry.cameras import PanoramaCamera, PinholeCamera

        if self.kind == "panorama":
            return PanoramaCamera(width, height, heading_deg)
        return PinholeCamera(width, height, self.fov_deg, heading_deg)

