"""Where was this photo taken? The photo -> pose pipeline.

``photo -> check (image? aspect for the camera? EXIF?) -> embed with the index's retrieval model -> top-k tiles
-> fine localization inside the best ``refine`` tiles (when a fine model is given) -> best by confidence ->
lat/lon at the edge``. Stage functions:

- :func:`read_photo` checks a photo against its camera model and applies the EXIF orientation;
- :func:`index_tiles` embeds a tile set (``crossview tiles``) with a retrieval model and saves a search index
  whose sidecar records the model's checkpoint and the tile manifest;
- :class:`Locator` holds the loaded index, models and tiles (the web app keeps one); :func:`locate` is the
  one-call form;
- :func:`demo_locate` measures the whole chain on held-out photos of the synthetic world.

Frames: positions inside a tile are metres east/north of its centre (``crossview.fine.Pose``), converted to
WGS84 lat/lon only when the answer is written; headings are degrees clockwise from north.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossview.errors import ConfigError, CrossviewError, DatasetError
from crossview.geometry.geo import latlon_to_offset, offset_to_latlon
from crossview.io import write_json_atomic

CAMERAS = ("panorama", "pinhole", "drone")
PANORAMA_ASPECT = (1.9, 2.1)  # equirectangular panoramas are 2:1
PINHOLE_ASPECT = (0.3, 3.0)
_NEAR = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?)\s*,\s*([+-]?\d+(?:\.\d*)?)\s*(?:±|\+-|\+/-|~|,)\s*(\d+(?:\.\d*)?)\s*$")
_PRIOR = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?)\s*(?:±|\+-|\+/-|~)\s*(\d+(?:\.\d*)?)\s*$")
_EXIF_FOCAL_35MM = 0xA405  # FocalLengthIn35mmFilm, in the Exif sub-IFD


# --- input checks ------------------------------------------------------------------------------------------
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


def parse_near(text: str | tuple | list | None) -> tuple[float, float, float] | None:
    """``"LAT,LON±RADIUS_M"`` (also ``LAT,LON,RADIUS_M``) -> (lat, lon, radius in metres): the search area."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, tuple | list):
        lat, lon, radius = (float(v) for v in text)
    else:
        m = _NEAR.match(str(text))
        if not m:
            raise ConfigError(f"--near {text!r}: write it as LAT,LON±RADIUS_M, e.g. 40.7128,-74.0060±100 (degrees "
                              "WGS84, then the radius in metres of the area the photo was taken in)")
        lat, lon, radius = (float(g) for g in m.groups())
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ConfigError(f"--near: {lat},{lon} is not a latitude,longitude pair in degrees")
    if not radius > 0:
        raise ConfigError(f"--near: the radius {radius} m must be positive")
    return lat, lon, radius


def tile_geometry(tiles: list) -> np.ndarray:
    """(N, 4) float64: centre lat, lon and half width, half height in metres of each (north-up) tile."""
    return np.array([[t.lat, t.lon, 0.5 * t.width * t.mpp, 0.5 * t.height * t.mpp] for t in tiles],
                    dtype=np.float64).reshape(-1, 4)


def tiles_near(tiles: list | np.ndarray, lat: float, lon: float, radius_m: float) -> np.ndarray:
    """Mask of the tiles (or rows of :func:`tile_geometry`) whose footprint comes within ``radius_m`` of the point."""
    geo = tiles if isinstance(tiles, np.ndarray) else tile_geometry(tiles)
    east, north = latlon_to_offset(lat, lon, geo[:, 0], geo[:, 1])  # tile centres from the point (tangent plane)
    gap_e = np.maximum(np.abs(np.asarray(east)) - geo[:, 2], 0.0)
    gap_n = np.maximum(np.abs(np.asarray(north)) - geo[:, 3], 0.0)
    return np.hypot(gap_e, gap_n) <= radius_m


@dataclass
class Photo:
    """A checked photo: RGB pixels (EXIF orientation applied), its camera model and field of view."""

    path: Path
    image: Any = field(repr=False)  # PIL.Image.Image, RGB
    camera: str
    fov_deg: float | None

    @property
    def size(self) -> tuple[int, int]:
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


# --- models and the index ----------------------------------------------------------------------------------
def resolve_checkpoint(path: str | os.PathLike, names: tuple[str, ...] = ("model.pt",)) -> Path:
    """A run folder (its ``model.pt``) or a checkpoint file -> the checkpoint file."""
    path = Path(path)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise ConfigError(f"{path} is a folder without {' or '.join(names)}; give a finished run folder or a "
                          "checkpoint file")
    if not path.is_file():
        raise ConfigError(f"model {path} does not exist; give a run folder or a checkpoint file")
    return path


