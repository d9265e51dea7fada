"""PlaneCorr — ours, not the published GeoDistill: ground-plane template correlation + FoV self-distillation.

A design of our own in the spirit of GeoDistill (Tong et al., ICCV 2025; the published architecture is
``crossview.fine.geodistill``) and CCVPE's heatmap output, for small budgets:
- base localizer: ground features are projected onto the ground plane (camera height from the sample) into a
  camera-centred BEV; its central part is a template whose cosine similarity with the aerial feature map at every
  position, refined by a small decoder, gives a heatmap over the aerial tile. Trained with CCVPE's loss:
  cross-entropy against a normalised Gaussian at the true position.
- distillation (``crossview.fine.train_planecorr``): a frozen copy (the teacher, EMA-updated every ``ema_every``
  steps with α = 0.9) sees the full panorama; the student sees it with a contiguous azimuth block hidden (visible
  FoV drawn in [180°, 240°)), the mask applied to the ground feature columns and projected to the BEV template.
  Loss: cross-entropy of the student's heatmap distribution against the teacher's. No position labels.
- orientation estimator: the aerial features and the BEV of a panorama rolled by up to ±45° feed a small CNN +
  MLP classifying the yaw into 90 one-degree bins, trained with Gaussian soft labels; at test the panorama is rolled
  back by the predicted yaw before localizing.
Where it differs from GeoDistill: any timm backbone instead of DINOv2 ViT-B blocks 2/5/8/11, one feature map and a
learned decoder instead of the two DPT decoders and 2 − 2·cos correlations at two levels, supervised Gaussian CE
instead of weak batch-contrastive training, distillation on logits at temperature 1, a small orientation head.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from crossview.fine.backbones import concat_upsampled
from crossview.fine.blocks import add_view_encoders, no_circular
from crossview.fine.configs import FineConfig
from crossview.fine.preprocess import IMAGENET, normalize
from crossview.fine.registry import register_arch, register_fine
from crossview.geometry.bev import bev_grid, ground_plane_grid, warp_to_bev


@dataclass(frozen=True)
class PlaneCorrConfig(FineConfig):
    """Typed config (``self.cfg``); ``model.config`` is its plain dict, saved with checkpoints."""

    arch: ClassVar[str] = "planecorr"

    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    freeze_backbone: bool = True
    out_indices: tuple[int, ...] = (1, 2)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    ground_size: tuple[int, ...] = (128, 256)
    aerial_size: int = 128
    bev_cells: int = 32  # aerial feature grid and BEV grid (cells over the tile side)
    template_frac: float = 0.5  # side of the template / side of the BEV
    feat_dim: int = 64
    heatmap_scale: int = 2  # heatmap resolution = bev_cells × this
    sigma_px: float = 1.0  # Gaussian of the target at heatmap resolution
    ori_bins: int = 90
    ori_range_deg: float = 45.0
    orientation_mode: str = "classifier"  # classifier (the estimator) | search (heatmap peak over yaws)
    mean: tuple[float, ...] = tuple(IMAGENET[0])
    std: tuple[float, ...] = tuple(IMAGENET[1])
    name: str = "planecorr"  # the registered variant (messages)


DEFAULTS: dict[str, Any] = PlaneCorrConfig.defaults()
CAMERAS = ("panorama",)


def roll_columns(f: torch.Tensor, shift: float) -> torch.Tensor:
    """Circularly shift the last axis by a fractional number of columns (linear interpolation)."""
    lo = math.floor(shift)
    frac = shift - lo
    out = torch.roll(f, lo, dims=-1)
    return out if frac == 0 else (1 - frac) * out + frac * torch.roll(f, lo + 1, dims=-1)


class OrientationEstimator(nn.Module):
    """Yaw of a panorama relative to the tile, in ``bins`` over ±``range_deg`` (GeoDistill's estimator, small)."""

    def __init__(self, d: int, n: int, bins: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(2 * d, d, 3, 2, 1), nn.GroupNorm(8, d), nn.GELU(),
                                 nn.Conv2d(d, d, 3, 2, 1), nn.GroupNorm(8, d), nn.GELU())
        side = math.ceil(math.ceil(n / 2) / 2)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(d * side * side, 256), nn.GELU(), nn.Linear(256, bins))

    def forward(self, aerial: torch.Tensor, bev: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.net(torch.cat([aerial, bev], 1)))


