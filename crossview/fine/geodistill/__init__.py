"""GeoDistill (Tong, Xia, Alahi, He, Shi; ICCV 2025) as published: tongshw/GeoDistill @39dcc16c, VIGOR.

Module for module (docs/fine_geodistill.md; the recipe: docs/official_code_notes.md):

1. **Tokens** (``encoder``, frozen): the images are scaled 2·x − 1 (no mean/std), centre-padded with zeros to
   multiples of 14 (tile 512 → 518, panorama 320 × 640 → 322 × 644) and run through DINOv2 ViT-B/14 (official
   +0.1 bicubic position-embedding resampling, ``crossview.fine.dinov2``). The raw outputs of blocks 2, 5, 8, 11
   give four maps [patch tokens (768, h, w), class token broadcast] of 1,536 channels.
2. **Two DPT decoders** (``aerial_head`` = official ``SatDPT``, ``ground_head`` = ``GrdDPT``): 1×1 projections to
   512, ×2 nearest upsampling, four residual fusion blocks, three heads: 256 ch at 2t (from the third fusion
   output), 64 ch at 4t and 16 ch at 8t (t = token grid), each divided by its per-sample L2 norm over C·H·W.
3. **Ground-plane projection**: per level l ∈ {0, 2}, an S × S grid (S = 512 / 2^(3−l)) of ground cells around
   the camera, each 2^(3−l)·mpp metres, looks up the panorama feature at azimuth (column) and at the elevation of a
   ground point 2 m below the camera (row); samples outside the panorama are zero. The central int(0.4·A) cells
   (A = the satellite map side) are the template.
4. **Correlation**: the template slid over the satellite map, d = 2 − 2·cos (window-normalised). The student's
   template and its window energy are weighted by its projected FoV mask m (kernel g·m³, norms with m²).
   Computed here in float64 by FFT (``xcorr``): exact to float32 and ~10⁴× faster than the official grouped
   ``conv2d`` at level 2 (118² kernel over 296², ~80 s per call on one thread).
5. **Losses**: G2SWeakly's batch contrastive loss Σ log(1 + exp(10·(D_mm − D_mn))) / (M(N−1)) on the per-pair
   minimum distances (weak supervision: only which tile is the positive); FoV self-distillation: cross-entropy of
   softmax((1 − d_s/2)/0.06) against softmax((1 − d_t/2)/0.06) of an EMA teacher (0.9) on the full panorama, the
   student on the panorama with a random 180–240° FoV kept (the rest zeroed and its mask projected).
6. **Read-out**: argmax of the level-2 cosine map; pixels = index − n/2; metres by one of the official scripts'
   conversions (below).
7. **Orientation estimator** (``orienter``): two TF EfficientNet-B0s (block 14, 192 × 16 × 16) on the raw
   [0, 255] tile and HC-Net's spherical-transform view of the panorama, concatenated, conv 3×3 + BN + ReLU → 192,
   flatten, MLP 1024 → 512 → 90 classes over ±45°.

Official quirks kept in the published variant (the released weights were trained with them), each with the
corrected behaviour as an option:

- ``grid_scale="official"``: a BEV cell is 2^(3−l)·mpp metres (8 / 2 px at 512) while a satellite map cell is
  518/(2^(l+1)·37)·mpp (7 / 1.75 px): the template is drawn at 8/7 of the satellite's scale (the BEV grid 256
  cells vs the map's 296: the "15.6 %" mismatch). ``"consistent"`` gives BEV cells the satellite map's pitch.
- ``metre_scale``: the same argmax becomes metres as ``eval_3dof_vigor.py`` does (``"eval3dof"``: px · 2^(3−l) ·
  mpp; the published default), as ``train_vigor.py`` validates (``"trainval"``: px · 512/A · mpp), or
  geometrically (``"exact"``: the map pitch padded/A · mpp and the camera's true cell, without the half-cell offset
  of index − n/2). The two official ones differ by the scale mismatch (2 vs 1.73 px per cell; the map pitch is
  1.75 px).
- ``ori_bins="official"``: training labels ⌊(yaw + 45)/90 · 89⌋ but decoded as argmax − 45 (bins of 90/89° read
  as 1°); ``"consistent"`` trains ⌊yaw + 45⌋ and decodes the bin centre.
- The level-0 crop (29 of 64 cells, offset round(17.5) = 18) puts the camera half a cell off the template centre;
  kept (it is the official geometry at every setting).

The student's mask is resized to each feature size as ``cv2.resize(INTER_LINEAR)`` computes it on the uint8 mask
(``cv2_linear_resize``: OpenCV's fixed-point arithmetic, bit-identical to cv2 5.0.0 on every downscale tested —
1,500 random arrays; the official sizes only downscale). cv2 is not a dependency.

Layout: ``config`` (``GeoDistillConfig``, ``DEFAULTS``), ``blocks`` (mask resizing, FoV mask, token encoders,
DPT decoder, orientation estimator), ``correlation`` (projection, correlation, losses), ``model`` (``GeoDistill``,
the limited-FoV evaluation), ``convert`` (official checkpoints) and ``reproduce`` (the official fixtures); this
module registers the architecture and its variants; the recipes are in ``crossview.fine.presets``.

Not reproduced: the KITTI model (a separate pinhole network, ``network_kitti_dino.py``, which no official fixture
covers). G2SWeakly's optional noisy-GPS term is implemented (``gps_weight``, 0 as published) but no fixture checks
it. Frames: tile pixels x right, y down; ``predict`` returns
metres east/north of the tile centre and headings clockwise from north of the panorama's centre column.
"""