def _is_path(x: Any) -> bool:
    return isinstance(x, str | os.PathLike)


def _load_retrieval(model: Path | Any, device: str):
    """A retrieval model from its checkpoint; an already built model (an ``nn.Module``) is used as given."""
    if not _is_path(model):
        return model.to(device).eval()
    from crossview.models import load_model

    return load_model(str(model)).to(device).eval()


def _identity(model) -> dict[str, Any]:
    from crossview.search.embed import model_identity

    views = tuple(v for v in ("ground", "aerial", "drone") if _has_view(model, v))
    return model_identity(model, views=views)


def _has_view(model, view: str) -> bool:
    from crossview.models import input_spec

    try:
        input_spec(model, view)
    except ConfigError:
        return False
    return True


def index_tiles(tiles: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike, *, kind: str = "flat",
                device: str = "cpu", batch: int = 32, **index_kwargs: Any) -> Path:
    """Embed the tiles of a manifest (``crossview tiles``) with a retrieval model and save an index at ``out``.

    ``model``: a training run folder or checkpoint (or a built model, whose checkpoint then goes unrecorded). The
    sidecar records the checkpoint and the manifest (absolute paths) so :class:`Locator` needs only the index.
    Returns ``out``; an index already built from the same model and manifest is kept.
    """
    from crossview.search.embed import embed_images
    from crossview.search.index import build_index, load_index, save_index
    from crossview.tiles import MANIFEST, read_manifest

    tiles, out = Path(tiles), Path(out)
    manifest = (tiles / MANIFEST if tiles.is_dir() else tiles).resolve()
    checkpoint = resolve_checkpoint(model).resolve() if _is_path(model) else None
    net = _load_retrieval(checkpoint or model, device)
    ident = _identity(net)
    if out.exists():
        try:
            old = load_index(out, query_meta=ident)
            if checkpoint and old.meta.get("tiles_manifest") == str(manifest) and \
                    old.meta.get("checkpoint") == str(checkpoint):
                return out
        except CrossviewError:
            pass
    records = read_manifest(manifest)
    desc = embed_images(net, [t.path for t in records], "aerial", batch=batch, device=device)
    meta = {**ident, "checkpoint": str(checkpoint) if checkpoint else None, "tiles_manifest": str(manifest)}
    index = build_index(desc, [t.id for t in records], [(t.lat, t.lon) for t in records], meta, kind=kind,
                        **index_kwargs)
    return save_index(index, out)


def _load_fine(run: str | os.PathLike | Any, device: str, arch: str | None = None) -> tuple[Any, str]:
    """(model, name) of a fine localizer: a run folder or checkpoint of ``crossview fine-train``, a registered
    name, or an official checkpoint with ``arch`` naming its variant (``--fine-arch hcnet_vigor``), all through
    ``crossview.fine.load_fine``. An object that is not a path is used as given: a loaded model, or anything with
    ``localize_in_tile(photo, tile, heading_prior) -> Pose`` (and optionally ``cameras``)."""
    if not _is_path(run):
        return run, str(getattr(run, "method", type(run).__name__)).lower()
    from crossview.fine.registry import load_fine

    try:
        model = load_fine(run, arch=arch, device=device)
    except ConfigError as exc:
        raise ConfigError(f"--fine-model {run}: {exc}") from exc
    return model, model.config.get("name", model.config["arch"])


def _run_median_error(run: str | os.PathLike | Any) -> float | None:
    """The held-out median position error (m) a fine run reports in its ``metrics.json`` (``crossview fine-train`` /
    ``fine-eval``), used as the floor of locate's uncertainty; None when the run was not evaluated."""
    if not _is_path(run):
        return getattr(run, "median_m", None)
    folder = Path(run) if Path(run).is_dir() else Path(run).parent
    try:
        data = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    for d in (data, data.get("metrics") if isinstance(data, dict) else None):
        if isinstance(d, dict) and isinstance(d.get("median_m"), int | float) and math.isfinite(d["median_m"]):
            return float(d["median_m"])
    return None


def _fine_cameras(model) -> tuple[str, ...]:
    """The photo kinds a fine localizer places (HC-Net and GeoDistill need a full panorama)."""
    return tuple(getattr(model, "cameras", ("panorama",)))


