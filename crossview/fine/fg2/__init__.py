"""FG² (Xia & Alahi, CVPR 2025) as published: vita-epfl/FG2 @a55d9d13, VIGOR (panorama) and KITTI (pinhole) models.

Module for module (docs/fine_fg2.md):

1. one frozen DINOv2 ViT-L/14 (``crossview.fine.dinov2``: timm with the official +0.1 bicubic position-embedding
   resampling, unfused attention) run in float16 on images in [0, 1] cropped top-left to multiples of 14; its
   final-normed patch tokens, as float32, are the ground and the aerial features;
2. a ground query grid (41 × 41 × 1024 over 71 m, a seeded random tensor in the authors' GPU build; the KITTI
   model: the 21 × 41 half in front of the camera over 99 m) lifted by 6 post-norm blocks: multi-scale
   deformable self-attention over the grid, deformable cross-attention into the ground features once per height
   (11 heights over 20 m / 25 m), a 1024 -> 1 height score with a softmax over heights, an FFN; multi-scale
   deformable attention is written here in plain PyTorch (``grid_sample``, bilinear, zero padding,
   align_corners=False: the maths of mmcv's kernel, no mmcv);
3. descriptor heads (ground: the lifted grid; aerial: the DINO map resized bilinearly to 41 × 41): three ResNet
   blocks 1024 -> 512 -> 256 -> 128, a sine positional encoding, three linear-attention layers, a fourth block, L2;
4. similarity / 0.1 over all cell pairs, a learned dustbin row and column, dual softmax -> the matching score P;
5. 1,024 matches drawn from P (multinomial), weighted 2-D Procrustes (R, t) with ``ground = R·aerial + t`` in
   grid units (``grid_size_h`` per tile side); at test time optionally the official RANSAC (20 × 8,192 draws,
   100 three-point hypotheses each, soft-inlier scoring, 4 refinements), seedable and generator-exact;
6. training: the virtual-correspondence error (VCE) on a 10 × 10 grid spanning 5 units plus β × a bidirectional
   InfoNCE on the raw similarity, positives from the true pose (recipes: ``crossview.fine.presets``; the trainer
   is ``crossview.fine.train_fg2``).

Official quirks kept in the published variants (released weights depend on them), each with the clean behaviour as
a config option:

- ``block4_ffn="ffn1"``: block 4 calls the FFN of block 1 again (``grd_ffn4`` is stored but never used);
  ``"own"`` uses block 4's own FFN.
- ``attention_residual="double"``: mmcv's deformable attention already adds its query and FG² adds it again, so
  each attention step yields 2·query + attention; ``"single"`` adds it once.
- ``query_grid="fixed"``: built on a GPU the official query grid is a plain tensor (a seeded ``torch.rand``, never
  trained, absent from checkpoints); ``"learned"`` makes it a parameter (what a CPU build of the official code
  does). ``convert_official`` regenerates the missing grid (``official_query_grid``).
- ``pose_convention="official"``: the released VIGOR loader labels a rolled panorama with t = −c (the camera
  position c, not −R·c) and ``vigor_eval`` reads the position as −t; ``"rigid"`` uses ground = R·(aerial − c)
  throughout. Both agree at known orientation (R = I).
- In training a rank-1 Procrustes covariance in any element skips the whole step (``crossview.fine.train_fg2``); at
  test time ``predict`` falls back per element (tile centre, ``ok`` False) rather than dropping the batch.

Layout: ``config`` (``FG2Config``, ``DEFAULTS``), ``grids``, ``blocks`` (attention, heads, backbone), ``solver``
(the official Procrustes and RANSAC), ``model`` (``FG2``, losses), ``convert`` (official checkpoints) and
``reproduce`` (the official fixtures); this module registers the architecture and its variants.

Frames. Official grid coordinates are (x, y) = (down the tile / south, right / east) for the aerial grid and
(backward, right) for the ground grid (a north-aligned panorama's centre column looks along −x). ``predict``
returns metres east/north of the tile centre and headings clockwise from north (``crossview.fine.data``).
"""

