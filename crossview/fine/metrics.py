"""Fine-grained localization metrics (docs/official_code_notes.md, "Metrics and protocol switches"), computed once
for every method.

Inputs are metres in the tile frame (x east, y north) and headings in degrees clockwise from north.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crossview.geometry.angles import angle_diff_deg
from crossview.geometry.types import ArrayLike

POSITION_THRESHOLDS_M = (1.0, 3.0, 5.0)
HEADING_THRESHOLDS_DEG = (1.0, 3.0, 5.0)


def heading_error_deg(pred: ArrayLike, true: ArrayLike) -> np.ndarray:
    """Smallest absolute heading difference (degrees, [0, 180]) as a float array."""
    return np.asarray(angle_diff_deg(np.asarray(pred, dtype=float), np.asarray(true, dtype=float)), dtype=float)


def lateral_longitudinal(pred_xy: ArrayLike, true_xy: ArrayLike,
                         true_heading_deg: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Absolute error along the true heading (longitudinal) and across it (lateral), metres."""
    err = np.asarray(pred_xy, dtype=float) - np.asarray(true_xy, dtype=float)
    h = np.radians(np.asarray(true_heading_deg, dtype=float))
    fwd = np.stack([np.sin(h), np.cos(h)], -1)  # unit vector of a heading clockwise from north, (east, north)
    right = np.stack([np.cos(h), -np.sin(h)], -1)
    return np.abs((err * right).sum(-1)), np.abs((err * fwd).sum(-1))


def fine_metrics(pred_xy: Sequence, true_xy: Sequence, pred_heading: Sequence | None = None,
                 true_heading: Sequence | None = None) -> dict[str, float]:
    """Mean/median position error (m), recall within 1/3/5 m, lateral/longitudinal errors and recalls, and — when
    headings are given — mean/median heading error and recall within 1/3/5°. Recalls are fractions in [0, 1]."""
    p = np.asarray(pred_xy, dtype=float).reshape(-1, 2)
    t = np.asarray(true_xy, dtype=float).reshape(-1, 2)
    if len(p) != len(t) or len(p) == 0:
        raise ValueError(f"need equally many predictions and truths (got {len(p)} and {len(t)})")
    e = np.linalg.norm(p - t, axis=-1)
    out: dict[str, float] = {"count": float(len(e)), "mean_m": float(e.mean()), "median_m": float(np.median(e))}
    for thr in POSITION_THRESHOLDS_M:
        out[f"recall@{thr:g}m"] = float((e < thr).mean())
    if true_heading is not None:
        lat, lon = lateral_longitudinal(p, t, true_heading)
        out.update({"lateral_mean_m": float(lat.mean()), "lateral_median_m": float(np.median(lat)),
                    "longitudinal_mean_m": float(lon.mean()), "longitudinal_median_m": float(np.median(lon))})
        for thr in POSITION_THRESHOLDS_M:
            out[f"lateral_recall@{thr:g}m"] = float((lat < thr).mean())
            out[f"longitudinal_recall@{thr:g}m"] = float((lon < thr).mean())
    if pred_heading is not None and true_heading is not None:
        he = heading_error_deg(pred_heading, true_heading)
        out.update({"heading_mean_deg": float(he.mean()), "heading_median_deg": float(np.median(he))})
        for thr in HEADING_THRESHOLDS_DEG:
            out[f"heading_recall@{thr:g}deg"] = float((he < thr).mean())
    return out


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """One line per setting: the headline figures."""
    cols = [("mean_m", "mean m"), ("median_m", "median m"), ("recall@1m", "R@1m"), ("recall@3m", "R@3m"),
            ("recall@5m", "R@5m"), ("heading_median_deg", "med °"), ("heading_recall@1deg", "R@1°"),
            ("heading_recall@5deg", "R@5°"), ("lateral_median_m", "lat m"), ("longitudinal_median_m", "long m")]
    width = max([len(k) for k in rows] + [8])
    lines = [f"{'setting':<{width}} " + " ".join(f"{c[1]:>8}" for c in cols)]
    for name, m in rows.items():
        cells = []
        for key, _ in cols:
            v = m.get(key)
            cells.append(f"{'-':>8}" if v is None else (f"{100 * v:>7.1f}%" if "recall" in key else f"{v:>8.2f}"))
        lines.append(f"{name:<{width}} " + " ".join(cells))
    return "\n".join(lines)
