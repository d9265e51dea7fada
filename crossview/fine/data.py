"""Fine-grained samples: one ground image, its positive aerial tile, and the camera's exact pose in that tile.

Sources:
- a synthetic-world tree (``crossview synth``): ``crossview_poses.jsonl`` gives, per ground image, the camera
  (panorama | pinhole, FoV, eye height), the heading of its centre column / optical axis, the split and the exact
  pixel position in each tile (positive first); ``crossview_meta.json`` the metres per pixel per city;
- real VIGOR through ``crossview.data.read_dataset`` (positives only, corrected labels by default);
- ``flat_world_samples``: a flat textured ground rendered in memory (tests and quick checks).

Protocol (docs/official_code_notes.md, "VIGOR for metric localization"): positives only; same-area = the split's
own train/test lists over all cities; cross-area = train on NewYork + Seattle, test on Chicago + SanFrancisco. Known
orientation uses the image as is (VIGOR panoramas are north-aligned); unknown orientation rolls a panorama by a
random yaw, fixed by a seed at test.
Pinhole cameras of the synthetic world already look in random directions.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from crossview.errors import DatasetError

CROSS_TRAIN = ("NewYork", "Seattle")
CROSS_TEST = ("Chicago", "SanFrancisco")


@dataclass(frozen=True)
class FineSample:
    """One ground image in its positive tile. Position: metres east/north of the tile centre."""

    ground: Path | np.ndarray = field(repr=False)  # path or H×W×3 uint8
    aerial: Path | np.ndarray = field(repr=False)
    camera: str  # "panorama" | "pinhole"
    fov_deg: float
    heading_deg: float  # of the panorama's centre column / the pinhole's optical axis, clockwise from north
    x_m: float
    y_m: float
    tile_m: float  # side of the (square) tile in metres
    eye_height_m: float = 2.0
    city: str = ""
    sample_id: str = ""


def _meta_mpp(meta: dict, city: str) -> float | None:
    for key in ("metres_per_pixel", "meters_per_pixel", "mpp"):
        table = meta.get(key)
        if isinstance(table, dict) and city in table:
            return float(table[city])
        if isinstance(table, int | float):
            return float(table)
    cities = meta.get("cities")
    if isinstance(cities, dict) and city in cities:
        entry = cities[city]
        if isinstance(entry, dict):
            for key in ("metres_per_pixel", "meters_per_pixel", "mpp"):
                if key in entry:
                    return float(entry[key])
        elif isinstance(entry, int | float):
            return float(entry)
    return None


def _resolve(root: Path, name: str, folder: str, city: str) -> Path:
    for cand in (root / name, root / folder / city / name, root / folder / name):
        if cand.exists():
            return cand
    return root / name


def read_synthetic(root: str | Path, area: str = "same", split: str = "test", camera: str = "panorama",
                   limit: int | None = None) -> list[FineSample]:
    """Samples of a synthetic-world tree from its ``crossview_poses.jsonl``: each ground image with its positive
    tile."""
    root = Path(root)
    poses = root / "crossview_poses.jsonl"
    if not poses.exists():
        raise DatasetError(f"{poses} not found: generate a synthetic world with `crossview synth --layout vigor`, "
                           "or point --data at real VIGOR")
    meta_path = root / "crossview_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if area not in ("same", "cross"):
        raise DatasetError(f"area must be 'same' or 'cross', got {area!r}")
    out, problems = [], []
    size_cache: dict[Path, int] = {}
    for line_no, line in enumerate(poses.read_text().splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        kind = rec.get("camera", "panorama")
        if kind != camera:
            continue
        city = rec.get("city", "")
        if area == "same" and rec.get("split") != split:
            continue
        if area == "cross" and city not in (CROSS_TRAIN if split == "train" else CROSS_TEST):
            continue
        tiles = rec.get("tiles") or []
        if not tiles:
            problems.append(f"{poses}:{line_no}: no tiles")
            continue
        folder = "pinhole" if kind == "pinhole" else "ground"
        ground = _resolve(root, rec["image"], folder, city)
        for pos in tiles[:1]:  # the positive
            tile_path = _resolve(root, pos["tile"], "satellite", city)
            mpp = _meta_mpp(meta, city)
            if tile_path not in size_cache:
                from PIL import Image

                try:
                    with Image.open(tile_path) as im:
                        size_cache[tile_path] = im.size[0]
                except OSError:
                    problems.append(f"{poses}:{line_no}: tile {tile_path} cannot be read")
                    continue
            side = size_cache[tile_path]
            if mpp is None:
                mpp = float(pos.get("mpp") or rec.get("metres_per_pixel") or 0) or None
            if mpp is None:
                problems.append(f"{meta_path}: no metres per pixel for city {city!r}")
                break
            px, py = float(pos["x"]), float(pos["y"])
            out.append(FineSample(ground, tile_path, kind, float(rec.get("fov_deg") or 360.0),
                                  float(rec.get("heading_deg") or 0.0), (px - side / 2) * mpp, (side / 2 - py) * mpp,
                                  side * mpp, float(rec.get("eye_height_m") or 2.0), city, Path(rec["image"]).stem))
        if limit and len(out) >= limit:
            out = out[:limit]
            break
    if problems:
        raise DatasetError(f"{len(problems)} problem(s) in {root}", problems[:20])
    if not out:
        raise DatasetError(f"{poses}: no {camera} samples for area={area} split={split}; check the tree's cities "
                           "and splits (cross-area needs NewYork/Seattle for train, Chicago/SanFrancisco for test)")
    return out


def read_vigor(root: str | Path, area: str = "same", split: str = "test", label_set: str = "corrected",
               limit: int | None = None) -> list[FineSample]:
    """Real VIGOR (or any tree ``crossview.data.read_dataset('vigor', ...)`` reads): each panorama with its
    positive tile."""
    from PIL import Image

    from crossview.data import read_dataset

    s = read_dataset("vigor", root, split, area=area, label_set=label_set)
    out = []
    sides: dict[int, int] = {}  # reference index -> tile side in pixels (tiles are shared between panoramas)
    for rec in s.records:
        if rec.pixel_xy is None:
            raise DatasetError(f"record {rec.query_id} has no pixel position in its positive tile",
                               ["VIGOR label files must give the (dr, dc) offsets"])
        r, (px, py) = rec.positives[0], rec.pixel_xy[0]
        ref = s.references[r]
        if r not in sides:
            with Image.open(ref.path) as im:
                sides[r] = im.size[0]
        side, mpp = sides[r], ref.metres_per_pixel
        out.append(FineSample(rec.query_path, ref.path, "panorama", 360.0, rec.heading_deg or 0.0,
                              (px - side / 2) * mpp, (side / 2 - py) * mpp, side * mpp, 2.0, ref.group or "",
                              rec.query_id))
        if limit and len(out) >= limit:
            out = out[:limit]
            break
    return out


def read_samples(root: str | Path, area: str = "same", split: str = "test", camera: str = "panorama",
                 label_set: str = "corrected", limit: int | None = None) -> list[FineSample]:
    """A synthetic tree (has ``crossview_poses.jsonl``) or real VIGOR: each ground image with its positive tile
    (the published protocol)."""
    root = Path(root)
    if (root / "crossview_poses.jsonl").exists():
        return read_synthetic(root, area, split, camera, limit)
    if camera != "panorama":
        raise DatasetError(f"{root}: pinhole samples exist only in synthetic trees (crossview_poses.jsonl)")
    return read_vigor(root, area, split, label_set, limit)


# ----------------------------------------------------------------------------------------------------------------
# Tensors


def load_image(src: Path | np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) float in [0, 1] at ``size`` = (height, width)."""
    if isinstance(src, np.ndarray):
        img = torch.from_numpy(np.array(src, copy=True)).permute(2, 0, 1).float() / 255.0
        if tuple(img.shape[1:]) != tuple(size):
            img = torch.nn.functional.interpolate(img[None], size=size, mode="bilinear", antialias=True,
                                                  align_corners=False)[0]
        return img
    from crossview.data.cache import load_resized

    return torch.from_numpy(load_resized(src, tuple(size)).copy()).permute(2, 0, 1).float() / 255.0


