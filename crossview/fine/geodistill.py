"""GeoDistill (Tong et al., ICCV 2025): geometry-guided self-distillation on a heatmap localizer.

FINE_SPEC 2.4 and the CCVPE variant of the paper (mask applied to the ground descriptor):
- base localizer (CCVPE-like output, G2SWeakly-like geometry): ground features are projected onto the ground
  plane (camera height from the sample) into a camera-centred BEV; its central part is a template whose cosine
  similarity with the aerial feature map at every position, refined by a small decoder, gives a heatmap over the
  aerial tile. Trained with CCVPE's loss: cross-entropy against a normalised Gaussian at the true position.
- distillation: a frozen copy (the teacher, EMA-updated every ``ema_every`` steps with α = 0.9) sees the full
  panorama; the student sees it with a contiguous azimuth block hidden (visible FoV drawn in [180°, 240°)); the
  mask is applied to the ground feature columns and projected to the BEV template. Loss: cross-entropy of the
  student's heatmap distribution against the teacher's (temperatures ``tau_teacher``/``tau_student``). No
  position labels are used in this stage.
- orientation estimator: the aerial features and the BEV of a panorama rolled by up to ±45° feed a small CNN +
  MLP classifying the yaw into 90 one-degree bins, trained with Gaussian soft labels (σ = 1 bin); at test the
  panorama is rolled back by the predicted yaw before localizing.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from crossview.fine.fg2 import IMAGENET_MEAN, IMAGENET_STD, Backbone, _conv_block, _nocirc
from crossview.geometry.bev import bev_grid, ground_plane_grid, warp_to_bev


@dataclass
class GeoDistillConfig:
    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    freeze_backbone: bool = True
    out_indices: tuple[int, ...] = (1, 2)
    backbone_kwargs: dict = field(default_factory=dict)  # e.g. {"dynamic_img_size": True} for DINOv2 at any size
    ground_size: tuple[int, int] = (128, 256)
    aerial_size: int = 128
    bev_cells: int = 32  # aerial feature grid and BEV grid (cells over the tile side)
    template_frac: float = 0.5  # side of the template / side of the BEV (G2SWeakly: central 40 %)
    feat_dim: int = 64
    heatmap_scale: int = 2  # heatmap resolution = bev_cells × this
    sigma_px: float = 1.0  # Gaussian of the target at heatmap resolution
    ori_bins: int = 90
    ori_range_deg: float = 45.0
    orientation_mode: str = "classifier"  # classifier (GeoDistill's estimator) | search (heatmap peak over yaws)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> GeoDistillConfig:
        d = dict(d)
        for k in ("out_indices", "ground_size", "mean", "std"):
            if k in d and d[k] is not None:
                d[k] = tuple(d[k])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            from crossview.errors import ConfigError

            raise ConfigError(f"unknown GeoDistill model keys {sorted(unknown)}")
        return cls(**d)


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


class GeoDistill(nn.Module):
    def __init__(self, cfg: GeoDistillConfig | dict | None = None):
        super().__init__()
        cfg = cfg if isinstance(cfg, GeoDistillConfig) else GeoDistillConfig.from_dict(cfg or {})
        self.cfg = cfg
        self.backbone = Backbone(cfg.backbone, cfg.out_indices, cfg.pretrained, cfg.freeze_backbone,
                                 cfg.backbone_kwargs)
        c, d = self.backbone.channels, cfg.feat_dim
        self.ground_in = nn.Conv2d(c, d, 1)
        self.ground_block = _conv_block(d, d, circular=True)
        self.aerial_in = nn.Conv2d(c, d, 1)
        self.aerial_block = _conv_block(d, d)
        self.decoder = nn.Sequential(nn.Conv2d(d + 1, d, 3, 1, 1), nn.GELU(), nn.Conv2d(d, 1, 3, 1, 1))
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))  # cosine -> logits
        self.orienter = OrientationEstimator(d, cfg.bev_cells, cfg.ori_bins)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)
        self._grids: dict = {}

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone((images - self.mean) / self.std)

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
        f = f + (self.ground_block(f) if circular else _nocirc(self.ground_block, f))
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

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        out = self.forward(batch)
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
    def predict(self, batch: dict, estimate_orientation: bool = False) -> dict:
        heading = batch["heading"].clone() if "heading" in batch else torch.zeros(len(batch["tile_m"]))
        if estimate_orientation and "ground" in batch:
            from crossview.geometry.cameras import roll_panorama

            yaw = self.search_yaw(batch) if self.cfg.orientation_mode == "search" else self.predict_yaw(batch)
            ground, applied = [], []
            for k in range(len(yaw)):
                g, a = roll_panorama(batch["ground"][k], -float(yaw[k]))
                ground.append(g)
                applied.append(a)
            batch = dict(batch, ground=torch.stack(ground))
            heading = -torch.tensor(applied, device=yaw.device)
        logits = self.forward(batch)["logits"]
        xy, conf = self.decode(logits, batch["tile_m"])
        return {"xy": xy, "heading": torch.remainder(heading, 360.0), "confidence": conf, "logits": logits}


def fov_column_mask(batch_size: int, width: int, fov_range, rng: random.Random, device) -> torch.Tensor:
    """(B, W) masks of contiguous visible azimuth blocks, FoV uniform in ``fov_range`` and a random start."""
    from crossview.geometry.cameras import fov_mask

    return torch.stack([fov_mask(width, rng.uniform(-180, 180), rng.uniform(*fov_range), device)
                        for _ in range(batch_size)])


def train_geodistill(model: GeoDistill, cfg, samples, bank, out, log, device, rng, data) -> None:
    """Base (supervised heatmap) → checkpoint ``base.pt``; a same-length supervised control; distillation;
    the orientation estimator. Evaluates each and logs the comparison."""
    from crossview.fine.data import read_samples
    from crossview.fine.train import evaluate, make_batch, save_checkpoint

    test = read_samples(data, cfg["area"], "test", cfg["camera"], cfg["label_set"], cfg["eval_limit"])
    everyone = list(range(len(samples)))
    labelled = everyone
    if cfg.get("labelled_limit"):  # semi-supervised: labels for a seeded subset, the rest only for distillation
        n = min(int(cfg["labelled_limit"]), len(samples))
        labelled = sorted(random.Random(cfg["seed"] + 7).sample(everyone, n))
        log(f"labelled subset: {n} of {len(samples)} training samples (base and control); distillation uses all "
            "of them without their labels")

    def batches(pool=None):
        pool = labelled if pool is None else pool
        order: list[int] = []
        while True:
            while len(order) < cfg["batch_size"]:
                order += rng.sample(pool, len(pool))
            idx, order[:] = order[:cfg["batch_size"]], order[cfg["batch_size"]:]
            yield make_batch(samples, idx, bank, model, cfg["camera"], 0.0, rng, device)

    def supervised(net, steps, tag):
        opt = torch.optim.AdamW([p for n_, p in net.named_parameters() if p.requires_grad
                                 and not n_.startswith("orienter")], lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        net.train()
        gen, t0 = batches(), time.time()
        for step in range(1, steps + 1):
            loss, logs = net.loss(next(gen))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg["grad_clip"])
            opt.step()
            if step % 20 == 0 or step == steps:
                log({"stage": tag, "step": step, "time_s": round(time.time() - t0, 1), **logs})

    def masked_eval(net, fov):
        return evaluate_limited_fov(net, test, fov, cfg["eval_seed"], device)

    results = {}
    supervised(model, int(cfg["base_steps"]), "base")
    save_checkpoint(out, model, cfg, int(cfg["base_steps"]))
    (out / "checkpoint.pt").replace(out / "base.pt")
    results["base"] = evaluate(model, test, dict(cfg, orientation="known"), device)
    results["base_fov180"] = masked_eval(model, 180.0)
    log({"stage": "base", **{f"eval_{k}": v for k, v in results["base"].items()}})
    base_state = copy.deepcopy(model.state_dict())

    n_distill = int(cfg["distill_steps"])
    if n_distill:
        control = copy.deepcopy(model)
        supervised(control, n_distill, "control")  # the base trained as long as base + distillation
        results["base_same_length"] = evaluate(control, test, dict(cfg, orientation="known"), device)
        results["base_same_length_fov180"] = masked_eval(control, 180.0)
        log({"stage": "control", **{f"eval_{k}": v for k, v in results["base_same_length"].items()}})
        del control
        model.load_state_dict(base_state)
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        opt = torch.optim.AdamW([p for n_, p in model.named_parameters() if p.requires_grad
                                 and not n_.startswith("orienter")], lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        model.train()
        gen, t0 = batches(everyone), time.time()  # labels are not read below: the teacher's output is the target
        for step in range(1, n_distill + 1):
            b = next(gen)
            with torch.no_grad():
                t_logits = teacher(b)["logits"]
            width = b["ground_feat"].shape[-1] if "ground_feat" in b else model.features(b["ground"]).shape[-1]
            mask = fov_column_mask(len(b["tile_m"]), width, cfg["fov_range_deg"], rng, device)
            s_logits = model(b, column_mask=mask)["logits"]
            p_t = torch.softmax(t_logits.flatten(1) / cfg["tau_teacher"], 1)
            loss = -(p_t * torch.log_softmax(s_logits.flatten(1) / cfg["tau_student"], 1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            opt.step()
            if step % cfg["ema_every"] == 0:
                with torch.no_grad():
                    for pt, ps in zip(teacher.parameters(), model.parameters(), strict=True):
                        pt.mul_(cfg["ema_alpha"]).add_(ps.detach(), alpha=1 - cfg["ema_alpha"])
            if step % 20 == 0 or step == n_distill:
                log({"stage": "distill", "step": step, "time_s": round(time.time() - t0, 1),
                     "distill_loss": float(loss.detach())})
        results["student"] = evaluate(model, test, dict(cfg, orientation="known"), device)
        results["student_fov180"] = masked_eval(model, 180.0)
        results["teacher"] = evaluate(teacher, test, dict(cfg, orientation="known"), device)
        log({"stage": "student", **{f"eval_{k}": v for k, v in results["student"].items()}})

    n_ori = int(cfg["orientation_steps"])
    if n_ori:
        params = list(model.orienter.parameters())
        opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=1e-4)
        gen, t0 = batches(), time.time()
        model.train()
        for step in range(1, n_ori + 1):
            b = next(gen)
            yaws = []
            if "ground_feat" in b:
                w = b["ground_feat"].shape[-1]
                for k in range(len(yaws), b["ground_feat"].shape[0]):
                    yaw = rng.uniform(-cfg["orientation_range_deg"], cfg["orientation_range_deg"])
                    b["ground_feat"][k] = roll_columns(b["ground_feat"][k], -yaw / 360.0 * w)
                    yaws.append(yaw)
            loss, logs = model.orientation_loss(b, torch.tensor(yaws, device=device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 20 == 0 or step == n_ori:
                log({"stage": "orientation", "step": step, "time_s": round(time.time() - t0, 1), **logs})
    save_checkpoint(out, model, cfg, int(cfg["base_steps"]) + n_distill, {"results": results})
    from crossview.io import write_json_atomic

    write_json_atomic(out / "geodistill_results.json", results)


@torch.no_grad()
def evaluate_limited_fov(model: GeoDistill, samples, fov_deg: float, seed: int, device) -> dict:
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
