"""Which walk end should the scan choose? Scores of the scan's walk ends on held-out pinholes of the synthetic world.

``crossview locate --fine-search scan`` walks the fine model to the camera from a grid over the search area and
answers with the walk whose final window the model is most confident in. The right walk usually exists (a walk end
within 10 m of the camera for over 80 % of photos among the five most confident) but is often not the chosen one.
This benchmark records, per photo, every walk end with its truth and re-scores the five most confident distinct
ends (at least 3 m apart, inside the search area) with:

- ``conf``: the model's confidence in the walk's last window (the scan's choice);
- ``ring_mean``: the confidence averaged over 13 windows (centred on the end, 8 at 3 m, 4 at 6 m around it);
- ``ring_mean-cohort``: ``ring_mean`` minus the mean confidence of ``--cohort`` unrelated training photos in the
  end's window at the same heading prior (cohort normalisation: windows that attract every photo score lower);
- ``conf-mirror`` / ``conf-swap`` / ``conf-rot180``: minus the confidence of the photo mirrored, with its halves
  swapped, or with the heading prior turned 180° (self-cohorts);
- ``walks_converging``: how many walks end within 5 m.

For each score: the AUC of right (< 10 m) against wrong ends, and the error of the end it picks per photo. Priors as
``demo_locate`` (compass ±20°, GPS fix off by up to 50 m, seed 0). Results: ``benchmarks/results/locate_pinhole.json``
(``walk_end_selectors_2026_12_03``).

    python -m benchmarks.experiments.locate_scan_selectors --world PIND --retrieval RUN_FOV --fine CKPT --half first \\
        --n 50 --out ENDS_FIRST.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.common import add_pinhole_scan_arguments, add_work_argument, top_ends, work_dir

RING = [(0.0, 0.0)] + [(3 * math.cos(a), 3 * math.sin(a)) for a in np.arange(8) * math.pi / 4] + \
       [(6 * math.cos(a), 6 * math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]


def _variants(photo):
    from PIL import Image, ImageOps

    a = np.asarray(photo.image)
    h = a.shape[1] // 2
    return replace(photo, image=ImageOps.mirror(photo.image)), \
        replace(photo, image=Image.fromarray(np.concatenate([a[:, h:], a[:, :h]], 1)))


def _conf(loc, photo, lat, lon, prior) -> float:
    p = loc.window_pose(photo, lat, lon, prior, ransac=False)
    return 0.0 if p is None else float(p.confidence)


def _score_end(loc, photo, e, prior, cohort) -> None:
    """Adds the probes' confidences to walk end ``e`` (a dict with ``end`` = [lat, lon])."""
    from crossview.geometry.geo import offset_to_latlon

    lat, lon = e["end"]
    mirror, swap = _variants(photo)
    e["ring"] = [_conf(loc, photo, *(float(v) for v in offset_to_latlon(lat, lon, de, dn)), prior) for de, dn in RING]
    e["cohort"] = [_conf(loc, c, lat, lon, prior) for c in cohort]
    e["mirror"], e["swap"] = _conf(loc, mirror, lat, lon, prior), _conf(loc, swap, lat, lon, prior)
    e["rot180"] = _conf(loc, photo, lat, lon, ((prior[0] + 180.0) % 360.0, prior[1]))


def scan(loc, photo, prior, near) -> tuple[list, tuple[float, float]]:
    """The scan's walks over ``near`` and its answer (lat, lon), as ``locate --fine-search scan`` chooses it: the
    most confident walk ending inside the area, refined once more with the model's full options."""
    from crossview.geometry.geo import offset_to_latlon
    from crossview.locate.scan import best_walk

    walks = loc.scan_walks(photo, prior, near)
    walk = best_walk(walks, near)
    final = loc.window_pose(photo, *walk.end, prior)
    base, pose = (walk.end, final) if final is not None else (walk.centres[-1], walk.poses[-1])
    return walks, tuple(float(v) for v in offset_to_latlon(base[0], base[1], pose.x_m, pose.y_m))