class FineDataset(torch.utils.data.Dataset):
    """Tensors for training and evaluation.

    ``yaw_range_deg``: a panorama is rolled by a yaw uniform in ±range (0: known orientation; 180: unknown);
    ``fixed_seed`` makes the yaws reproducible per sample (evaluation); None draws new ones every epoch.
    The returned ``heading`` is the heading of the image as given to the model (after the roll).
    """

    def __init__(self, samples: list[FineSample], ground_size: tuple[int, int], aerial_size: int,
                 yaw_range_deg: float = 0.0, fixed_seed: int | None = None, photometric: bool = False):
        self.samples = samples
        self.ground_size = tuple(ground_size)
        self.aerial_size = int(aerial_size)
        self.yaw_range = float(yaw_range_deg)
        self.fixed_seed = fixed_seed
        self.photometric = photometric

    def __len__(self) -> int:
        return len(self.samples)

    def yaw_for(self, i: int) -> float:
        """The yaw (degrees) sample ``i`` is rolled by: fixed by ``fixed_seed`` or drawn anew."""
        if self.yaw_range <= 0:
            return 0.0
        rng = random.Random(self.fixed_seed * 1000003 + i) if self.fixed_seed is not None else random
        return rng.uniform(-self.yaw_range, self.yaw_range)

    def __getitem__(self, i: int) -> dict:
        from crossview.geometry.cameras import roll_panorama

        s = self.samples[i]
        ground = load_image(s.ground, self.ground_size)
        aerial = load_image(s.aerial, (self.aerial_size, self.aerial_size))
        heading = s.heading_deg
        if s.camera == "panorama" and self.yaw_range > 0:
            ground, applied = roll_panorama(ground, self.yaw_for(i))
            heading = heading + applied
        if self.photometric:
            g = torch.Generator().manual_seed(random.randrange(2**31))
            for img in (ground, aerial):
                img.mul_(0.8 + 0.4 * torch.rand(1, generator=g)).add_(0.1 * (torch.rand(3, 1, 1, generator=g) - 0.5))
                img.clamp_(0, 1)
        return {"ground": ground, "aerial": aerial, "camera": s.camera,
                "fov": torch.tensor(s.fov_deg, dtype=torch.float32),
                "xy": torch.tensor([s.x_m, s.y_m], dtype=torch.float32),
                "heading": torch.tensor(heading % 360.0, dtype=torch.float32),
                "tile_m": torch.tensor(s.tile_m, dtype=torch.float32),
                "eye_height": torch.tensor(s.eye_height_m, dtype=torch.float32), "index": i}


