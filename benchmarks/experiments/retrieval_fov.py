"""Retrieval recall under the limited-FoV protocol beside full panoramas, the same model and tiles.

    OMP_NUM_THREADS=1 python -m benchmarks.experiments.retrieval_fov --run RUN --world WORLD --queries 500 --fov 90 180
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import RESULTS
from crossview.models.loading import run_model_file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="retrieval run folder")
    ap.add_argument("--world", required=True, help="crossview synth --layout vigor world")
    ap.add_argument("--queries", type=int, default=500, help="test queries, evenly spread over the test list")
    ap.add_argument("--fov", type=float, nargs="+", default=[90.0, 180.0])
    ap.add_argument("--describe", default="{}")
    ap.add_argument("--out", default=str(RESULTS / "retrieval_fov.json"))
    args = ap.parse_args()
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from crossview.data import read_dataset
    from crossview.evaluate.limited_fov import embed_limited_fov
    from crossview.evaluate.report import evaluate_descriptors
    from crossview.io import write_json_atomic
    from crossview.models import load_model
    from crossview.search.embed import embed_images

    t0 = time.time()
    model = load_model(str(run_model_file(Path(args.run)))).eval()
    split = read_dataset("vigor", args.world, "test", area="same")
    keep = np.unique(np.linspace(0, len(split.records) - 1, min(args.queries, len(split.records))).round().astype(int))
    split = replace(split, records=[split.records[i] for i in keep])
    refs = embed_images(model, [r.path for r in split.references], "aerial")
    results = {}
    for fov, orientation in [(360.0, "known")] + [(f, o) for f in args.fov for o in ("known", "unknown")]:
        q = embed_limited_fov(model, split, fov, orientation, seed=0)
        m, _, _ = evaluate_descriptors(split, q, refs)
        results["full" if fov == 360 else f"fov{fov:g}_{orientation}"] = {k: m[k] for k in ("R@1", "R@5", "R@10",
                                                                                             "R@1%")}
        print(fov, orientation, results, flush=True)
    write_json_atomic(args.out, {**json.loads(args.describe), "queries": len(split.records),
                                 "references": len(split.references), "protocol": "test queries evenly spread over "
                                 "the same-area test list; each keeps a FoV-wide sector at a heading drawn by seed 0, "
                                 "black elsewhere, in place (known) or rolled to the middle (unknown); the same 400 "
                                 "tiles; CPU, one thread", "recall": results, "seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
