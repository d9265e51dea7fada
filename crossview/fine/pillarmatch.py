"""PillarMatch — ours, not the published FG²: pillar lifting + fine-grained matching + weighted Procrustes.

A design of our own in FG²'s spirit (Xia & Alahi, CVPR 2025; the published architecture is ``crossview.fine.fg2``),
kept under its own name for small budgets: ground features lifted to 3-D points along camera rays at several
heights (a pillar per BEV cell), a learned selection over height pooling them to a BEV point plane, the aerial
features as a second point plane at known metric positions, L2 descriptors, similarity / temperature with a
learnable dustbin and dual-softmax, sparse matches sampled from it, the pose by weighted Procrustes (RANSAC
optional at test), and training from the pose alone: the virtual correspondence error (VCE) on a grid of virtual
points plus β × a bidirectional InfoNCE whose positives come from the true pose. Where it differs from FG²: any
timm backbone (a frozen CNN on CPU) instead of DINOv2 ViT-L, a fixed bilinear sample at the projected pillar
points + learned height softmax + BEV convolutions instead of deformable attention, conv + GroupNorm heads, and it
places pinhole photos as well as panoramas.

Frames: aerial points in the tile frame (x east, y north, metres from the tile centre); ground points in the camera
frame (x right, y forward). The solver returns (R, t) with ``g = R·a + t`` (crossview.geometry.transforms).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from crossview.fine.backbones import concat_upsampled
from crossview.fine.blocks import add_view_encoders, conv_block, make_backbone, no_circular  # noqa: F401
from crossview.fine.configs import FineConfig
from crossview.fine.preprocess import IMAGENET, normalize
from crossview.fine.registry import register_arch, register_fine
from crossview.geometry.bev import bev_grid, metres_to_bev_pixel, pillar_grid
from crossview.geometry.procrustes import weighted_procrustes
from crossview.geometry.ransac import ransac_procrustes
from crossview.geometry.transforms import apply_rigid, pose_to_rigid, rigid_to_pose


@dataclass(frozen=True)
class PillarMatchConfig(FineConfig):
    """Typed config (``self.cfg``); ``model.config`` is its plain dict, saved with checkpoints."""

    arch: ClassVar[str] = "pillarmatch"

    backbone: str = "tf_efficientnet_lite0"  # timm name; "tiny" = a small CNN trained from scratch
    pretrained: bool = True  # lite0/1/2 load packaged ImageNet weights offline; other timm names use timm's hub
    freeze_backbone: bool = True
    out_indices: tuple[int, ...] = (1, 2)  # backbone levels (timm feature_info), upsampled to the finest, concatenated
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    ground_size: tuple[int, ...] = (128, 256)  # (height, width) of a panorama; pinhole images use pinhole_size
    pinhole_size: tuple[int, ...] = (128, 128)
    aerial_size: int = 128
    bev_cells: int = 32
    heights_m: tuple[float, ...] = (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0)  # relative to the camera
    feat_dim: int = 64
    desc_dim: int = 64
    temperature: float = 0.1
    num_matches: int = 256
    vce_points: int = 10  # virtual points per side
    vce_spacing_m: float = 5.0
    beta: float = 1.0  # weight of the matching InfoNCE
    mean: tuple[float, ...] = tuple(IMAGENET[0])
    std: tuple[float, ...] = tuple(IMAGENET[1])
    name: str = "pillarmatch"  # the registered variant (messages)


DEFAULTS: dict[str, Any] = PillarMatchConfig.defaults()
CAMERAS = ("panorama", "pinhole")


class PillarMatch(nn.Module):
    """Ours. ``forward(batch)`` returns descriptors and the match matrix; ``solve`` the pose; ``predict`` /
    ``loss`` implement ``crossview.fine.FineLocalizer``."""

    cameras = CAMERAS

    def __init__(self, cfg: PillarMatchConfig | dict[str, Any]):
        super().__init__()
        self.cfg, self.config = PillarMatchConfig.resolve(cfg)
        cfg = self.cfg
        d = add_view_encoders(self, self.config)
        n_h = len(cfg.heights_m)
        self.height_score = nn.Conv2d(d, 1, 1)
        self.height_bias = nn.Parameter(torch.zeros(n_h))
        self.height_embed = nn.Parameter(torch.zeros(n_h, d))
        self.empty = nn.Parameter(torch.zeros(d))  # a BEV cell no ray reaches (outside a pinhole's view)
        self.bev_head = nn.Sequential(conv_block(d, d), nn.GELU(), nn.Conv2d(d, cfg.desc_dim, 1))
        self.aerial_head = nn.Sequential(conv_block(d, d), nn.GELU(), nn.Conv2d(d, cfg.desc_dim, 1))
        self.dustbin = nn.Parameter(torch.tensor(1.0))
        self._grid_cache: dict = {}

    # -- geometry ------------------------------------------------------------------------------------------------
    def _pillars(self, kind: str, fov: float, hw: tuple[int, int], mpc: float, device):
        key = (kind, round(fov, 3), hw, round(mpc, 5), str(device))
        if key not in self._grid_cache:
            from crossview.fine.pose import CameraSpec

            cam = CameraSpec(kind, fov).model(hw[1], hw[0])
            grid, valid = pillar_grid(cam, self.cfg.bev_cells, mpc, self.cfg.heights_m)
            if len(self._grid_cache) > 64:
                self._grid_cache.clear()
            self._grid_cache[key] = (grid.to(device), valid.to(device))
        return self._grid_cache[key]

    # -- forward -------------------------------------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of images in [0, 1] (cacheable when the backbone is frozen)."""
        return concat_upsampled(self.backbone(normalize(images, self.cfg.mean, self.cfg.std)))

    def encode_aerial(self, feats: torch.Tensor) -> torch.Tensor:
        f = self.aerial_in(feats)
        f = f + self.aerial_block(f)
        f = F.adaptive_avg_pool2d(f, self.cfg.bev_cells) if f.shape[-1] >= self.cfg.bev_cells else F.interpolate(
            f, size=self.cfg.bev_cells, mode="bilinear", align_corners=False)
        return F.normalize(self.aerial_head(f), dim=1)

    def encode_ground(self, feats: torch.Tensor, hw: tuple[int, int], kinds: list[str], fovs: torch.Tensor,
                      tile_m: torch.Tensor):
        """BEV descriptors (B, D, n, n), the height-selection weights (B, L, n, n) and the cell validity (B, n, n)
        from backbone features of ground images of size ``hw``."""
        circular = kinds[0] == "panorama"
        f = self.ground_in(feats)
        f = f + (self.ground_block(f) if circular else no_circular(self.ground_block, f))
        n = self.cfg.bev_cells
        grids, valids = [], []
        for b in range(f.shape[0]):
            grid, valid = self._pillars(kinds[b], float(fovs[b]), hw, float(tile_m[b]) / n, f.device)
            grids.append(grid)
            valids.append(valid)
        grid, valid = torch.stack(grids), torch.stack(valids)  # (B, L, n, n, 2), (B, L, n, n)
        n_h = grid.shape[1]
        if circular:  # one column of wrap-around each side so azimuth ±180° reads both edges
            w = f.shape[-1]
            f = torch.cat([f[..., -1:], f, f[..., :1]], -1)
            grid = torch.stack([grid[..., 0] * w / (w + 2), grid[..., 1]], -1)
        x = F.grid_sample(f, grid.reshape(f.shape[0], n_h * n, n, 2), mode="bilinear", padding_mode="border",
                          align_corners=False).view(f.shape[0], -1, n_h, n, n)
        x = x * valid.unsqueeze(1) + self.height_embed.t()[None, :, :, None, None]
        score = torch.einsum("bdlij,d->blij", x, self.height_score.weight.view(-1)) + self.height_score.bias
        score = (score + self.height_bias.view(1, -1, 1, 1)).masked_fill(~valid, -1e4)
        w_h = torch.softmax(score, 1) * valid
        cell_ok = valid.any(1)
        feat = (x * w_h.unsqueeze(1)).sum(2)
        feat = torch.where(cell_ok.unsqueeze(1), feat, self.empty.view(1, -1, 1, 1))
        pooled, weights, valids = feat, w_h, cell_ok
        desc = F.normalize(self.bev_head(pooled), dim=1)
        return desc, weights, valids

    def forward(self, batch: dict) -> dict:
        """Match probabilities between the aerial and ground point planes. ``batch`` holds images (``ground``,
        ``aerial``) or cached backbone features (``ground_feat``, ``aerial_feat`` with ``ground_hw``)."""
        af = batch["aerial_feat"] if "aerial_feat" in batch else self.features(batch["aerial"])
        if "ground_feat" in batch:
            gf, hw = batch["ground_feat"], tuple(batch["ground_hw"])
        else:
            gf, hw = self.features(batch["ground"]), tuple(batch["ground"].shape[-2:])
        a = self.encode_aerial(af.float())
        g, hsel, gvalid = self.encode_ground(gf.float(), hw, batch["camera"], batch["fov"], batch["tile_m"])
        b, d = a.shape[:2]
        a = a.flatten(2).transpose(1, 2)  # (B, N, D) aerial cells, row-major
        g = g.flatten(2).transpose(1, 2)
        sim = a @ g.transpose(1, 2) / self.cfg.temperature  # (B, N, M)
        sim = sim.masked_fill(~gvalid.flatten(1)[:, None, :], -1e4)
        n_a, n_g = sim.shape[1:]
        bin_col = self.dustbin.expand(b, n_a, 1)
        bin_row = self.dustbin.expand(b, 1, n_g + 1)
        full = torch.cat([torch.cat([sim, bin_col], 2), bin_row], 1)
        prob = (torch.softmax(full, 1) * torch.softmax(full, 2))[:, :n_a, :n_g]
        return {"sim": sim, "prob": prob, "height_weights": hsel, "ground_valid": gvalid}

    # -- pose ----------------------------------------------------------------------------------------------------
    def points(self, tile_m: torch.Tensor) -> torch.Tensor:
        """Metric positions (B, N, 2) of the cells of both planes (they share the grid; n cells over the tile)."""
        n = self.cfg.bev_cells
        unit = bev_grid(n, 1.0, device=tile_m.device).reshape(-1, 2)
        return unit.unsqueeze(0) * (tile_m / n).view(-1, 1, 1)

    def sample_matches(self, prob: torch.Tensor, k: int, stochastic: bool):
        b, n_a, n_g = prob.shape
        flat = prob.reshape(b, -1)
        k = min(k, flat.shape[1])
        if stochastic:  # k draws without replacement by the Gumbel top-k trick
            u = torch.rand_like(flat).clamp_(1e-12, 1 - 1e-7)
            idx = (flat.detach().clamp(min=1e-30).log() - (-u.log()).log()).topk(k, dim=1).indices
        else:
            idx = flat.detach().topk(k, dim=1).indices
        return idx // n_g, idx % n_g, flat.gather(1, idx)

    def solve(self, out: dict, tile_m: torch.Tensor, stochastic: bool = False, ransac: bool = False,
              fixed_heading_deg: torch.Tensor | None = None, generator: torch.Generator | None = None,
              num_matches: int | None = None):
        """(R, t, ok, confidence) per sample from the match probabilities."""
        pts = self.points(tile_m)
        ia, ig, w = self.sample_matches(out["prob"], int(num_matches or self.cfg.num_matches), stochastic)
        src = torch.gather(pts, 1, ia.unsqueeze(-1).expand(-1, -1, 2))
        dst = torch.gather(pts, 1, ig.unsqueeze(-1).expand(-1, -1, 2))
        fixed = None
        if fixed_heading_deg is not None:
            fixed, _ = pose_to_rigid(torch.zeros_like(fixed_heading_deg), torch.zeros_like(fixed_heading_deg),
                                     fixed_heading_deg)
        if not ransac:
            r, t, ok = weighted_procrustes(src, dst, w, fixed_rotation=fixed)
            conf = w.sum(1).clamp(max=1.0)
            return r, t, ok, conf
        rs, ts, oks, confs = [], [], [], []
        cell = float(tile_m.max()) / self.cfg.bev_cells
        for b in range(src.shape[0]):
            r, t, inl, _ = ransac_procrustes(src[b].double(), dst[b].double(), w[b].double(),
                                             inlier_threshold=2.5 * cell / 1.73, soft_threshold=5.0 * cell / 1.73,
                                             generator=generator, fixed_rotation=None if fixed is None else fixed[b])
            rs.append(r.to(src.dtype))
            ts.append(t.to(src.dtype))
            oks.append(bool(inl.sum() >= 3))
            confs.append(float((w[b] * inl).sum() / w[b].sum().clamp(min=1e-12)))
        return torch.stack(rs), torch.stack(ts), torch.tensor(oks), torch.tensor(confs)

    @torch.no_grad()
    def predict(self, batch: dict, heading_prior=None, ransac: bool = False, num_matches: int | None = None,
                fix_heading: bool = False) -> dict:
        """Poses of a batch (``crossview.fine.FineLocalizer``).

        ``heading_prior`` (B,): a panorama is first rolled so that its believed north is in the centre (FG²'s second
        stage; the heading is then estimated relative to it), or with ``fix_heading`` the prior is taken as exact
        and only the translation is solved. None: the heading is estimated from scratch (FG²'s first stage)."""
        from crossview.fine.data import rotate_to_prior

        n = len(batch["tile_m"])
        applied = None
        if heading_prior is not None and not fix_heading:
            batch, applied = rotate_to_prior(batch, heading_prior)
        fixed = None
        if fix_heading:
            if heading_prior is None:
                raise ValueError("fix_heading needs a heading_prior (the known heading)")
            fixed = torch.as_tensor(heading_prior, dtype=torch.float32, device=batch["tile_m"].device)
            fixed = fixed.reshape(-1).expand(n)
        out = self(batch)
        r, t, ok, conf = self.solve(out, batch["tile_m"], stochastic=False, ransac=ransac, fixed_heading_deg=fixed,
                                    num_matches=num_matches)
        x, y, h = rigid_to_pose(r, t)
        if applied is not None:
            h = torch.remainder(h - applied.to(h.dtype), 360.0)
        return {"xy": torch.stack([x, y], -1), "heading": h, "ok": ok, "confidence": conf, **out}

    # -- loss ----------------------------------------------------------------------------------------------------
    def loss(self, batch: dict, out: dict | None = None, generator=None) -> tuple[torch.Tensor, dict]:
        out = self(batch) if out is None else out
        cfg = self.cfg
        r_gt, t_gt = pose_to_rigid(batch["xy"][:, 0], batch["xy"][:, 1], batch["heading"])
        r, t, ok, _ = self.solve(out, batch["tile_m"], stochastic=True)
        v = torch.arange(cfg.vce_points, dtype=r.dtype, device=r.device) - (cfg.vce_points - 1) / 2
        v = v * cfg.vce_spacing_m
        vy, vx = torch.meshgrid(v, v, indexing="ij")
        vpts = torch.stack([vx, vy], -1).reshape(1, -1, 2)
        err = (apply_rigid(r, t, vpts) - apply_rigid(r_gt, t_gt, vpts)).norm(dim=-1).mean(-1)
        okf = ok.float()
        vce = (err * okf).sum() / okf.sum().clamp(min=1)
        nce = self.matching_loss(out, batch["tile_m"], r_gt, t_gt)
        total = vce + cfg.beta * nce
        return total, {"loss": float(total.detach()), "vce": float(vce.detach()), "infonce": float(nce.detach())}

    def matching_loss(self, out: dict, tile_m, r_gt, t_gt) -> torch.Tensor:
        """Bidirectional InfoNCE on the raw similarity; positives from the true pose (no match labels)."""
        n = self.cfg.bev_cells
        sim, gvalid = out["sim"], out["ground_valid"].flatten(1)
        pts = self.points(tile_m)
        mpc = (tile_m / n).view(-1, 1, 1)
        losses = []
        # aerial cell i -> ground cell j: rows of sim
        g_of_a = apply_rigid(r_gt, t_gt, pts)
        pix = metres_to_bev_pixel(g_of_a / mpc, n, 1.0).floor().long()
        inside = (pix >= 0).all(-1) & (pix < n).all(-1)
        j = (pix[..., 1].clamp(0, n - 1) * n + pix[..., 0].clamp(0, n - 1))
        inside = inside & torch.gather(gvalid, 1, j)
        if inside.any():
            lp = torch.log_softmax(sim, 2)
            losses.append(-(torch.gather(lp, 2, j.unsqueeze(-1)).squeeze(-1)[inside]).mean())
        # ground cell j -> aerial cell i: columns of sim
        rt = r_gt.transpose(-1, -2)
        a_of_g = apply_rigid(rt, -(rt @ t_gt.unsqueeze(-1)).squeeze(-1), pts)
        pix = metres_to_bev_pixel(a_of_g / mpc, n, 1.0).floor().long()
        inside = (pix >= 0).all(-1) & (pix < n).all(-1) & gvalid
        i = (pix[..., 1].clamp(0, n - 1) * n + pix[..., 0].clamp(0, n - 1))
        if inside.any():
            lp = torch.log_softmax(sim, 1)
            losses.append(-(torch.gather(lp.transpose(1, 2), 2, i.unsqueeze(-1)).squeeze(-1)[inside]).mean())
        return torch.stack(losses).mean() if losses else sim.sum() * 0

    def input_sizes(self, camera: str = "panorama") -> tuple[tuple[int, int], int]:
        """(ground (H, W), aerial side) the data loader should produce for ``camera``."""
        g = self.cfg.pinhole_size if camera == "pinhole" else self.cfg.ground_size
        return tuple(g), int(self.cfg.aerial_size)

    def config_dict(self) -> dict:
        return copy.deepcopy(self.config)