def collate(items: list[dict]) -> dict:
    """Stack a list of ``FineDataset`` items into a batch (lists for non-tensors); one camera kind per batch."""
    out = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        out[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    kinds = set(out["camera"])
    if len(kinds) > 1:
        raise DatasetError("a batch mixes panorama and pinhole samples; train one camera kind per run")
    return out


# ----------------------------------------------------------------------------------------------------------------
# A flat textured world rendered in memory (tests, quick checks)


def _texture(size: int, gen: torch.Generator) -> torch.Tensor:
    """Random ground texture (3, size, size) in [0, 1]: smooth colour noise plus blobs and stripes."""
    tex = torch.zeros(3, size, size)
    for scale in (4, 8, 16, 32):
        noise = torch.rand(3, scale, scale, generator=gen)
        tex += torch.nn.functional.interpolate(noise[None], size=(size, size), mode="bicubic",
                                               align_corners=False)[0] / scale**0.3
    # blobs: a sparse random image of coloured dots blurred at two scales (cheap and vectorised)
    for sigma, count in ((1.5, size // 3), (4.0, size // 8)):
        dots = torch.zeros(3, size, size)
        idx = torch.randint(0, size * size, (count,), generator=gen)
        dots.view(3, -1)[:, idx] = torch.rand(3, count, generator=gen) * 2 * (2 * math.pi * sigma**2)
        k = int(3 * sigma) * 2 + 1
        ax = torch.arange(k, dtype=torch.float32) - k // 2
        g1 = torch.exp(-ax**2 / (2 * sigma**2))
        g1 = g1 / g1.sum()
        dots = torch.nn.functional.conv2d(dots[:, None], g1.view(1, 1, 1, -1), padding=(0, k // 2))
        dots = torch.nn.functional.conv2d(dots, g1.view(1, 1, -1, 1), padding=(k // 2, 0))[:, 0]
        tex += dots
    tex = tex - tex.amin(dim=(1, 2), keepdim=True)
    return (tex / tex.amax(dim=(1, 2), keepdim=True)).clamp(0, 1)


def flat_world_samples(n: int, seed: int = 0, tile_px: int = 128, tile_m: float = 64.0,
                       ground_hw: tuple[int, int] = (64, 128), camera: str = "panorama", fov_deg: float = 360.0,
                       eye_height_m: float = 2.0, max_offset_frac: float = 0.25, random_heading: bool = False,
                       worlds: int = 4) -> list[FineSample]:
    """Panoramas (or pinhole views) of a flat textured ground and their north-up tiles, exact poses.

    Each of ``worlds`` textures covers 3× the tile; every sample takes a random tile position in it and a camera
    within ``max_offset_frac`` of the tile side from the tile centre (VIGOR positives: the central quarter).
    Rays above the horizon see a plain sky gradient.
    """
    from crossview.geometry.bev import warp_to_bev
    from crossview.geometry.cameras import PanoramaCamera, PinholeCamera

    gen = torch.Generator().manual_seed(seed)
    world_px = tile_px * 3
    textures = [_texture(world_px, gen) for _ in range(worlds)]
    mpp = tile_m / tile_px
    out = []
    for k in range(n):
        tex = textures[k % worlds]
        tcx, tcy = (torch.rand(2, generator=gen) * 0.6 + 0.7) * tile_px  # tile centre in world pixels
        off = (torch.rand(2, generator=gen) * 2 - 1) * max_offset_frac * tile_m
        heading = float(torch.rand(1, generator=gen) * 360) if random_heading else 0.0
        x0, y0 = int(tcx - tile_px / 2), int(tcy - tile_px / 2)
        aerial = tex[:, y0:y0 + tile_px, x0:x0 + tile_px]
        h, w = ground_hw
        cam = (PanoramaCamera(w, h, heading) if camera == "panorama" else PinholeCamera(w, h, fov_deg, heading))
        uu, vv = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                                indexing="ij")
        ray = cam.pixel_to_ray(vv, uu)  # camera frame
        down = (-ray[..., 2]).clamp(min=1e-6)
        s = eye_height_m / down
        gx, gy = ray[..., 0] * s, ray[..., 1] * s  # camera frame metres
        th = math.radians(heading)  # camera frame -> east/north: rotate clockwise by heading
        east = math.cos(th) * gx + math.sin(th) * gy
        north = -math.sin(th) * gx + math.cos(th) * gy
        cam_px = x0 + tile_px / 2 + float(off[0]) / mpp
        cam_py = y0 + tile_px / 2 - float(off[1]) / mpp
        wx = cam_px + east / mpp
        wy = cam_py - north / mpp
        grid = torch.stack([2 * wx / world_px - 1, 2 * wy / world_px - 1], -1).float()
        img = warp_to_bev(tex[None], grid, None, circular=False)[0]
        sky = torch.tensor([0.6, 0.75, 0.95]).view(3, 1, 1).expand(3, h, w)
        below = (ray[..., 2] < -1e-3).float()
        img = img * below + sky * (1 - below)
        to_u8 = lambda t: (t.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # noqa: E731
        out.append(FineSample(to_u8(img), to_u8(aerial), camera, fov_deg if camera == "pinhole" else 360.0,
                              heading, float(off[0]), float(off[1]), tile_m, eye_height_m, f"flat{k % worlds}",
                              f"flat-{seed}-{k}"))
    return out


def rotate_to_prior(batch: dict, heading_prior: float | torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Roll each panorama of ``batch`` so that the direction it is believed to face (``heading_prior`` (B,) or a
    float, degrees clockwise from north, of its centre column) moves to north: the centre column then looks along
    (true heading − prior). Returns the new batch and the yaw applied per sample (whole columns; the rolled image's
    centre heading is the old one + applied, so a heading ψ estimated on it is ψ − applied on the original).
    Pinhole batches and batches of cached features are returned unchanged with zeros."""
    from crossview.geometry.cameras import roll_panorama

    n = len(batch["tile_m"])
    prior = torch.as_tensor(heading_prior, dtype=torch.float32).reshape(-1).expand(n).tolist()
    if "ground" not in batch or batch["camera"][0] != "panorama":
        return batch, torch.zeros(n, device=batch["tile_m"].device)
    ground, applied = [], []
    for k in range(n):
        g, a = roll_panorama(batch["ground"][k], -prior[k])
        ground.append(g)
        applied.append(a)
    return dict(batch, ground=torch.stack(ground)), torch.tensor(applied, device=batch["ground"].device)
