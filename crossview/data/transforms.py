"""Image transforms for training and evaluation, on uint8 tensors (C×H×W).

Synchronised geometric augmentation keeps a ground panorama and its aerial tile consistent:
- a horizontal flip of both mirrors the scene east↔west in the tile and azimuth θ → −θ in a north-centred
  panorama;
- rotating the tile counter-clockwise by k·90° (``torch.rot90`` on H, W) brings what was east to the north,
  which a panorama shows by rolling its columns by −k·W/4 (the centre column then shows what was at +90°).
The sign is checked against the synthetic world's renderer in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from crossview.geometry.cameras import roll_panorama


def normalize(images: torch.Tensor, mean, std, scale: float = 1.0) -> torch.Tensor:
    """The one normalisation: ``(x·scale − mean) / std`` per channel, ``mean``/``std`` given for [0, 1] pixels.

    ``images`` (C, H, W) or (B, C, H, W): uint8 (divided by 255 first, giving float32) or float in [0, 1] (its
    dtype kept); the result is on the images' device."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    if scale != 1.0:
        x = x * scale
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


def sync_flip(ground: torch.Tensor, aerial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return ground.flip(-1), aerial.flip(-1)


def sync_rotate(ground: torch.Tensor, aerial: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate the aerial tile counter-clockwise by k·90° and roll the panorama by −k quarter-widths."""
    w = ground.shape[-1]
    if w % 4:
        raise ValueError(f"panorama width {w} must be divisible by 4 for quarter-turn rolls")
    return roll_panorama(ground, 90.0 * k)[0], torch.rot90(aerial, k, dims=(-2, -1))


def limited_fov(pano: torch.Tensor, fov_deg: float, heading_deg: float, centre: bool = False) -> torch.Tensor:
    """The ``fov_deg``-wide sector of a north-centred panorama (…×H×W) around ``heading_deg`` (clockwise from north),
    black elsewhere: the CVUSA/VIGOR limited-FoV protocol, and what ``locate`` paints for a pinhole photo.
    ``centre=True`` (unknown orientation) rolls the sector to the middle column, where a photo of unknown heading
    is painted."""
    w = pano.shape[-1]
    azimuth = (torch.arange(w, device=pano.device) + 0.5) * (360.0 / w) - 180.0  # of each column
    off = torch.remainder(azimuth - heading_deg + 180.0, 360.0) - 180.0
    out = pano * (off.abs() <= fov_deg / 2).to(pano.dtype)
    return roll_panorama(out, heading_deg)[0] if centre else out


@dataclass
class PhotometricAug:
    """The official chain in torchvision terms (docs/official_code_notes.md): JPEG, jitter, blur/sharpen, dropout."""

    p_jpeg: float = 0.5
    p_jitter: float = 0.5
    p_blur_sharpen: float = 0.3
    p_dropout: float = 0.3
    grid_ratio: float = 0.4  # 0.4 aerial, 0.5 ground, as the official code

    def __post_init__(self) -> None:
        self.jitter = v2.ColorJitter(0.15, 0.15, 0.15, 0.15)
        self.jpeg = v2.JPEG((90, 100))

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) < self.p_jpeg:
            img = self.jpeg(img)
        if torch.rand(()) < self.p_jitter:
            img = self.jitter(img)
        if torch.rand(()) < self.p_blur_sharpen:
            if torch.rand(()) < 0.5:
                k = int(torch.randint(1, 3, ())) * 2 + 1
                img = TF.gaussian_blur(img, [k, k])
            else:
                img = TF.adjust_sharpness(img, 1.0 + float(torch.rand(())) * 1.5)
        if torch.rand(()) < self.p_dropout:
            img = grid_dropout(img, self.grid_ratio) if torch.rand(()) < 0.5 else coarse_dropout(img)
        return img


def grid_dropout(img: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero a ``ratio`` share of each cell of a random grid (albumentations' GridDropout idea)."""
    h, w = img.shape[-2:]
    cell = int(torch.randint(max(4, min(h, w) // 10), max(5, min(h, w) // 3), ()))
    hole = max(1, round(cell * ratio**0.5))
    oy, ox = int(torch.randint(0, cell, ())), int(torch.randint(0, cell, ()))
    mask = torch.ones(h, w, dtype=torch.bool)
    ys = (torch.arange(h) - oy) % cell < hole
    xs = (torch.arange(w) - ox) % cell < hole
    mask[ys[:, None] & xs[None, :]] = False
    return img * mask


def coarse_dropout(img: torch.Tensor, holes: tuple[int, int] = (10, 25), frac: tuple[float, float] = (0.1, 0.2)):
    """Zero 10–25 rectangles, each 10–20 % of the image height on a side."""
    h, w = img.shape[-2:]
    img = img.clone()
    for _ in range(int(torch.randint(holes[0], holes[1] + 1, ()))):
        sh = max(1, int(h * (frac[0] + (frac[1] - frac[0]) * float(torch.rand(())))))
        sw = sh
        y, x = int(torch.randint(0, max(1, h - sh + 1), ())), int(torch.randint(0, max(1, w - sw + 1), ()))
        img[..., y : y + sh, x : x + sw] = 0
    return img
