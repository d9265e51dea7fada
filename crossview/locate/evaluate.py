"""The locate evaluation: held-out photos of the synthetic world located against their known truth.

:func:`demo_locate` runs the whole chain (tiles, index, :class:`Locator`) on the world's test photos;
:func:`held_out_photos` picks them, :func:`simulated_priors` gives each its seeded heading prior and rough GPS fix,
and :func:`locate_photo` locates one and measures it (the rows of ``per_photo.jsonl``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from crossview.errors import ConfigError, DatasetError
from crossview.geometry.angles import angle_diff_deg
from crossview.geometry.geo import distance_m, offset_to_latlon
from crossview.io import write_json_atomic
from crossview.locate.models import index_tiles, is_path
from crossview.locate.options import LocateOptions
from crossview.locate.pipeline import Locator


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def demo_locate(world_dir: str | os.PathLike, run_dir: str | os.PathLike, fine_run: str | os.PathLike | None = None,
                n: int = 20, *, out: str | os.PathLike | None = None, heading_noise_deg: float = 45.0,
                refine: int = 3, top_k: int = 5, seed: int = 0, device: str = "cpu",
                gps_noise_m: float | None = None, near_radius_m: float | None = None,
                split: str = "all", camera: str = "panorama", fine_search: str = "tiles") -> dict[str, Any]:
    """Locate ``n`` held-out panoramas (or ``camera="pinhole"`` photos, each with its own field of view) of a
    synthetic VIGOR-like world and compare with the known truth.

    Builds the tile set of the world's ``satellite/`` folder and an index with the retrieval model of
    ``run_dir`` (a run folder, or a built model), then locates test-split panoramas (evenly spread over the
    list) with a heading prior whose centre is the true heading plus a seeded uniform error in
    ±``heading_noise_deg`` (HC-Net's protocol; 0 = known orientation). ``fine_run``: a fine-localization run
    folder or checkpoint, or a built localizer. Reports median position error in metres (great-circle) and
    heading error in degrees for retrieval alone (top-1 tile centre, prior heading) and, with ``fine_run``,
    after fine localization. ``gps_noise_m`` simulates a rough GPS fix per photo (the truth moved by a seeded
    random offset of up to that many metres) and searches only tiles within ``near_radius_m`` (default: the same)
    of it; the fix itself is then reported as a third baseline.
    ``split``: ``all`` test panoramas, or the ``first`` (even positions of the test list) / ``second`` (odd) half,
    two disjoint sets: calibration on one, measurement on the other (:mod:`crossview.locate.calibrate`).
    ``fine_search``: ``tiles`` or ``scan`` (with ``gps_noise_m``), as :meth:`Locator.locate_result`.
    Writes ``metrics.json`` and ``per_photo.jsonl`` under ``out`` (default ``run_dir/locate_demo``).
    """
    from crossview.tiles import build_tiles

    world, run = Path(world_dir), (Path(run_dir) if is_path(run_dir) else run_dir)
    if out is None and not is_path(run_dir):
        raise ConfigError("demo_locate: give out= when the retrieval model is not a run folder")
    out = Path(out) if out is not None else run / "locate_demo"
    picks = held_out_photos(world, n, split, camera)
    manifest = build_tiles(world / "satellite", out / "tiles")
    index = index_tiles(manifest, run, out / "tiles.index", device=device)
    locator = Locator(index, model=None if is_path(run_dir) else run, fine_model=fine_run, refine=refine,
                      device=device)
    rows = []
    from crossview.progress import progress

    for i, rec in enumerate(progress(picks, desc="locate", unit="photo")):
        rows.append(locate_photo(locator, world, rec, i, seed, heading_noise_deg, gps_noise_m, near_radius_m, top_k,
                                  fine_search))
    ret = [r["retrieval_error_m"] for r in rows]
    metrics: dict[str, Any] = {
        "photos": len(rows), "camera": camera, "tiles": len(locator.index), "heading_noise_deg": heading_noise_deg,
        "retrieval": {"median_m": _median(ret), "mean_m": float(np.mean(ret)),
                      "top1_contains_camera": float(np.mean([r["top1_contains_camera"] for r in rows])),
                      "heading_median_deg": _median([r["retrieval_heading_error_deg"] for r in rows])},
        "gps_noise_m": gps_noise_m, "near_radius_m": (near_radius_m or gps_noise_m) if gps_noise_m else None,
        "world": str(world), "run": str(run) if is_path(run_dir) else type(run).__name__,
        "fine_run": None if fine_run is None else str(fine_run) if is_path(fine_run) else type(fine_run).__name__,
        "index": str(index), "out": str(out), "split": split, "fine_search": fine_search,
        "flagged": float(np.mean([bool(r["flags"]) for r in rows])),
    }
    if gps_noise_m:
        metrics["gps_fix"] = {"median_m": _median([r["gps_error_m"] for r in rows])}
    if fine_run is not None:
        metrics["fine"] = _fine_summary(rows)
    write_json_atomic(out / "metrics.json", metrics)
    from crossview.io import write_text_atomic

    write_text_atomic(out / "per_photo.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return metrics


def held_out_photos(world: Path, n: int, split: str, camera: str = "panorama") -> list[dict[str, Any]]:
    """Up to ``n`` test photos of ``camera`` of ``crossview_poses.jsonl`` (its ``split`` half), evenly spread."""
    poses_path = world / "crossview_poses.jsonl"
    if not poses_path.is_file():
        raise DatasetError(f"{poses_path} not found: generate a world with `crossview synth --layout vigor`")
    records = [json.loads(line) for line in poses_path.read_text().splitlines() if line.strip()]
    test = [r for r in records if r.get("split") == "test" and r.get("camera", "panorama") == camera]
    if not test:
        raise DatasetError(f"{poses_path} has no test-split {camera} photos")
    if split not in ("all", "first", "second"):
        raise ConfigError(f"demo_locate: split {split!r} is not all, first or second")
    test = test if split == "all" else test[0 if split == "first" else 1::2]
    return [test[i] for i in sorted(set(np.linspace(0, len(test) - 1, min(n, len(test))).round().astype(int)))]


def simulated_priors(truth: tuple[float, float], true_heading: float, i: int, seed: int, heading_noise_deg: float,
                      gps_noise_m: float | None,
                      near_radius_m: float | None) -> tuple[tuple, tuple | None, tuple | None]:
    """Photo ``i``'s seeded (heading prior, rough GPS fix, search area); the fix in lat/lon WGS84."""
    import random

    noise = random.Random(seed * 1000003 + i).uniform(-heading_noise_deg, heading_noise_deg)
    prior = ((true_heading + noise) % 360.0, heading_noise_deg) if heading_noise_deg > 0 else (true_heading, 0.0)
    near = fix = None
    if gps_noise_m:
        rnd = random.Random(seed * 7919 + i)
        dist, bearing = gps_noise_m * math.sqrt(rnd.random()), rnd.uniform(0.0, 2 * math.pi)
        fix = tuple(float(v) for v in offset_to_latlon(truth[0], truth[1], dist * math.sin(bearing),
                                                        dist * math.cos(bearing)))
        near = (fix[0], fix[1], float(near_radius_m or gps_noise_m))
    return prior, fix, near


def locate_photo(locator: Locator, world: Path, rec: dict[str, Any], i: int, seed: int, heading_noise_deg: float,
                  gps_noise_m: float | None, near_radius_m: float | None, top_k: int,
                  fine_search: str = "tiles") -> dict[str, Any]:
    """Locate held-out photo ``i`` (a record of :func:`held_out_photos`) with its simulated priors
    (:func:`simulated_priors`); its ``per_photo.jsonl`` row."""

    truth = (float(rec["lat"]), float(rec["lon"]))
    true_heading = float(rec.get("heading_deg") or 0.0)
    prior, fix, near = simulated_priors(truth, true_heading, i, seed, heading_noise_deg, gps_noise_m, near_radius_m)
    options = LocateOptions(camera=rec.get("camera", "panorama"), fov_deg=rec.get("fov_deg"), heading_prior=prior,
                            top_k=top_k, near=near, fine_search=fine_search if near is not None else "tiles")
    r = locator.locate(world / rec["image"], options)
    top = r["candidates"][0]
    positives = {Path(t["tile"]).with_suffix("").as_posix().split("satellite/", 1)[-1] for t in rec["tiles"]}
    row = {"image": rec["image"], "true_lat": truth[0], "true_lon": truth[1], "true_heading_deg": true_heading,
           "prior_heading_deg": prior[0], "top1_tile": top["tile"],
           "top1_contains_camera": top["tile"] in positives,
           "retrieval_error_m": distance_m((top["lat"], top["lon"]), truth),
           "retrieval_heading_error_deg": float(angle_diff_deg(prior[0], true_heading))}
    if fix is not None:
        row.update(gps_fix=list(fix), gps_error_m=distance_m(fix, truth))
    if r["method"] == "fine":
        row.update(fine_error_m=distance_m((r["lat"], r["lon"]), truth), fine_tile=r["tile"],
                   fine_tile_contains_camera=r["tile"] in positives,
                   fine_heading_error_deg=None if r["heading_deg"] is None else
                   float(angle_diff_deg(r["heading_deg"], true_heading)),
                   fine_confidence=r["confidence"], uncertainty_m=r["uncertainty_m"])
    u = r.get("uncertainty") or {}
    key = u.get("kind", r["method"] + ("+near" if near else "") + ("+flagged" if r.get("flags") else ""))
    row.update(error_m=row.get("fine_error_m", distance_m((r["lat"], r["lon"]), truth)),
               raw_uncertainty_m=u.get("raw_m", r["uncertainty_m"]), uncertainty_key=key,
               radii_m={"68": u["68"], "95": u["95"]} if u.get("calibrated") else None, flags=r.get("flags", []))
    return row


def _fine_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``fine`` block of metrics.json: errors after fine localization, tile and uncertainty hit rates."""
    fine = [r["fine_error_m"] for r in rows if "fine_error_m" in r]
    hd = [r["fine_heading_error_deg"] for r in rows if r.get("fine_heading_error_deg") is not None]
    return {"median_m": _median(fine), "mean_m": float(np.mean(fine)) if fine else None,
            "heading_median_deg": _median(hd),
            "tile_contains_camera": float(np.mean([r["fine_tile_contains_camera"] for r in rows
                                                   if "fine_error_m" in r])) if fine else None,
            "within_uncertainty": float(np.mean([r["fine_error_m"] <= r["uncertainty_m"]
                                                 for r in rows if "fine_error_m" in r]))}