def _fine_localize(model, photo: Photo, tile, prior: tuple[float, float] | None, device: str = "cpu"):
    """Pose of ``photo`` in ``tile`` (metres east/north of its centre) by ``crossview.fine.localize``; ``prior``'s
    centre is the believed heading of the panorama's centre column / the photo's optical axis."""
    import inspect

    from crossview.fine import localize
    from crossview.fine.pose import CameraSpec

    if hasattr(model, "localize_in_tile"):
        return model.localize_in_tile(photo, tile, prior)
    camera = CameraSpec("panorama") if photo.camera == "panorama" else CameraSpec("pinhole", photo.fov_deg)
    heading = prior[0] if prior else None
    # matching models sample FG²'s released test-time 1,024 matches
    extra = {"num_matches": 1024} if "num_matches" in inspect.signature(model.predict).parameters else {}
    return localize(np.asarray(photo.image), str(tile.path), camera, heading_prior=heading, model=model,
                    metres_per_pixel=tile.mpp, tile=tile.id, device=device, **extra)


def _match_tiles(ids: list[str], tiles: list, what: str, manifest) -> dict[str, Any]:
    """Index id -> Tile. Ids are tile ids (``crossview locate-index``) or, for indexes made by ``crossview index
    build`` from a dataset split, image paths: matched by path, by folder/stem, or by file name."""
    keys: dict[str, Any] = {}
    ambiguous: set[str] = set()
    for t in tiles:
        p = Path(t.path)
        for key in {t.id, p.as_posix(), p.name, p.stem, f"{p.parent.name}/{p.stem}", f"{p.parent.name}/{p.name}"}:
            if key in keys and keys[key] is not t:
                ambiguous.add(key)
            keys.setdefault(key, t)
    for key in ambiguous - {t.id for t in tiles}:  # a short name two tiles share identifies neither
        del keys[key]
    out, missing = {}, []
    for i in ids:
        q = Path(i)
        t = keys.get(i) or keys.get(q.as_posix()) or keys.get(f"{q.parent.name}/{q.name}") or keys.get(q.name)
        if t is None:
            missing.append(i)
        else:
            out[i] = t
    if missing:
        raise DatasetError(f"{what} and tile manifest {manifest} do not match: {len(missing)} of {len(ids)} index "
                           f"ids are not tiles there, e.g. {missing[0]!r}; pass the manifest the index was built from")
    return out


