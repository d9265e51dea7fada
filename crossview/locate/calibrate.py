"""Uncertainty that means something: radii within which the true position lies at stated rates (68 %, 95 %).

A locator's raw uncertainty (the confidence-weighted spread of its refined answers, :func:`raw_uncertainty`) is a
score, not a probability. :func:`calibrate` runs the locator on held-out synthetic photos with known truth and fits,
per kind of answer (``fine`` / ``retrieval``; with or without a search area; flagged or not as contradicting the
priors), the split-conformal quantile of the error in metres (``normalise=True``: of ``error / raw``, for
localizers whose raw score tracks their error): that radius then holds the truth with probability at least ``q`` on
photos like those (exchangeable with the calibration set). Measured on the dense world, the raw spread did not
rank errors (Spearman -0.04) while the flag did (median 39 m flagged vs 8 m not): hence the default.
The radii (or factors) are saved in a JSON sidecar next to the fine model
(``locate_calibration.json``; for a locator without one, next to the index) that :class:`Locator` reads
(:mod:`crossview.locate.uncertainty`: reading and applying it, apart from this fitting).
:func:`measure_coverage` checks the rates on photos disjoint from the calibration set.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from crossview.io import write_json_atomic
from crossview.locate.evaluate import demo_locate
from crossview.locate.uncertainty import (
    CALIBRATION,
    LEVELS,
    calibration_key,
    calibration_path,
    load_calibration,
    radii,
    raw_uncertainty,
)

__all__ = ["CALIBRATION", "LEVELS", "MIN_SAMPLES", "calibrate", "calibration_key", "calibration_path",
           "conformal_quantile", "coverage", "fit", "load_calibration", "measure_coverage", "radii",
           "raw_uncertainty"]

MIN_SAMPLES = 20  # fewer calibration answers of a kind: that kind stays uncalibrated


def conformal_quantile(scores: np.ndarray | list[float], level: float) -> float:
    """Split-conformal quantile: the ⌈(n+1)·level⌉-th smallest score (the largest when that exceeds n)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if s.size == 0:
        raise ValueError("conformal_quantile: no scores")
    k = min(int(math.ceil((s.size + 1) * level)), s.size)
    return float(s[k - 1])


def fit(errors_m: list[float], raw_m: list[float] | None = None) -> dict[str, float]:
    """``{"68": c68, "95": c95, "n": n}`` so that ``error <= c`` (metres) at each level, or with ``raw_m``
    ``error <= c · raw``."""
    score = np.asarray(errors_m, np.float64)
    if raw_m is not None:
        score = score / np.maximum(np.asarray(raw_m, np.float64), 1e-6)
    return {**{k: conformal_quantile(score, q) for k, q in LEVELS.items()}, "n": int(score.size)}


def _fit_rows(rows: list[dict[str, Any]], min_samples: int = MIN_SAMPLES,
              normalise: bool = False) -> dict[str, dict[str, float]]:
    by_key: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        e, s = by_key.setdefault(r["uncertainty_key"], ([], []))
        e.append(r["error_m"])
        s.append(r["raw_uncertainty_m"])
    return {k: fit(e, s if normalise else None) for k, (e, s) in by_key.items() if len(e) >= min_samples}


def calibrate(world_dir: str | os.PathLike, run_dir: Any, fine_run: Any = None, n: int = 200, *,
              half: str = "first", out: str | os.PathLike | None = None, path: str | os.PathLike | None = None,
              min_samples: int = MIN_SAMPLES, normalise: bool = False, **demo: Any) -> dict[str, Any]:
    """Calibrate a locator (retrieval ``run_dir`` + ``fine_run``) on ``n`` test panoramas of a synthetic world
    (``half``: ``first`` = even positions of the test list, so that ``second`` stays held out), with the
    priors of ``demo_locate`` (``gps_noise_m``, ``heading_noise_deg``, ``top_k``, ``refine``, ``seed``).
    Kinds of answer with fewer than ``min_samples`` photos stay uncalibrated. Writes the sidecar (atomically) at
    ``path`` (default: :func:`calibration_path`) and returns its content."""
    metrics = demo_locate(world_dir, run_dir, fine_run, n=n, out=out, split=half, **demo)
    rows = [json.loads(line) for line in (Path(metrics["out"]) / "per_photo.jsonl").read_text().splitlines()]
    factors = _fit_rows(rows, min_samples, normalise)
    index = metrics["index"]
    target = Path(path) if path is not None else calibration_path(
        fine_run if isinstance(fine_run, str | os.PathLike) else None, index)
    data = {"factors": factors, "levels": LEVELS, "normalise": normalise,
            "score": "error_m / raw_uncertainty_m" if normalise else "error_m", "photos": len(rows),
            "world": str(world_dir), "half": half,
            "protocol": {k: metrics.get(k) for k in ("gps_noise_m", "near_radius_m", "heading_noise_deg")},
            "run": metrics["run"], "fine_run": metrics["fine_run"]}
    write_json_atomic(target, data)
    return {**data, "path": str(target)}


def coverage(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Fraction (and count) of answers whose error lies within their 68 % and 95 % radii, per kind and overall."""
    out: dict[str, Any] = {}
    groups: dict[str, list[dict[str, Any]]] = {"all": [r for r in rows if r.get("radii_m")]}
    for r in groups["all"]:
        groups.setdefault(r["uncertainty_key"], []).append(r)
    for name, rs in groups.items():
        g: dict[str, Any] = {"photos": len(rs)}
        for k in LEVELS:
            inside = sum(r["error_m"] <= r["radii_m"][k] for r in rs)
            g[f"within_{k}"] = inside
            g[f"rate_{k}"] = inside / len(rs) if rs else None
            g[f"median_radius_{k}_m"] = float(np.median([r["radii_m"][k] for r in rs])) if rs else None
        out[name] = g
    out["uncalibrated"] = sum(1 for r in rows if not r.get("radii_m"))
    return out


def measure_coverage(world_dir: str | os.PathLike, run_dir: Any, fine_run: Any = None, n: int = 200, *,
                     half: str = "second", out: str | os.PathLike | None = None, **demo: Any) -> dict[str, Any]:
    """Locate ``n`` held-out panoramas (``half="second"``: disjoint from :func:`calibrate`'s) with the saved
    calibration and report how often the truth lies within the stated radii (:func:`coverage`) plus the median
    errors of ``demo_locate``."""
    metrics = demo_locate(world_dir, run_dir, fine_run, n=n, out=out, split=half, **demo)
    rows = [json.loads(line) for line in (Path(metrics["out"]) / "per_photo.jsonl").read_text().splitlines()]
    return {"coverage": coverage(rows), "fine": metrics.get("fine"), "retrieval": metrics["retrieval"],
            "gps_fix": metrics.get("gps_fix"), "photos": metrics["photos"], "flagged": metrics.get("flagged")}
