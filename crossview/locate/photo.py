"""Reading a user's photo: camera kinds, aspect checks, EXIF priors, the heading prior, pinhole -> panorama."""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossview.errors import ConfigError, CrossviewError
from crossview.locate.exif import ExifInfo, read_exif

CAMERAS = ("auto", "panorama", "pinhole", "drone")  # auto: panorama when 2:1 or tagged as a photo sphere
PANORAMA_ASPECT = (1.9, 2.1)  # equirectangular panoramas are 2:1
PINHOLE_ASPECT = (0.3, 3.0)
_PRIOR = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?)\s*(?:±|\+-|\+/-|~)\s*(\d+(?:\.\d*)?)\s*$")


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



DEFAULT_FOV_DEG = 66.0  # a phone's main camera (26 mm equivalent), used when the EXIF focal length is implausible


@dataclass
class Photo:
    """A checked photo: RGB pixels (EXIF orientation applied), its camera model and horizontal field of view;
    ``fov_from`` says where the field of view came from (``flag`` | ``exif`` | ``default`` | ``none``), ``exif``
    holds the photo's EXIF priors and ``notes`` what in its metadata was unusable."""

    path: Path
    image: Any = field(repr=False)  # PIL.Image.Image, RGB
    camera: str
    fov_deg: float | None
    fov_from: str = "none"
    exif: ExifInfo | None = None
    notes: list[str] = field(default_factory=list)
    camera_from: str = "flag"  # flag | inferred (--camera auto)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.image.size


def register_heif() -> bool:
    """Let Pillow open HEIC / HEIF photos (iPhones' default) through ``pillow-heif``; False when it is missing."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def infer_camera(image: Any) -> str:
    """``panorama`` for a photo about 2:1 or tagged as an equirectangular photo sphere (XMP ``GPano``), else
    ``pinhole`` (an ordinary photo)."""
    w, h = image.size
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp") or b""
    xmp = xmp.decode("utf-8", "ignore") if isinstance(xmp, bytes) else str(xmp)
    sphere = "GPano" in xmp and "equirectangular" in xmp.lower()
    return "panorama" if sphere or PANORAMA_ASPECT[0] <= w / max(h, 1) <= PANORAMA_ASPECT[1] else "pinhole"


def read_photo(path: str | os.PathLike, camera: str = "auto", fov_deg: float | None = None,
               use_exif: bool = True) -> Photo:
    """Open and check ``path`` for ``camera`` (``auto`` | ``panorama`` | ``pinhole`` | ``drone``); raise a clear
    error if unfit. JPEG, PNG and (with ``pillow-heif``) HEIC / HEIF are read; ``auto`` infers the kind
    (:func:`infer_camera`: 2:1 or a photo sphere is a panorama, anything else an ordinary pinhole photo).

    Panoramas must be about 2:1 (equirectangular); a pinhole photo needs its horizontal field of view, from
    ``fov_deg`` or the EXIF focal length; the EXIF orientation is applied (except to panoramas). Damaged or
    implausible EXIF never fails: it is ignored with a note in ``Photo.notes`` (an implausible focal length falls
    back to :data:`DEFAULT_FOV_DEG`). ``use_exif=False`` ignores the EXIF entirely.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if camera not in CAMERAS:
        raise ConfigError(f"--camera {camera!r}: choose one of {', '.join(CAMERAS)}")
    if not path.is_file():
        raise CrossviewError(f"photo {path} does not exist or is not a file")
    register_heif()
    try:
        with warnings.catch_warnings(record=True) as caught:  # Pillow warns of corrupt EXIF while opening
            warnings.simplefilter("always")
            im = Image.open(path)
            im.load()
    except UnidentifiedImageError as exc:
        raise CrossviewError(f"{path} is not an image Pillow can read; give a JPEG, PNG or HEIC photo"
                             + ("" if register_heif() else " (HEIC needs pillow-heif: pip install pillow-heif)")) \
            from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise CrossviewError(f"{path}: the image is damaged or truncated ({exc}); re-export it") from exc
    camera_from = "flag"
    if camera == "auto":
        camera, camera_from = infer_camera(im), "inferred"
    exif = read_exif(im) if use_exif else None
    notes = [f"{path.name}: {n}" for n in exif.notes] if exif else []
    if exif is not None and not exif.notes:
        notes += [f"{path.name}: {w.message}" for w in caught if "exif" in str(w.message).lower()]
    if exif is not None and exif.orientation not in (None, 1) and camera != "panorama":
        try:
            im = ImageOps.exif_transpose(im)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on malformed EXIF
            notes.append(f"{path.name}: the EXIF orientation could not be applied ({exc}); used as stored")
    im = im.convert("RGB")
    w, h = im.size
    aspect = w / h
    if camera == "panorama" and not PANORAMA_ASPECT[0] <= aspect <= PANORAMA_ASPECT[1]:
        raise CrossviewError(f"{path} is {w}x{h} (aspect {aspect:.2f}); a panorama must be equirectangular, about "
                             "2:1. For an ordinary photo use --camera pinhole --fov DEG, for a drone image "
                             "--camera drone")
    fov_from = "flag" if fov_deg is not None else "none"
    if camera == "pinhole":
        if not PINHOLE_ASPECT[0] <= aspect <= PINHOLE_ASPECT[1]:
            raise CrossviewError(f"{path} is {w}x{h} (aspect {aspect:.2f}), too elongated for a pinhole photo; "
                                 "for a 360° panorama use --camera panorama")
        if fov_deg is None and exif is not None and exif.fov_deg is not None:
            fov_deg, fov_from = exif.fov_deg, "exif"
        elif fov_deg is None and exif is not None and any("focal length" in n for n in exif.notes):
            fov_deg, fov_from = DEFAULT_FOV_DEG, "default"
            notes.append(f"{path.name}: field of view {DEFAULT_FOV_DEG:g}° assumed (a phone's main camera); pass "
                         "--fov DEG if that is wrong")
        if fov_deg is None:
            raise CrossviewError(f"{path}: a pinhole photo needs its horizontal field of view: pass --fov DEG (its "
                                 "EXIF has no focal length to compute it from)")
        if not 1 <= fov_deg < 180:
            raise CrossviewError(f"--fov {fov_deg}: the horizontal field of view must be between 1 and 180 degrees")
    return Photo(path, im, camera, float(fov_deg) if fov_deg is not None else None,
                 fov_from if camera == "pinhole" or fov_deg is not None else "none", exif, notes, camera_from)


