"""HC-Net (Wang et al., NeurIPS 2023) as published: xlwangDev/HC-Net @62329ddb, VIGOR configuration.

Module for module (docs/fine_models.md, "HC-Net as published"):

1. the panorama -> a 512 × 512 top-down view by the official spherical transform (170° virtual downward camera,
   ``crossview.geometry.spherical.hcnet_bev``), assuming its centre column looks along the heading prior;
2. two TF-ported EfficientNet-B0s ("pseudo-siamese": same architecture, separate weights), block 15 -> 320 × 16 × 16
   for the view (``bev_encoder``, official ``grd_efficientnet``) and the 512-px tile (``aerial_encoder``,
   ``sat_efficientnet``); inputs 2·x/255 − 1;
3. correlation ``relu(f_view · f_tile)`` over all 16⁴ pairs (no 1/√C), a two-level average-pooled pyramid, a
   radius-4 window looked up around each view cell's current position (align_corners=True; dy-major, dx-minor);
4. the update CNN (``update``, official ``update_block_4.cnn``: three conv–GroupNorm–ReLU–maxpool layers
   16 -> 2, then conv–GN–ReLU–conv 1×1 -> 2 channels) turns window + flow into a four-corner displacement update
   in image pixels; 6 iterations, a 4-point DLT after each;
5. read-out: the camera is the homography's image of the view centre (256, 256); its heading the direction to the
   image of a point above it.

Official quirks kept in the published variants (released weights depend on them), each with the corrected
behaviour as an option:

- ``corner_convention="official"``: inside the loop the displacement / 32 moves the *feature* corners (0 … 15),
  while the read-out and the loss apply it to the *image* corners (0 … 511): 15·32 = 480 ≠ 511, so the flow the
  update CNN sees is about 6 % off the homography it is scored on. ``"consistent"`` maps the image homography to
  feature cells exactly (feature cell k sits at image pixel k·(S−1)/(n−1), the same corner convention for both).
- The view centre is W//2 = 256, not 255.5 (pixel centres), and the yaw probe is 64 px above it in training (and
  VIGOR evaluation) — kept, configurable.

Layout: ``config`` (``HCNetConfig``, ``DEFAULTS``), ``model`` (``HCNet``, the official loss), ``convert``
(official checkpoints) and ``reproduce`` (the official fixtures); this module registers the architecture and its
variants; the recipes are in ``crossview.fine.presets``.

Frames: view and tile pixels (x right, y down, origin top-left) at the model's input size; tiles are north-up;
headings clockwise from north; ``predict`` returns metres east/north of the tile centre. Nothing here imports
training code.
"""

from __future__ import annotations

from crossview.fine.hcnet.config import CAMERAS, DEFAULTS, HCNetConfig, LossConfig
from crossview.fine.hcnet.convert import convert_official, export_official
from crossview.fine.hcnet.model import (
    HCNet,
    UpdateCNN,
    corner_homography,
    corner_points,
    displacement_points,
    official_loss,
    yaw_from_points,
)
from crossview.fine.hcnet.reproduce import reproduce_official
from crossview.fine.registry import register_arch, register_fine

__all__ = ["HCNet", "HCNetConfig", "LossConfig", "UpdateCNN", "corner_homography", "corner_points",
           "displacement_points", "official_loss", "yaw_from_points", "convert_official", "export_official",
           "reproduce_official", "DEFAULTS", "CAMERAS"]


register_arch("hcnet", builder=HCNet, defaults=DEFAULTS, published="HC-Net (Wang et al., NeurIPS 2023)",
              converter=convert_official, exporter=export_official, reproduce=reproduce_official,
              official_repo="xlwangDev/HC-Net", cameras=CAMERAS, official_params=11_210_186)
# VIGOR as released: 512-px view and tile, EfficientNet-B0 block 15, 6 iterations, ±45° prior. The authors start
# from ImageNet EfficientNet-B0 weights (not available offline here: pass weights=<file> or "timm").
register_fine("hcnet_vigor", "hcnet")
# The same architecture at CPU size: 128-px view and tile, block 4 (40 ch, stride 8) -> still a 16 × 16
# correlation and the official update CNN, on the packaged EfficientNet-Lite0 ImageNet weights (EfficientNet-B0's
# layout without squeeze-excitation; B0 ImageNet weights are not available offline).
register_fine("hcnet_tiny", "hcnet", backbone="tf_efficientnet_lite0", weights="lite", feature_block=4,
              image_size=128, sat_size=128, pano_size=[128, 256], mean=[127 / 255] * 3, std=[128 / 255] * 3)

