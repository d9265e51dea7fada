"""The user's priors for one photo (search area, compass heading, field of view), where each came from (a flag,
the photo's EXIF, or nowhere), and the answers that contradict them.

Frames: the search area is WGS84 lat/lon plus a radius in metres; headings are degrees clockwise from north.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crossview.locate.area import parse_near
from crossview.locate.photo import Photo, parse_heading_prior

EXIF_GPS_RADIUS_M = 50.0  # search radius around an EXIF GPS fix that states no accuracy
EXIF_GPS_SIGMAS = 3.0  # ... and around one that does: this many times its stated error, at least
EXIF_GPS_MIN_RADIUS_M = 20.0
EXIF_HEADING_TOL_DEG = {"T": 20.0, "M": 30.0}  # a phone compass; magnetic north adds the unknown declination
OFF = ("none", "off", "no")  # `--near none`, `--heading-prior none`: no prior even where the EXIF holds one


def is_off(text: Any) -> bool:
    """Whether a flag value (``none`` / ``off`` / ``no``) turns its prior off."""
    return isinstance(text, str) and text.strip().lower() in OFF


@dataclass
class Priors:
    """The priors a photo is located with and their origin (``flag`` | ``exif`` | ``none``; the field of view also
    ``default``); ``notes`` say what in the EXIF was unusable or overridden."""

    near: tuple[float, float, float] | None = None
    heading: tuple[float, float] | None = None
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    exif: dict[str, Any] = field(default_factory=dict)
    fov_deg: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"near": {"value", "from"}, "heading": {...}, "fov": {...}, "exif": {...}, "notes": [...]}``."""
        d = {"near": {"value": list(self.near) if self.near else None, "from": self.sources.get("near", "none")},
             "heading": {"value": list(self.heading) if self.heading else None,
                         "from": self.sources.get("heading", "none")},
             "fov": {"value": self.fov_deg, "from": self.sources.get("fov", "none")}, "exif": self.exif}
        if self.notes:
            d["notes"] = list(self.notes)
        return d


def resolve_priors(photo: Photo, near: str | tuple | list | None = None,
                   heading_prior: str | tuple | list | None = None, use_exif: bool = True) -> Priors:
    """The flags win; without a flag the photo's EXIF gives the search area (its GPS fix, radius from its stated
    accuracy) and the heading prior (its compass direction); ``none`` as a flag value turns a prior off."""
    exif = photo.exif if use_exif else None
    p = Priors(notes=list(photo.notes), exif=exif.to_dict() if exif else {}, fov_deg=photo.fov_deg,
               sources={"fov": photo.fov_from})
    if is_off(near):
        p.sources["near"] = "none"
    elif near is not None and not (isinstance(near, str) and not near.strip()):
        p.near, p.sources["near"] = parse_near(near), "flag"
    elif exif is not None and exif.has_gps:
        radius = (max(EXIF_GPS_SIGMAS * exif.accuracy_m, EXIF_GPS_MIN_RADIUS_M) if exif.accuracy_m
                  else EXIF_GPS_RADIUS_M)
        p.near, p.sources["near"] = (exif.lat, exif.lon, radius), "exif"
    else:
        p.sources["near"] = "none"
    if is_off(heading_prior):
        p.sources["heading"] = "none"
    elif heading_prior is not None and not (isinstance(heading_prior, str) and not heading_prior.strip()):
        p.heading, p.sources["heading"] = parse_heading_prior(heading_prior), "flag"
    elif exif is not None and exif.direction_deg is not None:
        p.heading = (exif.direction_deg, EXIF_HEADING_TOL_DEG[exif.direction_ref or "T"])
        p.sources["heading"] = "exif"
        if exif.direction_ref == "M":
            p.notes.append("the EXIF compass direction is magnetic: the heading prior was widened to "
                           f"±{p.heading[1]:g}° for the unknown declination")
    else:
        p.sources["heading"] = "none"
    return p


def contradictions(lat: float, lon: float, heading_deg: float | None, priors: Priors,
                   heading_estimated: bool = True) -> list[str]:
    """Plain-language reasons why an answer (WGS84 lat/lon, heading clockwise from north) contradicts the user's
    own priors: outside the search area, or turned away from the compass prior by more than its tolerance."""
    from crossview.geometry.angles import angle_diff_deg
    from crossview.tiles import distance_m

    flags = []
    if priors.near is not None:
        d = distance_m((lat, lon), priors.near[:2])
        if d > priors.near[2]:
            src = "the photo's GPS" if priors.sources.get("near") == "exif" else "--near"
            flags.append(f"the answer is {d:.0f} m from the search area's centre, outside its {priors.near[2]:g} m "
                         f"radius ({src}): the photo may not be in this area, or the match is wrong")
    if priors.heading is not None and heading_deg is not None and heading_estimated:
        off = float(angle_diff_deg(heading_deg, priors.heading[0]))
        if off > priors.heading[1]:
            src = "the photo's compass" if priors.sources.get("heading") == "exif" else "--heading-prior"
            flags.append(f"the answer's heading {heading_deg:.0f}° is {off:.0f}° from the compass prior "
                         f"{priors.heading[0]:.0f}°±{priors.heading[1]:g}° ({src})")
    return flags
