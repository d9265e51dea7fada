"""BEVPost (ours, after OrienterNet and CCVPE): one posterior over every position × heading of a search area.

Not a published model. Its idea follows OrienterNet (Sarlin et al., CVPR 2023) and CCVPE (Xia et al., T-PAMI
2023): the choice between places is made inside the loss. The photo is lifted to a metric bird's-eye template, the
template is correlated with an aerial feature map of the whole search window at every heading, and one softmax over
every heading × position cell is trained with the negative log-likelihood of the true cell, so every look-alike
place in the window is a negative at every step. Our own choices (documented in ``docs/locate_posterior.md``):

- **Frozen backbone, small heads.** The shipped EfficientNet-Lite0 (ImageNet) computes features of the photo
  (upsampled ``photo_upsample`` ×, taps at strides 4 / 8 / 16, concatenated at stride 8) and of the aerial window
  (rendered at ``cell_m / 4`` m/px, the same taps concatenated at stride 4 = one cell, plus the cell's mean colour).
  Only the heads train (about 0.1 M parameters), so the backbone's features are cached once per image / city.
- **Polar lifting.** Per image column, a softmax over the rows for each of ``depth_bins`` ground ranges
  (``depth_min_m`` … ``depth_max_m``) gathers the column's features at that range: a learned polar (azimuth ×
  range) representation. Its logits are biased toward the row where flat ground at that range appears for the
  camera's eye height (a learned weight on a geometric prior), so the geometry is a prior, not a rule.
- **Template by rotation, correlation by FFT.** For each heading, the polar features are resampled straight into a
  north-up template of ``template_cells``² cells of ``cell_m`` metres around the camera (the camera in the centre
  cell), with a visibility mask (field of view and range); the correlation of every rotated template with the map
  embedding is computed by FFT, divided by the visible area and multiplied by a learned scale.

Frames: cells of ``cell_m`` metres; map rows run south (down), columns east (right); headings degrees clockwise
from north; a pinhole template looks along its heading, a panorama's centre column looks along its heading
(equirectangular, east of the centre column to the right). Camera frame: ``x`` metres to the right, ``z`` forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from crossview.fine.backbones import Backbone
from crossview.fine.configs import FineConfig
from crossview.fine.registry import register_arch, register_fine

__all__ = ["BEVPost", "DEFAULT_CONFIG", "rotated_grid", "correlate", "heading_bins", "polar_grid"]

LITE_MEAN, LITE_STD = (127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3

@dataclass(frozen=True)
class BEVPostConfig(FineConfig):
    """Typed config (``self.cfg``); ``model.config`` is its plain dict, saved with checkpoints."""

    arch: ClassVar[str] = "bevpost"

    backbone: str = "tf_efficientnet_lite0"
    weights: str | None = "lite"  # the packaged ImageNet weights (offline)
    taps: tuple[int, ...] = (2, 4, 10)  # flat block indices: strides 4, 8, 16 (24 + 40 + 112 channels)
    match_channels: int = 16  # channels of the template and map embeddings
    hidden: int = 128
    map_hidden: int = 32
    depth_bins: int = 32
    depth_min_m: float = 1.0
    depth_max_m: float = 32.0
    template_cells: int = 65  # odd: the camera sits in the centre cell
    cell_m: float = 1.0
    photo_upsample: float = 2.0
    photo_stride: int = 8  # photo features are concatenated at this stride of the upsampled photo
    eye_height_m: float = 2.0
    heading_step_deg: float = 5.0
    cameras: tuple[str, ...] = ("pinhole",)  # the photo kinds it was trained on, and so places (pinhole, panorama)
    mean: tuple[float, ...] = LITE_MEAN
    std: tuple[float, ...] = LITE_STD
    name: str = "bevpost"  # the registered variant (messages)


DEFAULT_CONFIG: dict[str, Any] = BEVPostConfig.defaults()


def heading_bins(step_deg: float, prior: tuple[float, float] | None, margin_deg: float) -> torch.Tensor:
    """Headings (degrees) searched: ``prior`` (centre, ± tolerance) widened by ``margin_deg``, in ``step_deg``
    steps centred on the prior; every ``step_deg`` of the circle when there is no prior (or it spans it)."""
    if prior is None or prior[1] + margin_deg >= 180.0 - 1e-9:
        n = int(round(360.0 / step_deg))
        return torch.arange(n, dtype=torch.float64) * (360.0 / n)
    k = int(math.ceil((prior[1] + margin_deg) / step_deg - 1e-9))
    return (prior[0] + torch.arange(-k, k + 1, dtype=torch.float64) * step_deg) % 360.0


def polar_grid(x: torch.Tensor, z: torch.Tensor, camera: str, fov_deg: torch.Tensor, width: int,
               depth: tuple[float, float, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Where ground points ``(x, z)`` (metres right / forward of the camera; shape (B, ...)) fall in a polar map of
    ``width`` image columns × ``depth`` bins ``(min_m, max_m, n)``: grid_sample coordinates (B, ..., 2) in
    ``align_corners=True`` units (x: column, y: range bin) and a visibility mask (B, ...). ``fov_deg`` (B,): the
    pinhole's horizontal field of view (ignored for panoramas). Panorama columns are taken from a polar map padded
    by one wrapped column on each side (``width`` + 2 columns)."""
    lo, hi, n = depth
    r = torch.sqrt(x * x + z * z)
    phi = torch.atan2(x, z)  # azimuth, clockwise from the forward axis
    shape = (-1,) + (1,) * (x.dim() - 1)
    if camera == "panorama":
        col = width / 2 + phi / (2 * math.pi) * width + 0.5  # +1 wrapped column on the left, -0.5 pixel centres
        gx = col / (width + 1) * 2 - 1
        vis = torch.ones_like(r, dtype=torch.bool)
    else:
        half = torch.deg2rad(fov_deg.to(x)).reshape(shape) / 2
        f = (width / 2) / torch.tan(half)
        u = width / 2 + f * x / z.clamp_min(1e-6)
        gx = (u - 0.5) / max(width - 1, 1) * 2 - 1
        vis = (z > 1e-6) & (phi.abs() < half)
    gy = (r - lo) / (hi - lo) * 2 - 1
    vis = vis & (r >= lo) & (r <= hi)
    return torch.stack([gx, gy], -1), vis