def record(world: Path, retrieval: str, fine: str, half: str, n: int, k_cohort: int, out: Path,
           work: Path) -> list[dict]:
    """Locate ``n`` pinholes of ``half`` by the scan, recording every walk end; rows appended to ``out``."""
    from benchmarks.common import world_index
    from crossview.geometry.geo import distance_m
    from crossview.locate import Locator, held_out_photos, read_photo, simulated_priors

    loc = Locator(world_index(world, retrieval, work)[1], fine_model=fine)
    recs = [json.loads(line) for line in (world / "crossview_poses.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in recs if r.get("split") == "train" and r.get("camera") == "pinhole"]
    cohort = [read_photo(world / r["image"], "pinhole", r["fov_deg"])
              for r in random.Random(5).sample(train, k_cohort)]
    rows = []
    for i, rec in enumerate(held_out_photos(world, n, half, "pinhole")):
        t0 = time.time()
        truth = (float(rec["lat"]), float(rec["lon"]))
        prior, fix, near = simulated_priors(truth, float(rec["heading_deg"]), i, 0, 20.0, 50.0, None)
        photo = read_photo(world / rec["image"], "pinhole", rec["fov_deg"])
        walks, answer = scan(loc, photo, prior, near)
        ends = [{"end": list(w.end), "err": distance_m(w.end, truth), "conf": w.confidence,
                 "inside": distance_m(w.end, near[:2]) <= near[2]} for w in walks]
        for e in ends:
            e["n_conv"] = sum(distance_m(e["end"], f["end"]) < 5.0 for f in ends)
        for e in top_ends(ends):
            e["top"] = True
            _score_end(loc, photo, e, prior, cohort)
        row = {"i": i, "image": rec["image"], "answer_err": distance_m(answer, truth), "ends": ends,
               "seconds": time.time() - t0}
        rows.append(row)
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return rows


SCORES = {
    "conf": lambda e: e["conf"],
    "ring_mean": lambda e: float(np.mean(e["ring"])),
    "ring_mean-cohort": lambda e: float(np.mean(e["ring"]) - np.mean(e["cohort"])),
    "conf-mirror": lambda e: e["conf"] - e["mirror"],
    "conf-swap": lambda e: e["conf"] - e["swap"],
    "conf-rot180": lambda e: e["conf"] - e["rot180"],
    "walks_converging_within_5m": lambda e: e["n_conv"],
}


def summarise(rows: list[dict], right_m: float = 10.0) -> dict:
    """Per score: AUC of right against wrong top ends, and the error of the end it picks per photo."""
    res: dict = {"photos": len(rows), "pipeline_median_m": float(np.median([r["answer_err"] for r in rows])),
                 "oracle_within_10m": float(np.mean([min(e["err"] for e in r["ends"] if e.get("top")) < right_m
                                                     for r in rows]))}
    for name, f in SCORES.items():
        pos = [f(e) for r in rows for e in r["ends"] if e.get("top") and e["err"] < right_m]
        neg = [f(e) for r in rows for e in r["ends"] if e.get("top") and e["err"] >= right_m]
        p, q = np.asarray(pos)[:, None], np.asarray(neg)[None]
        picks = np.array([max((e for e in r["ends"] if e.get("top")), key=f)["err"] for r in rows])
        res[name] = {"auc": float(((p > q) + 0.5 * (p == q)).mean()) if len(pos) and len(neg) else None,
                     "pick_median_m": float(np.median(picks)), "within_10m": float(np.mean(picks < right_m))}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pinhole_scan_arguments(ap)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--cohort", type=int, default=8, help="unrelated training photos for cohort normalisation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="per-photo rows (appended)")
    add_work_argument(ap, "tiles and index")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with work_dir(args.work) as work:
        rows = record(Path(args.world), args.retrieval, args.fine, args.half, args.n, args.cohort, out, work)
    print(json.dumps(summarise(rows), indent=1))


if __name__ == "__main__":
    main()