def pinhole_to_panorama(image: np.ndarray, fov_deg: float, size: tuple[int, int],
                        heading_deg: float = 0.0) -> np.ndarray:
    """Paint a pinhole photo (H×W×3 uint8) into an equirectangular canvas of ``size`` = (h, w), black elsewhere.

    The canvas's centre column looks north; the photo's optical axis looks ``heading_deg`` clockwise from north.
    This lets a retrieval model trained on panoramas embed a limited-FoV photo (the CVUSA/VIGOR limited-FoV
    protocol feeds a crop of the panorama in the same way). A photo finer than the canvas (a 4,032-px phone photo
    lands on about a hundred canvas columns) is first reduced with a Lanczos filter, so that bilinear sampling
    does not alias (see :func:`reduce_for_canvas`).
    """
    import torch
    import torch.nn.functional as F

    from crossview.geometry.cameras import PanoramaCamera, PinholeCamera

    h, w = size
    ph, pw = image.shape[:2]  # the geometry is the photo's; the pixels sampled may be a reduced copy of them
    image = reduce_for_canvas(image, fov_deg, size)
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays = PanoramaCamera(w, h, 0.0).pixel_to_ray(torch.from_numpy(u), torch.from_numpy(v))
    a = math.radians(heading_deg)  # turn the world rays into the photo's frame (rotate about the vertical)
    x, y, z = rays.unbind(-1)
    rays = torch.stack([x * math.cos(a) - y * math.sin(a), x * math.sin(a) + y * math.cos(a), z], -1)
    pu, pv, valid = PinholeCamera(pw, ph, fov_deg).ray_to_pixel(rays)
    grid = torch.stack([pu / pw * 2 - 1, pv / ph * 2 - 1], -1).float()[None]
    src = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float()  # a writable copy
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    out = out * valid.float()[None]
    return out.permute(1, 2, 0).round().clamp(0, 255).byte().numpy()




def reduce_for_canvas(image: np.ndarray, fov_deg: float, size: tuple[int, int]) -> np.ndarray:
    """The photo (H×W×3 uint8) reduced with a Lanczos filter to about the canvas's angular resolution at its optical
    axis, where a pinhole pixel is widest in angle: (2·tan(fov/2)/W)⁻¹ photo pixels per radian against W_c/(2π)
    canvas columns per radian (and H_c/π rows). Unchanged when the photo is not finer than the canvas."""
    from PIL import Image

    h, w = size
    ph, pw = image.shape[:2]
    f = pw / (2 * math.tan(math.radians(fov_deg) / 2))  # focal length in photo pixels (square pixels)
    kx, ky = f * 2 * math.pi / w, f * math.pi / h  # photo pixels per canvas pixel at the axis
    if kx <= 1.0 and ky <= 1.0:
        return image
    nw, nh = max(1, round(pw / max(kx, 1.0))), max(1, round(ph / max(ky, 1.0)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((nw, nh), Image.LANCZOS))