class PlaneCorr(nn.Module):
    """Ours; ``predict`` / ``loss`` implement ``crossview.fine.FineLocalizer``."""

    cameras = CAMERAS

    def __init__(self, cfg: PlaneCorrConfig | dict[str, Any]):
        super().__init__()
        self.cfg, self.config = PlaneCorrConfig.resolve(cfg)
        cfg = self.cfg
        d = add_view_encoders(self, self.config)
        self.decoder = nn.Sequential(nn.Conv2d(d + 1, d, 3, 1, 1), nn.GELU(), nn.Conv2d(d, 1, 3, 1, 1))
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))  # cosine -> logits
        self.orienter = OrientationEstimator(d, cfg.bev_cells, cfg.ori_bins)
        self._grids: dict = {}

    def input_sizes(self, camera: str = "panorama") -> tuple[tuple[int, int], int]:
        """(ground (H, W), aerial side) the data loader should produce."""
        return tuple(self.cfg.ground_size), int(self.cfg.aerial_size)

    def config_dict(self) -> dict:
        return copy.deepcopy(self.config)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return concat_upsampled(self.backbone(normalize(images, self.cfg.mean, self.cfg.std)))

    # -- encoders ------------------------------------------------------------------------------------------------
    def aerial_map(self, feats: torch.Tensor) -> torch.Tensor:
        f = self.aerial_in(feats.float())
        f = f + self.aerial_block(f)
        n = self.cfg.bev_cells
        return F.adaptive_avg_pool2d(f, n) if f.shape[-1] >= n else F.interpolate(f, size=n, mode="bilinear")

    def ground_bev(self, feats: torch.Tensor, hw, tile_m: torch.Tensor, eye_h: torch.Tensor,
                   column_mask: torch.Tensor | None = None, circular: bool = True):
        """Ground-plane BEV (B, D, n, n) centred on the camera (forward = up) and its validity (B, n, n)."""
        from crossview.geometry.cameras import PanoramaCamera

        f = feats.float()
        if column_mask is not None:
            f = f * column_mask[:, None, None, :]
        f = self.ground_in(f)
        f = f + (self.ground_block(f) if circular else no_circular(self.ground_block, f))
        if column_mask is not None:
            f = f * column_mask[:, None, None, :]
        n = self.cfg.bev_cells
        cam = PanoramaCamera(hw[1], hw[0])
        out, valid = [], []
        for b in range(f.shape[0]):
            key = (hw, round(float(tile_m[b]), 4), round(float(eye_h[b]), 3), str(f.device))
            if key not in self._grids:
                if len(self._grids) > 64:
                    self._grids.clear()
                g, v = ground_plane_grid(cam, n, float(tile_m[b]) / n, float(eye_h[b]))
                self._grids[key] = (g.to(f.device), v.to(f.device))
            g, v = self._grids[key]
            out.append(warp_to_bev(f[b:b + 1], g, v, circular=circular)[0])
            valid.append(v)
        bev = torch.stack(out)
        valid = torch.stack(valid)
        if column_mask is not None:  # the mask projected to the BEV: hide cells whose azimuth is hidden
            w = column_mask.shape[-1]
            xy = bev_grid(n, 1.0, device=f.device)
            az = torch.atan2(xy[..., 0], xy[..., 1])  # clockwise from forward
            col = (torch.remainder(az / (2 * math.pi) + 0.5, 1.0) * w).long().clamp(0, w - 1)
            vis = column_mask[:, col] > 0.5
            bev = bev * vis[:, None]
            valid = valid & vis
        return bev, valid

    # -- localization --------------------------------------------------------------------------------------------
    def heatmap(self, aerial: torch.Tensor, bev: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Logits (B, H, W) over the tile at ``bev_cells × heatmap_scale``."""
        n = self.cfg.bev_cells
        t = int(round(n * self.cfg.template_frac)) // 2 * 2 + 1
        lo = (n - t) // 2
        tmpl = F.normalize(bev[..., lo:lo + t, lo:lo + t], dim=1) * valid[:, None, lo:lo + t, lo:lo + t]
        a = F.normalize(aerial, dim=1)
        b = a.shape[0]
        # cosine of the template with each aerial window: Σ(T·A) / (|T| |A_window|), all templates at once
        num = F.conv2d(a.reshape(1, -1, n, n), tmpl, padding=t // 2, groups=b).view(b, 1, n, n)
        ones = valid[:, None, lo:lo + t, lo:lo + t].float()
        a2 = F.conv2d(torch.ones(1, b, n, n, device=a.device), ones, padding=t // 2, groups=b).view(b, 1, n, n)
        t_norm = ones.flatten(1).sum(1).clamp(min=1).sqrt().view(b, 1, 1, 1)
        cos = num / (a2.clamp(min=1).sqrt() * t_norm)
        x = torch.cat([cos, aerial], 1)
        s = self.cfg.heatmap_scale
        up = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        logits = up[:, :1] * self.log_scale.exp() + self.decoder(up)
        return logits[:, 0]

    def forward(self, batch: dict, column_mask: torch.Tensor | None = None) -> dict:
        af = batch["aerial_feat"] if "aerial_feat" in batch else self.features(batch["aerial"])
        if "ground_feat" in batch:
            gf, hw = batch["ground_feat"], tuple(batch["ground_hw"])
        else:
            gf, hw = self.features(batch["ground"]), tuple(batch["ground"].shape[-2:])
        aerial = self.aerial_map(af)
        bev, valid = self.ground_bev(gf, hw, batch["tile_m"], batch["eye_height"], column_mask)
        return {"logits": self.heatmap(aerial, bev, valid), "aerial": aerial, "bev": bev}

    def target(self, xy: torch.Tensor, tile_m: torch.Tensor, size: int) -> torch.Tensor:
        """Normalised Gaussian (B, size, size) at the true position."""
        px = (xy[:, 0] / tile_m + 0.5) * size
        py = (0.5 - xy[:, 1] / tile_m) * size
        c = torch.arange(size, device=xy.device, dtype=torch.float32) + 0.5
        g = torch.exp(-((c.view(1, 1, -1) - px.view(-1, 1, 1)) ** 2 + (c.view(1, -1, 1) - py.view(-1, 1, 1)) ** 2)
                      / (2 * self.cfg.sigma_px**2))
        return g / g.flatten(1).sum(1).clamp(min=1e-12).view(-1, 1, 1)

    def loss(self, batch: dict, generator=None) -> tuple[torch.Tensor, dict]:
        out = self(batch)
        logits = out["logits"]
        tgt = self.target(batch["xy"], batch["tile_m"], logits.shape[-1])
        ce = -(tgt.flatten(1) * torch.log_softmax(logits.flatten(1), 1)).sum(1).mean()
        return ce, {"loss": float(ce.detach())}

    def decode(self, logits: torch.Tensor, tile_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Position (B, 2) metres from the argmax with a 3×3 soft-argmax refinement; peak probability."""
        b, h, w = logits.shape
        prob = torch.softmax(logits.flatten(1), 1).view(b, h, w)
        peak, idx = prob.flatten(1).max(1)
        r, c = idx // w, idx % w
        pad = F.pad(prob, (1, 1, 1, 1))
        xs, ys = [], []
        for k in range(b):
            win = pad[k, r[k]:r[k] + 3, c[k]:c[k] + 3]
            off = torch.arange(-1, 2, device=logits.device, dtype=prob.dtype)
            s = win.sum().clamp(min=1e-12)
            xs.append(c[k] + 0.5 + (win.sum(0) * off).sum() / s)
            ys.append(r[k] + 0.5 + (win.sum(1) * off).sum() / s)
        px, py = torch.stack(xs), torch.stack(ys)
        x = (px / w - 0.5) * tile_m
        y = (0.5 - py / h) * tile_m
        return torch.stack([x, y], -1), peak

    # -- orientation ---------------------------------------------------------------------------------------------
    def orientation_logits(self, batch: dict) -> torch.Tensor:
        af = batch["aerial_feat"] if "aerial_feat" in batch else self.features(batch["aerial"])
        if "ground_feat" in batch:
            gf, hw = batch["ground_feat"], tuple(batch["ground_hw"])
        else:
            gf, hw = self.features(batch["ground"]), tuple(batch["ground"].shape[-2:])
        bev, _ = self.ground_bev(gf, hw, batch["tile_m"], batch["eye_height"])
        return self.orienter(self.aerial_map(af), bev)

    def bin_centres(self, device=None) -> torch.Tensor:
        k, r = self.cfg.ori_bins, self.cfg.ori_range_deg
        return (torch.arange(k, device=device, dtype=torch.float32) + 0.5) * (2 * r / k) - r

    def orientation_loss(self, batch: dict, yaw_deg: torch.Tensor) -> tuple[torch.Tensor, dict]:
        logits = self.orientation_logits(batch)
        centres = self.bin_centres(logits.device)
        width = 2 * self.cfg.ori_range_deg / self.cfg.ori_bins
        soft = torch.exp(-((centres[None] - yaw_deg[:, None]) / width) ** 2 / 2)
        soft = soft / soft.sum(1, keepdim=True)
        ce = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
        return ce, {"ori_loss": float(ce.detach())}

    def predict_yaw(self, batch: dict) -> torch.Tensor:
        """Heading of the ground image relative to north (degrees within ±range), soft-argmax around the peak."""
        p = torch.softmax(self.orientation_logits(batch), 1)
        centres = self.bin_centres(p.device)
        i = p.argmax(1)
        lo, hi = (i - 2).clamp(min=0), (i + 3).clamp(max=p.shape[1])
        out = []
        for k in range(p.shape[0]):
            w = p[k, lo[k]:hi[k]]
            out.append((w * centres[lo[k]:hi[k]]).sum() / w.sum())
        return torch.stack(out)

    @torch.no_grad()
    def search_yaw(self, batch: dict, step_deg: float = 3.0) -> torch.Tensor:
        """Heading by search: the localizer's heatmap peak for the panorama turned by each candidate yaw in
        ±range (feature columns rolled), refined by a parabola through the best three."""
        af = batch["aerial_feat"] if "aerial_feat" in batch else self.features(batch["aerial"])
        gf, hw = (batch["ground_feat"], tuple(batch["ground_hw"])) if "ground_feat" in batch else (
            self.features(batch["ground"]), tuple(batch["ground"].shape[-2:]))
        aerial = self.aerial_map(af)
        r = self.cfg.ori_range_deg
        cands = torch.arange(-r, r + 1e-6, step_deg)
        w = gf.shape[-1]
        scores = []
        for yaw in cands.tolist():  # a panorama whose heading is `yaw` looks north after turning it by -yaw
            rolled = roll_columns(gf.float(), yaw / 360.0 * w)
            bev, valid = self.ground_bev(rolled, hw, batch["tile_m"], batch["eye_height"])
            scores.append(self.heatmap(aerial, bev, valid).flatten(1).amax(1))
        sc = torch.stack(scores, 1)  # (B, K)
        i = sc.argmax(1)
        out = []
        for k in range(sc.shape[0]):
            j = int(i[k])
            yaw = float(cands[j])
            if 0 < j < len(cands) - 1:
                a, b_, c = (float(v) for v in sc[k, j - 1:j + 2])
                den = a - 2 * b_ + c
                if den < 0:
                    yaw += 0.5 * (a - c) / den * step_deg
            out.append(yaw)
        return torch.tensor(out, device=gf.device)

    @torch.no_grad()
    def predict(self, batch: dict, heading_prior=None) -> dict:
        """Poses of a batch (``crossview.fine.FineLocalizer``): with ``heading_prior`` the panorama is rolled so its
        believed north is in the centre and the prior is the heading (the localizer assumes a known orientation);
        without, the orientation estimator (or the heatmap search) gives the heading first."""
        from crossview.fine.data import rotate_to_prior

        n = len(batch["tile_m"])
        if heading_prior is not None:
            prior = torch.as_tensor(heading_prior, dtype=torch.float32, device=batch["tile_m"].device)
            heading = prior.reshape(-1).expand(n).clone()
            batch, _ = rotate_to_prior(batch, heading)
        elif "ground" in batch:
            yaw = self.search_yaw(batch) if self.cfg.orientation_mode == "search" else self.predict_yaw(batch)
            batch, applied = rotate_to_prior(batch, yaw)
            heading = -applied
        else:
            heading = torch.zeros(n, device=batch["tile_m"].device)
        logits = self(batch)["logits"]
        xy, conf = self.decode(logits, batch["tile_m"])
        return {"xy": xy, "heading": torch.remainder(heading, 360.0), "confidence": conf, "logits": logits}


def fov_column_mask(batch_size: int, width: int, fov_range, rng: random.Random, device) -> torch.Tensor:
    """(B, W) masks of contiguous visible azimuth blocks, FoV uniform in ``fov_range`` and a random start."""
    from crossview.geometry.cameras import fov_mask

    return torch.stack([fov_mask(width, rng.uniform(-180, 180), rng.uniform(*fov_range), device)
                        for _ in range(batch_size)])


@torch.no_grad()
def evaluate_limited_fov(model: PlaneCorr, samples, fov_deg: float, seed: int, device) -> dict:
    """KITTI-style limited field of view on panoramas: each test panorama keeps a ``fov_deg`` block of azimuth
    (start fixed by ``seed``), the rest hidden, as the student sees it."""
    from crossview.fine.data import FineDataset, collate
    from crossview.fine.metrics import fine_metrics

    model.eval()
    rng = random.Random(seed)
    ds = FineDataset(samples, model.cfg.ground_size, model.cfg.aerial_size)
    preds, truth = [], []
    for start in range(0, len(ds), 8):
        b = collate([ds[i] for i in range(start, min(len(ds), start + 8))])
        b = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
        gf = model.features(b["ground"])
        mask = fov_column_mask(gf.shape[0], gf.shape[-1], (fov_deg, fov_deg), rng, device)
        batch = dict(b, ground_feat=gf, ground_hw=tuple(b["ground"].shape[-2:]))
        xy, _ = model.decode(model(batch, column_mask=mask)["logits"], b["tile_m"])
        preds.append(xy.cpu())
        truth.append(b["xy"].cpu())
    return fine_metrics(torch.cat(preds).numpy(), torch.cat(truth).numpy())


register_arch("planecorr", builder=PlaneCorr, defaults=DEFAULTS, published=None, cameras=CAMERAS)
register_fine("planecorr_synthetic", "planecorr", feat_dim=32)
# At VIGOR sizes on a frozen DINOv2 ViT-B (features_only, blocks 2/5/8/11), a 64 × 64 map.
register_fine("planecorr_vigor", "planecorr", backbone="vit_base_patch14_dinov2.lvd142m", out_indices=[2, 5, 8, 11],
              ground_size=[322, 644], aerial_size=518, bev_cells=64, feat_dim=256,
              backbone_kwargs={"dynamic_img_size": True}, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
