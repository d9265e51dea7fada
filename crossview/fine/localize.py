"""``localize``: the one interface both fine-grained methods implement.

    pose = localize("pano.jpg", "tile.png", camera="panorama", metres_per_pixel=0.113, model="runs/fg2")

returns a :class:`Pose` (metres east/north of the tile centre, heading clockwise from north, confidence).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from crossview.errors import ConfigError
from crossview.fine.pose import CameraSpec, Pose


@lru_cache(maxsize=4)
def _cached_model(path: str, device: str):
    from crossview.fine.train import load_model

    return load_model(path, device)[0]


def _as_array(image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        arr = image
    elif isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        arr = (t.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy() if t.is_floating_point() else t.numpy()
    else:
        from PIL import Image

        with Image.open(image) as im:
            arr = np.asarray(im.convert("RGB"))
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ConfigError(f"images must be H×W×3 RGB; got shape {arr.shape}")
    return arr


def localize(ground_image, aerial_tile, camera: str | CameraSpec = "panorama", heading_prior: float | None = None,
             model=None, metres_per_pixel: float | None = None, tile: str | None = None, ransac: bool | None = None,
             num_matches: int | None = None, device: str = "cpu") -> Pose:
    """Place the ground camera inside the aerial tile.

    Args:
        ground_image: path, H×W×3 uint8 array or (3, H, W) float tensor; an equirectangular panorama or a pinhole
            photo (``camera``).
        aerial_tile: the north-up tile (path or array).
        camera: ``"panorama"``, ``"pinhole"`` (then give a CameraSpec with its ``fov_deg``) or a CameraSpec.
        heading_prior: the heading of the panorama's centre column (degrees clockwise from north) when known
            (VIGOR panoramas: 0). FG²: the panorama is rolled to north before matching; GeoDistill: used instead of
            its orientation estimator.
        model: a run folder, a checkpoint file or a loaded FG2 / GeoDistill model.
        metres_per_pixel: of the tile at its native resolution (required).
        tile: an id or path recorded in the pose.
        ransac: FG²: RANSAC over the sampled matches (default on, as FG²'s released evaluation).
        num_matches: FG²: matches sampled (default: the model's training value; FG² released 1024 at test).
    """
    from crossview.fine.data import FineDataset, FineSample, collate
    from crossview.geometry.cameras import roll_panorama

    if model is None:
        raise ConfigError("localize needs model=: a run folder from `crossview fine-train` or a loaded model")
    if metres_per_pixel is None or metres_per_pixel <= 0:
        raise ConfigError("localize needs metres_per_pixel of the aerial tile (e.g. VIGOR New York at 640 px: "
                          "0.113248)")
    spec = camera if isinstance(camera, CameraSpec) else CameraSpec(camera, 360.0 if camera == "panorama" else 90.0)
    net = _cached_model(str(Path(model).resolve()), device) if isinstance(model, str | os.PathLike) else model
    from crossview.fine.hcnet import HCNet

    if isinstance(net, HCNet):
        from crossview.fine.hcnet_train import localize as localize_hcnet

        return localize_hcnet(net, ground_image, aerial_tile, spec, heading_prior, metres_per_pixel=metres_per_pixel,
                              tile=tile)
    ground, aerial = _as_array(ground_image), _as_array(aerial_tile)
    tile_m = aerial.shape[1] * metres_per_pixel
    sample = FineSample(ground, aerial, spec.kind, spec.fov_deg, 0.0, 0.0, 0.0, tile_m, spec.eye_height_m,
                        sample_id=str(tile or ""))
    gsize = tuple(net.cfg.pinhole_size if spec.kind == "pinhole" and hasattr(net.cfg, "pinhole_size")
                  else net.cfg.ground_size)
    batch = collate([FineDataset([sample], gsize, net.cfg.aerial_size)[0]])
    applied = 0.0
    if heading_prior is not None and spec.kind == "panorama":
        g, applied = roll_panorama(batch["ground"][0], -float(heading_prior))
        batch["ground"] = g[None]
    batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    net.eval()
    with torch.no_grad():
        if net.__class__.__name__ == "GeoDistill":
            p = net.predict(batch, estimate_orientation=heading_prior is None and spec.kind == "panorama")
        else:
            kept = net.cfg.num_matches
            try:
                net.cfg.num_matches = int(num_matches or kept)
                p = net.predict(batch, ransac=True if ransac is None else bool(ransac))
            finally:
                net.cfg.num_matches = kept
    heading = float(torch.remainder(p["heading"][0] - applied, 360.0))
    if net.__class__.__name__ == "GeoDistill" and heading_prior is not None:
        heading = float(heading_prior) % 360.0
    xy = p["xy"][0].cpu().numpy()
    return Pose(float(xy[0]), float(xy[1]), heading, float(p["confidence"][0]), tile,
                extras={"method": net.__class__.__name__})
