"""Window search inside a search area (``locate --fine-search scan``): the fine model is walked to the camera.

A fine model is trained with the camera near the centre of its aerial tile; in a fixed grid of tiles overlapping by
half, the camera can sit up to a quarter tile off every tile's centre, where the model's answer shrinks toward the
centre. Measured on the synthetic pinhole world (``fg2_tiny_kitti``), its error was 4.5 m with the camera within
10 m of the tile centre, 12.7 m at 10-20 m and 24 m at 20-30 m. The scan instead cuts windows centred anywhere
(:class:`crossview.tiles.mosaic.Mosaic`): from each point of a grid over the search area, a window is refined, the
window re-centred on the answer, and so on for a few steps (a walk); the walk whose final window the model is most
confident in gives the answer, refined once more with the model's full options (FG²'s RANSAC).

Frames: lat/lon WGS84; metres east/north on the tangent plane at the search area's centre.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from crossview.errors import ConfigError, CrossviewError
from crossview.fine.pose import Pose
from crossview.geometry.geo import distance_m, offset_to_latlon


@dataclass(frozen=True)
class ScanConfig:
    """The scan's start grid and walks: ``spacing_m`` between start points, at most ``steps`` windows a walk, a walk
    settled when an answer moves less than ``settle_m``. The defaults were chosen on the calibration half of the
    pinhole-dense world (median 23.9 m at 15 m / 3 steps, 35.4 m at 20 m / 3, 28.5 m at 20 m / 5;
    docs/locate_priors.md)."""

    spacing_m: float = 15.0
    steps: int = 3
    settle_m: float = 2.0

    def __post_init__(self) -> None:
        if not self.spacing_m > 0:
            raise ConfigError(f"scan spacing {self.spacing_m} m must be positive")
        if int(self.steps) < 1:
            raise ConfigError(f"scan steps {self.steps} must be at least 1")


SCAN = ScanConfig()


@dataclass
class Walk:
    """One walk: the window centres visited (lat, lon) and the fine pose in each (metres from that centre)."""

    start: tuple[float, float]
    centres: list[tuple[float, float]] = field(default_factory=list)
    poses: list[Pose] = field(default_factory=list)

    @property
    def end(self) -> tuple[float, float]:
        """Where the last window's pose puts the camera (lat, lon)."""
        (lat, lon), p = self.centres[-1], self.poses[-1]
        return offset_to_latlon(lat, lon, p.x_m, p.y_m)

    @property
    def confidence(self) -> float:
        """The fine model's confidence in the last window."""
        return float(self.poses[-1].confidence)


def start_points(lat: float, lon: float, radius_m: float, spacing_m: float) -> list[tuple[float, float]]:
    """A square grid of ``spacing_m`` through (lat, lon), its points within ``radius_m`` of it (lat, lon)."""
    if not spacing_m > 0:
        raise CrossviewError(f"scan spacing {spacing_m} m must be positive")
    k = int(math.floor(radius_m / spacing_m))
    offsets = [(i * spacing_m, j * spacing_m) for j in range(k, -k - 1, -1) for i in range(-k, k + 1)
               if math.hypot(i, j) * spacing_m <= radius_m + 1e-9]
    return [offset_to_latlon(lat, lon, e, n) for e, n in offsets]


def walk_area(area: tuple[float, float, float], refine: Callable[[float, float], Pose | None],
              spacing_m: float = SCAN.spacing_m, steps: int = SCAN.steps,
              settle_m: float = SCAN.settle_m) -> list[Walk]:
    """Walks from every :func:`start_points` point of ``area`` (lat, lon, radius_m). ``refine(lat, lon)``: the fast
    pose in the window centred there, or None when no window can be cut there (the walk stops). A walk stops after
    ``steps`` windows or when an answer moves less than ``settle_m`` metres. Walks without a single pose are
    dropped."""
    walks = []
    for start in start_points(area[0], area[1], area[2], spacing_m):
        w, here = Walk(start), start
        for _ in range(max(1, int(steps))):
            pose = refine(*here)
            if pose is None:
                break
            w.centres.append(here)
            w.poses.append(pose)
            if math.hypot(pose.x_m, pose.y_m) < settle_m:
                break
            here = offset_to_latlon(here[0], here[1], pose.x_m, pose.y_m)
        if w.poses:
            walks.append(w)
    return walks


def best_walk(walks: list[Walk], area: tuple[float, float, float] | None = None) -> Walk:
    """The walk whose final window the fine model is most confident in (the first of equals), among those ending
    inside ``area`` (lat, lon, radius_m) when any does: answers outside the search area are not answers."""
    if not walks:
        raise CrossviewError("the scan found no window inside the tiles: the search area lies outside the index")
    inside = [w for w in walks if area is None or distance_m(w.end, area[:2]) <= area[2]] or walks
    return inside[int(np.argmax([w.confidence for w in inside]))]