# --- the pipeline ------------------------------------------------------------------------------------------
class Locator:
    """Loaded once, locates many photos: the index, its retrieval model, the tiles, and optionally a fine model.

    ``index``: a path saved by :func:`index_tiles` (or any crossview index whose ids are tile ids of ``tiles``);
    ``model``: the retrieval checkpoint when the index does not record it; ``tiles``: a manifest when the index
    does not record it; ``fine_model``: a fine-localization run or checkpoint (an official checkpoint with
    ``fine_arch``, e.g. ``hcnet_vigor``); ``refine``: tiles refined per photo.
    """

    def __init__(self, index: str | os.PathLike, *, model: str | os.PathLike | None = None,
                 tiles: str | os.PathLike | None = None, fine_model: str | os.PathLike | None = None,
                 fine_arch: str | None = None, refine: int = 3, device: str = "cpu"):
        from crossview.search.index import load_index
        from crossview.tiles import read_manifest

        self.index_path, self.device, self.refine = Path(index), device, int(refine)
        self.index = load_index(self.index_path)
        meta = self.index.meta
        ckpt = model if model is not None else meta.get("checkpoint")
        if ckpt is None:
            raise ConfigError(f"index {index} does not record its retrieval model: pass --model RUN (the run that "
                              "embedded its tiles), or build it with `crossview locate-index`")
        self.checkpoint = resolve_checkpoint(ckpt) if _is_path(ckpt) else None
        self.model = _load_retrieval(self.checkpoint or ckpt, device)
        self.index.check_query_model(_identity(self.model), what=f"the retrieval model {self.checkpoint or ckpt}")
        manifest = tiles or meta.get("tiles_manifest")
        if manifest is None:
            raise ConfigError(f"index {index} does not say where its tile images are: pass --tiles MANIFEST "
                              "(from `crossview tiles`)")
        self.tiles = _match_tiles(self.index.ids, read_manifest(manifest), f"index {index}", manifest)
        self.fine_path = Path(fine_model) if fine_model is not None and _is_path(fine_model) else None
        self.fine, self.fine_method = _load_fine(fine_model, device, fine_arch) if fine_model is not None \
            else (None, None)
        self.fine_median_m = _run_median_error(fine_model) if fine_model is not None else None
        self.geometry = tile_geometry([self.tiles[i] for i in self.index.ids])  # rows in index order

    def describe(self) -> dict[str, Any]:
        return {"index": self.index_path.name, "tiles": len(self.index), "model": self.index.meta.get("name"),
                "fine_model": self.fine_path.name if self.fine_path else self.fine_method}

    # -- stages --
    def embed(self, photo: Photo, heading_prior: tuple[float, float] | None) -> np.ndarray:
        import torch
        from PIL import Image

        from crossview.models import input_spec

        view = "drone" if photo.camera == "drone" else "ground"
        if not _has_view(self.model, view):
            raise CrossviewError(f"the index's retrieval model ({self.index.meta.get('name')}) does not embed "
                                 f"{photo.camera} images; use an index built with a model for that view")
        (h, w), mean, std = input_spec(self.model, view)
        if photo.camera == "pinhole":
            pano = pinhole_to_panorama(np.asarray(photo.image), photo.fov_deg, (h, w),
                                       heading_prior[0] if heading_prior else 0.0)
            x = torch.from_numpy(pano).permute(2, 0, 1)
        else:
            x = torch.from_numpy(np.array(photo.image.resize((w, h), Image.BILINEAR), dtype=np.uint8))
            x = x.permute(2, 0, 1)
            if photo.camera == "panorama" and heading_prior:
                # the models are trained on north-aligned panoramas: turn the centre column to face north
                from crossview.geometry.cameras import roll_panorama

                x, _ = roll_panorama(x, -heading_prior[0])
        from crossview.data.transforms import normalize

        with torch.no_grad():
            d = self.model.embed(normalize(x[None].to(self.device), mean, std), view=view)
        return torch.nn.functional.normalize(d.float(), dim=1).cpu().numpy()

    def search(self, desc: np.ndarray, top_k: int, area: tuple[float, float, float] | None = None):
        """The ``top_k`` best tiles for one descriptor, optionally only those within the search ``area``."""
        n = len(self.index)
        if area is None:
            return self.index.search(desc, min(top_k, n))
        allowed = tiles_near(self.geometry, *area)
        if not allowed.any():
            raise CrossviewError(f"no tile of the index {self.index_path} comes within {area[2]:g} m of "
                                 f"{area[0]:.6f},{area[1]:.6f}: widen the radius of --near or check the coordinates "
                                 "(latitude first)")
        k = min(n, max(256, 16 * top_k))
        while True:  # grow the candidate list until enough allowed tiles are in it (or it holds them all)
            scores, rows = self.index.search_rows(desc, k)
            keep = [j for j, r in enumerate(rows[0]) if r >= 0 and allowed[r]][:top_k]
            if len(keep) >= min(top_k, int(allowed.sum())) or k >= n:
                break
            k = min(n, 4 * k)
        ids = np.asarray([self.index.ids[rows[0][j]] for j in keep], dtype=object)[None]
        return scores[:, keep], ids

    def _refine_candidate(self, photo: Photo, c: dict, prior, area) -> dict:
        """Fine pose of ``photo`` in candidate ``c``'s tile, stored in ``c`` (lat/lon, confidence, in_area)."""
        from crossview.tiles import distance_m

        pose = self.refine_in(photo, self.tiles[c["tile"]], prior)
        lat, lon = (float(v) for v in offset_to_latlon(c["lat"], c["lon"], pose.x_m, pose.y_m))
        c["pose"] = {"x_m": float(pose.x_m), "y_m": float(pose.y_m), "lat": lat, "lon": lon,
                     "heading_deg": None if pose.heading_deg is None else float(pose.heading_deg),
                     "confidence": float(pose.confidence)}
        if area is not None:
            c["pose"]["in_area"] = bool(distance_m((lat, lon), area[:2]) <= area[2])
        c["confidence"] = float(pose.confidence)
        return c

    def _recentre(self, photo: Photo, best: dict, cands: list[dict], prior, area) -> dict:
        """The answer refined again in the tile whose centre is nearest to it, when the two agree within a quarter
        tile; else ``best`` unchanged. The extra tile joins ``cands`` (``"source": "recentre"``)."""
        from crossview.tiles import distance_m

        here = (best["pose"]["lat"], best["pose"]["lon"])
        east, north = latlon_to_offset(here[0], here[1], self.geometry[:, 0], self.geometry[:, 1])
        tid = self.index.ids[int(np.argmin(np.hypot(east, north)))]
        if tid == best["tile"]:
            return best
        c = next((c for c in cands if c["tile"] == tid), None)
        if c is None:
            t = self.tiles[tid]
            c = {"rank": len(cands) + 1, "tile": tid, "score": None, "lat": t.lat, "lon": t.lon, "mpp": t.mpp,
                 "file": str(t.path), "source": "recentre"}
            cands.append(c)
        if "pose" not in c:
            self._refine_candidate(photo, c, prior, area)
        t = self.tiles[tid]
        agree = distance_m(here, (c["pose"]["lat"], c["pose"]["lon"])) <= 0.25 * max(t.width, t.height) * t.mpp
        return c if agree and c["pose"].get("in_area", True) else best

    def refine_in(self, photo: Photo, tile, heading_prior):
        """The fine model's Pose of ``photo`` inside ``tile`` (metres east/north of its centre)."""
        return _fine_localize(self.fine, photo, tile, heading_prior, self.device)

    def locate(self, photo: str | os.PathLike | Photo, *, camera: str = "panorama", fov_deg: float | None = None,
               heading_prior: str | tuple | None = None, top_k: int = 5, refine: int | None = None,
               near: str | tuple | None = None, recentre: bool = True, out: str | os.PathLike | None = None,
               thumbnails: bool = False) -> dict[str, Any]:
        """Locate one photo; returns (and with ``out`` writes ``locate.json`` + ``locate.png``) the answer dict.

        ``near``: ``(lat, lon, radius_m)`` or ``"LAT,LON±R"``, a search area (a rough GPS fix): only tiles whose
        footprint comes within ``radius_m`` of the point are ranked, and refined answers outside it are dropped.
        ``recentre``: after fine localization, refine once more in the index's tile centred nearest the answer
        (fine models are trained with the camera near the tile centre) and keep that answer when it agrees.
        """
        prior = parse_heading_prior(heading_prior)
        area = parse_near(near)
        if not isinstance(photo, Photo):
            photo = read_photo(photo, camera, fov_deg)
        top_k = max(1, int(top_k))
        refine = self.refine if refine is None else int(refine)
        scores, ids = self.search(self.embed(photo, prior), top_k, area)
        cands = []
        for rank, (score, tid) in enumerate(zip(scores[0], ids[0]), 1):
            if tid is None:
                continue
            t = self.tiles[tid]
            cands.append({"rank": rank, "tile": tid, "score": float(score), "lat": t.lat, "lon": t.lon,
                          "mpp": t.mpp, "file": str(t.path)})
        if not cands:
            raise CrossviewError(f"index {self.index_path} is empty")
        cameras = _fine_cameras(self.fine) if self.fine is not None else ()
        use_fine = refine > 0 and photo.camera in cameras
        if use_fine:
            for c in cands[:refine]:
                self._refine_candidate(photo, c, prior, area)
            refined = cands[:refine]
            # answers outside the search area are not answers (when every one is, the most confident stays)
            best = max([c for c in refined if c["pose"].get("in_area", True)] or refined,
                       key=lambda c: c["confidence"])
            if recentre:
                best = self._recentre(photo, best, cands, prior, area)
                refined = [c for c in cands if "pose" in c]
            p = best["pose"]
            result = {"method": "fine", "lat": p["lat"], "lon": p["lon"], "x_m": p["x_m"], "y_m": p["y_m"],
                      "heading_deg": p["heading_deg"], "confidence": p["confidence"],
                      "uncertainty_m": _fine_uncertainty(best, refined, self.tiles[best["tile"]],
                                                         self.fine_median_m)}
        else:
            best = cands[0]
            t = self.tiles[best["tile"]]
            result = {"method": "retrieval", "lat": best["lat"], "lon": best["lon"], "x_m": 0.0, "y_m": 0.0,
                      "heading_deg": None, "confidence": best["score"],
                      "uncertainty_m": 0.5 * max(t.width, t.height) * t.mpp}
            if self.fine is not None and refine > 0:
                result["note"] = (f"the fine model ({self.fine_method}) places {' and '.join(cameras)} images, not "
                                  f"{photo.camera} ones: the tile centre is reported")
        if result["heading_deg"] is None and prior is not None:
            result["heading_deg"], result["heading_from"] = prior[0], "prior"
        for c in cands:
            c["chosen"] = c is best
        result.update({"tile": best["tile"], "photo": str(photo.path), "camera": photo.camera,
                       "fov_deg": photo.fov_deg, "heading_prior": list(prior) if prior else None,
                       "near": list(area) if area else None,
                       "candidates": cands, "index": str(self.index_path), "model": self.index.meta.get("name"),
                       "fine_model": (str(self.fine_path) if self.fine_path else self.fine_method)
                       if use_fine else None, "fine_method": self.fine_method if use_fine else None})
        if out is not None:
            out = Path(out)
            out.mkdir(parents=True, exist_ok=True)
            tile = self.tiles[best["tile"]]
            x, y = tile.pixel_of(result["x_m"], result["y_m"])
            draw_result(tile.path, (x, y), result["heading_deg"], result["uncertainty_m"] / tile.mpp,
                        out / "locate.png", caption=_caption(result))
            result["picture"] = "locate.png"
            if thumbnails:
                for c in cands:
                    t = self.tiles[c["tile"]]
                    pos = t.pixel_of(c["pose"]["x_m"], c["pose"]["y_m"]) if "pose" in c else None
                    name = f"candidate_{c['rank']}.jpg"
                    draw_thumbnail(t.path, pos, out / name)
                    c["thumbnail"] = name
            write_json_atomic(out / "locate.json", result)
        return result


