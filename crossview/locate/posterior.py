"""``locate --fine-search posterior``: one posterior over every position × heading of the search area.

A :class:`crossview.fine.bevpost.BEVPost` model scores the photo at every cell of a north-up window centred on the
GPS fix (covering the search radius plus a margin) and at every heading searched (the compass prior's range plus a
margin, or the whole circle without one). The GPS fix and the compass are added as log-priors — the fix as a uniform
disc of the search radius (or a Gaussian of its stated accuracy, cut at the radius), the compass as uniform within
its tolerance with a Gaussian fall-off of ``heading_margin_deg`` outside — and one softmax over all cells gives the
posterior. The answer is its mode, refined below a cell by a parabola through the neighbouring log-probabilities;
the uncertainty is read from the posterior itself: the radii around the mode that hold 68 % and 95 % of its mass.
The distinct modes (local maxima at least ``mode_separation_m`` apart) are listed with their probability mass.

Frames: WGS84 lat/lon; metres east/north on the tangent plane at the window's centre (the fix); window cells of
``cell_m`` metres, rows running south, columns east; headings degrees clockwise from north.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from crossview.errors import ConfigError
from crossview.fine.bevpost import correlate, heading_bins
from crossview.geometry.geo import offset_to_latlon

__all__ = ["PosteriorAnswer", "search_area_posterior", "area_logits", "posterior_answer", "log_priors",
           "credible_radii", "refine_peak", "panorama_views"]


@dataclass
class PosteriorAnswer:
    """The posterior's answer: the mode (lat/lon, metres east/north of the window centre, heading), the mass
    near it (``confidence``: within ``confidence_m``), the 68 % / 95 % credible radii around it, the distinct
    ``modes`` with their mass, and the position posterior itself (``heat``: (P, P) probabilities, row 0 north) on
    the window ``(lat, lon, cell_m)`` (centre cell at index P // 2)."""

    lat: float
    lon: float
    east_m: float
    north_m: float
    heading_deg: float
    confidence: float
    radii_m: dict[str, float]
    modes: list[dict[str, Any]]
    heat: np.ndarray
    window: tuple[float, float, float]
    headings: int
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)
    aerial: np.ndarray | None = field(default=None, repr=False)  # the window's imagery (4 px per cell)

    def summary(self) -> dict[str, Any]:
        """The JSON block ``locate.json`` carries as ``posterior``."""
        p = self.heat.shape[0]
        return {"modes": self.modes, "radii_m": self.radii_m, "cells": p, "cell_m": self.window[2],
                "window_centre": list(self.window[:2]), "headings": self.headings,
                "seconds": round(self.seconds, 3), **self.extras}


def log_priors(positions: int, cell_m: float, radius_m: float, headings: torch.Tensor,
               heading_prior: tuple[float, float] | None, gps_sigma_m: float | None = None,
               heading_margin_deg: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,) heading and (P, P) position log-priors. Position: 0 inside the disc of ``radius_m`` around the window
    centre, -inf outside; with ``gps_sigma_m``, a Gaussian of that standard deviation inside the disc. Heading:
    0 within the prior's tolerance, ``-(d - tol)² / (2 margin²)`` beyond (all 0 without a prior)."""
    c = (torch.arange(positions, dtype=torch.float64) - positions // 2) * cell_m
    d2 = c[:, None] ** 2 + c[None, :] ** 2
    pos = torch.zeros_like(d2) if gps_sigma_m is None else -d2 / (2 * float(gps_sigma_m) ** 2)
    pos = pos.masked_fill(d2 > radius_m ** 2 + 1e-9, float("-inf"))
    if heading_prior is None:
        return torch.zeros(len(headings), dtype=torch.float64), pos
    d = ((headings - heading_prior[0] + 180.0) % 360.0 - 180.0).abs()
    over = (d - float(heading_prior[1])).clamp_min(0.0)
    return -over ** 2 / (2 * max(heading_margin_deg, 1e-6) ** 2), pos


def refine_peak(values: torch.Tensor, i: int, circular: bool = False) -> float:
    """Sub-sample offset in [-0.5, 0.5] of the peak at ``i`` of 1-D log-values, from the parabola through
    ``i - 1, i, i + 1`` (0 at an edge or where a neighbour is -inf)."""
    n = len(values)
    if n < 3 or (not circular and (i == 0 or i == n - 1)):
        return 0.0
    a, b, c = (float(values[(i + k) % n]) for k in (-1, 0, 1))
    if not all(math.isfinite(v) for v in (a, b, c)):
        return 0.0
    den = a - 2 * b + c
    return 0.0 if den >= 0 else float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))