from __future__ import annotations

from crossview.fine.geodistill.blocks import (
    CNNTokens,
    DPTHead,
    OrientationEstimator,
    cv2_linear_resize,
    draw_fov,
    official_fov_mask,
)
from crossview.fine.geodistill.config import CAMERAS, DEFAULTS, GeoDistillConfig
from crossview.fine.geodistill.convert import (
    convert_official,
    export_official,
    merge_official,
    pack_official,
    release_parts,
    split_official,
)
from crossview.fine.geodistill.correlation import (
    bev_sampling_grid,
    centre_crop,
    cosine_map,
    distillation_loss,
    g2s_weakly_loss,
    xcorr,
)
from crossview.fine.geodistill.model import GeoDistill, evaluate_limited_fov
from crossview.fine.geodistill.reproduce import reproduce_official
from crossview.fine.preprocess import LITE
from crossview.fine.registry import register_arch, register_fine

__all__ = ["GeoDistill", "GeoDistillConfig", "CNNTokens", "DPTHead", "OrientationEstimator", "cv2_linear_resize",
           "official_fov_mask", "draw_fov", "xcorr", "cosine_map", "centre_crop", "bev_sampling_grid",
           "g2s_weakly_loss", "distillation_loss", "evaluate_limited_fov", "convert_official", "export_official",
           "merge_official", "split_official", "pack_official", "release_parts", "reproduce_official",
           "DEFAULTS", "CAMERAS"]


register_arch("geodistill", builder=GeoDistill, defaults=DEFAULTS, published="GeoDistill (Tong et al., ICCV 2025)",
              converter=convert_official, exporter=export_official, reproduce=reproduce_official,
              official_repo="tongshw/GeoDistill", cameras=CAMERAS,
              official_params=77_846_048 + 86_580_480 + 59_582_866, release_parts=release_parts)
# VIGOR as released: DINOv2 ViT-B/14 (random here; pass weights=<dinov2_vitb14_pretrain.pth> or load an official
# checkpoint), 512-px tiles, 320 × 640 panoramas, levels 0 and 2, the official quirks (see the module docstring).
register_fine("geodistill_vigor", "geodistill")
# The same architecture at CPU size: a frozen EfficientNet-Lite0 (packaged ImageNet weights) tapped at blocks
# 4/7/10/14 (strides 8/16/16/32) brought to one stride-16 token grid with a global token per tap (the class token's
# role), DPT decoders 32 wide, 128-px tiles and 128 × 256 panoramas (the synthetic world's), the estimator on Lite0
# block 10. At token stride 16 the official BEV formula (2^(3−l) px cells, made for patch 14) equals the satellite
# map pitch, so the published geometry holds without its mismatch; metres use the exact conversion.
register_fine("geodistill_tiny", "geodistill", backbone="tf_efficientnet_lite0", weights="lite", layers=[4, 7, 10, 14],
              token_stride=16, sat_size=128, pano_size=[128, 256], mean=list(LITE[0]), std=list(LITE[1]),
              dpt_width=32, dpt_hidden=[32, 16, 16], dpt_out=[32, 16, 8], metre_scale="exact",
              ori_backbone="tf_efficientnet_lite0", ori_weights="lite", ori_block=10, ori_fusion=32,
              ori_hidden=[128, 64], ori_mean=list(LITE[0]), ori_std=list(LITE[1]), ori_scale=1.0)