def _fine_uncertainty(best: dict, refined: list[dict], tile, run_median_m: float | None = None) -> float:
    """Confidence-weighted spread (m) of the refined answers near the chosen one, at least the fine run's
    evaluated median error (when its metrics.json has one) and at least 4 tile pixels.

    A heuristic: overlapping tiles that agree give a small radius, ones that disagree nearby a larger one.
    Answers more than a tile width away are other hypotheses (they stay listed among the candidates), not
    spread of this one.
    """
    from crossview.tiles import distance_m

    floor, reach = max(4 * tile.mpp, run_median_m or 0.0), max(tile.width, tile.height) * tile.mpp
    near = [(c["confidence"], distance_m((best["pose"]["lat"], best["pose"]["lon"]),
                                         (c["pose"]["lat"], c["pose"]["lon"]))) for c in refined]
    near = [(w, d) for w, d in near if d <= reach]
    total = sum(w for w, _ in near)
    if total <= 0:
        return 0.5 * reach
    return float(max(floor, math.sqrt(sum(w * d * d for w, d in near) / total)))


def _caption(r: dict[str, Any]) -> str:
    head = "heading ?" if r["heading_deg"] is None else f"heading {r['heading_deg']:.0f}°"
    return f"{r['lat']:.6f}, {r['lon']:.6f}  {head}  ±{r['uncertainty_m']:.1f} m  ({r['method']})"