def credible_radii(prob: np.ndarray, centre: tuple[float, float], cell_m: float,
                   levels: tuple[float, ...] = (0.68, 0.95)) -> dict[str, float]:
    """Radii (m) of the discs around ``centre`` (column, row in cells) holding each level of ``prob``'s mass."""
    rows, cols = np.indices(prob.shape)
    dist = np.hypot(cols - centre[0], rows - centre[1]) * cell_m
    order = np.argsort(dist, axis=None)
    mass = np.cumsum(prob.ravel()[order])
    out = {}
    for lv in levels:
        k = min(int(np.searchsorted(mass, lv * mass[-1])), len(order) - 1)
        out[f"{round(lv * 100)}"] = float(max(dist.ravel()[order[k]], 0.5 * cell_m))
    return out


def _modes(prob: np.ndarray, best_heading: np.ndarray, headings: np.ndarray, window: tuple[float, float, float],
           separation_m: float, count: int, min_mass: float) -> list[dict[str, Any]]:
    """Up to ``count`` local maxima of the position posterior at least ``separation_m`` apart, each with the mass
    within half that distance."""
    lat0, lon0, cell = window
    p = prob.shape[0]
    rows, cols = np.indices(prob.shape)
    work, out = prob.copy(), []
    for _ in range(count):
        i, j = np.unravel_index(int(np.argmax(work)), work.shape)
        if work[i, j] <= 0:
            break
        d = np.hypot(cols - j, rows - i) * cell
        mass = float(prob[d <= 0.5 * separation_m].sum())
        if mass < min_mass:
            break
        east, north = (j - p // 2) * cell, (p // 2 - i) * cell
        lat, lon = (float(v) for v in offset_to_latlon(lat0, lon0, east, north))
        out.append({"lat": lat, "lon": lon, "east_m": float(east), "north_m": float(north),
                    "heading_deg": float(headings[best_heading[i, j]]), "probability": mass})
        work[d < separation_m] = 0.0
    return out


def search_area_posterior(model: Any, photo: np.ndarray, camera: str, fov_deg: float | None, mosaic: Any,
                          area: tuple[float, float, float], heading_prior: tuple[float, float] | None, *,
                          gps_sigma_m: float | None = None, margin_m: float = 5.0, heading_margin_deg: float = 5.0,
                          mode_separation_m: float = 8.0, confidence_m: float = 5.0,
                          temperature: float | None = None) -> PosteriorAnswer:
    """The posterior of ``photo`` (H, W, 3 uint8; ``camera`` pinhole with ``fov_deg``, or panorama) over the search
    ``area`` (lat, lon, radius_m) cut from ``mosaic`` (:class:`crossview.tiles.mosaic.Mosaic`), with the compass
    ``heading_prior`` (centre, ± tolerance degrees) or None. ``temperature`` divides the model's logits (a
    calibration of the posterior's spread; None: the model release's own, else 1 = as trained)."""
    t0 = time.time()
    logits, heads, window = area_logits(model, photo, camera, fov_deg, mosaic, area, heading_prior, margin_m,
                                        heading_margin_deg)
    if temperature is None:
        temperature = float(getattr(model, "release_info", {}).get("temperature", 1.0))
    return posterior_answer(logits, heads, area, heading_prior, float(model.cfg.cell_m), temperature,
                            gps_sigma_m=gps_sigma_m, heading_margin_deg=heading_margin_deg,
                            mode_separation_m=mode_separation_m, confidence_m=confidence_m, seconds=time.time() - t0,
                            aerial=window, template_cells=int(model.cfg.template_cells))


def area_logits(model: Any, photo: np.ndarray, camera: str, fov_deg: float | None, mosaic: Any,
                area: tuple[float, float, float], heading_prior: tuple[float, float] | None, margin_m: float = 5.0,
                heading_margin_deg: float = 5.0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The model's logits (K, P, P) over the headings searched (K,) and the positions of a window centred on the
    search area (P = 2 ceil((radius + margin) / cell) + 1 cells a side), and the window's imagery."""
    if camera not in model.cameras:
        raise ConfigError(f"the posterior model places {', '.join(model.cameras)} photos, not {camera} ones")
    if camera == "pinhole" and not fov_deg:
        raise ConfigError("a pinhole photo needs its horizontal field of view: give --fov or a photo whose EXIF "
                          "holds its focal length")
    cfg = model.config
    cell, t = float(cfg["cell_m"]), int(cfg["template_cells"])
    # a model trained on pinholes only sees a panorama as four pinhole views
    views = camera == "panorama" and "panorama" not in model.cfg.cameras
    lat, lon, radius = (float(v) for v in area)
    p = 2 * int(math.ceil((radius + margin_m) / cell)) + 1
    window = mosaic.window(lat, lon, 4 * (p + t - 1), cell / 4)
    heads = heading_bins(float(cfg["heading_step_deg"]), heading_prior, heading_margin_deg)
    with torch.no_grad():
        aerial = torch.from_numpy(window).permute(2, 0, 1)[None].float() / 255.0
        fmap = model.map_embedding(model.map_features(aerial))
        img = torch.from_numpy(np.array(photo, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
        if views:
            logits = _panorama_as_views(model, img, fmap, heads)
        else:
            fov = torch.tensor([float(fov_deg or 360.0)])
            pol = model.polar(model.photo_features(img), camera, fov, tuple(photo.shape[:2]))
            logits = model.scores(pol, fmap, camera, fov, heads[None])[0]
    return logits.double(), heads, window


def posterior_answer(logits: torch.Tensor, heads: torch.Tensor, area: tuple[float, float, float],
                     heading_prior: tuple[float, float] | None, cell_m: float, temperature: float = 1.0, *,
                     gps_sigma_m: float | None = None, heading_margin_deg: float = 5.0,
                     mode_separation_m: float = 8.0, confidence_m: float = 5.0, seconds: float = 0.0,
                     **extras: Any) -> PosteriorAnswer:
    """The posterior (logits + the priors, one softmax) and its answer (:class:`PosteriorAnswer`). ``temperature``
    calibrates the spread only: the answer is the most probable cell of the model as trained (logits / 1 + the
    priors); its radii, modes' masses, confidence and heat map come from logits / ``temperature`` + the priors."""
    lat, lon, radius = (float(v) for v in area)
    p = logits.shape[-1]
    hp, pp = log_priors(p, cell_m, radius, heads, heading_prior, gps_sigma_m, heading_margin_deg)

    def posterior(t: float) -> torch.Tensor:
        z = logits / t + hp[:, None, None] + pp[None]
        return torch.log_softmax(z.reshape(-1), 0).reshape(logits.shape)

    logp = posterior(1.0)
    spread = logp if float(temperature) == 1.0 else posterior(float(temperature))
    step = float(heads[1] - heads[0]) % 360.0 if len(heads) > 1 else 360.0
    circular = len(heads) > 1 and len(heads) * step >= 360.0 - 1e-6
    return _answer(logp, heads, (lat, lon, cell_m), circular, mode_separation_m, confidence_m, seconds,
                   spread=spread, **extras)


PANORAMA_VIEWS = (0.0, 90.0, 180.0, 270.0)  # yaws (degrees from the centre column) of the views cut from a panorama
VIEW_FOV_DEG, VIEW_HW = 90.0, (96, 128)  # each view's field of view and size: within what the pinhole model saw


def panorama_views(pano: torch.Tensor, yaws: tuple[float, ...] = PANORAMA_VIEWS, fov_deg: float = VIEW_FOV_DEG,
                   hw: tuple[int, int] = VIEW_HW) -> torch.Tensor:
    """Upright pinhole views (V, 3, h, w) of an equirectangular panorama (1, 3, H, W) (centre column = its heading,
    east to the right, rows +90° to -90° elevation), each looking ``yaw`` degrees clockwise of the centre column
    with a horizontal field of view ``fov_deg`` (bilinear; the panorama wraps around in azimuth)."""
    h, w = hw
    f = (w / 2) / math.tan(math.radians(fov_deg) / 2)
    u = (torch.arange(w, dtype=torch.float64) + 0.5 - w / 2) / f
    v = (torch.arange(h, dtype=torch.float64) + 0.5 - h / 2) / f
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    el = torch.atan2(-vv, torch.sqrt(1 + uu * uu))  # elevation, up positive
    big_h, big_w = pano.shape[-2:]
    padded = torch.cat([pano[..., -1:], pano, pano[..., :1]], -1)
    out = []
    for yaw in yaws:
        az = math.radians(yaw) + torch.atan2(uu, torch.ones_like(uu))  # clockwise from the centre column
        x = torch.remainder(az + math.pi, 2 * math.pi) / (2 * math.pi) * big_w  # W/2 + az/2pi W, in [0, W)
        y = (0.5 - el / math.pi) * big_h
        gx = (x + 0.5) / (big_w + 1) * 2 - 1  # pixel centres, one wrapped column on each side
        gy = (y - 0.5) / (big_h - 1) * 2 - 1
        grid = torch.stack([gx, gy], -1)[None].float()
        out.append(torch.nn.functional.grid_sample(padded, grid, mode="bilinear", align_corners=True,
                                                   padding_mode="border"))
    return torch.cat(out)


def _panorama_as_views(model: Any, pano: torch.Tensor, fmap: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """A pinhole model's logits (K, P, P) for a panorama: its :func:`panorama_views` turned into one template per
    heading (the views' templates, each at the heading plus its yaw, added with their visible areas)."""
    views = panorama_views(pano)
    fov = torch.full((len(views),), VIEW_FOV_DEG)
    pol = model.polar(model.photo_features(views), "pinhole", fov, VIEW_HW)
    yaws = torch.tensor(PANORAMA_VIEWS, dtype=torch.float64)
    tmpl, area = model.templates(pol, "pinhole", fov, (heads[None] + yaws[:, None]) % 360.0)  # (V, K, C, T, T)
    corr = correlate(tmpl.sum(0, keepdim=True), fmap)[0]
    return corr / area.sum(0).clamp_min(1.0)[:, None, None] * model.log_scale.exp()


def _answer(logp: torch.Tensor, heads: torch.Tensor, window: tuple[float, float, float], circular: bool,
            separation_m: float, confidence_m: float, seconds: float, spread: torch.Tensor | None = None,
            **extras: Any) -> PosteriorAnswer:
    """The mode of ``logp`` (K, P, P) refined below a cell and a heading step; its radii, modes and heat map from
    ``spread`` (the calibrated posterior; default ``logp``)."""
    k, p, _ = logp.shape
    lat0, lon0, cell = window
    kk, i, j = np.unravel_index(int(torch.argmax(logp)), logp.shape)
    dj = refine_peak(logp[kk, i, :], j)
    di = refine_peak(logp[kk, :, j], i)
    dk = refine_peak(logp[:, i, j], kk, circular)
    step = float(heads[1] - heads[0]) % 360.0 if k > 1 else 0.0
    heading = float(heads[kk] + dk * step) % 360.0
    east, north = (j + dj - p // 2) * cell, (p // 2 - i - di) * cell
    lat, lon = (float(v) for v in offset_to_latlon(lat0, lon0, east, north))
    spread = logp if spread is None else spread
    prob = torch.logsumexp(spread, 0).exp().numpy()
    radii = credible_radii(prob, (j + dj, i + di), cell)
    rows, cols = np.indices(prob.shape)
    near = np.hypot(cols - (j + dj), rows - (i + di)) * cell <= confidence_m
    best_heading = torch.argmax(spread, 0).numpy()
    modes = _modes(prob, best_heading, heads.numpy(), window, separation_m, 5, 0.01)
    aerial = extras.pop("aerial", None)
    return PosteriorAnswer(lat, lon, float(east), float(north), heading, float(prob[near].sum()), radii, modes,
                           prob, window, k, seconds, extras, aerial)
