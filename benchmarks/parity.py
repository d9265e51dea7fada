"""How close the published models are to the official code: every stored output of every official fixture.

For each fixture in ``--fixtures`` (the official-code fixtures: ``mfrgn_parity/official_mfrgn_tiny_d1_cvusa.pt``
and ``fine_parity/official_*.pt``), our outputs from the fixture's weights and inputs against the stored ones:

- ``abs``: the largest absolute error;
- ``rel_tensor``: max |Δ| / max |ref| over the whole tensor (what a loose check looks at);
- ``rel_slice``: :func:`crossview.fine.official.relative_error` — the same ratio within each 2-D map / row /
  iteration, so an error confined to one small part of a tensor shows.

The tests hold these to fixed bounds (MFRGN 1e-6 absolute, the fine models 5e-5 per slice); this file is where the
README's parity figures come from.

    python -m benchmarks.parity --fixtures ../shared/reference   # -> benchmarks/results/parity.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, environment

# outputs that are not float tensors compared by relative error (indices, flags, angles in degrees)
SKIP = {"height_index", "sampled_idx", "ok_rank", "loss_gt", "yaw_deg", "yaw_deg_probe64", "yaw_deg_probe10"}
# outputs measured but left out of the summary, and why (the tests check them otherwise)
NOT_COMPARED = {
    "official_fg2_vigor.pt": {"ransac_R": "our RANSAC on our score: draws differ from the official ones",
                              "ransac_t": "our RANSAC on our score", "ransac_best_soft_inliers": "our RANSAC"},
    "official_geodistill_vigor.pt": {
        "corr_val": "cosines near 0: compared absolutely (<= 1e-4)",
        "pred_v_px": "argmax of a random-weight map with a near-tie (two peaks 1.5e-6 apart)",
        "pred_v_m_eval3dof": "read-out of that argmax", "pred_v_m_trainval": "read-out of that argmax"},
}


def _errors(ours: Any, ref: Any) -> dict[str, float]:
    import torch

    from crossview.fine.official import relative_error

    if isinstance(ref, list | tuple):
        a = torch.stack([torch.as_tensor(x).double() for x in ours])
        b = torch.stack([torch.as_tensor(x).double() for x in ref])
    else:
        a, b = torch.as_tensor(ours).double(), torch.as_tensor(ref).double()
    return {"abs": float((a - b).abs().max()), "rel_tensor": float((a - b).abs().max() / b.abs().max()),
            "rel_slice": relative_error(ours, ref)}


def _walk(ours: Any, ref: Any, prefix: str = "") -> dict[str, dict[str, float]]:
    """Errors of every comparable output, nested dicts flattened to dotted names."""
    import torch

    out: dict[str, dict[str, float]] = {}
    for key, want in ref.items():
        name = f"{prefix}{key}"
        if key in SKIP or key not in ours:
            continue
        got = ours[key]
        if isinstance(want, dict):
            out.update(_walk(got, want, f"{name}."))
        elif isinstance(want, list | tuple) and want and isinstance(want[0], torch.Tensor) \
                and want[0].is_floating_point():
            out[name] = _errors(got, want)
        elif isinstance(want, torch.Tensor) and want.is_floating_point() and want.numel():
            out[name] = _errors(got, want)
    return out


def mfrgn(path: Path) -> dict[str, dict[str, float]]:
    import torch

    import crossview

    ref = torch.load(path, map_location="cpu", weights_only=False)  # our own fixture file (it holds a config)
    model = crossview.load_model(ref["state_dict"], backbone="convnext_tiny",
                                 backbone_kwargs={"depths": (1, 1, 1, 1)}).eval()
    with torch.no_grad():
        ours = {"desc_grd": model.embed(ref["grd"], view="ground"), "desc_sat": model.embed(ref["sat"], view="aerial")}
    return _walk(ours, {k: ref[k] for k in ("desc_grd", "desc_sat")})


def fine(path: Path) -> dict[str, dict[str, float]]:
    import torch

    from crossview.fine import reproduce_official

    fixture = torch.load(path, map_location="cpu", weights_only=True)
    return _walk(reproduce_official(fixture), fixture["outputs"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", type=Path, required=True, help="the official-code fixture folder (reference/)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "parity.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    mf = args.fixtures / "mfrgn_parity" / "official_mfrgn_tiny_d1_cvusa.pt"
    if mf.exists():
        results[mf.name] = mfrgn(mf)
    for path in sorted((args.fixtures / "fine_parity").glob("official_*.pt")):
        print(f"{path.name} ...", flush=True)
        results[path.name] = fine(path)
    summary = {}
    for name, outs in results.items():
        kept = [v for k, v in outs.items() if k not in NOT_COMPARED.get(name, {})]
        if kept:
            summary[name] = {k: max(v[k] for v in kept) for k in ("abs", "rel_tensor", "rel_slice")}
    doc = {"what": "our outputs against every stored output of the official-code fixtures",
           "environment": environment(), "summary_max": summary, "not_in_summary": NOT_COMPARED,
           "outputs": results}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    for name, row in summary.items():
        print(f"{name}: abs {row['abs']:.2g}, per tensor {row['rel_tensor']:.2g}, per slice {row['rel_slice']:.2g}")


if __name__ == "__main__":
    main()
