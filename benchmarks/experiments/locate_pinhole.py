"""Phone photos near a rough GPS fix, located by the search-area posterior (``--search posterior``) or the scan.

The protocol of ``crossview.locate.evaluate``: the world's held-out pinhole photos (test split), one ``--half``
(even / odd positions of the test list), ``--n`` of them evenly spread; per photo a GPS fix off by up to 50 m
(uniform over the disc) searched within 50 m of it, and a compass off by up to ±20° (uniform), both seeded by
``--prior-seed``. ``--no-compass`` drops the compass.

    crossview synth --layout vigor --scale pinhole-dense --out WORLD
    python -m benchmarks.experiments.locate_pinhole --world WORLD --n 150 --half second --prior-seed 1 \\
        --search posterior --out result.json

``--search posterior`` uses the committed BEVPost release (``--model``, default the one in
``crossview/fine/releases/``) on a mosaic of the world's tiles: nothing is trained. ``--search scan`` needs the
retrieval and fine runs of the scan pipeline (``--retrieval RUN --fine RUN``; not committed: see
docs/locate_priors.md for how they are trained). Writes ``median_m``, ``fix_median_m``, ``within_10m`` and
``within_5m`` (fractions), ``heading_median_deg``, ``prior_heading_median_deg``, the coverage of the 68 % / 95 %
radii, seconds per photo and peak memory, and one row per photo.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

import crossview
from benchmarks.common import add_work_argument, work_dir, world_index

DEFAULT_MODEL = Path(crossview.__file__).resolve().parent / "fine" / "releases" / \
    "bevpost_lite0_pinhole_dense.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", required=True, help="crossview synth --layout vigor --scale pinhole-dense world")
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--half", default="second", choices=("first", "second", "all"))
    ap.add_argument("--prior-seed", type=int, default=1)
    ap.add_argument("--search", default="posterior", choices=("posterior", "scan"))
    ap.add_argument("--camera", default="pinhole", choices=("pinhole", "panorama"))
    ap.add_argument("--no-compass", action="store_true", help="locate without a heading prior")
    ap.add_argument("--gps-noise", type=float, default=50.0, help="GPS fix error bound and search radius (m)")
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="posterior model: release file or run folder")
    ap.add_argument("--temperature", type=float, help="posterior logits divided by this (default: the release's)")
    ap.add_argument("--temperatures", default="", help="comma-separated temperatures whose radii's coverage is "
                                                       "also measured (from the same logits; to fit a calibration)")
    ap.add_argument("--retrieval", help="scan: the retrieval run")
    ap.add_argument("--fine", help="scan: the fine run")
    ap.add_argument("--threads", type=int, default=2)
    add_work_argument(ap, "tile manifest and index")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from crossview.io import write_json_atomic

    t0 = time.time()
    with work_dir(args.work) as work:
        rows = _posterior_rows(args, work) if args.search == "posterior" else _scan_rows(args, work)
    result = {"protocol": _protocol(args), "world": str(args.world), "search": args.search,
              "model": args.model if args.search == "posterior" else [args.retrieval, args.fine],
              **summarise(rows), "seconds": round(time.time() - t0, 1),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "threads": args.threads, "rows": rows}
    write_json_atomic(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))


def _protocol(args) -> str:
    return (f"{args.n} held-out {args.camera} photos ({args.half} half of the test list), GPS fix uniform within "
            f"{args.gps_noise:g} m of the truth and searched within {args.gps_noise:g} m, "
            + ("no compass" if args.no_compass else "compass uniform within ±20°")
            + f", prior seed {args.prior_seed}")


def _photos(args):
    from crossview.locate import held_out_photos, simulated_priors

    for i, rec in enumerate(held_out_photos(Path(args.world), args.n, args.half, args.camera)):
        truth = (float(rec["lat"]), float(rec["lon"]))
        prior, fix, near = simulated_priors(truth, float(rec.get("heading_deg") or 0.0), i, args.prior_seed, 20.0,
                                            args.gps_noise, None)
        yield i, rec, truth, (None if args.no_compass else prior), fix, near


def _posterior_rows(args, work: Path) -> list[dict]:
    from PIL import Image

    from crossview.fine import load_fine
    from crossview.geometry.geo import distance_m
    from crossview.locate.posterior import area_logits, posterior_answer
    from crossview.tiles import build_tiles, read_manifest
    from crossview.tiles.mosaic import Mosaic

    model = load_fine(args.model)
    temp = args.temperature or float(getattr(model, "release_info", {}).get("temperature", 1.0))
    mosaic = Mosaic(read_manifest(build_tiles(Path(args.world) / "satellite", work / "tiles")))
    cell = float(model.config["cell_m"])
    rows = []
    for i, rec, truth, prior, fix, near in _photos(args):
        img = np.asarray(Image.open(Path(args.world) / rec["image"]).convert("RGB"))
        t = time.time()
        logits, heads, _ = area_logits(model, img, args.camera, rec.get("fov_deg"), mosaic, near, prior)
        ans = posterior_answer(logits, heads, near, prior, cell, temp)
        seconds = time.time() - t
        extra = {"confidence": ans.confidence, "modes": len(ans.modes), "temperature": temp}
        if args.temperatures:  # the radii at other temperatures (the mode barely moves), for fitting one
            extra["radii_at"] = {}
            for tt in (float(v) for v in args.temperatures.split(",")):
                a = posterior_answer(logits, heads, near, prior, cell, tt)
                extra["radii_at"][f"{tt:g}"] = {**a.radii_m, "error_m": distance_m((a.lat, a.lon), truth)}
        rows.append(_row(i, rec, truth, prior, fix, (ans.lat, ans.lon), ans.heading_deg, ans.radii_m, seconds,
                         extra))
    return rows


def _scan_rows(args, work: Path) -> list[dict]:
    if not (args.retrieval and args.fine):
        raise SystemExit("--search scan needs --retrieval RUN and --fine RUN (the scan pipeline's models)")
    from crossview.locate import LocateOptions, Locator

    locator = Locator(world_index(args.world, args.retrieval, work)[1], fine_model=args.fine)
    rows = []
    for i, rec, truth, prior, fix, near in _photos(args):
        t = time.time()
        options = LocateOptions(camera=args.camera, fov_deg=rec.get("fov_deg"), heading_prior=prior or "none",
                                near=near, fine_search="scan", use_exif=False)
        r = locator.locate(Path(args.world) / rec["image"], options)
        u = r.get("uncertainty") or {}
        rows.append(_row(i, rec, truth, prior, fix, (r["lat"], r["lon"]), r["heading_deg"],
                         {"68": u.get("68"), "95": u.get("95")}, time.time() - t, {"confidence": r["confidence"]}))
    return rows


def _row(i, rec, truth, prior, fix, answer, heading, radii, seconds, extra) -> dict:
    from crossview.geometry.angles import angle_diff_deg
    from crossview.geometry.geo import distance_m

    true_heading = float(rec.get("heading_deg") or 0.0)
    return {"i": i, "image": rec["image"], "error_m": distance_m(answer, truth), "fix_error_m": distance_m(fix, truth),
            "heading_error_deg": None if heading is None else float(angle_diff_deg(heading, true_heading)),
            "prior_heading_error_deg": None if prior is None else float(angle_diff_deg(prior[0], true_heading)),
            "radii_m": radii, "seconds": round(seconds, 3), **extra}


def summarise(rows: list[dict]) -> dict:
    """The figures of a run: medians, shares within 5 / 10 m, heading errors, coverage of the radii, speed."""
    err = np.array([r["error_m"] for r in rows])
    fix = np.array([r["fix_error_m"] for r in rows])
    hd = [r["heading_error_deg"] for r in rows if r["heading_error_deg"] is not None]
    ph = [r["prior_heading_error_deg"] for r in rows if r["prior_heading_error_deg"] is not None]
    cover = {k: float(np.mean([r["error_m"] <= r["radii_m"][k] for r in rows if r["radii_m"].get(k) is not None]))
             for k in ("68", "95") if any(r["radii_m"].get(k) is not None for r in rows)}
    at = {}
    for tt in (rows[0].get("radii_at") or {}) if rows else ():
        rs = [r["radii_at"][tt] for r in rows]
        at[tt] = {k: float(np.mean([x["error_m"] <= x[k] for x in rs])) for k in ("68", "95")}
    return {"photos": len(rows), "median_m": float(np.median(err)), "mean_m": float(np.mean(err)),
            **({"coverage_at_temperature": at} if at else {}),
            "fix_median_m": float(np.median(fix)), "within_5m": float(np.mean(err <= 5)),
            "within_10m": float(np.mean(err <= 10)), "closer_than_fix": float(np.mean(err < fix)),
            "heading_median_deg": float(np.median(hd)) if hd else None,
            "prior_heading_median_deg": float(np.median(ph)) if ph else None,
            "coverage": cover, "radii_median_m": {k: float(np.median([r["radii_m"][k] for r in rows])) for k in cover},
            "seconds_per_photo": float(np.median([r["seconds"] for r in rows]))}


if __name__ == "__main__":
    main()