register_arch("pillarmatch", builder=PillarMatch, defaults=DEFAULTS, published=None, cameras=CAMERAS)
# CPU size for the synthetic world (128-px tiles, 256×128 panoramas): frozen EfficientNet-Lite0 (packaged ImageNet
# weights), 24 × 24 BEV cells, 6 heights.
register_fine("pillarmatch_synthetic", "pillarmatch", bev_cells=24, heights_m=[-2.0, -1.0, 0.0, 2.0, 5.0, 10.0],
              feat_dim=32, desc_dim=32, pinhole_size=[96, 128], beta=100.0)
register_fine("pillarmatch_tiny_test", "pillarmatch", backbone="tiny", pretrained=False, freeze_backbone=False,
              bev_cells=16, heights_m=[-2.0, -1.0, 0.0, 2.0, 5.0, 10.0], feat_dim=32, desc_dim=32,
              pinhole_size=[96, 128], beta=100.0)
# At VIGOR sizes on a frozen DINOv2 ViT-L (features_only, last block), FG²'s grid: 41 cells, 11 heights, 128-d.
register_fine("pillarmatch_vigor", "pillarmatch", backbone="vit_large_patch14_dinov2.lvd142m", out_indices=[23],
              backbone_kwargs={"dynamic_img_size": True}, ground_size=[714, 1428], aerial_size=630, bev_cells=41,
              heights_m=[-10.0, -8.0, -6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0, 10.0], feat_dim=256,
              desc_dim=128, num_matches=1024, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
