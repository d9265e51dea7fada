"""The published GeoDistill model (tokens -> DPT decoders -> ground-plane projection -> correlation), its losses and
the limited-FoV evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossview.errors import ConfigError
from crossview.fine.backbones import is_efficientnet
from crossview.fine.geodistill.blocks import CNNTokens, DPTHead, OrientationEstimator, cv2_linear_resize
from crossview.fine.geodistill.config import CAMERAS, GeoDistillConfig
from crossview.fine.geodistill.correlation import (
    _TWO_PI,
    bev_sampling_grid,
    centre_crop,
    cosine_map,
    distillation_loss,
    g2s_weakly_loss,
)
from crossview.fine.preprocess import normalize
from crossview.geometry.cameras import roll_panorama

__all__ = ["GeoDistill", "evaluate_limited_fov"]


class GeoDistill(nn.Module):
    """The published GeoDistill, built from a ``GeoDistillConfig`` or its plain dict
    (``crossview.fine.fine_config("geodistill_vigor")``): ``cfg`` is the typed config, ``config`` the dict saved with
    every checkpoint. ``predict`` / ``loss`` take ``crossview.fine.data`` batches."""

    cameras = CAMERAS

    def __init__(self, cfg: GeoDistillConfig | dict[str, Any]):
        super().__init__()
        # typed and immutable: what the code reads; the plain dict checkpoints store (save_fine)
        self.cfg, self.config = GeoDistillConfig.resolve(cfg)
        cfg = self.cfg
        name = cfg.backbone
        if is_efficientnet(name):
            self.encoder = CNNTokens(name, list(cfg.layers), weights=cfg.weights, stride=int(cfg.token_stride))
            channels = self.encoder.channels
        else:
            from crossview.fine.dinov2 import DINOv2

            self.encoder = DINOv2(name, weights=cfg.weights, fused_attn=bool(cfg.fused_attn))
            patch = self.encoder.vit.patch_embed.patch_size[0]
            if patch != int(cfg.token_stride):
                raise ConfigError(f"geodistill token_stride {cfg.token_stride} must equal {name}'s patch {patch}")
            nblocks = len(self.encoder.vit.blocks)
            if max(cfg.layers) >= nblocks:
                raise ConfigError(f"geodistill layers {list(cfg.layers)}: {name} has {nblocks} blocks")
            channels = [2 * self.encoder.embed_dim] * 4
        self.encoder.requires_grad_(False)
        dpt = dict(width=int(cfg.dpt_width), hidden=list(cfg.dpt_hidden), out=list(cfg.dpt_out))
        self.aerial_head = DPTHead(channels, **dpt)
        self.ground_head = DPTHead(channels, **dpt)
        self.orienter = None
        if cfg.orientation:
            self.orienter = OrientationEstimator(cfg.ori_backbone, block=int(cfg.ori_block), size=int(cfg.sat_size),
                                                 weights=cfg.ori_weights, fusion=int(cfg.ori_fusion),
                                                 hidden=tuple(cfg.ori_hidden), classes=int(cfg.ori_classes),
                                                 keep_unused=bool(cfg.keep_unused))
        self._grids: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def train(self, mode: bool = True) -> GeoDistill:
        super().train(mode)
        self.encoder.eval()  # frozen, batch-norm statistics included
        return self

    def input_sizes(self, camera: str = "panorama") -> tuple[tuple[int, int], int]:
        """(panorama (H, W), tile side) the data loader should produce."""
        return tuple(self.cfg.pano_size), int(self.cfg.sat_size)

    # -- tokens and decoders --------------------------------------------------------------------------------------
    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Centre-pad with zeros to multiples of the token stride (⌊pad/2⌋ top/left, the rest bottom/right)."""
        k = int(self.cfg.token_stride)
        ph, pw = (-x.shape[-2]) % k, (-x.shape[-1]) % k
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)) if ph or pw else x

    def tokens(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Four token maps (B, 2C, h, w) of images (B, 3, H, W) in [0, 1]: normalised, centre-padded, frozen."""
        x = self._pad(normalize(images, self.cfg.mean, self.cfg.std))
        with torch.no_grad():
            if isinstance(self.encoder, CNNTokens):
                return self.encoder(x)
            out = self.encoder(x, blocks=list(self.cfg.layers))
            h, w = x.shape[-2] // 14, x.shape[-1] // 14
            maps = []
            for i in self.cfg.layers:
                t = out[f"block{i}"]
                patch = t[:, 1:].transpose(1, 2).reshape(t.shape[0], -1, h, w)
                maps.append(torch.cat([patch, t[:, :1].transpose(1, 2).unsqueeze(-1).expand_as(patch)], 1))
            return maps

    def padded_side(self) -> int:
        """The tile side after centre padding (518 for 512 at patch 14)."""
        k = int(self.cfg.token_stride)
        return -(-int(self.cfg.sat_size) // k) * k

    def bev_geometry(self, level: int, sat_side: int) -> tuple[int, float]:
        """(BEV grid side S, BEV cell in input pixels) at ``level`` for a satellite map of ``sat_side`` cells."""
        if self.cfg.grid_scale == "official":
            return int(self.cfg.sat_size) // 2 ** (3 - level), float(2 ** (3 - level))
        return sat_side, self.padded_side() / sat_side

    # -- projection, templates and correlations --------------------------------------------------------------------
    def _grid(self, side: int, hw: tuple[int, int], cell_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (side, hw, tuple(cell_m.tolist()), float(self.cfg.camera_height), str(cell_m.device))
        if key not in self._grids:
            if len(self._grids) > 32:
                self._grids.clear()
            self._grids[key] = bev_sampling_grid(side, hw[0], hw[1], cell_m, self.cfg.camera_height,
                                                 cell_m.device)
        return self._grids[key]

    def project(self, maps: torch.Tensor, side: int, cell_m: torch.Tensor) -> torch.Tensor:
        """Panorama maps (B, C, H, W) on the ground grid (B, C, side, side) around the camera (zero outside)."""
        grid, valid = self._grid(side, tuple(maps.shape[-2:]), cell_m)
        out = F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
        return out * valid[:, None].to(out.dtype)

    def resized_masks(self, mask: np.ndarray | torch.Tensor, sizes: dict[int, tuple[int, int]], device=None,
                      channels: int = 1) -> dict[int, torch.Tensor]:
        """The official student mask per level: the uint8 (B, H, W, 3) (or (B, H, W)) mask resized to each ground
        map size (h, w) as cv2 INTER_LINEAR does, as float (B, ``channels``, h, w) (the official uses channel 0)."""
        m = mask.detach().cpu().numpy() if torch.is_tensor(mask) else np.asarray(mask)
        m = m.astype(np.uint8)
        if m.ndim == 3:
            m = np.repeat(m[..., None], 3, -1)
        out = {}
        for lv, (h, w) in sizes.items():
            r = cv2_linear_resize(m, (w, h))[..., :channels]
            out[lv] = torch.from_numpy(np.ascontiguousarray(r.astype(np.float32))).permute(0, 3, 1, 2).to(device)
        return out

    def encode(self, aerial: torch.Tensor | None, ground: torch.Tensor | None, mpp: torch.Tensor,
               mask: np.ndarray | torch.Tensor | None = None, aerial_maps: dict[int, torch.Tensor] | None = None,
               ground_tokens: list[torch.Tensor] | None = None, levels: tuple[int, ...] | None = None,
               aerial_tokens: list[torch.Tensor] | None = None) -> dict[str, Any]:
        """Satellite maps (``aerial``), ground maps, projected and cropped ground maps (``projected``), templates
        (``template``: the projected maps, times the student's projected mask ``conf`` when ``mask`` is given).

        ``aerial`` (B, 3, S, S) and ``ground`` (B, 3, H, W) in [0, 1] (a masked panorama for the student);
        ``mpp`` (B,) metres per tile pixel at ``sat_size``; ``mask`` the uint8 (B, H, W[, 3]) visibility mask of
        the student (None: the teacher). ``aerial_maps`` / ``ground_tokens`` reuse what is already computed."""
        levels = tuple(levels or self.cfg.levels)
        if aerial_maps is None:
            aerial_maps = self.aerial_head(aerial_tokens if aerial_tokens is not None else self.tokens(aerial), levels)
        gmaps = self.ground_head(ground_tokens if ground_tokens is not None else self.tokens(ground), levels)
        device = gmaps[levels[0]].device
        masks = None
        if mask is not None:
            masks = self.resized_masks(mask, {lv: tuple(gmaps[lv].shape[-2:]) for lv in levels}, device)
        tmpl, conf, projected = {}, {}, {}
        for lv in levels:
            a = aerial_maps[lv].shape[-1]
            side, cell_px = self.bev_geometry(lv, a)
            cell_m = mpp.float().reshape(-1) * cell_px
            crop = int(self.cfg.crop_frac * a)
            g = projected[lv] = centre_crop(self.project(gmaps[lv], side, cell_m), crop)
            if masks is not None:
                m = centre_crop(self.project(masks[lv], side, cell_m), crop)
                g, conf[lv] = g * m, m
            tmpl[lv] = g
        return {"aerial": aerial_maps, "ground": gmaps, "template": tmpl, "projected": projected,
                "conf": conf if masks is not None else None}

    def _dtype(self) -> torch.dtype:
        return torch.float64 if self.cfg.corr_dtype == "float64" else torch.float32

    def distances(self, enc: dict[str, Any]) -> dict[int, torch.Tensor]:
        """d = 2 − 2·cos per template position (B, n, n) at every level (teacher, or student with its mask)."""
        out = {}
        for lv, t in enc["template"].items():
            conf = enc["conf"][lv] if enc["conf"] else None
            num, den = cosine_map(enc["aerial"][lv], t, conf, dtype=self._dtype())
            out[lv] = (2 - 2 * (num / den)).to(t.dtype)
        return out

    def batch_distances(self, enc: dict[str, Any], eps: float = 1e-6) -> dict[int, torch.Tensor]:
        """d of every satellite m against every template n (M, N, n, n), den clamped at ``eps`` (teacher)."""
        out = {}
        for lv, t in enc["template"].items():
            num, den = cosine_map(enc["aerial"][lv], t, None, all_pairs=True, dtype=self._dtype())
            out[lv] = (2 - 2 * num / den.clamp(min=eps)).to(t.dtype)
        return out

    def cosine(self, enc: dict[str, Any], level: int | None = None) -> torch.Tensor:
        """The validation map: cosine (B, n, n) at the last level (official ``calc_corr_for_val``)."""
        lv = self.cfg.levels[-1] if level is None else level
        conf = enc["conf"][lv] if enc["conf"] else None
        num, den = cosine_map(enc["aerial"][lv], enc["template"][lv], conf, dtype=self._dtype())
        return (num / den).to(enc["template"][lv].dtype)

    # -- read-outs -----------------------------------------------------------------------------------------------
    def readout(self, cos: torch.Tensor, mpp: torch.Tensor, scale: str | None = None) -> dict[str, torch.Tensor]:
        """Argmax of the cosine map (first maximum, row-major) → ``index``, official pixels ``u_px``/``v_px``
        (index − n/2, x right / y down, at the last level) and metres ``u_m``/``v_m`` by ``scale`` (default the
        config's ``metre_scale``); ``peak`` = the maximum cosine."""
        b, n1, n2 = cos.shape
        flat = cos.reshape(b, -1)
        idx = flat.argmax(1)
        peak = flat.gather(1, idx[:, None])[:, 0]
        row, col = idx // n2, idx % n2
        u_px, v_px = col.to(torch.float32) - n2 / 2, row.to(torch.float32) - n1 / 2
        mpp = mpp.to(torch.float32).reshape(-1)
        lv = self.cfg.levels[-1]
        scale = scale or self.cfg.metre_scale
        a = self._sat_side(lv)
        if scale == "eval3dof":
            k = 2.0 ** (3 - lv) * mpp
            u_m, v_m = u_px * k, v_px * k
        elif scale == "trainval":
            k = float(self.cfg.sat_size) / a * mpp
            u_m, v_m = u_px * k, v_px * k
        else:
            side, _ = self.bev_geometry(lv, a)
            crop = int(self.cfg.crop_frac * a)
            cam = side / 2 - 0.5 - int(round((side - crop) / 2.0))  # the camera's cell inside the template
            k = self.padded_side() / a * mpp
            u_m = (col.to(torch.float32) + cam - (a - 1) / 2) * k
            v_m = (row.to(torch.float32) + cam - (a - 1) / 2) * k
        return {"index": idx, "u_px": u_px, "v_px": v_px, "u_m": u_m, "v_m": v_m, "peak": peak}

    def position_metres(self, level: int, n: int, mpp: torch.Tensor) -> torch.Tensor:
        """East/north metres (B, n, n, 2) of the camera for each template position of an n × n map at ``level``
        (the exact geometry: satellite map pitch and the camera's cell in the template)."""
        a = self._sat_side(level)
        side, _ = self.bev_geometry(level, a)
        crop = int(self.cfg.crop_frac * a)
        cam = side / 2 - 0.5 - int(round((side - crop) / 2.0))
        k = (self.padded_side() / a * mpp.to(torch.float32).reshape(-1)).view(-1, 1, 1)
        idx = torch.arange(n, dtype=torch.float32, device=mpp.device) + cam - (a - 1) / 2
        east = idx.view(1, 1, -1) * k
        north = -idx.view(1, -1, 1) * k
        return torch.stack([east.expand(-1, n, n), north.expand(-1, n, n)], -1)

    def _sat_side(self, level: int) -> int:
        """The satellite map side at ``level`` (2^(l+1) × the token grid)."""
        return self.padded_side() // int(self.cfg.token_stride) * 2 ** (level + 1)

    # -- orientation -------------------------------------------------------------------------------------------
    def orientation_logits(self, aerial: torch.Tensor, bev: torch.Tensor, raw: bool = False) -> torch.Tensor:
        """Orientation logits (B, classes) of tiles and spherical-transform views (B, 3, S, S) in [0, 1] (or, with
        ``raw``, already in the estimator's input scale, e.g. the official [0, 255] floats)."""
        if self.orienter is None:
            raise ConfigError(f"{self.cfg.name}: built without the orientation estimator (orientation=False)")
        if not raw:
            cfg = self.cfg
            aerial = normalize(aerial, cfg.ori_mean, cfg.ori_std, cfg.ori_scale)
            bev = normalize(bev, cfg.ori_mean, cfg.ori_std, cfg.ori_scale)
        return self.orienter(aerial, bev)

    def make_bev(self, ground: torch.Tensor) -> torch.Tensor:
        """HC-Net's spherical-transform view (B, 3, S, S) of panoramas in [0, 1] (its uint8 truncation kept)."""
        from crossview.geometry.spherical import hcnet_bev

        return hcnet_bev(ground, int(self.cfg.sat_size), float(self.cfg.ori_bev_fov_deg), True)

    def yaw_labels(self, yaw_deg: torch.Tensor) -> torch.Tensor:
        """Class labels of estimator yaws (degrees): official ⌊(yaw + R)/2R · (K − 1)⌋, consistent ⌊(yaw + R)·K/2R⌋."""
        r, k = float(self.cfg.ori_range_deg), int(self.cfg.ori_classes)
        if self.cfg.ori_bins == "official":
            lab = torch.floor((yaw_deg + r) / (2 * r) * (k - 1))
        else:
            lab = torch.floor((yaw_deg + r) / (2 * r) * k)
        return lab.long().clamp(0, k - 1)

    def decode_yaw(self, logits: torch.Tensor) -> torch.Tensor:
        """Estimator yaw (B,) degrees: official argmax − R (1° per bin), consistent the bin centre."""
        r, k = float(self.cfg.ori_range_deg), int(self.cfg.ori_classes)
        i = logits.argmax(1).to(torch.float32)
        return i - r if self.cfg.ori_bins == "official" else (i + 0.5) * (2 * r / k) - r

    def orientation_loss(self, aerial: torch.Tensor, ground: torch.Tensor,
                         yaw_deg: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The official estimator loss: cross-entropy against a Gaussian (σ = 1 bin) around the yaw's label.
        ``ground`` is the panorama as the estimator sees it; ``yaw_deg`` its official label angle (its centre
        column looks at −yaw from the tile's north; ``predict`` turns it by +yaw)."""
        logits = self.orientation_logits(aerial, self.make_bev(ground))
        k = logits.shape[1]
        lab = self.yaw_labels(yaw_deg.to(logits.device))
        bins = torch.arange(k, device=logits.device, dtype=torch.float32)
        soft = torch.exp(-0.5 * (bins[None] - lab[:, None].float()) ** 2)
        soft = soft / soft.sum(1, keepdim=True)
        ce = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
        err = (self.decode_yaw(logits.detach()) - yaw_deg.to(logits.device)).abs().mean()
        return ce, {"ori_loss": float(ce.detach()), "ori_err_deg": float(err)}

    # -- batches (crossview.fine.data layout) ---------------------------------------------------------------------
    def _mpp(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["tile_m"].to(torch.float32).reshape(-1) / float(self.cfg.sat_size)

    def _check(self, batch: dict[str, Any]) -> None:
        kinds = set(batch.get("camera") or ["panorama"])
        if kinds != {"panorama"}:
            raise ConfigError(f"GeoDistill projects panoramas onto the ground plane; got camera kinds {sorted(kinds)}")
        (ph, pw), s = self.input_sizes()
        if tuple(batch["ground"].shape[-2:]) != (ph, pw) or tuple(batch["aerial"].shape[-2:]) != (s, s):
            raise ConfigError(f"{self.cfg.name} expects {ph}×{pw} panoramas and {s}×{s} "
                              f"tiles, got {tuple(batch['ground'].shape[-2:])} and "
                              f"{tuple(batch['aerial'].shape[-2:])} (use model.input_sizes() in the loader)")

    def column_mask_image(self, column_mask: torch.Tensor, height: int) -> np.ndarray:
        """A (B, W) column visibility mask as the official uint8 (B, H, W, 3) mask image."""
        m = (column_mask.detach().cpu().numpy() > 0.5).astype(np.uint8)
        return np.ascontiguousarray(np.broadcast_to(m[:, None, :, None], (m.shape[0], height, m.shape[1], 3)))

    def encode_batch(self, batch: dict[str, Any], column_mask: torch.Tensor | None = None,
                     tokens: dict[str, list[torch.Tensor]] | None = None) -> dict[str, Any]:
        """``encode`` of a batch; with ``column_mask`` (B, W) (1 = visible) the panorama's hidden columns are zeroed
        and the mask projected, as the student sees it. ``tokens`` ({"aerial", "ground"}: the frozen encoder's
        outputs, shared by teacher and student) skips the encoder."""
        ground, mask = batch["ground"], None
        tokens = tokens or {}
        ground_tokens = tokens.get("ground")
        if column_mask is not None:
            ground = ground * (column_mask[:, None, None, :] > 0.5).to(ground.dtype)
            mask = self.column_mask_image(column_mask, ground.shape[-2])
            ground_tokens = tokens.get("masked_ground")
        return self.encode(batch["aerial"], ground, self._mpp(batch), mask, ground_tokens=ground_tokens,
                           aerial_tokens=tokens.get("aerial"))

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], heading_prior: Any = None,
                refine_heading: bool = False) -> dict[str, torch.Tensor]:
        """Poses of a batch: ``xy`` (B, 2) metres east/north of the tile centre, ``heading`` (B,), ``confidence``
        (B,) = the peak cosine clamped to [0, 1], the official ``pixel`` read-out and the ``cosine`` map.

        ``heading_prior`` (B,) or float: the panorama is rolled so the believed north is its centre column and
        localized as if north-aligned (the paper's known-orientation setting; with ``refine_heading`` the estimator
        then corrects the heading within ±``ori_range_deg``). None: the estimator predicts the yaw of the panorama
        as given (assumed within ±45° of north, as ``eval_3dof_vigor.py``), the panorama is rolled back by it, then
        localized. ``batch["fov_mask"]`` (B, W), when present, marks the visible columns of limited-FoV panoramas
        (the rest is zeroed and masked as for the student)."""
        from crossview.fine.data import rotate_to_prior

        self._check(batch)
        n = batch["aerial"].shape[0]
        dev = batch["aerial"].device
        heading = torch.zeros(n, device=dev)
        if heading_prior is not None:
            prior = torch.as_tensor(heading_prior, dtype=torch.float32, device=dev).reshape(-1).expand(n).clone()
            batch, applied = rotate_to_prior(batch, prior)
            heading = prior
        if (heading_prior is None or refine_heading) and self.orienter is not None:
            yaw = self.decode_yaw(self.orientation_logits(batch["aerial"], self.make_bev(batch["ground"])))
            # the official np.roll(pano, −int(yaw/360·W)): truncated, as the released weights were trained
            rolled = [roll_panorama(g, float(y), "toward_zero") for g, y in zip(batch["ground"], yaw)]
            batch = dict(batch, ground=torch.stack([g for g, _ in rolled]))
            heading = heading - torch.tensor([a for _, a in rolled], dtype=torch.float32, device=dev)
        enc = self.encode_batch(batch, batch.get("fov_mask"))
        cos = self.cosine(enc)
        r = self.readout(cos, self._mpp(batch))
        xy = torch.stack([r["u_m"], -r["v_m"]], -1)
        return {"xy": xy, "heading": torch.remainder(heading, 360.0), "confidence": r["peak"].clamp(0, 1),
                "pixel": torch.stack([r["u_px"], r["v_px"]], -1), "cosine": cos}

    def loss(self, batch: dict[str, Any], generator: torch.Generator | None = None,
             tokens: dict[str, list[torch.Tensor]] | None = None) -> tuple[torch.Tensor, dict]:
        """The weakly supervised objective (G2SWeakly's batch contrastive loss, mean over levels) on a batch whose
        panoramas have distinct positive tiles; no position label is read (``err_m`` is logged only). ``tokens``:
        the frozen encoder's outputs when already computed (``encode_batch``)."""
        self._check(batch)
        enc = self.encode_batch(batch, tokens=tokens)
        bd = self.batch_distances(enc)
        per = [g2s_weakly_loss(d.flatten(2).amin(2), self.cfg.contrastive_scale) for d in bd.values()]
        total = torch.stack(per).mean()
        parts: dict[str, Any] = {"contrastive": float(total.detach())}
        if self.cfg.gps_weight:
            gps = self.gps_loss(bd, batch, generator)
            parts["gps"] = float(gps.detach())
            total = total + self.cfg.gps_weight * gps
        parts["loss"] = float(total.detach())
        with torch.no_grad():
            lv = self.cfg.levels[-1]
            b = bd[lv].shape[0]
            cos = 1 - torch.diagonal(bd[lv], dim1=0, dim2=1).permute(2, 0, 1) / 2
            r = self.readout(cos.reshape(b, *bd[lv].shape[-2:]), self._mpp(batch))
            xy = torch.stack([r["u_m"], -r["v_m"]], -1)
            parts["err_m"] = float((xy - batch["xy"].to(xy.device)).norm(dim=-1).mean())
        return total, parts

    def gps_loss(self, batch_d: dict[int, torch.Tensor], batch: dict[str, Any],
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """G2SWeakly's optional noisy-GPS term, mean over levels: |min of the positive map within ``gps_radius_m`` of
        the noisy GPS − its global min|; the GPS is the true position plus an error uniform in a disc of
        ``gps_noise_m`` drawn from ``generator``."""
        xy = batch["xy"].to(torch.float32)
        r = torch.rand(xy.shape[0], generator=generator).sqrt() * float(self.cfg.gps_noise_m)
        a = torch.rand(xy.shape[0], generator=generator) * _TWO_PI
        gps = xy + torch.stack([r * torch.cos(a), r * torch.sin(a)], -1).to(xy.device)
        mpp = self._mpp(batch).to(xy.device)
        out = []
        for lv, d in batch_d.items():
            pos = torch.diagonal(d, dim1=0, dim2=1).permute(2, 0, 1)  # (B, n, n)
            where = self.position_metres(lv, pos.shape[-1], mpp)
            near = (where - gps[:, None, None]).norm(dim=-1) <= float(self.cfg.gps_radius_m)
            inside = torch.where(near, pos, torch.full_like(pos, float("inf"))).flatten(1).amin(1)
            inside = torch.where(torch.isinf(inside), pos.flatten(1).amax(1), inside)
            out.append((inside - pos.flatten(1).amin(1)).abs().mean())
        return torch.stack(out).mean()

    def distill_loss(self, teacher_enc: dict[str, Any], student_enc: dict[str, Any]) -> torch.Tensor:
        """Mean over levels of ``distillation_loss`` between the teacher's and the student's distance maps."""
        tau_t, tau_s = self.cfg.temperature
        dt, ds = self.distances(teacher_enc), self.distances(student_enc)
        return torch.stack([distillation_loss(dt[lv].detach(), ds[lv], tau_t, tau_s) for lv in dt]).mean()

    def official_param_counts(self) -> dict[str, int]:
        """Parameters per official component: localization net (both DPTs), the encoder (DINOv2), the orientation
        estimator."""
        count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
        return {"localization_net": count(self.aerial_head) + count(self.ground_head), "encoder": count(self.encoder),
                "orientation_estimator": count(self.orienter)}



@torch.no_grad()
def evaluate_limited_fov(model: GeoDistill, samples: list, fov_deg: float, seed: int = 0,
                         device: str | torch.device = "cpu", batch_size: int = 8) -> dict[str, Any]:
    """Known-orientation metrics on panoramas that keep a ``fov_deg`` block of azimuth (the rest zeroed and masked as
    for the student). The blocks are drawn as ``crossview.fine.planecorr.evaluate_limited_fov`` draws them (per
    sample in order: start = uniform(−180, 180), then the FoV, from ``random.Random(seed)``), so both designs see
    the same azimuths."""
    import random

    from crossview.fine.data import FineDataset, collate
    from crossview.fine.metrics import fine_metrics
    from crossview.geometry.cameras import fov_mask

    model.eval()
    rng = random.Random(seed)
    (ph, pw), s = model.input_sizes()
    ds = FineDataset(samples, (ph, pw), s)
    preds, truth = [], []
    for start in range(0, len(ds), batch_size):
        b = collate([ds[i] for i in range(start, min(len(ds), start + batch_size))])
        b = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
        masks = [fov_mask(pw, rng.uniform(-180, 180), rng.uniform(fov_deg, fov_deg), device) for _ in b["xy"]]
        p = model.predict(dict(b, fov_mask=torch.stack(masks)), heading_prior=b["heading"])
        preds.append(p["xy"].cpu())
        truth.append(b["xy"].cpu())
    m = fine_metrics(torch.cat(preds).numpy(), torch.cat(truth).numpy())
    m["fov_deg"] = float(fov_deg)
    return m

