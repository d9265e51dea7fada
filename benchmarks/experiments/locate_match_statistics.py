"""Can the fine model's own matching pick the scan's right walk end? Statistics of its matching-score matrix.

Reads walk ends recorded per photo by ``benchmarks/experiments/locate_scan_selectors.py --out ROWS`` (each row: ``i``,
``image``, ``ends`` with ``end`` [lat, lon], ``err``, ``conf``, ``inside``, ``n_conv``; a row's ``prior`` is used
when present, else the priors are drawn again as the recording did: seed 0). In the window centred on each of the
five most confident distinct ends (``--all-ends``: every end inside the search area) the pinhole FG² model is run
once more and these statistics of its matching are taken (higher = more likely the camera, except where marked):

- ``conf``: share of the 1,024 drawn matches within FG²'s inlier threshold of the pose (the scan's confidence,
  here in the window centred on the end); ``walk_conf``: the walk's own confidence, as recorded;
- ``mass``: share of ground cells matched rather than sent to the dustbin; ``pmax``: peak matching score;
  ``rowmax``: mean over aerial cells of their best score; ``sim_top``: mean of the 50 highest similarities;
  ``sim_mean`` / ``sim_std``: of all similarities;
- ``offset`` (lower): the answer's distance from the window centre; ``head_dev`` (lower): heading against the
  compass; ``n_conv``: walks ending within 5 m;
- top ends only: ``conf_ransac``, RANSAC's soft-inlier share, and ``ransac_shift`` (lower), its move.

Per statistic: the share of photos whose highest-scoring end lies within 10 m of the camera. With ``--other`` (the
statistics of the other half, written by an earlier run of this script) a logistic regression over all statistics is
fitted on that half and applied to this one. Results: ``benchmarks/results/locate_pinhole.json``
(``match_statistics_selectors_2026_12_03``).

    python -m benchmarks.experiments.locate_match_statistics --world PIND --retrieval RUN_FOV --fine CKPT \\
        --half first --rows ENDS_FIRST.jsonl --out stats_first.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from benchmarks.common import add_pinhole_scan_arguments, add_work_argument, top_ends, work_dir, world_index

LOWER_IS_BETTER = ("offset", "head_dev", "ransac_shift")


def _statistics(loc, photo, end, prior, cap: dict, with_ransac: bool) -> dict | None:
    """The matching statistics of ``photo`` in the window centred on ``end``; None where no window can be cut."""
    p = loc.window_pose(photo, end[0], end[1], prior, ransac=False)
    if p is None:
        return None
    prob, sim = cap["out"]["prob"][0], cap["out"]["sim"][0]
    s = sim[sim.isfinite()]
    f = {"conf": p.confidence, "mass": float(prob.sum() / prob.shape[1]), "pmax": float(prob.max()),
         "rowmax": float(prob.max(0).values.mean()), "sim_top": float(s.topk(min(50, s.numel())).values.mean()),
         "sim_mean": float(s.mean()), "sim_std": float(s.std()), "offset": math.hypot(p.x_m, p.y_m),
         "head_dev": abs((p.heading_deg - prior[0] + 180.0) % 360.0 - 180.0)}
    if with_ransac:
        r = loc.window_pose(photo, end[0], end[1], prior, ransac=True)
        f["conf_ransac"], f["ransac_shift"] = r.confidence, math.hypot(r.x_m, r.y_m)
    return f


def measure(world: Path, retrieval: str, fine: str, half: str, n: int, rows: list[dict],
            all_ends: bool, work: Path) -> list[dict]:
    """Per photo, the statistics of its candidate ends (``{"i", "ends": [{"err", "f": {...}}]}``); ``n``: the
    number of photos the rows were recorded for (it fixes which photos of the half they are)."""
    from crossview.locate import Locator, held_out_photos, read_photo, simulated_priors

    loc = Locator(world_index(world, retrieval, work)[1], fine_model=fine)
    cap: dict = {}
    forward = loc.fine.forward

    def capture(*a, **kw):  # the model's matching output; its predict calls forward itself, so no forward hook
        cap["out"] = forward(*a, **kw)
        return cap["out"]

    loc.fine.forward = capture
    out = []
    for row, rec in zip(rows, held_out_photos(world, n, half, "pinhole")):
        if rec["image"] != row["image"]:
            raise SystemExit(f"row {row['i']}: {row['image']} is not photo {row['i']} of the {half} half")
        truth = (float(rec["lat"]), float(rec["lon"]))
        prior = tuple(row["prior"]) if "prior" in row else \
            simulated_priors(truth, float(rec["heading_deg"]), row["i"], 0, 20.0, 50.0, None)[0]
        photo = read_photo(world / rec["image"], "pinhole", rec["fov_deg"])
        ends = []
        for e in ([e for e in row["ends"] if e["inside"]] if all_ends else top_ends(row["ends"])):
            f = _statistics(loc, photo, e["end"], prior, cap, with_ransac=not all_ends)
            if f is not None:
                ends.append({"err": e["err"], "f": {**f, "walk_conf": e["conf"], "n_conv": e["n_conv"]}})
        out.append({"i": row["i"], "ends": ends})
    return out


def pick_rates(photos: list[dict], right_m: float = 10.0) -> dict[str, float]:
    """Per statistic, the share of photos whose best-scoring end lies within ``right_m`` of the camera."""
    names = photos[0]["ends"][0]["f"]
    res = {}
    for n in names:
        sign = -1.0 if n in LOWER_IS_BETTER else 1.0
        res[n] = float(np.mean([p["ends"][int(np.argmax([sign * e["f"][n] for e in p["ends"]]))]["err"] < right_m
                                for p in photos]))
    res["oracle"] = float(np.mean([min(e["err"] for e in p["ends"]) < right_m for p in photos]))
    return res


def cross_half(train: list[dict], test: list[dict], c: float = 1.0, right_m: float = 10.0) -> float:
    """A logistic regression (L2, ``c``) over every statistic, fitted on ``train``'s ends, applied to ``test``'s:
    the share of its photos whose best-scoring end lies within ``right_m``."""
    names = list(train[0]["ends"][0]["f"])

    def arrays(photos):
        x = np.array([[e["f"][n] for n in names] for p in photos for e in p["ends"]], float)
        y = np.array([e["err"] < right_m for p in photos for e in p["ends"]], float)
        return x, y

    x, y = arrays(train)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    x = (x - mu) / sd
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(2000):
        g = 1.0 / (1.0 + np.exp(-(x @ w + b))) - y
        w -= 0.5 * (x.T @ g / len(y) + w / (c * len(y)))
        b -= 0.5 * g.mean()
    picks = []
    for p in test:
        xt = (np.array([[e["f"][n] for n in names] for e in p["ends"]], float) - mu) / sd
        picks.append(p["ends"][int(np.argmax(xt @ w + b))]["err"] < right_m)
    return float(np.mean(picks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pinhole_scan_arguments(ap)
    ap.add_argument("--rows", required=True, help="walk ends per photo (locate_scan_selectors.py --out)")
    ap.add_argument("--limit", type=int, default=None, help="only the first rows")
    ap.add_argument("--all-ends", action="store_true", help="every end inside the area, not the top five")
    ap.add_argument("--other", default=None, help="this script's --out for the other half (cross-half regression)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="statistics per photo and the summary (JSON)")
    add_work_argument(ap, "tiles and index")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines() if line.strip()]
    t0 = time.time()
    with work_dir(args.work) as work:
        photos = measure(Path(args.world), args.retrieval, args.fine, args.half, len(rows), rows[:args.limit],
                         args.all_ends, work)
    summary = {"photos": len(photos), "ends_per_photo": float(np.mean([len(p["ends"]) for p in photos])),
               "within_10m": pick_rates(photos), "seconds": round(time.time() - t0, 1)}
    if args.other:
        other = json.loads(Path(args.other).read_text())["photos"]
        summary["regression_from_other_half"] = {f"C={c:g}": cross_half(other, photos, c) for c in (0.1, 1.0)}
    Path(args.out).write_text(json.dumps({"summary": summary, "photos": photos}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