def rotated_grid(cells: int, cell_m: float, headings_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-frame (x right, z forward) metres of every cell of a north-up ``cells``² template around the camera,
    one set per heading: (B, K, cells, cells) each. Row 0 is north, column 0 west; the camera is the centre cell."""
    c = (torch.arange(cells, dtype=torch.float32) - cells // 2) * cell_m
    north, east = -c[:, None].expand(cells, cells), c[None, :].expand(cells, cells)
    t = torch.deg2rad(headings_deg.float())[..., None, None]
    x = east * torch.cos(t) - north * torch.sin(t)
    z = east * torch.sin(t) + north * torch.cos(t)
    return x, z


def correlate(templates: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
    """Scores of every template placed with its centre cell on every map cell whose template fits inside the map:
    ``templates`` (B, K, C, T, T), ``fmap`` (B, C, H, W) -> (B, K, H - T + 1, W - T + 1); entry ``[b, k, i, j]`` is
    ``sum(templates[b, k] * fmap[b, :, i:i+T, j:j+T])`` (the camera on map cell ``(i + T//2, j + T//2)``). By FFT
    at the map's size (the valid part has no wrap-around)."""
    t = templates.shape[-1]
    h, w = fmap.shape[-2:]
    spec_m = torch.fft.rfft2(fmap, s=(h, w))  # (B, C, h, w//2+1)
    spec_t = torch.fft.rfft2(templates, s=(h, w))  # (B, K, C, h, w//2+1)
    prod = torch.einsum("bchw,bkchw->bkhw", spec_m, spec_t.conj())
    corr = torch.fft.irfft2(prod, s=(h, w))  # circular cross-correlation: corr[i, j] = sum t[u, v] m[i+u, j+v]
    return corr[..., : h - t + 1, : w - t + 1]


class BEVPost(nn.Module):
    """Photo → bird's-eye template; aerial window → map embedding; their correlation at every heading and
    position → scores (log-posterior up to a constant). See the module docstring."""

    def __init__(self, cfg: dict[str, Any] | BEVPostConfig):
        super().__init__()
        self.cfg, self.config = BEVPostConfig.resolve(cfg)
        c = self.cfg
        # what it places: the kinds it was trained on, and panoramas whenever pinholes (seen as four pinhole views)
        self.cameras = tuple(c.cameras) + (("panorama",) if "pinhole" in c.cameras and "panorama" not in c.cameras
                                            else ())
        self.backbone = Backbone(c.backbone, c.taps, weights=c.weights, freeze=True)
        feat = sum(self.backbone.channels)
        m, d = c.match_channels, c.depth_bins
        self.ground_head = nn.Sequential(nn.Conv2d(feat, c.hidden, 1), nn.ReLU(), nn.Conv2d(c.hidden, m + d, 1))
        self.polar_refine = nn.Sequential(nn.Conv2d(m, m, 3, padding=1), nn.ReLU(), nn.Conv2d(m, m, 3, padding=1))
        self.map_head = nn.Sequential(nn.Conv2d(feat + 3, c.map_hidden, 1), nn.ReLU(),
                                      nn.Conv2d(c.map_hidden, c.map_hidden, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(c.map_hidden, m, 3, padding=1))
        self.prior_weight = nn.Parameter(torch.tensor(1.0))  # weight of the flat-ground row prior
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))  # correlation → logit scale
        self.register_buffer("mean", torch.tensor(c.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(c.std).view(1, 3, 1, 1), persistent=False)

    # -- frozen features (cacheable) --
    def photo_features(self, image: torch.Tensor) -> torch.Tensor:
        """Frozen features of photos (B, 3, H, W) in [0, 1]: (B, F, H·u/s, W·u/s) (u: ``photo_upsample``,
        s: ``photo_stride``)."""
        c = self.cfg
        h, w = image.shape[-2:]
        x = F.interpolate(image, scale_factor=c.photo_upsample, mode="bilinear", align_corners=False)
        feats = self.backbone((x - self.mean) / self.std)
        size = (round(h * c.photo_upsample / c.photo_stride), round(w * c.photo_upsample / c.photo_stride))
        return torch.cat([F.interpolate(f, size=size, mode="bilinear", align_corners=False, antialias=True)
                          for f in feats], 1)

    def map_features(self, image: torch.Tensor) -> torch.Tensor:
        """Frozen features of aerial images (B, 3, 4N, 4M) in [0, 1] at ``cell_m / 4`` m/px: (B, F + 3, N, M),
        one vector per cell (the taps resampled to stride 4, and the cell's mean colour)."""
        n, m = image.shape[-2] // 4, image.shape[-1] // 4
        feats = self.backbone((image - self.mean) / self.std)
        out = [F.interpolate(f, size=(n, m), mode="bilinear", align_corners=False, antialias=True) for f in feats]
        return torch.cat(out + [F.avg_pool2d(image[..., : 4 * n, : 4 * m], 4)], 1)

    # -- trainable heads --
    def map_embedding(self, feats: torch.Tensor) -> torch.Tensor:
        """Map features (B, F + 3, N, M) → unit matching vectors per cell (B, C, N, M)."""
        return F.normalize(self.map_head(feats.float()), dim=1)

    def polar(self, feats: torch.Tensor, camera: str, fov_deg: torch.Tensor,
              image_hw: tuple[int, int], eye_height_m: float | None = None) -> torch.Tensor:
        """Photo features (B, F, h, w) → polar matching features (B, C, depth_bins, w): per column, a softmax over
        rows for each range bin (biased toward the flat-ground row of that range), then two 3×3 convolutions."""
        c = self.cfg
        out = self.ground_head(feats.float())
        m = c.match_channels
        emb, logits = out[:, :m], out[:, m:]  # (B, C, h, w), (B, D, h, w)
        ground_row = self._ground_rows(camera, fov_deg, image_hw, feats.shape[-2:],
                                       c.eye_height_m if eye_height_m is None else eye_height_m)
        rows = torch.arange(feats.shape[-2], dtype=torch.float32, device=feats.device).view(1, 1, -1, 1)
        logits = logits - self.prior_weight.abs() * (rows - ground_row) ** 2 / 4.0
        weights = logits.softmax(dim=2)
        pol = torch.einsum("bdhw,bchw->bcdw", weights, emb)
        return pol + self.polar_refine(pol)

    def _ground_rows(self, camera: str, fov_deg: torch.Tensor, image_hw: tuple[int, int], grid_hw, eye: float):
        """(B, D, 1, w): the feature row where flat ground at each range bin appears in each column."""
        c = self.cfg
        (h_img, w_img), (h, w) = image_hw, grid_hw
        r = torch.linspace(c.depth_min_m, c.depth_max_m, c.depth_bins).view(1, -1, 1, 1)
        cols = (torch.arange(w, dtype=torch.float32) + 0.5) * (w_img / w) - w_img / 2  # pixels right of centre
        if camera == "panorama":
            y = h_img / 2 + torch.atan2(torch.tensor(eye), r) / math.pi * h_img  # elevation below the horizon
            y = y.expand(-1, -1, 1, w)
        else:
            f = (w_img / 2) / torch.tan(torch.deg2rad(fov_deg.float().cpu()) / 2).view(-1, 1, 1, 1)
            phi = torch.atan(cols.view(1, 1, 1, -1) / f)
            y = h_img / 2 + f * eye / (r * torch.cos(phi))  # forward depth z = r cos(phi)
        return (y / (h_img / h) - 0.5).to(self.log_scale.device)

    def templates(self, pol: torch.Tensor, camera: str, fov_deg: torch.Tensor,
                  headings_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Polar features (B, C, D, w) → north-up templates (B, K, C, T, T) for headings (B, K) and their visible
        cell counts (B, K); each visible cell's vector has unit length, invisible cells are zero."""
        c = self.cfg
        b, k = headings_deg.shape
        t = c.template_cells
        x, z = rotated_grid(t, c.cell_m, headings_deg.to(pol.device))
        w = pol.shape[-1]
        grid, vis = polar_grid(x, z, camera, fov_deg.to(pol.device), w,
                               (c.depth_min_m, c.depth_max_m, c.depth_bins))
        src = torch.cat([pol[..., -1:], pol, pol[..., :1]], -1) if camera == "panorama" else pol
        sampled = F.grid_sample(src, grid.reshape(b, k * t, t, 2).float(), mode="bilinear", align_corners=True,
                                padding_mode="zeros")  # (B, C, K·T, T)
        sampled = sampled.reshape(b, -1, k, t, t).permute(0, 2, 1, 3, 4)
        vis = vis.to(sampled.dtype)
        tmpl = F.normalize(sampled, dim=2) * vis[:, :, None]
        return tmpl, vis.sum((-1, -2))

    def scores(self, pol: torch.Tensor, fmap: torch.Tensor, camera: str, fov_deg: torch.Tensor,
               headings_deg: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, N - T + 1, M - T + 1) of the camera at every heading (B, K) and every map cell whose
        template fits inside the map embedding ``fmap`` (B, C, N, M)."""
        tmpl, area = self.templates(pol, camera, fov_deg, headings_deg)
        corr = correlate(tmpl, fmap)
        return corr / area.clamp_min(1.0)[..., None, None] * self.log_scale.exp()

    # -- the FineLocalizer interface: the camera somewhere in one aerial tile --
    def input_sizes(self, camera: str = "pinhole") -> tuple[tuple[int, int], int]:
        """(ground (H, W), aerial side) for tile batches: the photo size of the synthetic pinhole world (a 2:1
        panorama at twice its width) and a 256-px tile."""
        return ((96, 128) if camera == "pinhole" else (128, 256)), 256

    def predict(self, batch: dict[str, Any], heading_prior: Any = None) -> dict[str, torch.Tensor]:
        """Poses of the cameras of a tile batch (``crossview.fine.data``): the posterior over every cell of each tile
        (the map zero beyond it) and, with ``heading_prior`` (B,), the headings within ±25° of it, else all; the
        most probable cell (metres east/north of the tile centre), its heading and the mass within 5 m."""
        out = {"xy": [], "heading": [], "confidence": []}
        for b in range(batch["ground"].shape[0]):
            side_m = float(batch["tile_m"][b])
            cells = max(1, int(round(side_m / self.cfg.cell_m)))
            aerial = F.interpolate(batch["aerial"][b: b + 1], size=(4 * cells, 4 * cells), mode="bilinear",
                                   align_corners=False, antialias=True)
            pad = self.cfg.template_cells // 2
            fmap = F.pad(self.map_embedding(self.map_features(aerial)), (pad, pad, pad, pad))
            prior = None if heading_prior is None else (float(heading_prior[b]), 20.0)
            heads = heading_bins(self.cfg.heading_step_deg, prior, 5.0)
            camera = batch["camera"][b]
            fov = batch["fov"][b: b + 1]
            pol = self.polar(self.photo_features(batch["ground"][b: b + 1]), camera, fov,
                             tuple(batch["ground"].shape[-2:]))
            logits = self.scores(pol, fmap, camera, fov, heads[None])[0].double()
            logp = torch.log_softmax(logits.reshape(-1), 0).reshape(logits.shape)
            k, i, j = (int(v) for v in torch.unravel_index(torch.argmax(logp), logp.shape))
            cell, n = float(self.cfg.cell_m), logp.shape[-1]
            east, north = (j + 0.5 - n / 2) * cell, (n / 2 - i - 0.5) * cell
            rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            near = torch.hypot((cols - j).double(), (rows - i).double()) * cell <= 5.0
            out["xy"].append([east, north])
            out["heading"].append(float(heads[k]))
            out["confidence"].append(float(torch.logsumexp(logp, 0).exp()[near].sum()))
        return {"xy": torch.tensor(out["xy"], dtype=torch.float32),
                "heading": torch.tensor(out["heading"], dtype=torch.float32),
                "confidence": torch.tensor(out["confidence"], dtype=torch.float32)}

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Not trained on tile batches: the camera anywhere in a window of a whole map is the point."""
        from crossview.errors import ConfigError

        raise ConfigError("BEVPost trains on whole maps, not tile batches: crossview fine-train "
                          "bevpost-synthetic-cpu-pinhole (crossview.fine.train_bevpost)")

    @property
    def packaged_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes whose weights come with the package (the Lite backbone): a release leaves them out."""
        return ("backbone.",) if self.cfg.weights == "lite" else ()

    def head_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters (the backbone is frozen)."""
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]



register_arch("bevpost", builder=BEVPost, defaults=DEFAULT_CONFIG, published=None, cameras=("pinhole", "panorama"))
register_fine("bevpost_lite0", "bevpost")
# the tiny CPU configuration of the same architecture (tests): a random four-level CNN, a small template
register_fine("bevpost_tiny", "bevpost", backbone="tiny", weights=None, taps=[1, 2, 3], hidden=16, map_hidden=16,
              match_channels=8, depth_bins=12, depth_max_m=12.0, template_cells=25, mean=[0.5] * 3, std=[0.25] * 3)
