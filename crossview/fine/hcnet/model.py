"""The published HC-Net model (update CNN, corner homographies -> model) and its official loss."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossview.errors import ConfigError
from crossview.fine.backbones import Backbone
from crossview.fine.hcnet.config import CAMERAS, HCNetConfig
from crossview.fine.preprocess import normalize
from crossview.geometry.cameras import roll_panorama
from crossview.geometry.homography import dlt, transform_points

__all__ = ["HCNet", "UpdateCNN", "corner_homography", "official_loss", "yaw_from_points"]


class UpdateCNN(nn.Module):
    """Window + flow (B, Cin, n, n) -> four-corner displacement update (B, 2, 2, 2).

    ``down.i`` = conv 3×3 – GroupNorm(hidden/8) – ReLU – maxpool 2 (n -> 2), ``head`` = conv 3×3 – GN – ReLU –
    conv 1×1 -> 2 (official ``layer1/3/4`` and ``layer10``; same indices inside each)."""

    def __init__(self, cin: int, hidden: int, size: int):
        super().__init__()
        pools = int(round(math.log2(size / 2))) if size >= 2 else -1
        if pools < 0 or 2 * 2**pools != size:
            raise ConfigError(f"HC-Net needs a square feature map whose side is a power of two >= 2, got {size}")
        self.down = nn.ModuleList()
        for i in range(pools):
            self.down.append(nn.Sequential(nn.Conv2d(cin if i == 0 else hidden, hidden, 3, padding=1),
                                           nn.GroupNorm(hidden // 8, hidden), nn.ReLU(), nn.MaxPool2d(2, 2)))
        self.head = nn.Sequential(nn.Conv2d(hidden if pools else cin, hidden, 3, padding=1),
                                  nn.GroupNorm(hidden // 8, hidden), nn.ReLU(), nn.Conv2d(hidden, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.down:
            x = layer(x)
        return self.head(x)


def corner_points(side: float, batch: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Corners (B, 4, 2) in HC-Net's order TL, TR, BL, BR at 0 and ``side`` (= size − 1)."""
    c = torch.tensor([[0.0, 0.0], [side, 0.0], [0.0, side], [side, side]], dtype=dtype, device=device)
    return c.expand(batch, 4, 2)


def displacement_points(disp: torch.Tensor) -> torch.Tensor:
    """The network layout (B, 2 = x/y, 2 = corner row, 2 = corner column) -> (B, 4, 2) in TL, TR, BL, BR order."""
    return disp.flatten(2).transpose(1, 2)


def corner_homography(disp: torch.Tensor, side: float, scale: float = 1.0) -> torch.Tensor:
    """H (B, 3, 3) moving the corners 0 … ``side`` by ``disp / scale`` (the official 4-point DLT, h33 = 1)."""
    src = corner_points(side, disp.shape[0], disp.dtype, disp.device)
    return dlt(src, src + displacement_points(disp) / scale)


