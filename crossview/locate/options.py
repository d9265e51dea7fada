"""What one locate request asks for: :class:`LocateOptions`, checked once where it is made.

The command line (``crossview locate``), the web page (``crossview serve``), the Python API (:class:`Locator`,
:func:`locate`) and the evaluation (:mod:`crossview.locate.evaluate`) all pass the same record, so the same photo,
index and models give the same answer from each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crossview.errors import ConfigError
from crossview.locate.area import parse_near
from crossview.locate.photo import CAMERAS, parse_heading_prior
from crossview.locate.priors import is_off

FINE_SEARCHES = ("auto", "tiles", "scan", "posterior")

__all__ = ["CAMERAS", "FINE_SEARCHES", "LocateOptions", "OptionError"]


class OptionError(ConfigError):
    """A locate option that does not hold; ``option`` names its :class:`LocateOptions` field."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


@dataclass(frozen=True)
class LocateOptions:
    """The options of one locate request.

    ``camera``: ``auto`` (a 2:1 photo or a photo sphere is a panorama, any other a pinhole photo), ``panorama``,
    ``pinhole`` or ``drone``; ``fov_deg``: a pinhole photo's horizontal field of view (default: from its EXIF focal
    length); ``heading_prior``: ``"DEG±ERR"`` or ``(deg, err)``, the heading of the panorama centre / photo axis
    (``"none"``: no prior; default: the EXIF compass direction); ``near``: ``"LAT,LON±R"`` or ``(lat, lon, r_m)``,
    the search area (``"none"``: every tile; default: the EXIF GPS fix); ``top_k``: tiles retrieved (at least 1);
    ``refine``: tiles refined by the fine model (None: the locator's own); ``recentre``: refine once more in the
    tile centred nearest the answer; ``use_exif``: read the photo's EXIF; ``fine_search``: one of
    :data:`FINE_SEARCHES` (``auto``: posterior for a posterior model, else tiles); ``thumbnails``: also draw a
    picture per candidate.

    A text ``near`` is stored parsed; a bad value raises :class:`OptionError` naming the field.
    """

    camera: str = "auto"
    fov_deg: float | None = None
    heading_prior: str | tuple | None = None
    near: str | tuple | None = None
    top_k: int = 5
    refine: int | None = None
    recentre: bool = True
    use_exif: bool = True
    fine_search: str = "auto"
    thumbnails: bool = False

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.camera not in CAMERAS:
            raise OptionError("camera", f"--camera {self.camera!r}: choose one of {', '.join(CAMERAS)}")
        if self.fine_search not in FINE_SEARCHES:
            raise OptionError("fine_search", f"--fine-search {self.fine_search!r}: choose "
                                             f"{', '.join(FINE_SEARCHES)}")
        if self.fov_deg is not None:
            put("fov_deg", float(self.fov_deg))
        for name, parse in (("heading_prior", parse_heading_prior), ("near", parse_near)):
            value = getattr(self, name)
            if _blank(value):
                put(name, None)
            elif not is_off(value):
                try:
                    parsed = parse(value)
                except ConfigError as exc:
                    raise OptionError(name, str(exc)) from None
                if name == "near":
                    put(name, parsed)
        put("top_k", max(1, int(self.top_k)))
        if self.refine is not None:
            put("refine", int(self.refine))

    @classmethod
    def of(cls, options: LocateOptions | Mapping[str, Any] | None = None, **overrides: Any) -> LocateOptions:
        """``options`` (a LocateOptions, or a mapping of its fields: other keys are ignored) with ``overrides``."""
        if options is None:
            options = cls()
        elif not isinstance(options, LocateOptions):
            options = cls(**{f.name: options[f.name] for f in dataclasses.fields(cls) if f.name in options})
        return dataclasses.replace(options, **overrides) if overrides else options

    @classmethod
    def from_args(cls, args: Any) -> LocateOptions:
        """The options of a parsed ``crossview locate`` command line."""
        return cls(camera=args.camera, fov_deg=args.fov, heading_prior=args.heading_prior, near=args.near,
                   top_k=args.top_k, refine=args.refine, use_exif=args.use_exif, fine_search=args.fine_search)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
        return dataclasses.asdict(self)
