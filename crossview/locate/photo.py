"""Reading a user's photo: camera kinds, aspect and EXIF checks, the heading prior, pinhole -> panorama."""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossview.errors import ConfigError, CrossviewError

CAMERAS = ("panorama", "pinhole", "drone")
PANORAMA_ASPECT = (1.9, 2.1)  # equirectangular panoramas are 2:1
PINHOLE_ASPECT = (0.3, 3.0)
_PRIOR = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?)\s*(?:±|\+-|\+/-|~)\s*(\d+(?:\.\d*)?)\s*$")
_EXIF_FOCAL_35MM = 0xA405  # FocalLengthIn35mmFilm, in the Exif sub-IFD


def parse_heading_prior(text: str | tuple | list | None) -> tuple[float, float] | None:
    """``"DEG±ERR"`` (also ``DEG+-ERR``, ``DEG+/-ERR``) -> (heading clockwise from north in [0, 360), half-width)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, tuple | list):
        deg, err = (float(v) for v in text)
    else:
        m = _PRIOR.match(str(text))
        if not m:
            raise ConfigError(f"--heading-prior {text!r}: write it as DEG±ERR, e.g. 90±20 or 90+-20 (degrees "
                              "clockwise from north, then the half-width of the range)")
        deg, err = float(m.group(1)), float(m.group(2))
    if not 0 <= err <= 180:
        raise ConfigError(f"--heading-prior: the error {err}° must be between 0 and 180")
    return deg % 360.0, err



@dataclass
class Photo:
    """A checked photo: RGB pixels (EXIF orientation applied), its camera model and field of view."""

    path: Path
    image: Any = field(repr=False)  # PIL.Image.Image, RGB
    camera: str
    fov_deg: float | None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.image.size


def _exif_fov(exif) -> float | None:
    try:
        f35 = exif.get_ifd(0x8769).get(_EXIF_FOCAL_35MM) or exif.get(_EXIF_FOCAL_35MM)
    except Exception:  # noqa: BLE001 - a broken sub-IFD: no FoV from it
        return None
    if not f35:
        return None
    return math.degrees(2 * math.atan(36.0 / (2 * float(f35))))  # horizontal FoV of a 36 mm wide frame


def _check_exif(raw: bytes) -> str | None:
    """What is wrong with a raw EXIF block (TIFF header and first IFD), or None. Pillow skips such damage silently."""
    data = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    if len(data) < 8:
        return "the EXIF block is shorter than its 8-byte header"
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or struct.unpack(order + "H", data[2:4])[0] != 42:
        return "the EXIF header is not a TIFF header (II*/MM*)"
    offset = struct.unpack(order + "I", data[4:8])[0]
    if offset + 2 > len(data):
        return f"the first EXIF directory points past the end of the block ({offset} > {len(data)})"
    count = struct.unpack(order + "H", data[offset:offset + 2])[0]
    if offset + 2 + 12 * count > len(data):
        return f"the first EXIF directory claims {count} entries, more than the block holds"
    return None


def read_photo(path: str | os.PathLike, camera: str = "panorama", fov_deg: float | None = None) -> Photo:
    """Open and check ``path`` for ``camera`` (``panorama`` | ``pinhole`` | ``drone``); raise a clear error if unfit.

    Panoramas must be about 2:1 (equirectangular); a pinhole photo needs its horizontal field of view, from
    ``fov_deg`` or the EXIF 35-mm focal length; the EXIF orientation is applied (except to panoramas).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if camera not in CAMERAS:
        raise ConfigError(f"--camera {camera!r}: choose one of {', '.join(CAMERAS)}")
    if not path.is_file():
        raise CrossviewError(f"photo {path} does not exist or is not a file")
    try:
        im = Image.open(path)
        im.load()
    except UnidentifiedImageError as exc:
        raise CrossviewError(f"{path} is not an image Pillow can read; give a JPEG or PNG photo") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise CrossviewError(f"{path}: the image is damaged or truncated ({exc}); re-export it") from exc
    raw = im.info.get("exif")
    problem = _check_exif(raw) if raw else None
    if problem:
        raise CrossviewError(f"{path}: its EXIF metadata is unreadable ({problem}); strip it (e.g. `exiftool -all= "
                             "PHOTO` or re-save the image without metadata) and try again")
    try:
        exif = im.getexif()
        exif_fov = _exif_fov(exif)
        if camera != "panorama":
            im = ImageOps.exif_transpose(im)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on malformed EXIF
        raise CrossviewError(f"{path}: its EXIF metadata is unreadable ({type(exc).__name__}: {exc}); strip it "
                             "(e.g. `exiftool -all= PHOTO` or re-save the image) and try again") from exc
    im = im.convert("RGB")
    w, h = im.size
    aspect = w / h
    if camera == "panorama" and not PANORAMA_ASPECT[0] <= aspect <= PANORAMA_ASPECT[1]:
        raise CrossviewError(f"{path} is {w}x{h} (aspect {aspect:.2f}); a panorama must be equirectangular, about "
                             "2:1. For an ordinary photo use --camera pinhole --fov DEG, for a drone image "
                             "--camera drone")
    if camera == "pinhole":
        if not PINHOLE_ASPECT[0] <= aspect <= PINHOLE_ASPECT[1]:
            raise CrossviewError(f"{path} is {w}x{h} (aspect {aspect:.2f}), too elongated for a pinhole photo; "
                                 "for a 360° panorama use --camera panorama")
        fov_deg = fov_deg if fov_deg is not None else exif_fov
        if fov_deg is None:
            raise CrossviewError(f"{path}: a pinhole photo needs its horizontal field of view: pass --fov DEG (its "
                                 "EXIF has no 35-mm focal length to compute it from)")
        if not 1 <= fov_deg < 180:
            raise CrossviewError(f"--fov {fov_deg}: the horizontal field of view must be between 1 and 180 degrees")
    return Photo(path, im, camera, float(fov_deg) if fov_deg is not None else None)


def pinhole_to_panorama(image: np.ndarray, fov_deg: float, size: tuple[int, int],
                        heading_deg: float = 0.0) -> np.ndarray:
    """Paint a pinhole photo (H×W×3 uint8) into an equirectangular canvas of ``size`` = (h, w), black elsewhere.

    The canvas's centre column looks north; the photo's optical axis looks ``heading_deg`` clockwise from north.
    This lets a retrieval model trained on panoramas embed a limited-FoV photo (the CVUSA/VIGOR limited-FoV
    protocol feeds a crop of the panorama in the same way).
    """
    import torch
    import torch.nn.functional as F

    from crossview.geometry.cameras import PanoramaCamera, PinholeCamera

    h, w = size
    ph, pw = image.shape[:2]
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays = PanoramaCamera(w, h, 0.0).pixel_to_ray(torch.from_numpy(u), torch.from_numpy(v))
    a = math.radians(heading_deg)  # turn the world rays into the photo's frame (rotate about the vertical)
    x, y, z = rays.unbind(-1)
    rays = torch.stack([x * math.cos(a) - y * math.sin(a), x * math.sin(a) + y * math.cos(a), z], -1)
    pu, pv, valid = PinholeCamera(pw, ph, fov_deg).ray_to_pixel(rays)
    grid = torch.stack([pu / pw * 2 - 1, pv / ph * 2 - 1], -1).float()[None]
    src = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    out = out * valid.float()[None]
    return out.permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


