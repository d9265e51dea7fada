"""Calibrated uncertainty at locate time: the sidecar a locator reads and the radii it states.

A locator's raw uncertainty (:func:`raw_uncertainty`, the confidence-weighted spread of its refined answers) is a
score; the sidecar (``locate_calibration.json`` beside the fine model, or beside the index without one), written by
:func:`crossview.locate.calibrate.calibrate`, turns it into radii holding the truth at stated rates (68 %, 95 %)
per kind of answer (:func:`calibration_key`). Reading it and applying it is all that happens here; the fitting
lives in :mod:`crossview.locate.calibrate`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from crossview.geometry.geo import distance_m

CALIBRATION = "locate_calibration.json"
LEVELS = {"68": 0.68, "95": 0.95}


def calibration_key(method: str, area: bool, flagged: bool = False) -> str:
    """``fine`` / ``retrieval``, ``+near`` when a search area limited the answer (errors are then much smaller),
    ``+flagged`` when the answer contradicts the priors (errors are then much larger)."""
    return method + ("+near" if area else "") + ("+flagged" if flagged else "")


def calibration_path(fine_model: str | os.PathLike | None, index: str | os.PathLike) -> Path:
    """Where a locator's calibration lives: beside its fine model (run folder or checkpoint), else its index."""
    if fine_model is not None:
        p = Path(fine_model)
        return (p if p.is_dir() else p.parent) / CALIBRATION
    index = Path(index)
    return index.with_name(index.name + ".calibration.json")


def load_calibration(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The sidecar's content, or None when absent or unreadable (locate then reports raw, uncalibrated radii)."""
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("factors"), dict) else None


def radii(calibration: dict[str, Any] | None, key: str, raw_m: float) -> dict[str, float] | None:
    """``{"68": r68, "95": r95}`` in metres for an answer of kind ``key`` with raw uncertainty ``raw_m``; None when
    the calibration has no such kind."""
    f = (calibration or {}).get("factors", {}).get(key)
    if not f:
        return None
    scale = raw_m if calibration.get("normalise") else 1.0
    return {k: float(f[k] * scale) for k in LEVELS}


def raw_uncertainty(best, refined: list, tile, run_median_m: float | None = None) -> float:
    """Confidence-weighted spread (m) of the refined answers near the chosen one, at least the fine run's
    evaluated median error (when its metrics.json has one) and at least 4 tile pixels: the score calibration
    turns into radii. Answers more than a tile width away are other hypotheses, not spread of this one."""
    floor, reach = max(4 * tile.mpp, run_median_m or 0.0), max(tile.width, tile.height) * tile.mpp
    near = [(c.confidence, distance_m((best.pose.lat, best.pose.lon), (c.pose.lat, c.pose.lon))) for c in refined]
    near = [(w, d) for w, d in near if d <= reach]
    total = sum(w for w, _ in near)
    if total <= 0:
        return 0.5 * reach
    return float(max(floor, math.sqrt(sum(w * d * d for w, d in near) / total)))