# --- pictures ----------------------------------------------------------------------------------------------
def draw_result(tile_path: str | os.PathLike, xy: tuple[float, float], heading_deg: float | None, radius_px: float,
                out: str | os.PathLike, caption: str = "", size: int = 512) -> Path:
    """The tile (north-up) with the position (dot), uncertainty (circle) and heading (arrow) drawn on it."""
    from PIL import Image, ImageDraw

    from crossview.io import atomic_write

    with Image.open(tile_path) as im:
        tile = im.convert("RGB")
    k = size / max(tile.size)
    tile = tile.resize((round(tile.width * k), round(tile.height * k)), Image.BILINEAR)
    x, y, r = xy[0] * k, xy[1] * k, min(max(3.0, radius_px * k), 2.0 * size)
    canvas = Image.new("RGB", (tile.width, tile.height + 28), (255, 255, 255))
    canvas.paste(tile, (0, 0))
    d = ImageDraw.Draw(canvas)
    d.ellipse((x - r, y - r, x + r, y + r), outline=(255, 220, 0), width=2)
    if heading_deg is not None:
        a = math.radians(heading_deg)
        length = 0.15 * size
        tip = (x + length * math.sin(a), y - length * math.cos(a))
        d.line((x, y, *tip), fill=(255, 40, 40), width=4)
        for side in (-1, 1):  # arrow head
            b = a + math.pi + side * math.radians(28)
            d.line((*tip, tip[0] + 12 * math.sin(b), tip[1] - 12 * math.cos(b)), fill=(255, 40, 40), width=4)
    d.ellipse((x - 6, y - 6, x + 6, y + 6), fill=(255, 40, 40), outline=(255, 255, 255), width=2)
    d.polygon(((14, 4), (8, 18), (20, 18)), fill=(255, 255, 255), outline=(0, 0, 0))  # north is up
    d.text((11, 20), "N", fill=(255, 255, 255))
    d.text((6, tile.height + 8), caption, fill=(0, 0, 0))
    return atomic_write(out, lambda p: canvas.save(p, format="PNG"))


