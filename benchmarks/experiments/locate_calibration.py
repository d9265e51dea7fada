"""Calibrated uncertainty of ``crossview locate``, measured on held-out photos of the synthetic world.

The locator (a retrieval run + a fine run) is calibrated on the first half of the world's test panoramas
(``crossview.locate.calibrate.calibrate``: split-conformal factors of error / raw uncertainty, written beside the
fine model) and its 68 % / 95 % radii are checked on the second half, disjoint from the first
(``measure_coverage``). Protocol as ``demo_locate``'s rough-fix setting: a GPS fix off by up to 50 m
(``--near FIX±50``) and a compass off by up to ±20°.

    OMP_NUM_THREADS=1 python -m benchmarks.experiments.locate_calibration --world WORLD --retrieval RUN \\
        --fine FINE_RUN --n 150

Pinhole photos located by the scan (issue 19's setting: ``--camera pinhole --fine-search scan``) are measured the
same way; ``--camera pinhole`` draws the world's pinhole test photos instead of its panoramas.
"""

from __future__ import annotations

import argparse
import json

from benchmarks.common import RESULTS, Timer, add_work_argument, environment, work_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", required=True, help="crossview synth --layout vigor world")
    ap.add_argument("--retrieval", required=True, help="retrieval run folder or checkpoint")
    ap.add_argument("--fine", required=True, help="fine run folder (the calibration is written beside it)")
    add_work_argument(ap, "tiles, indexes and per-photo rows")
    ap.add_argument("--n", type=int, default=150, help="photos to calibrate on, and as many held out")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--refine", type=int, default=5)
    ap.add_argument("--camera", default="panorama", choices=("panorama", "pinhole"))
    ap.add_argument("--fine-search", default="tiles", choices=("tiles", "scan"))
    ap.add_argument("--heading-noise", type=float, default=20.0, help="compass error bound, degrees")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--normalise", action="store_true", help="calibrate error / raw uncertainty, not the error")
    ap.add_argument("--describe", default="{}", help="JSON with words on the world and models, for the record")
    ap.add_argument("--out", default=str(RESULTS / "locate_calibration.json"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from crossview.io import write_json_atomic
    from crossview.locate.calibrate import calibrate, measure_coverage

    protocol = {"gps_noise_m": 50.0, "heading_noise_deg": args.heading_noise, "top_k": args.top_k,
                "refine": args.refine, "camera": args.camera, "fine_search": args.fine_search}
    with work_dir(args.work) as work, Timer() as t_cal:
        cal = calibrate(args.world, args.retrieval, args.fine, n=args.n, half="first", out=work / "calibrate",
                        seed=0, normalise=args.normalise, **protocol)
    with work_dir(args.work) as work, Timer() as t_held:
        held = measure_coverage(args.world, args.retrieval, args.fine, n=args.n, half="second",
                                out=work / "heldout", seed=1, **protocol)
    result = {
        **json.loads(args.describe),
        "protocol": "the world's test panoramas split in two disjoint halves (even / odd positions of the test "
                    f"list), {args.n} photos from each: the first calibrates (priors seed 0), the second measures "
                    "(seed 1). "
                    "Scores: " + ("error / raw uncertainty" if args.normalise else "the error in metres") + ", per "
                    "kind of answer (flagged or not). Per photo a GPS "
                    "fix off by up to 50 m (locate --near FIX±50, uniform over the disc, seeded) and a compass "
                    f"heading off by up to ±{args.heading_noise:g}° (seeded); {args.camera} photos, fine search "
                    f"{args.fine_search}; top_k {args.top_k}, refine {args.refine}, re-centring on; "
                    f"CPU, {args.threads} thread(s)",
        "calibration": cal, "held_out": held,
        "seconds": {"calibrate": round(t_cal.s, 1), "measure": round(t_held.s, 1)}, "environment": environment(),
    }
    write_json_atomic(args.out, result)
    print(json.dumps(held["coverage"], indent=1))


if __name__ == "__main__":
    main()