from __future__ import annotations

from crossview.fine.fg2.blocks import DeformableAttention, DescriptorHead, FG2Backbone
from crossview.fine.fg2.config import CAMERAS, DEFAULTS, FG2Config, LossConfig, RansacConfig
from crossview.fine.fg2.convert import convert_official, export_official, official_query_grid, release_parts
from crossview.fine.fg2.grids import metric_grid, panorama_reference_points, pinhole_intrinsics, pinhole_points
from crossview.fine.fg2.model import FG2, infonce_loss, turn_tiles, vce_loss
from crossview.fine.fg2.reproduce import reproduce_official
from crossview.fine.fg2.solver import official_procrustes, official_ransac, soft_inliers
from crossview.fine.preprocess import LITE
from crossview.fine.registry import register_arch, register_fine

__all__ = ["FG2", "FG2Config", "RansacConfig", "LossConfig", "FG2Backbone", "DeformableAttention", "DescriptorHead",
           "official_procrustes", "official_ransac", "soft_inliers", "official_query_grid", "convert_official",
           "export_official", "reproduce_official", "release_parts", "metric_grid",
           "panorama_reference_points", "pinhole_points", "pinhole_intrinsics", "turn_tiles", "vce_loss",
           "infonce_loss", "DEFAULTS", "CAMERAS"]

register_arch("fg2", builder=FG2, defaults=DEFAULTS, published="FG² (Xia & Alahi, CVPR 2025)",
              converter=convert_official, exporter=export_official, reproduce=reproduce_official,
              official_repo="vita-epfl/FG2", cameras=CAMERAS, official_params=60_549_255,
              release_parts=release_parts)
# VIGOR as released: panoramas 714 × 1428 and tiles 630 px through a frozen float16 DINOv2 ViT-L/14 (the official
# dinov2_vitl14_pretrain.pth, a file of the release: --fine-backbone; nothing is downloaded), 41 × 41 queries over 71 m,
# 11 heights over 20 m, every official quirk.
register_fine("fg2_vigor", "fg2")
# KITTI as released: the front camera (364 × 1232, intrinsics from the batch's camera_k or its fov), the 21 × 41
# half-grid in front of it over 99 m, 11 heights over 25 m, 504-px tiles turned to the believed heading (±10°).
register_fine("fg2_kitti", "fg2", camera="pinhole", grid_size_h=99.0, grid_size_v=25.0, aerial_size=504,
              pose_convention="rigid")
# The same architecture at CPU size for tests and the synthetic world (128-px tiles, 256 × 128 panoramas, 128 × 96
# pinholes): a frozen EfficientNet-Lite0 on its packaged ImageNet weights (stride-4 and stride-8 taps, 24 + 40 = 64
# channels, in place of the ViT-L's 1024) and 64-d queries, at a small grid: 21 × 21 cells over the same 71 m
# (3.55 m cells; KITTI half-grid 11 × 21) and 6 heights over the same 20 m (−10 … 10 m in 4 m steps); the 6 blocks,
# 8 heads × 4 points, the heads' structure (widths 64/48/32, 32-d descriptors), matcher, solver, losses and every
# quirk of the published variant unchanged. Positions read as the rigid pose (ground = R·(aerial − c)).
_TINY = dict(backbone="tf_efficientnet_lite0", backbone_weights="lite", backbone_taps=[1, 2], embed_dim=64,
             ffn_dim=256, block_dims=[64, 48, 32], desc_dim=32, grd_bev_res=21, sat_bev_res=21, grd_height_res=6,
             ground_size=[128, 256], pinhole_size=[96, 128], aerial_size=128, mean=list(LITE[0]), std=list(LITE[1]),
             pose_convention="rigid")
register_fine("fg2_tiny", "fg2", **_TINY)
register_fine("fg2_tiny_kitti", "fg2", camera="pinhole", **_TINY)