def draw_thumbnail(tile_path: str | os.PathLike, xy: tuple[float, float] | None, out: str | os.PathLike,
                   size: int = 192) -> Path:
    from PIL import Image, ImageDraw

    from crossview.io import atomic_write

    with Image.open(tile_path) as im:
        tile = im.convert("RGB")
    k = size / max(tile.size)
    thumb = tile.resize((round(tile.width * k), round(tile.height * k)), Image.BILINEAR)
    if xy is not None:
        x, y = xy[0] * k, xy[1] * k
        ImageDraw.Draw(thumb).ellipse((x - 4, y - 4, x + 4, y + 4), fill=(255, 40, 40), outline=(255, 255, 255))
    return atomic_write(out, lambda p: thumb.save(p, format="JPEG", quality=88))


def locate(photo: str | os.PathLike | Photo, index: str | os.PathLike | Locator, **kwargs: Any) -> dict[str, Any]:
    """One-call form: ``locate(photo, index, camera=..., fov_deg=..., heading_prior=..., near=None, top_k=5, refine=3,
    fine_model=None, fine_arch=None, model=None, tiles=None, out=None, device="cpu")`` -> the answer dict (see
    Locator.locate)."""
    parse_heading_prior(kwargs.get("heading_prior"))  # the cheap checks first: before any model is loaded
    parse_near(kwargs.get("near"))
    if not isinstance(photo, Photo):
        photo = read_photo(photo, kwargs.pop("camera", "panorama"), kwargs.pop("fov_deg", None))
    if not isinstance(index, Locator):
        load = {k: kwargs.pop(k) for k in ("model", "tiles", "fine_model", "fine_arch", "device") if k in kwargs}
        index = Locator(index, refine=kwargs.get("refine") or 3, **load)
    return index.locate(photo, **kwargs)


