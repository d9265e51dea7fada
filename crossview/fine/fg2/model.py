"""The published FG² model (blocks -> model) and its training objective (VCE + InfoNCE)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossview.errors import ConfigError
from crossview.fine.fg2.blocks import BEVBlock, DescriptorHead, FG2Backbone
from crossview.fine.fg2.config import FG2Config
from crossview.fine.fg2.grids import (
    metric_grid,
    panorama_reference_points,
    pinhole_intrinsics,
    pinhole_points,
    self_reference_points,
)
from crossview.fine.fg2.solver import _distances, official_procrustes, official_ransac
from crossview.fine.preprocess import normalize
from crossview.geometry.cameras import roll_panorama
from crossview.geometry.transforms import rotation_matrix

__all__ = ["FG2", "turn_tiles", "vce_loss", "infonce_loss"]



def _rotation(deg: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise 2-D rotations (B, 2, 2) by ``deg`` degrees."""
    return rotation_matrix(torch.deg2rad(deg.float()))


def turn_tiles(images: torch.Tensor, heading_deg: torch.Tensor) -> torch.Tensor:
    """North-up tiles (or feature maps) (B, C, S, S) turned about their centre so that the direction
    ``heading_deg`` (B,) (clockwise from north) points up (bilinear, zeros outside), as the KITTI loader turns each
    tile to the vehicle's heading."""
    th = torch.deg2rad(heading_deg.float().to(images.device))
    c, s = torch.cos(th), torch.sin(th)
    # output (x right, y down) normalised -> source: rotate clockwise by the heading
    theta = torch.stack([torch.stack([c, -s, torch.zeros_like(c)], -1),
                         torch.stack([s, c, torch.zeros_like(c)], -1)], -2)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class FG2(nn.Module):
    """The published FG²; ``forward`` takes backbone features, ``predict`` / ``loss`` take batches
    (``crossview.fine.data`` layout). Built from an ``FG2Config`` or its plain dict
    (``crossview.fine.fine_config("fg2_vigor")``): ``cfg`` is the typed config, ``config`` the dict checkpoints
    store."""

    def __init__(self, cfg: FG2Config | dict[str, Any]):
        super().__init__()
        # typed and immutable: what the code reads; the plain dict checkpoints store (save_fine)
        self.cfg, self.config = FG2Config.resolve(cfg)
        cfg = self.cfg
        self.cameras = (cfg.camera,)
        d = int(cfg.embed_dim)
        self.backbone = FG2Backbone(cfg.backbone, weights=cfg.backbone_weights, taps=cfg.backbone_taps,
                                    dtype=cfg.backbone_dtype, channels=d)
        if self.backbone.channels != d:
            raise ConfigError(f"fg2 embed_dim {d} must equal the backbone's feature channels "
                              f"({cfg.backbone}: {self.backbone.channels}); set embed_dim or backbone_taps")
        res, n_h = int(cfg.grd_bev_res), int(cfg.grd_height_res)
        self.rows = res if cfg.camera == "panorama" else res // 2 + 1
        self.dustbin = nn.Parameter(torch.tensor(1.0))
        grid = torch.rand(self.rows, res, d)  # the official init (CPU generator), redrawn at every construction
        if cfg.query_grid == "learned":
            self.query_grid = nn.Parameter(grid)
        else:
            self.register_buffer("query_grid", grid)
        self.blocks = nn.ModuleList(BEVBlock(d, cfg.num_heads, cfg.num_points, cfg.ffn_dim)
                                    for _ in range(int(cfg.num_blocks)))
        dims = [int(c) for c in cfg.block_dims]
        head = dict(desc_dim=int(cfg.desc_dim), layers=int(cfg.att_layers), heads=int(cfg.att_heads),
                    eps=float(cfg.eps))
        self.ground_head = DescriptorHead(d, dims, **head)
        self.aerial_head = DescriptorHead(d, dims, **head)
        self.register_buffer("self_ref", self_reference_points(self.rows, res).view(1, -1, 1, 2), persistent=False)
        self.register_buffer("sat_xy", metric_grid(cfg.grid_size_h, cfg.sat_bev_res), persistent=False)
        self.register_buffer("grd_xy", metric_grid(cfg.grid_size_h, res, cfg.camera == "pinhole"),
                             persistent=False)
        if cfg.camera == "panorama":
            ref = panorama_reference_points(res, n_h, cfg.grid_size_h, cfg.grid_size_v, cfg.eps)
            self.register_buffer("cross_ref", ref.unsqueeze(0), persistent=False)
        else:
            pts = pinhole_points(res, n_h, cfg.grid_size_h, cfg.grid_size_v)
            self.register_buffer("cam_points", pts, persistent=False)

    # -- sizes and features ------------------------------------------------------------------------------------
    def input_sizes(self, camera: str = "panorama") -> tuple[tuple[int, int], int]:
        """(ground (H, W), aerial side) the data loader should produce for ``camera``."""
        if camera not in self.cameras:
            raise ConfigError(f"{self.cfg.name} places {self.cameras[0]} images, not {camera} "
                              f"(fg2_vigor / fg2_tiny: panoramas; fg2_kitti / fg2_tiny_kitti: pinhole photos)")
        g = self.cfg.pinhole_size if camera == "pinhole" else self.cfg.ground_size
        return (int(g[0]), int(g[1])), int(self.cfg.aerial_size)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, embed_dim, h, w) float32 of images (B, 3, H, W) in [0, 1] (cacheable: frozen)."""
        return self.backbone(normalize(images, self.cfg.mean, self.cfg.std))

    def head_parameters(self) -> list[nn.Parameter]:
        """The matching head's parameters (everything but the frozen backbone): the official ``CVM``."""
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]

    # -- forward ------------------------------------------------------------------------------------------------
    def _pinhole_ref(self, fov: torch.Tensor, k: torch.Tensor | None, hw: tuple[int, int]):
        """Reference points (B, Nq, heights, 2) and cell validity (B, Nq) of the KITTI lifting: u = (K·p)₀/(K·p)₂/W,
        v = (K·p)₁/(K·p)₂/H, a cell kept when any of its heights projects into [0, 1]²."""
        h, w = hw
        if k is None:
            k = pinhole_intrinsics(fov.to(self.cam_points.device), h, w)
        proj = k.float() @ self.cam_points.t().unsqueeze(0)
        u = proj[:, 0] / proj[:, 2] / w
        v = proj[:, 1] / proj[:, 2] / h
        n_h = int(self.cfg.grd_height_res)
        u, v = u.view(k.shape[0], -1, n_h), v.view(k.shape[0], -1, n_h)
        keep = ((u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)).any(-1)
        return torch.stack([u, v], -1), keep

    def forward(self, ground_feat: torch.Tensor, aerial_feat: torch.Tensor, fov: torch.Tensor | None = None,
                camera_k: torch.Tensor | None = None, ground_hw: tuple[int, int] | None = None) -> dict[str, Any]:
        """Matching from backbone features: ``ground_feat`` (B, C, h, w), ``aerial_feat`` (B, C, h', w').

        Pinhole models need ``fov`` (B,) degrees (or ``camera_k`` (B, 3, 3)) for images of ``ground_hw``
        (default ``pinhole_size``). Returns ``prob`` (B, N_sat, N_grd) (the matching score P), ``sim`` (the raw
        similarity / temperature), ``grd_desc``, ``sat_desc`` (B, D, rows, cols), ``height_index`` (B, rows, cols,
        1) of the last block and ``valid`` (B, N_grd) ground cells (all True for panoramas)."""
        cfg = self.cfg
        b, c, h, w = ground_feat.shape
        if c != cfg.embed_dim or aerial_feat.shape[1] != c:
            raise ConfigError(f"fg2 ({cfg.name}) takes {cfg.embed_dim}-channel features, got ground "
                              f"{tuple(ground_feat.shape)} and aerial {tuple(aerial_feat.shape)}")
        res = int(cfg.grd_bev_res)
        q = self.query_grid.reshape(1, -1, c).expand(b, -1, -1)
        value = ground_feat.permute(0, 2, 3, 1).reshape(b, h * w, c)
        if cfg.camera == "panorama":
            ref, valid = self.cross_ref, torch.ones(b, q.shape[1], dtype=torch.bool, device=q.device)
        else:
            hw = tuple(ground_hw or cfg.pinhole_size)
            if fov is None and camera_k is None:
                raise ConfigError("fg2 pinhole model: the batch needs 'fov' (degrees) or 'camera_k'")
            ref, valid = self._pinhole_ref(fov, camera_k, hw)
        double = cfg.attention_residual == "double"
        height = None
        for i, blk in enumerate(self.blocks):
            q = blk.norm1(blk.attend_self(q, (self.rows, res), self.self_ref, double))
            q, height = blk.attend_cross(q, value, (h, w), ref, double)
            q = blk.norm2(q)
            ffn = self.blocks[0].ffn if (i == 3 and cfg.block4_ffn == "ffn1") else blk.ffn
            q = blk.norm3(ffn(q))
        grd_desc = self.ground_head(q.transpose(1, 2).reshape(b, c, self.rows, res))
        n_sat = int(cfg.sat_bev_res)
        sat = F.interpolate(aerial_feat, (n_sat, n_sat), mode="bilinear", align_corners=False)
        sat_desc = self.aerial_head(sat)
        sim = sat_desc.flatten(2).transpose(1, 2) @ grd_desc.flatten(2) / cfg.temperature
        if not bool(valid.all()):
            sim = sim.masked_fill(~valid[:, None, :], float("-inf"))
        m, n = sim.shape[1:]
        bins0 = self.dustbin.expand(b, m, 1)
        bins1 = self.dustbin.expand(b, 1, n)
        alpha = self.dustbin.expand(b, 1, 1)
        full = torch.cat([torch.cat([sim, bins0], -1), torch.cat([bins1, alpha], -1)], 1)
        prob = (F.softmax(full, 1) * F.softmax(full, 2))[:, :-1, :-1]
        return {"prob": prob, "sim": sim, "grd_desc": grd_desc, "sat_desc": sat_desc,
                "height_index": height.view(b, self.rows, res, 1), "valid": valid}

    # -- batches -----------------------------------------------------------------------------------------------
    def _batch_features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        af = batch["aerial_feat"] if "aerial_feat" in batch else self.features(batch["aerial"])
        if "ground_feat" in batch:
            return batch["ground_feat"].float(), af.float(), tuple(batch["ground_hw"])
        return self.features(batch["ground"]), af.float(), tuple(batch["ground"].shape[-2:])

    def _run(self, batch: dict, prior: torch.Tensor | None) -> dict[str, Any]:
        """Forward on a batch whose ground image is believed to face ``prior`` (B,) degrees (None: as given).

        Panoramas are rolled so that the believed heading is their centre column (FG²'s second stage; cached
        features: whole feature columns); pinhole tiles are turned so that it points up (the KITTI loader; cached
        features: the feature map is turned, an approximation). Returns the forward's outputs with
        ``applied`` (B,): the heading offset to add to a heading estimated in the model's frame."""
        kind = batch["camera"][0] if "camera" in batch else self.cameras[0]
        if kind not in self.cameras:
            raise ConfigError(f"{self.cfg.name} places {self.cameras[0]} images, got {kind}")
        n = len(batch["tile_m"])
        applied = torch.zeros(n, device=batch["tile_m"].device)
        if prior is not None and kind == "panorama":
            from crossview.fine.data import rotate_to_prior

            if "ground" in batch:
                batch, rolled = rotate_to_prior(batch, prior)
                applied = -rolled.to(applied.device)
            else:
                gf = batch["ground_feat"].clone()
                for k, p in enumerate(prior.reshape(-1).tolist()):
                    gf[k], rolled = roll_panorama(gf[k], -p)  # whole feature columns, as a panorama's pixels
                    applied[k] = -rolled
                batch = dict(batch, ground_feat=gf)
        if prior is not None and kind == "pinhole":  # the tile's pixels are turned (cached features: the map)
            key = "aerial" if "aerial" in batch else "aerial_feat"
            batch = dict(batch, **{key: turn_tiles(batch[key], prior)})
            applied = prior.float().to(applied.device)
        gf, af, hw = self._batch_features(batch)
        out = self(gf, af, batch.get("fov"), batch.get("camera_k"), hw)
        out["applied"] = applied
        return out

    def to_pose(self, r: torch.Tensor, t: torch.Tensor, tile_m: torch.Tensor,
                applied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, t) in grid units -> (xy (B, 2) metres east/north of the tile centre, heading (B,) degrees clockwise
        from north), undoing the prior's roll / turn (``applied``)."""
        t = t.reshape(-1, 2)
        if self.cfg.pose_convention == "official":
            c = -t  # vigor_eval reads t as the offset (exact at R = I)
        else:
            c = -(r.transpose(1, 2) @ t.unsqueeze(-1)).squeeze(-1)
        scale = tile_m.float().to(c.device) / float(self.cfg.grid_size_h)
        east_north = torch.stack([c[:, 1], -c[:, 0]], -1) * scale.unsqueeze(-1)
        heading = torch.rad2deg(torch.atan2(r[:, 1, 0], r[:, 0, 0]))
        if self.cfg.camera == "pinhole":  # turned tile: back to north-up
            east_north = (_rotation(-applied.float()).to(east_north) @ east_north.unsqueeze(-1)).squeeze(-1)
        return east_north, torch.remainder(heading + applied.to(heading), 360.0)

    def gt_pose(self, xy: torch.Tensor, heading: torch.Tensor, tile_m: torch.Tensor,
                applied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The true (R, t (B, 1, 2)) in grid units for a camera at ``xy`` metres east/north with ``heading``, in the
        model's frame (a pinhole tile turned by ``applied``); the label of ``pose_convention``."""
        en = xy.float()
        if self.cfg.camera == "pinhole":
            en = (_rotation(applied.float()).to(en) @ en.unsqueeze(-1)).squeeze(-1)
        scale = float(self.cfg.grid_size_h) / tile_m.float().to(en.device)
        c = torch.stack([-en[:, 1], en[:, 0]], -1) * scale.unsqueeze(-1)
        r = _rotation(heading.float().to(en.device) - applied.float().to(en.device))
        t = -c if self.cfg.pose_convention == "official" else -(r @ c.unsqueeze(-1)).squeeze(-1)
        return r, t.unsqueeze(1)

    def sample_matches(self, prob: torch.Tensor, k: int, generator: torch.Generator | None = None):
        """``k`` matches drawn without replacement from P (official ``torch.multinomial``): (X (B, k, 2) aerial and
        Y ground cell coordinates, weights (B, k), flat indices (B, k))."""
        flat = prob.flatten(1)
        idx = torch.multinomial(flat.detach(), k, generator=generator)
        n_grd = prob.shape[2]
        x = self.sat_xy[torch.div(idx, n_grd, rounding_mode="trunc")]
        y = self.grd_xy[idx % n_grd]
        return x, y, flat.gather(1, idx), idx

    @torch.no_grad()
    def predict(self, batch: dict, heading_prior: Any = None, ransac: bool = False, num_matches: int | None = None,
                seed: int | None = None) -> dict[str, torch.Tensor]:
        """Poses of a batch (``crossview.fine.FineLocalizer``): ``xy`` (B, 2) metres east/north of the tile centre,
        ``heading`` (B,) degrees clockwise from north, ``confidence`` (B,) (share of the drawn match weight within
        ``th_inlier`` of the pose), ``ok`` (B,) (False: a rank-1 Procrustes; the tile centre is returned).

        ``heading_prior`` (B,) or float: the believed heading (a panorama is rolled to it, FG²'s second stage; a
        pinhole tile is turned to it, the KITTI setting); None: as given (a north-aligned panorama: FG²'s first
        stage estimates the heading from scratch). ``ransac``: the official RANSAC (seed ``ransac.seed``) instead
        of the single weighted Procrustes on ``num_matches`` draws (seed ``sample_seed``, or ``seed``)."""
        cfg = self.cfg
        n = len(batch["tile_m"])
        prior = None
        if heading_prior is not None:
            prior = torch.as_tensor(heading_prior, dtype=torch.float32, device=batch["tile_m"].device)
            prior = prior.reshape(-1).expand(n).contiguous()
        out = self._run(batch, prior)
        prob = out["prob"]
        rc = cfg.ransac
        if ransac:
            gen = torch.Generator(device=prob.device).manual_seed(int(rc.seed if seed is None else seed))
            sol = official_ransac(prob, self.sat_xy, self.grd_xy, rc, generator=gen)
            r, t = sol["R"], sol["t"]
            ok = torch.full((n,), sol["valid_hypotheses"] > 0, dtype=torch.bool)
            x, y, w, _ = self.sample_matches(prob, min(int(num_matches or cfg.num_matches), prob[0].numel()),
                                             torch.Generator(device=prob.device).manual_seed(int(cfg.sample_seed)))
        else:
            gen = torch.Generator(device=prob.device).manual_seed(int(cfg.sample_seed if seed is None else seed))
            x, y, w, _ = self.sample_matches(prob, min(int(num_matches or cfg.num_matches), prob[0].numel()), gen)
            r, t, ok = official_procrustes(x, y, w)
        inl = ((rc.th_inlier - _distances(x, y, r, t)) >= 0).float()
        conf = (w * inl).sum(1) / w.sum(1).clamp(min=1e-12)
        xy, heading = self.to_pose(r, t, batch["tile_m"], out["applied"])
        fallback = prior if prior is not None else torch.zeros(n, device=xy.device)
        xy = torch.where(ok.view(-1, 1).to(xy.device), xy, torch.zeros_like(xy))
        heading = torch.where(ok.to(xy.device), heading, torch.remainder(fallback, 360.0))
        conf = torch.where(ok.to(xy.device), conf, torch.zeros_like(conf))
        return {"xy": xy, "heading": heading, "confidence": conf, "ok": ok, "R": r, "t": t,
                "height_index": out["height_index"]}

    # -- training ----------------------------------------------------------------------------------------------
    def loss(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """The official training objective on a batch: 1,024 matches drawn from P (``generator``), weighted
        Procrustes, VCE + β · InfoNCE (the official loss.py). A pinhole tile is first turned to a heading off the
        truth by U(±``prior_deg``) (the KITTI loader's rotation). ``parts["_skip"]`` is True when the Procrustes
        covariance of any element has rank 1 — the official loop skips that step."""
        cfg = self.cfg
        kind = batch["camera"][0] if "camera" in batch else self.cameras[0]
        heading = batch["heading"].float().reshape(-1)
        prior = None
        if kind == "pinhole":
            noise = (torch.rand(heading.shape, generator=generator) * 2 - 1) * float(cfg.prior_deg)
            prior = torch.remainder(heading + noise.to(heading.device), 360.0)
        out = self._run(batch, prior)
        prob = out["prob"]
        x, y, w, idx = self.sample_matches(prob, min(int(cfg.num_matches), prob[0].numel()), generator)
        r, t, rank_ok = official_procrustes(x, y, w)
        r_gt, t_gt = self.gt_pose(batch["xy"], heading, batch["tile_m"], out["applied"])
        lw = cfg.loss
        vce = vce_loss(r_gt.to(r), t_gt.to(t), r, t, float(lw.grid_size), int(lw.points))
        n_grd = prob.shape[2]
        nce = infonce_loss(out["sim"], r_gt, t_gt, torch.div(idx, n_grd, rounding_mode="trunc"), idx % n_grd,
                           cfg, self.rows, out["valid"])
        total = float(lw.beta) * nce.mean() + vce.mean()
        with torch.no_grad():
            xy, _ = self.to_pose(r, t, batch["tile_m"], out["applied"])
            err = (xy - batch["xy"].float()).norm(dim=-1).mean()
        skip = not bool(rank_ok.all())
        return total, {"loss": float(total.detach()), "vce": float(vce.mean().detach()),
                       "infonce": float(nce.mean().detach()), "err_m": float(err), "_skip": skip}


def vce_loss(r_gt: torch.Tensor, t_gt: torch.Tensor, r: torch.Tensor, t: torch.Tensor, grid_size: float,
             points: int) -> torch.Tensor:
    """Virtual correspondence error (B,): mean over a ``points`` × ``points`` grid spanning ``grid_size`` units
    (``metric_grid``) of ‖(R_gt·p + t_gt) − (R·p + t)‖."""
    p = metric_grid(grid_size, points).to(r).t().unsqueeze(0)
    d = (r_gt @ p + t_gt.transpose(2, 1)) - (r @ p + t.transpose(2, 1))
    return d.pow(2).sum(1).sqrt().mean(-1)


def infonce_loss(sim: torch.Tensor, r_gt: torch.Tensor, t_gt: torch.Tensor, sat_idx: torch.Tensor,
                 grd_idx: torch.Tensor, cfg: FG2Config, grd_rows: int, valid: torch.Tensor) -> torch.Tensor:
    """The official bidirectional InfoNCE (B,) on the raw similarity ``sim`` (B, N_sat, N_grd) at the drawn matches.

    Cell indices are centred (row − (res−1)/2, col − (res−1)/2; the KITTI ground rows run −(res−1)/2 … 0); the true
    pose maps them, its translation scaled by res / ``grid_size_h`` cells per unit (official), rounded. Satellite ->
    ground: each distinct drawn satellite row whose mapped cell is inside the ground grid (KITTI: whose flat index is
    a valid ground cell) is a softmax over its row; ground -> satellite likewise over columns. Each direction is the
    mean −log p of its positives (0 when none); the result is their average."""
    b = sim.shape[0]
    res_s, res_g = int(cfg.sat_bev_res), int(cfg.grd_bev_res)
    pinhole = cfg.camera == "pinhole"
    scale = torch.full((b, 1, 2), res_g / float(cfg.grid_size_h), device=sim.device)
    t_cells = t_gt.to(sim.device).float() * scale
    r = r_gt.to(sim.device).float()
    sat_c = torch.stack([torch.div(sat_idx, res_s, rounding_mode="trunc"), sat_idx % res_s], -1).float()
    sat_c = sat_c - (res_s - 1) / 2
    g_row = torch.div(grd_idx, res_g, rounding_mode="trunc").float()
    g_row = g_row - (res_g - 1) / 2 if not pinhole else g_row - (grd_rows - 1)
    grd_c = torch.stack([g_row, (grd_idx % res_g).float() - (res_g - 1) / 2], -1)
    # satellite -> ground
    mapped = torch.round(sat_c @ r.transpose(1, 2) + t_cells) + (res_g - 1) / 2
    if pinhole:
        mapped[..., 0] = mapped[..., 0] - (res_g - 1) / 2 + (grd_rows - 1)
    col_idx = (mapped[..., 0] * res_g + mapped[..., 1]).long()
    if pinhole:
        flat_valid = valid.flatten(1)
        keep = torch.zeros_like(col_idx, dtype=torch.bool)
        inside = (col_idx >= 0) & (col_idx < flat_valid.shape[1])
        keep[inside] = flat_valid.gather(1, col_idx.clamp(0, flat_valid.shape[1] - 1))[inside]
    else:
        keep = ((mapped >= 0) & (mapped < res_g)).all(-1)
    row_idx = sat_idx
    s2g = _nce_direction(sim, row_idx, col_idx, keep, dim=2)
    # ground -> satellite
    back = torch.round((grd_c - t_cells) @ r) + (res_s - 1) / 2  # row vectors: Rᵀ·(g − t)
    keep = ((back >= 0) & (back < res_s)).all(-1)
    row_idx = (back[..., 0] * res_s + back[..., 1]).long()
    g2s = _nce_direction(sim, row_idx, grd_idx, keep, dim=1)
    return (s2g + g2s) / 2


def _nce_direction(sim: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, keep: torch.Tensor,
                   dim: int) -> torch.Tensor:
    """Per element: mean over the distinct anchors (rows when ``dim`` = 2, columns when 1) of −log softmax at the
    positive; 0 where no anchor is kept."""
    out = []
    for k in range(sim.shape[0]):
        r, c = rows[k][keep[k]], cols[k][keep[k]]
        if r.numel() == 0:
            out.append(sim.new_zeros(()))
            continue
        anchor = c if dim == 1 else r
        _, first = np.unique(anchor.cpu().numpy(), return_index=True)
        sel = torch.as_tensor(np.sort(first), device=sim.device)
        r, c = r[sel], c[sel]
        if dim == 2:
            logp = torch.log_softmax(sim[k, r, :], -1).gather(1, c.view(-1, 1))
        else:
            logp = torch.log_softmax(sim[k, :, c], 0).gather(0, r.view(1, -1))
        out.append(-logp.mean())
    return torch.stack(out)

