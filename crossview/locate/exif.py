"""What a photo's EXIF says about where and how it was taken, read with Pillow's EXIF API only.

GPS latitude/longitude (WGS84 degrees) and its horizontal accuracy (``GPSHPositioningError``, metres), the compass
direction the camera looked (``GPSImgDirection``, degrees clockwise from north, true or magnetic), the horizontal
field of view (from ``FocalLengthIn35mmFilm``, else ``FocalLength`` with the sensor size from
``FocalPlaneX/YResolution``) and the orientation tag. Damaged or implausible values are dropped with a note that
says what was wrong; nothing here raises on bad metadata.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # "35-mm equivalent" focal lengths refer to this diagonal
FOCAL_35MM_RANGE = (8.0, 2000.0)  # plausible 35-mm equivalent focal lengths (mm): ~140° down to ~1° wide
FOCAL_MM_RANGE = (0.5, 2000.0)
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # FocalPlaneResolutionUnit: inch, cm, mm, µm
_TRANSPOSED = {5, 6, 7, 8}  # orientations that swap width and height


@dataclass
class ExifInfo:
    """The priors a photo's EXIF holds (None where absent or implausible) and notes on what was dropped and why.

    ``lat``/``lon``: WGS84 degrees; ``accuracy_m``: the GPS horizontal error in metres; ``direction_deg``: the
    camera's compass heading, clockwise from north (``direction_ref`` ``T`` true or ``M`` magnetic north);
    ``fov_deg``: horizontal field of view of the upright photo; ``orientation``: the EXIF orientation tag (1-8).
    """

    lat: float | None = None
    lon: float | None = None
    accuracy_m: float | None = None
    direction_deg: float | None = None
    direction_ref: str | None = None
    fov_deg: float | None = None
    focal_35mm: float | None = None
    orientation: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def has_gps(self) -> bool:
        return self.lat is not None and self.lon is not None

    def to_dict(self) -> dict[str, Any]:
        """The values found (absent keys: not in the EXIF), for ``locate.json``."""
        keys = ("lat", "lon", "accuracy_m", "direction_deg", "direction_ref", "fov_deg", "focal_35mm", "orientation")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return x if math.isfinite(x) else None


def _degrees(dms: Any) -> float | None:
    """EXIF (degrees, minutes, seconds) rationals -> decimal degrees."""
    try:
        d, m, s = (_num(v) for v in dms)
    except (TypeError, ValueError):
        return None
    if d is None or m is None or s is None:
        return None
    return d + m / 60.0 + s / 3600.0


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    return str(v).strip("\x00 ").upper()


def read_exif(image: Any) -> ExifInfo:
    """The EXIF priors of a PIL image as opened (before ``ImageOps.exif_transpose``); never raises on bad EXIF."""
    from PIL import ExifTags

    info = ExifInfo()
    raw = image.info.get("exif") or b""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            exif = image.getexif()
            gps = dict(exif.get_ifd(ExifTags.IFD.GPSInfo))
            sub = dict(exif.get_ifd(ExifTags.IFD.Exif))
        except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on malformed EXIF
            info.notes.append(f"the EXIF metadata is unreadable ({type(exc).__name__}: {exc}); it was ignored")
            return info
    corrupt = [str(w.message).strip() for w in caught if "exif" in str(w.message).lower()]
    if len(raw) > 14 and not exif:
        info.notes.append("the EXIF block is present but unreadable (damaged or truncated); it was ignored"
                          + (f" ({corrupt[0]})" if corrupt else ""))
        return info
    if corrupt:
        info.notes.append(f"the EXIF metadata is partly damaged ({corrupt[0]}); what could be read was used")

    orientation = exif.get(ExifTags.Base.Orientation)
    if orientation is not None:
        if isinstance(orientation, int) and 1 <= orientation <= 8:
            info.orientation = orientation
        else:
            info.notes.append(f"EXIF Orientation {orientation!r} is not 1-8; the photo was used as stored")
    _read_gps(gps, info)
    _read_fov(exif, sub, image.size, info)
    return info


def _read_gps(gps: dict, info: ExifInfo) -> None:
    from PIL import ExifTags

    G = ExifTags.GPS
    if G.GPSLatitude in gps or G.GPSLongitude in gps:
        lat, lon = _degrees(gps.get(G.GPSLatitude)), _degrees(gps.get(G.GPSLongitude))
        lat_ref, lon_ref = _text(gps.get(G.GPSLatitudeRef, "N")), _text(gps.get(G.GPSLongitudeRef, "E"))
        if lat is None or lon is None or lat_ref not in ("N", "S") or lon_ref not in ("E", "W"):
            info.notes.append("the EXIF GPS position is incomplete or malformed; it was ignored")
        else:
            lat, lon = (-lat if lat_ref == "S" else lat), (-lon if lon_ref == "W" else lon)
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                info.notes.append(f"the EXIF GPS position {lat:.6f},{lon:.6f} is not a latitude/longitude; "
                                  "it was ignored")
            elif lat == 0 and lon == 0:
                info.notes.append("the EXIF GPS position is 0,0 (a placeholder, not a fix); it was ignored")
            else:
                info.lat, info.lon = lat, lon
        acc = _num(gps.get(G.GPSHPositioningError))
        if acc is not None and info.has_gps:
            if 0 < acc <= 10_000:
                info.accuracy_m = acc
            else:
                info.notes.append(f"the EXIF GPS accuracy {acc:g} m is implausible; it was ignored")
    if G.GPSImgDirection in gps:
        d = _num(gps.get(G.GPSImgDirection))
        ref = _text(gps.get(G.GPSImgDirectionRef, "T")) or "T"
        if d is None or not 0 <= d <= 360 or ref not in ("T", "M"):
            info.notes.append(f"the EXIF compass direction {gps.get(G.GPSImgDirection)!r} ({ref}) is malformed; "
                              "it was ignored")
        else:
            info.direction_deg, info.direction_ref = d % 360.0, ref


def _read_fov(exif, sub: dict, size: tuple[int, int], info: ExifInfo) -> None:
    """Horizontal FoV of the upright photo: from the 35-mm equivalent focal length (the full-frame diagonal spread
    over the photo's aspect), else from the focal length and the sensor size given by the focal-plane resolution."""
    from PIL import ExifTags

    B = ExifTags.Base
    w, h = size  # as stored; the upright photo's width is h when the orientation transposes it
    upright_w, upright_h = (h, w) if info.orientation in _TRANSPOSED else (w, h)
    f35 = _num(sub.get(B.FocalLengthIn35mmFilm, exif.get(B.FocalLengthIn35mmFilm)))
    if f35:  # 0 means "unknown" in EXIF
        if FOCAL_35MM_RANGE[0] <= f35 <= FOCAL_35MM_RANGE[1]:
            width_mm = FULL_FRAME_DIAGONAL_MM * upright_w / math.hypot(upright_w, upright_h)
            info.focal_35mm = f35
            info.fov_deg = math.degrees(2 * math.atan(width_mm / (2 * f35)))
            return
        info.notes.append(f"the EXIF 35-mm focal length {f35:g} mm is implausible (expected "
                          f"{FOCAL_35MM_RANGE[0]:g}-{FOCAL_35MM_RANGE[1]:g} mm); it was ignored")
    f = _num(sub.get(B.FocalLength, exif.get(B.FocalLength)))
    if not f:
        return
    if not FOCAL_MM_RANGE[0] <= f <= FOCAL_MM_RANGE[1]:
        info.notes.append(f"the EXIF focal length {f:g} mm is implausible; it was ignored")
        return
    unit = _UNIT_MM.get(int(_num(sub.get(B.FocalPlaneResolutionUnit)) or 2))
    # the focal-plane resolution counts pixels of the full-size image, whose size EXIF records separately
    full_w = _num(sub.get(B.ExifImageWidth)) or w
    full_h = _num(sub.get(B.ExifImageHeight)) or h
    xres, yres = _num(sub.get(B.FocalPlaneXResolution)), _num(sub.get(B.FocalPlaneYResolution))
    if not unit or not xres:
        info.notes.append(f"the EXIF focal length {f:g} mm comes without a sensor size (no 35-mm equivalent, no "
                          "focal-plane resolution); the field of view was not derived from it")
        return
    sensor_w, sensor_h = full_w / xres * unit, full_h / (yres or xres) * unit
    across = sensor_h if info.orientation in _TRANSPOSED else sensor_w
    fov = math.degrees(2 * math.atan(across / (2 * f)))
    if 1 <= fov < 180 and 0.5 <= across <= 100:
        info.fov_deg = fov
    else:
        info.notes.append(f"the EXIF focal length {f:g} mm and sensor width {across:.2f} mm give an implausible "
                          "field of view; it was ignored")
