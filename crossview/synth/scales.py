"""Sizes of the synthetic datasets per scale (plain data; one place to change them)."""

from __future__ import annotations

SCALES = ("tiny", "small", "dense", "pinhole", "pinhole-dense", "medium")
# Scales that exist for some layouts only (the others refuse them with a message).
LAYOUT_SCALES = {"vigor": SCALES, "cvusa": ("tiny", "small", "medium"), "cvact": ("tiny", "small", "medium"),
                 "university1652": ("tiny", "small", "medium")}

# VIGOR-like: tile grid n x n per city, tiles spaced half a tile apart (every interior point lies in 4 tiles).
VIGOR = {
    "tiny": {"grid": 4, "tile": 64, "panos": 12, "pano_hw": (64, 128), "pinholes": 4, "pinhole_hw": (48, 64),
             "cell": 0.5, "ray_samples": 64},
    "small": {"grid": 10, "tile": 128, "panos": 150, "pano_hw": (128, 256), "pinholes": 40,
              "pinhole_hw": (96, 128), "cell": 0.25, "ray_samples": 160},
    # small's images and tiles with 1,000 panoramas per city (2,000 train / 2,000 test same-area): about 20 training
    # panoramas fall in every tile, the density at which a CPU-sized model learns places rather than city styles.
    "dense": {"grid": 10, "tile": 128, "panos": 1000, "pano_hw": (128, 256), "pinholes": 80,
              "pinhole_hw": (96, 128), "cell": 0.25, "ray_samples": 160},
    # small's images and tiles with 600 pinhole photos per city (1,200 train / 1,200 test same-area; dense has 160
    # training pinholes, which a CPU-sized model memorises): the limited-FoV fine-grained runs.
    "pinhole": {"grid": 10, "tile": 128, "panos": 100, "pano_hw": (128, 256), "pinholes": 600,
                "pinhole_hw": (96, 128), "cell": 0.25, "ray_samples": 160},
    # pinhole with five times the photos (3,000 per city: 6,000 train / 6,000 test same-area): about 60 training
    # photos per tile, so the pinhole fine models learn places instead of memorising photos.
    "pinhole-dense": {"grid": 10, "tile": 128, "panos": 100, "pano_hw": (128, 256), "pinholes": 3000,
                      "pinhole_hw": (96, 128), "cell": 0.25, "ray_samples": 160},
    "medium": {"grid": 16, "tile": 320, "panos": 500, "pano_hw": (320, 640), "pinholes": 125,
               "pinhole_hw": (240, 320), "cell": 0.25, "ray_samples": 256},
}

# CVUSA-like: pairs of (aerial tile centred on the camera, cropped-band panorama 1232:224).
CVUSA = {
    "tiny": {"pairs": 24, "tile": 64, "pano_hw": (28, 154), "cell": 0.5, "ray_samples": 64, "half_extent": 110},
    "small": {"pairs": 400, "tile": 128, "pano_hw": (56, 308), "cell": 0.25, "ray_samples": 160,
              "half_extent": 250},
    "medium": {"pairs": 2000, "tile": 256, "pano_hw": (112, 616), "cell": 0.25, "ray_samples": 256,
               "half_extent": 350},
}

# CVACT-like: one city, 2:1 panoramas; train / val from ANU_data_small, test from ANU_data_test.
CVACT = {
    "tiny": {"pairs": 24, "test": 8, "tile": 64, "pano_hw": (64, 128), "cell": 0.5, "ray_samples": 64,
             "half_extent": 110},
    "small": {"pairs": 400, "test": 100, "tile": 128, "pano_hw": (128, 256), "cell": 0.25, "ray_samples": 160,
              "half_extent": 250},
    "medium": {"pairs": 2000, "test": 500, "tile": 256, "pano_hw": (256, 512), "cell": 0.25, "ray_samples": 256,
               "half_extent": 400},
}

# University-1652-like: a class = one target building; one satellite image and several drone views each.
UNIVERSITY = {
    "tiny": {"train": 6, "test": 4, "distractors": 2, "drones": 3, "sat": 64, "drone_hw": (64, 64), "cell": 0.5,
             "half_extent": 110},
    "small": {"train": 40, "test": 20, "distractors": 10, "drones": 8, "sat": 128, "drone_hw": (128, 128),
              "cell": 0.25, "half_extent": 250},
    "medium": {"train": 120, "test": 60, "distractors": 20, "drones": 10, "sat": 256, "drone_hw": (192, 192),
               "cell": 0.25, "half_extent": 300},
}

EYE_HEIGHT_M = 2.0