def yaw_from_points(p0: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
    """HC-Net's yaw read-out −degrees(atan2(x₁ − x₀, y₀ − y₁)) for mapped points (…, 2)."""
    return -torch.rad2deg(torch.atan2(p1[..., 0] - p0[..., 0], p0[..., 1] - p1[..., 1]))


class HCNet(nn.Module):
    """The published HC-Net; ``forward`` takes the view and the tile, ``predict`` / ``loss`` take batches.

    Built from an ``HCNetConfig`` or its plain dict (``crossview.fine.fine_config("hcnet_vigor", ...)``): ``cfg`` is
    the typed config, ``config`` the dict saved with every checkpoint.
    """

    cameras = CAMERAS

    def __init__(self, cfg: HCNetConfig | dict[str, Any]):
        super().__init__()
        # typed and immutable: what the code reads; the plain dict checkpoints store (save_fine)
        self.cfg, self.config = HCNetConfig.resolve(cfg)
        cfg = self.cfg
        block = int(cfg.feature_block)
        kw = dict(weights=cfg.weights, freeze=bool(cfg.freeze_backbone), keep_unused=bool(cfg.keep_unused))
        self.bev_encoder = Backbone(cfg.backbone, [block], **kw)
        self.aerial_encoder = Backbone(cfg.backbone, [block], **kw)
        self.stride = self.aerial_encoder.strides[0]
        s = int(cfg.image_size)
        if s % self.stride:
            raise ConfigError(f"hcnet image_size {s} is not a multiple of the feature stride {self.stride}")
        self.cells = s // self.stride
        self.radius, self.levels = int(cfg.corr_radius), int(cfg.corr_levels)
        cin = self.levels * (2 * self.radius + 1) ** 2 + 2
        self.update = UpdateCNN(cin, int(cfg.hidden), self.cells)

    def input_sizes(self, camera: str = "panorama") -> tuple[tuple[int, int], int]:
        """(panorama (H, W), tile side) the data loader should produce."""
        return tuple(self.cfg.pano_size), int(self.cfg.image_size)

    # -- geometry helpers -----------------------------------------------------------------------------------------
    @property
    def centre_px(self) -> float:
        c = self.cfg.centre_px
        return float(self.cfg.image_size // 2 if c is None else c)

    def probe_px(self, kind: str = "eval") -> float:
        return float(getattr(self.cfg, f"{kind}_probe_px")) * self.cfg.image_size / 512.0

    def make_bev(self, panorama: torch.Tensor, heading_prior_deg=None) -> torch.Tensor:
        """The top-down view (B, 3, S, S) of panoramas in [0, 1] whose centre column is believed to look along
        ``heading_prior_deg`` ((B,) or float; None = north-aligned): each panorama is first rolled by whole
        columns so that the believed north sits in its centre (as the official loader applies its orientation
        noise), then resized to ``pano_size`` and warped by the official spherical transform."""
        from crossview.geometry.spherical import hcnet_bev

        cfg = self.cfg
        if heading_prior_deg is not None:
            prior = torch.as_tensor(heading_prior_deg, dtype=torch.float32).reshape(-1).tolist()
            if len(prior) == 1 and panorama.shape[0] > 1:
                prior = prior * panorama.shape[0]
            panorama = torch.stack([roll_panorama(p, -h)[0] for p, h in zip(panorama, prior)])
        ph, pw = cfg.pano_size or panorama.shape[-2:]
        if tuple(panorama.shape[-2:]) != (ph, pw):
            panorama = F.interpolate(panorama, size=(ph, pw), mode="bilinear", align_corners=False, antialias=True)
        return hcnet_bev(panorama, cfg.image_size, cfg.bev_fov_deg, cfg.bev_quantize)

    def _lookup(self, pyramid: list[torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
        """Windows of the pyramid around ``coords`` (B, 2, n, n) feature pixels -> (B, L·(2r+1)², n, n)."""
        b, _, n, _ = coords.shape
        r = self.radius
        d = torch.arange(-r, r + 1, dtype=coords.dtype, device=coords.device)
        dy, dx = torch.meshgrid(d, d, indexing="ij")
        centre = coords.permute(0, 2, 3, 1).reshape(b * n * n, 1, 1, 2)
        out = []
        for level, corr in enumerate(pyramid):
            hl, wl = corr.shape[-2:]
            x = centre[..., 0] / 2**level + dx
            y = centre[..., 1] / 2**level + dy
            grid = torch.stack([2 * x / (wl - 1) - 1, 2 * y / (hl - 1) - 1], -1)
            win = F.grid_sample(corr, grid.to(corr.dtype), mode="bilinear", padding_mode="zeros",
                                align_corners=True)
            out.append(win.view(b, n, n, -1))
        return torch.cat(out, -1).permute(0, 3, 1, 2)

    def _coords(self, disp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Feature-pixel positions (B, 2, n, n) of every view cell under the current displacement."""
        n, s = self.cells, int(self.cfg.image_size)
        if self.cfg.corner_convention == "official":
            h = corner_homography(disp, n - 1, self.stride)
            pts = transform_points(h, grid)
        else:
            k = (s - 1) / (n - 1)
            h = corner_homography(disp, s - 1)
            pts = transform_points(h, grid * k) / k
        return pts.transpose(1, 2).reshape(disp.shape[0], 2, n, n)

    # -- network ----------------------------------------------------------------------------------------------
    def forward(self, bev: torch.Tensor, aerial: torch.Tensor, iterations: int | None = None) -> dict[str, Any]:
        """``bev`` and ``aerial`` (B, 3, S, S) in [0, 1]. Returns ``flow_predictions`` (list of (B, 2, 2, 2) corner
        displacements in image pixels, one per iteration), ``homographies`` (view -> tile pixels at S, one per
        iteration) and ``corr`` (B, n, n, n, n): view cell (i1, j1) × tile cell (i2, j2)."""
        cfg = self.cfg
        s = int(cfg.image_size)
        if tuple(bev.shape[-2:]) != (s, s) or tuple(aerial.shape[-2:]) != (s, s):
            raise ConfigError(f"HC-Net ({cfg.name}) expects a {s}×{s} view and tile, got "
                              f"{tuple(bev.shape[-2:])} and {tuple(aerial.shape[-2:])}")
        b, n = bev.shape[0], self.cells
        f1 = self.bev_encoder(normalize(bev, cfg.mean, cfg.std))[0]
        f2 = self.aerial_encoder(normalize(aerial, cfg.mean, cfg.std))[0]
        corr = F.relu(torch.einsum("bchw,bcij->bhwij", f1, f2))
        pyramid = [corr.reshape(b * n * n, 1, n, n)]
        for _ in range(self.levels - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2, stride=2))
        gd = torch.float32 if f1.dtype in (torch.float16, torch.bfloat16) else f1.dtype  # geometry in fp32
        ys, xs = torch.meshgrid(torch.arange(n, dtype=gd, device=bev.device),
                                torch.arange(n, dtype=gd, device=bev.device), indexing="ij")
        coords0 = torch.stack([xs, ys], 0).expand(b, 2, n, n)
        grid = coords0.reshape(b, 2, -1).transpose(1, 2)
        coords1 = coords0
        disp = torch.zeros(b, 2, 2, 2, dtype=gd, device=bev.device)
        flows, homs = [], []
        for _ in range(iterations or int(cfg.iterations)):
            coords1 = coords1.detach()
            window = self._lookup(pyramid, coords1)
            delta = self.update(torch.cat([window, (coords1 - coords0).to(window.dtype)], 1))
            disp = disp + delta.to(gd)
            flows.append(disp)
            homs.append(corner_homography(disp, s - 1))
            coords1 = self._coords(disp, grid)
        return {"flow_predictions": flows, "homographies": homs, "corr": corr}

    # -- read-outs --------------------------------------------------------------------------------------------
    def map_points(self, h: torch.Tensor, probe_px: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 2) of the view centre and of the point ``probe_px`` above it."""
        c = self.centre_px
        pts = torch.tensor([[c, c], [c, c - probe_px]], dtype=h.dtype, device=h.device).expand(h.shape[0], 2, 2)
        mapped = transform_points(h, pts)
        return mapped[:, 0], mapped[:, 1]

    def centre_slice(self, corr: torch.Tensor) -> torch.Tensor:
        """The correlation of the view centre with every tile cell (B, n, n), sampled at the centre's feature
        position (align_corners=True), as the official correlation loss reads it."""
        b, n = corr.shape[0], self.cells
        vol = corr.permute(0, 3, 4, 1, 2).reshape(b, n * n, n, n)  # tile cell × view map
        p = self.centre_px * n / self.cfg.image_size
        g = torch.full((b, 1, 1, 2), 2 * p / (n - 1) - 1, dtype=corr.dtype, device=corr.device)
        return F.grid_sample(vol, g, mode="bilinear", align_corners=True).view(b, n, n)

    def confidence(self, corr: torch.Tensor, pixel: torch.Tensor) -> torch.Tensor:
        """Softmax mass (temperature ``confidence_temperature``) of the view-centre correlation within one tile
        cell of the predicted pixel (B, 2), in [0, 1]."""
        sl = self.centre_slice(corr)
        b, n, _ = sl.shape
        prob = torch.softmax(sl.reshape(b, -1) / self.cfg.confidence_temperature, -1).view(b, n, n)
        cell = self.cfg.image_size / n
        c = (torch.arange(n, device=pixel.device, dtype=pixel.dtype) + 0.5) * cell
        near = ((c.view(1, -1, 1) - pixel[:, 1].view(-1, 1, 1)).abs() <= cell) & (
            (c.view(1, 1, -1) - pixel[:, 0].view(-1, 1, 1)).abs() <= cell)
        return (prob * near).flatten(1).sum(1)

    # -- batches (crossview.fine.data layout) -----------------------------------------------------------------
    def _inputs(self, batch: dict, heading_prior) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kinds = set(batch.get("camera") or ["panorama"])
        if kinds != {"panorama"}:
            raise ConfigError(f"HC-Net's spherical transform needs panoramas, got camera kinds {sorted(kinds)}")
        s = int(self.cfg.image_size)
        aerial = batch["aerial"]
        if tuple(aerial.shape[-2:]) != (s, s):
            aerial = F.interpolate(aerial, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        mpp = batch["tile_m"].to(aerial.dtype).reshape(-1) / s
        return self.make_bev(batch["ground"], heading_prior), aerial, mpp

    def predict(self, batch: dict, heading_prior=None, iterations: int | None = None) -> dict[str, torch.Tensor]:
        """Pose of every sample: ``xy`` (B, 2) metres east/north of the tile centre, ``heading`` (B,) degrees,
        ``confidence`` (B,), ``pixel`` (B, 2) at ``image_size``, ``homography`` (B, 3, 3).

        ``heading_prior`` (B,) or float: the believed heading of each panorama's centre column (HC-Net needs it
        within about ±45° of the truth); None uses ``batch["heading_prior"]`` when present, else 0 (north-aligned,
        as VIGOR's panoramas)."""
        if heading_prior is None:
            heading_prior = batch.get("heading_prior", 0.0)
        prior = torch.as_tensor(heading_prior, dtype=torch.float32, device=batch["aerial"].device).reshape(-1)
        prior = prior.expand(batch["aerial"].shape[0])
        bev, aerial, mpp = self._inputs(batch, prior)
        out = self(bev, aerial, iterations)
        h = out["homographies"][-1]
        pose = self.pose_from_homography(h, prior, mpp)
        return {**pose, "confidence": self.confidence(out["corr"], pose["pixel"]), "homography": h, "bev": bev}

    def pose_from_homography(self, h: torch.Tensor, heading_prior: torch.Tensor,
                             mpp: torch.Tensor) -> dict[str, torch.Tensor]:
        """The official VIGOR read-out of view -> tile homographies (B, 3, 3): the camera is the image of the view
        centre (``pixel``; ``xy`` metres east/north of the tile centre at ``mpp`` metres per tile pixel), its
        heading ``prior − yaw`` where ``yaw`` = −degrees(atan2(dx, −dy)) of the mapped probe above the centre (the
        official label: −(true heading − prior))."""
        centre, up = self.map_points(h, self.probe_px("eval"))
        yaw = yaw_from_points(centre, up)
        s = self.cfg.image_size
        mpp = torch.as_tensor(mpp, dtype=centre.dtype, device=centre.device).reshape(-1)
        xy = torch.stack([(centre[:, 0] - s / 2) * mpp, (s / 2 - centre[:, 1]) * mpp], -1)
        prior = torch.as_tensor(heading_prior, dtype=centre.dtype, device=centre.device).reshape(-1)
        return {"xy": xy, "heading": torch.remainder(prior - yaw, 360.0), "pixel": centre, "yaw_deg": yaw}

    def loss(self, batch: dict, generator: torch.Generator | None = None,
             prior_deg: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The official training loss on a batch. The believed heading is the true one plus uniform noise in
        ±``prior_deg`` (default: the config's ±45°) drawn from ``generator`` — the official loader's roll."""
        prior_deg = self.cfg.prior_deg if prior_deg is None else prior_deg
        heading = batch["heading"].float().reshape(-1)
        noise = (torch.rand(heading.shape, generator=generator) * 2 - 1).to(heading.device) * prior_deg
        bev, aerial, mpp = self._inputs(batch, heading + noise)
        out = self(bev, aerial)
        s = self.cfg.image_size
        gt = torch.stack([s / 2 + batch["xy"][:, 0] / mpp, s / 2 - batch["xy"][:, 1] / mpp], -1)
        total, parts = official_loss(self, out, gt, noise)  # label: −(true − prior) = noise
        with torch.no_grad():
            centre, _ = self.map_points(out["homographies"][-1], self.probe_px("eval"))
            xy = torch.stack([(centre[:, 0] - s / 2) * mpp, (s / 2 - centre[:, 1]) * mpp], -1)
            parts["err_m"] = float((xy - batch["xy"]).norm(dim=-1).mean())
        return total, parts


def official_loss(model: HCNet, out: dict[str, Any], gt_pixel: torch.Tensor, ori_deg: torch.Tensor,
                  probe_points: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """HC-Net's loss (the official training loss) for ``gt_pixel`` (B, 2) at ``image_size`` and the orientation label
    ``ori_deg`` (B,) (= −(true heading − prior)).

    Per iteration i of N, weight γ^(N−1−i): mean squared error of the mapped centre in image pixels (the
    official ((mean/640)·512/640)·512 on 640-px coordinates) + ``yaw`` × mean |yaw − label| (degrees, from the
    training probe); plus the InfoNCE (temperature 4) of the view-centre correlation slice at the true pixel
    (align_corners=True). Total = ``homography`` × the first + ``correlation`` × the second. ``probe_points``
    (B, 2, 2), columns = points: the official ``transformed_center``; default the centre and the training probe.
    """
    w = model.cfg.loss
    s = float(model.cfg.image_size)
    sat = float(model.cfg.sat_size)
    b = gt_pixel.shape[0]
    if probe_points is None:
        c, p = model.centre_px, model.probe_px("train")
        probe_points = torch.tensor([[c, c], [c, c - p]], dtype=gt_pixel.dtype, device=gt_pixel.device)
        probe_points = probe_points.t().expand(b, 2, 2)
    pts = probe_points.transpose(1, 2).to(gt_pixel.dtype)  # (B, 2 points, 2)
    target = gt_pixel / s * sat
    flows = out["flow_predictions"]
    n = len(flows)
    hom = gt_pixel.new_zeros(())
    for i, disp in enumerate(flows):
        mapped = transform_points(corner_homography(disp, s - 1), pts)
        yaw = yaw_from_points(mapped[:, 0], mapped[:, 1])
        e_ori = (yaw - ori_deg.to(yaw.dtype)).abs().mean()
        p = mapped[:, 0] / s * sat
        mse = ((p - target) ** 2).mean()
        term = ((mse / sat) * s / sat) * s + w.yaw * e_ori
        hom = hom + w.gamma ** (n - 1 - i) * term
    sl = model.centre_slice(out["corr"])
    nll = -torch.log_softmax(sl.flatten(1) / w.temperature, -1).view_as(sl)
    cells = model.cells
    g = target / sat * cells
    g = (2 * g / (cells - 1) - 1).view(b, 1, 1, 2).to(nll.dtype)
    corr = F.grid_sample(nll.unsqueeze(1), g, mode="bilinear", align_corners=True).view(b).mean()
    total = w.homography * hom + w.correlation * corr
    return total, {"loss": float(total.detach()), "homography": float(hom.detach()),
                   "correlation": float(corr.detach()), "_hom": hom, "_corr": corr}