# --- the demo: held-out synthetic photos against their known truth -----------------------------------------
def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def demo_locate(world_dir: str | os.PathLike, run_dir: str | os.PathLike, fine_run: str | os.PathLike | None = None,
                n: int = 20, *, out: str | os.PathLike | None = None, heading_noise_deg: float = 45.0,
                refine: int = 3, top_k: int = 5, seed: int = 0, device: str = "cpu",
                gps_noise_m: float | None = None, near_radius_m: float | None = None) -> dict[str, Any]:
    """Locate ``n`` held-out panoramas of a synthetic VIGOR-like world and compare with the known truth.

    Builds the tile set of the world's ``satellite/`` folder and an index with the retrieval model of
    ``run_dir`` (a run folder, or a built model), then locates test-split panoramas (evenly spread over the
    list) with a heading prior whose centre is the true heading plus a seeded uniform error in
    ±``heading_noise_deg`` (HC-Net's protocol; 0 = known orientation). ``fine_run``: a fine-localization run
    folder or checkpoint, or a built localizer. Reports median position error in metres (great-circle) and
    heading error in degrees for retrieval alone (top-1 tile centre, prior heading) and, with ``fine_run``,
    after fine localization. ``gps_noise_m`` simulates a rough GPS fix per photo (the truth moved by a seeded
    random offset of up to that many metres) and searches only tiles within ``near_radius_m`` (default: the same)
    of it; the fix itself is then reported as a third baseline.
    Writes ``metrics.json`` and ``per_photo.jsonl`` under ``out`` (default ``run_dir/locate_demo``).
    """
    import random

    from crossview.geometry.angles import angle_diff_deg
    from crossview.tiles import build_tiles, distance_m

    world, run = Path(world_dir), (Path(run_dir) if _is_path(run_dir) else run_dir)
    if out is None and not _is_path(run_dir):
        raise ConfigError("demo_locate: give out= when the retrieval model is not a run folder")
    out = Path(out) if out is not None else run / "locate_demo"
    poses_path = world / "crossview_poses.jsonl"
    if not poses_path.is_file():
        raise DatasetError(f"{poses_path} not found: generate a world with `crossview synth --layout vigor`")
    records = [json.loads(line) for line in poses_path.read_text().splitlines() if line.strip()]
    test = [r for r in records if r.get("split") == "test" and r.get("camera", "panorama") == "panorama"]
    if not test:
        raise DatasetError(f"{poses_path} has no test-split panoramas")
    picks = [test[i] for i in sorted(set(np.linspace(0, len(test) - 1, min(n, len(test))).round().astype(int)))]
    manifest = build_tiles(world / "satellite", out / "tiles")
    index = index_tiles(manifest, run, out / "tiles.index", device=device)
    locator = Locator(index, model=None if _is_path(run_dir) else run, fine_model=fine_run, refine=refine,
                      device=device)
    rows = []
    from crossview.progress import progress

    for i, rec in enumerate(progress(picks, desc="locate", unit="photo")):
        truth = (float(rec["lat"]), float(rec["lon"]))
        true_heading = float(rec.get("heading_deg") or 0.0)
        noise = random.Random(seed * 1000003 + i).uniform(-heading_noise_deg, heading_noise_deg)
        prior = ((true_heading + noise) % 360.0, heading_noise_deg) if heading_noise_deg > 0 else (true_heading, 0.0)
        near = fix = None
        if gps_noise_m:
            rnd = random.Random(seed * 7919 + i)
            dist, bearing = gps_noise_m * math.sqrt(rnd.random()), rnd.uniform(0.0, 2 * math.pi)
            fix = tuple(float(v) for v in offset_to_latlon(truth[0], truth[1], dist * math.sin(bearing),
                                                            dist * math.cos(bearing)))
            near = (fix[0], fix[1], float(near_radius_m or gps_noise_m))
        r = locator.locate(world / rec["image"], camera="panorama", heading_prior=prior, top_k=top_k, near=near)
        top = r["candidates"][0]
        positives = {Path(t["tile"]).with_suffix("").as_posix().split("satellite/", 1)[-1] for t in rec["tiles"]}
        row = {"image": rec["image"], "true_lat": truth[0], "true_lon": truth[1], "true_heading_deg": true_heading,
               "prior_heading_deg": prior[0], "top1_tile": top["tile"],
               "top1_contains_camera": top["tile"] in positives,
               "retrieval_error_m": distance_m((top["lat"], top["lon"]), truth),
               "retrieval_heading_error_deg": float(angle_diff_deg(prior[0], true_heading))}
        if fix is not None:
            row.update(gps_fix=list(fix), gps_error_m=distance_m(fix, truth))
        if r["method"] == "fine":
            row.update(fine_error_m=distance_m((r["lat"], r["lon"]), truth), fine_tile=r["tile"],
                       fine_tile_contains_camera=r["tile"] in positives,
                       fine_heading_error_deg=None if r["heading_deg"] is None else
                       float(angle_diff_deg(r["heading_deg"], true_heading)),
                       fine_confidence=r["confidence"], uncertainty_m=r["uncertainty_m"])
        rows.append(row)
    ret = [r["retrieval_error_m"] for r in rows]
    metrics: dict[str, Any] = {
        "photos": len(rows), "tiles": len(locator.index), "heading_noise_deg": heading_noise_deg,
        "retrieval": {"median_m": _median(ret), "mean_m": float(np.mean(ret)),
                      "top1_contains_camera": float(np.mean([r["top1_contains_camera"] for r in rows])),
                      "heading_median_deg": _median([r["retrieval_heading_error_deg"] for r in rows])},
        "gps_noise_m": gps_noise_m, "near_radius_m": (near_radius_m or gps_noise_m) if gps_noise_m else None,
        "world": str(world), "run": str(run) if _is_path(run_dir) else type(run).__name__,
        "fine_run": None if fine_run is None else str(fine_run) if _is_path(fine_run) else type(fine_run).__name__,
        "index": str(index),
    }
    if gps_noise_m:
        metrics["gps_fix"] = {"median_m": _median([r["gps_error_m"] for r in rows])}
    if fine_run is not None:
        fine = [r["fine_error_m"] for r in rows if "fine_error_m" in r]
        hd = [r["fine_heading_error_deg"] for r in rows if r.get("fine_heading_error_deg") is not None]
        metrics["fine"] = {"median_m": _median(fine), "mean_m": float(np.mean(fine)) if fine else None,
                           "heading_median_deg": _median(hd),
                           "tile_contains_camera": float(np.mean([r["fine_tile_contains_camera"] for r in rows
                                                                  if "fine_error_m" in r])) if fine else None,
                           "within_uncertainty": float(np.mean([r["fine_error_m"] <= r["uncertainty_m"]
                                                                for r in rows if "fine_error_m" in r]))}
    write_json_atomic(out / "metrics.json", metrics)
    from crossview.io import write_text_atomic

    write_text_atomic(out / "per_photo.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return metrics
