"""FG²'s config: ``FG2Config`` (the typed view model code reads) and ``DEFAULTS`` (its plain dict, registered)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from crossview.errors import ConfigError
from crossview.fine.configs import FineConfig
from crossview.fine.preprocess import UNIT

CAMERAS = ("panorama", "pinhole")
OFFICIAL = "vita-epfl/FG2 @a55d9d13"


@dataclass(frozen=True)
class RansacConfig:
    """The official RANSAC (``official_ransac``): rounds, draws per round, hypotheses per round, minimal set,
    refinements, hard and soft inlier thresholds (grid units) and the generator seed."""

    it_matches: int = 20
    num_samples: int = 8192
    it_ransac: int = 100
    min_set: int = 3
    refinements: int = 4
    th_inlier: float = 2.5
    th_soft_inlier: float = 5.0
    seed: int = 101


@dataclass(frozen=True)
class LossConfig:
    """VCE on a ``points`` × ``points`` grid spanning ``grid_size`` units + ``beta`` × InfoNCE."""

    beta: float = 1.0
    grid_size: float = 5.0
    points: int = 10


@dataclass(frozen=True)
class FG2Config(FineConfig):
    arch: ClassVar[str] = "fg2"
    camera: str = "panorama"  # panorama: the VIGOR model (spherical lifting) | pinhole: the KITTI model (K, front half)
    backbone: str | None = "vit_large_patch14_dinov2"  # a DINOv2 ViT/14, a CNN of fine.backbones, or None (features)
    # DINOv2: the official dinov2_vitl14_pretrain.pth | None (none yet: an official head then needs the file) |
    # "random" (said explicitly: tests, timings); CNNs: None | "lite"
    backbone_weights: Any = None
    backbone_taps: tuple[int, ...] = (1, 2)  # CNNs: timm feature_info indices, upsampled to the first, concatenated
    # DINOv2 runs in this dtype (the official float16); features return as float32. On a CPU, where float16
    # arithmetic is emulated, it computes with a float32 copy of the float16 weights (exact upcast), bfloat16 under
    # bf16 autocast (--precision bf16)
    backbone_dtype: str = "float16"
    ground_size: tuple[int, int] = (714, 1428)  # (H, W) of a panorama fed to the backbone (released VIGOR)
    pinhole_size: tuple[int, int] = (364, 1232)  # (H, W) of a pinhole photo (released KITTI)
    aerial_size: int = 630  # tile side fed to the backbone (VIGOR 630, KITTI 504)
    mean: tuple[float, ...] = tuple(UNIT[0])  # the official DINO input: ToTensor only, no mean/std
    std: tuple[float, ...] = tuple(UNIT[1])
    embed_dim: int = 1024  # = the backbone's channels
    num_heads: int = 8
    num_points: int = 4
    ffn_dim: int = 1024  # mmcv FFN's default feedforward_channels
    num_blocks: int = 6
    grd_bev_res: int = 41
    grd_height_res: int = 11
    sat_bev_res: int = 41
    grid_size_h: float = 71.0  # ground grid side in metres; the aerial grid spans the tile in the same units
    grid_size_v: float = 20.0  # height span (metres, centred on the camera)
    block_dims: tuple[int, ...] = (512, 256, 128)  # descriptor ResNet blocks; the last is the transformer width
    desc_dim: int = 128
    att_layers: int = 3
    att_heads: int = 8
    temperature: float = 0.1
    eps: float = 1e-10  # [Constants] epsilon (projection, L2 normalisation)
    num_matches: int = 1024
    sample_seed: int = 100  # generator seed of the test-time match draw (the fixture's torch.manual_seed(100))
    ransac: RansacConfig = field(default_factory=RansacConfig)
    query_grid: str = "fixed"  # fixed (the authors' CUDA build: never trained, not in checkpoints) | learned
    block4_ffn: str = "ffn1"  # ffn1 (official: block 4 reuses grd_ffn1) | own
    attention_residual: str = "double"  # double (official: 2·query + attention) | single
    pose_convention: str = "official"  # official (t = −c label, position read as −t) | rigid (ground = R·(aerial − c))
    prior_deg: float = 10.0  # pinhole training: the tile is turned to a heading off the truth by U(±prior_deg)
    loss: LossConfig = field(default_factory=LossConfig)
    name: str = "fg2"  # the registered variant (messages)

    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "camera": CAMERAS, "query_grid": ("fixed", "learned"), "block4_ffn": ("ffn1", "own"),
        "attention_residual": ("double", "single"), "pose_convention": ("official", "rigid")}

    def check_more(self) -> None:
        cfg = self
        if cfg.embed_dim % cfg.num_heads:
            raise ConfigError(f"fg2 embed_dim {cfg.embed_dim} is not divisible by num_heads {cfg.num_heads}")
        width = cfg.block_dims[-1]
        if width % cfg.att_heads or width % 4:
            raise ConfigError(f"fg2 block_dims[-1] = {width} must be divisible by att_heads {cfg.att_heads} and 4")
        if cfg.camera == "pinhole" and cfg.pose_convention == "official":
            raise ConfigError("fg2 pose_convention='official' describes the VIGOR loader; pinhole models use 'rigid'")


DEFAULTS: dict[str, Any] = FG2Config.defaults()
