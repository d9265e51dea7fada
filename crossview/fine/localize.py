"""``localize``: place one ground image inside one aerial tile with any fine-grained model of the registry.

    pose = localize("pano.jpg", "tile.png", camera="panorama", metres_per_pixel=0.113, model="runs/hc")

returns a :class:`Pose` (metres east/north of the tile centre, heading clockwise from north, confidence).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossview.errors import ConfigError
from crossview.fine.pose import CameraSpec, Pose


@lru_cache(maxsize=4)
def _cached_model(path: str, arch: str | None, device: str):
    from crossview.fine.loading import load_fine

    return load_fine(path, arch=arch, device=device)


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


def localize(ground_image: str | os.PathLike | np.ndarray | torch.Tensor,
             aerial_tile: str | os.PathLike | np.ndarray | torch.Tensor, camera: str | CameraSpec = "panorama",
             heading_prior: float | None = None, model: str | os.PathLike | torch.nn.Module | None = None,
             metres_per_pixel: float | None = None, tile: str | None = None, arch: str | None = None,
             device: str = "cpu", **options: Any) -> Pose:
    """Place the ground camera inside the aerial tile.

    Args:
        ground_image: path, H×W×3 uint8 array or (3, H, W) float tensor; an equirectangular panorama or a pinhole
            photo (``camera``).
        aerial_tile: the north-up tile (path or array).
        camera: ``"panorama"``, ``"pinhole"`` (then give a CameraSpec with its ``fov_deg``) or a CameraSpec.
        heading_prior: the believed heading of the panorama's centre column / the photo's optical axis (degrees
            clockwise from north), e.g. a compass reading or 0 for VIGOR's north-aligned panoramas; None = unknown.
            Each model uses it as its paper does (HC-Net: the spherical transform's north; FG²-style matching: the
            panorama is rolled to it before matching).
        model: a loaded fine model, a run folder, a checkpoint file, a registered name, or an official checkpoint
            (then ``arch`` names its variant, e.g. ``hcnet_vigor``).
        metres_per_pixel: of the tile at its native resolution (required).
        tile: an id or path recorded in the pose.
        options: passed to the model's ``predict`` (PillarMatch: ``ransac`` (default on here, as FG²'s released
            evaluation), ``num_matches``; HC-Net: ``iterations``).
    """
    from crossview.fine.data import FineDataset, FineSample, collate
    from crossview.fine.evaluate import input_sizes, predict_options

    if model is None:
        raise ConfigError("localize needs model=: a run folder from `crossview fine-train`, a checkpoint or a "
                          "loaded model")
    if metres_per_pixel is None or metres_per_pixel <= 0:
        raise ConfigError("localize needs metres_per_pixel of the aerial tile (e.g. VIGOR New York at 640 px: "
                          "0.113248)")
    spec = camera if isinstance(camera, CameraSpec) else CameraSpec(camera, 360.0 if camera == "panorama" else 90.0)
    net = _cached_model(str(Path(model).resolve()) if Path(model).exists() else str(model), arch, device) \
        if isinstance(model, str | os.PathLike) else model
    ground, aerial = _as_array(ground_image), _as_array(aerial_tile)
    tile_m = aerial.shape[1] * metres_per_pixel
    sample = FineSample(ground, aerial, spec.kind, spec.fov_deg, 0.0, 0.0, 0.0, tile_m, spec.eye_height_m,
                        sample_id=str(tile or ""))
    gsize, asize = input_sizes(net, spec.kind)
    batch = collate([FineDataset([sample], gsize, asize)[0]])
    dev = next(net.parameters()).device
    batch = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    if _accepts(net, "ransac"):
        options.setdefault("ransac", True)
    prior = None if heading_prior is None else torch.tensor([float(heading_prior)], device=dev)
    net.eval()
    with torch.no_grad():
        p = net.predict(batch, heading_prior=prior, **predict_options(net, options))
    xy = p["xy"][0].float().cpu().numpy()
    extras = {"method": net.config.get("name", net.config["arch"]), "arch": net.config["arch"]}
    if "homography" in p:
        extras["homography"] = p["homography"][0].cpu()
    if heading_prior is not None:
        extras["heading_prior_deg"] = float(heading_prior)
    return Pose(float(xy[0]), float(xy[1]), float(torch.remainder(p["heading"][0], 360.0)),
                float(p["confidence"][0]), tile, extras=extras)


def _accepts(model: torch.nn.Module, option: str) -> bool:
    import inspect

    return option in inspect.signature(model.predict).parameters
