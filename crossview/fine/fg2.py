"""FG²-lite (Xia & Alahi, CVPR 2025): fine-grained matching of two point planes + weighted Procrustes.

FINE_SPEC 2.5, kept: ground features lifted to 3-D points along camera rays at several heights (a pillar per BEV
cell), a learned selection over height pooling them to a BEV point plane (the argmax height tells which ground
pixel each BEV feature came from), the aerial features as a second point plane at known metric positions, L2
descriptors, similarity / temperature with a learnable dustbin and dual-softmax, sparse matches sampled from it,
the pose by weighted Procrustes (RANSAC optional at test), and training from the pose alone: the virtual
correspondence error (VCE) on a grid of virtual points plus β × a bidirectional InfoNCE whose positives come from
the true pose. Changed for small budgets (FINE_SPEC §6 "FG²-lite"): a frozen timm CNN (or any timm backbone)
instead of DINOv2 ViT-L, and a fixed bilinear sample at the projected pillar points + learned height softmax +
BEV convolutions instead of deformable attention.

Frames: aerial points in the tile frame (x east, y north, metres from the tile centre); ground points in the camera
frame (x right, y forward). The solver returns (R, t) with ``g = R·a + t`` (crossview.geometry.transforms).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from crossview.geometry.bev import bev_grid, metres_to_bev_pixel, pillar_grid
from crossview.geometry.procrustes import weighted_procrustes
from crossview.geometry.ransac import ransac_procrustes
from crossview.geometry.transforms import apply_rigid, pose_to_rigid, rigid_to_pose

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FG2Config:
    backbone: str = "tf_efficientnet_lite0"  # timm name; "tiny" = a small CNN trained from scratch
    pretrained: bool = True  # lite0/1/2 load packaged ImageNet weights offline; other timm names use timm's hub
    freeze_backbone: bool = True  # FG² keeps its DINOv2 frozen
    out_indices: tuple[int, ...] = (1, 2)  # backbone levels, upsampled to the finest and concatenated
    backbone_kwargs: dict = field(default_factory=dict)  # e.g. {"dynamic_img_size": True} for DINOv2 at any size
    ground_size: tuple[int, int] = (128, 256)  # (height, width) of a panorama; pinhole images use pinhole_size
    pinhole_size: tuple[int, int] = (128, 128)
    aerial_size: int = 128
    bev_cells: int = 32  # FG² VIGOR: 41
    heights_m: tuple[float, ...] = (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0)  # relative to the camera; FG²: −10…10
    feat_dim: int = 64
    desc_dim: int = 64  # FG²: 128
    temperature: float = 0.1
    num_matches: int = 256  # FG²: 1024
    vce_points: int = 10  # virtual points per side
    vce_spacing_m: float = 5.0
    beta: float = 1.0  # weight of the matching InfoNCE (FG² stage 1: 100)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> FG2Config:
        d = dict(d)
        for k in ("out_indices", "ground_size", "pinhole_size", "heights_m", "mean", "std"):
            if k in d and d[k] is not None:
                d[k] = tuple(d[k])
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            from crossview.errors import ConfigError

            raise ConfigError(f"unknown FG² model keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


class TinyCNN(nn.Module):
    """A four-level CNN for tests and tiny CPU runs (strides 2, 4, 8, 16)."""

    def __init__(self, width: int = 24):
        super().__init__()
        chans = [width, width * 2, width * 3, width * 4]
        layers, c_in = [], 3
        for c in chans:
            layers.append(nn.Sequential(nn.Conv2d(c_in, c, 3, 2, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                        nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)))
            c_in = c
        self.stages = nn.ModuleList(layers)
        self.channels = chans

    def forward(self, x):
        out = []
        for s in self.stages:
            x = s(x)
            out.append(x)
        return out


class Backbone(nn.Module):
    """timm features at ``out_indices``, upsampled to the finest of them and concatenated."""

    def __init__(self, name: str, out_indices: tuple[int, ...], pretrained: bool, freeze: bool,
                 kwargs: dict | None = None):
        super().__init__()
        self.freeze = freeze
        if name == "tiny":
            self.net = TinyCNN()
            self.indices = tuple(out_indices)
            self.channels = sum(self.net.channels[i] for i in out_indices)
            self.is_tiny = True
        else:
            import timm

            from crossview.models.lite_weights import lite_variant, load_lite_weights

            lite = lite_variant(name)
            if lite is not None:
                name = f"tf_efficientnet_lite{lite}"
            self.net = timm.create_model(name, features_only=True, out_indices=tuple(out_indices),
                                         pretrained=bool(pretrained and lite is None), **(kwargs or {}))
            if pretrained and lite is not None:
                full = timm.create_model(name, pretrained=False)
                load_lite_weights(full, lite)
                missing = self.net.load_state_dict(full.state_dict(), strict=False)
                if len(missing.missing_keys):
                    raise RuntimeError(f"backbone keys not loaded: {missing.missing_keys[:5]}")
            self.indices = None
            self.channels = sum(self.net.feature_info.channels())
            self.is_tiny = False
        if freeze:
            for p in self.net.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.net.eval()
        return self

    def forward(self, x):
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            feats = self.net(x)
        if self.indices is not None:
            feats = [feats[i] for i in self.indices]
        size = feats[0].shape[-2:]
        return torch.cat([feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                       for f in feats[1:]], 1)


def _conv_block(c_in, c_out, circular=False):
    mode = "circular" if circular else "zeros"
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, padding_mode=mode), nn.GroupNorm(8, c_out), nn.GELU(),
                         nn.Conv2d(c_out, c_out, 3, 1, 1, padding_mode=mode))


class FG2(nn.Module):
    """FG²-lite. ``forward(batch)`` returns descriptors and the match matrix; ``solve`` the pose."""

    def __init__(self, cfg: FG2Config | dict | None = None):
        super().__init__()
        cfg = cfg if isinstance(cfg, FG2Config) else FG2Config.from_dict(cfg or {})
        self.cfg = cfg
        self.backbone = Backbone(cfg.backbone, cfg.out_indices, cfg.pretrained, cfg.freeze_backbone,
                                 cfg.backbone_kwargs)
        c, d = self.backbone.channels, cfg.feat_dim
        self.ground_in = nn.Conv2d(c, d, 1)
        self.ground_block = _conv_block(d, d, circular=True)
        self.aerial_in = nn.Conv2d(c, d, 1)
        self.aerial_block = _conv_block(d, d)
        n_h = len(cfg.heights_m)
        self.height_score = nn.Conv2d(d, 1, 1)
        self.height_bias = nn.Parameter(torch.zeros(n_h))
        self.height_embed = nn.Parameter(torch.zeros(n_h, d))
        self.empty = nn.Parameter(torch.zeros(d))  # a BEV cell no ray reaches (outside a pinhole's view)
        self.bev_head = nn.Sequential(_conv_block(d, d), nn.GELU(), nn.Conv2d(d, cfg.desc_dim, 1))
        self.aerial_head = nn.Sequential(_conv_block(d, d), nn.GELU(), nn.Conv2d(d, cfg.desc_dim, 1))
        self.dustbin = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)
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
        return self.backbone((images - self.mean) / self.std)

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
        f = f + (self.ground_block(f) if circular else _nocirc(self.ground_block, f))
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
              fixed_heading_deg: torch.Tensor | None = None, generator: torch.Generator | None = None):
        """(R, t, ok, confidence) per sample from the match probabilities."""
        pts = self.points(tile_m)
        ia, ig, w = self.sample_matches(out["prob"], self.cfg.num_matches, stochastic)
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

    def predict(self, batch: dict, ransac: bool = False, fixed_heading_deg=None) -> dict:
        out = self.forward(batch)
        r, t, ok, conf = self.solve(out, batch["tile_m"], stochastic=False, ransac=ransac,
                                    fixed_heading_deg=fixed_heading_deg)
        x, y, h = rigid_to_pose(r, t)
        return {"xy": torch.stack([x, y], -1), "heading": h, "ok": ok, "confidence": conf, **out}

    # -- loss ----------------------------------------------------------------------------------------------------
    def loss(self, batch: dict, out: dict | None = None, generator=None) -> tuple[torch.Tensor, dict]:
        out = self.forward(batch) if out is None else out
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

    def config_dict(self) -> dict:
        return asdict(self.cfg)


def _nocirc(block: nn.Sequential, f: torch.Tensor) -> torch.Tensor:
    """Run a circular-padded block with zero padding (pinhole images have no wrap-around)."""
    x = f
    for m in block:
        if isinstance(m, nn.Conv2d) and m.padding_mode == "circular":
            x = F.conv2d(x, m.weight, m.bias, m.stride, m.padding)
        else:
            x = m(x)
    return x


def heading_from_rigid(r: torch.Tensor) -> torch.Tensor:
    return torch.remainder(torch.atan2(r[..., 1, 0], r[..., 0, 0]) * 180.0 / math.pi, 360.0)
