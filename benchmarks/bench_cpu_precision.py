"""CPU inference: our fp32 path against the bf16 + channels-last path (crossview.device), in one run, interleaved.

    python -m benchmarks.bench_cpu_precision [--world DIR --run RUN] [--threads 1] [--reps 3]

Parts (``--parts``, default all):

- ``mfrgn``: img/s of the full-size MFRGN variants (``mfrgn_cvusa``, ``mfrgn_vigor``; ConvNeXt-B, random weights: speed
  and numerics do not depend on training) at their own input sizes, both views, one batch per repetition, fp32 and
  bf16 alternating (the order flips every repetition) so that other load on the machine hits both alike. Wall-clock
  img/s and img per CPU-second (``time.process_time``, less sensitive to other processes) are reported, and the
  cosine of every bf16 descriptor to its fp32 twin.
- ``recall``: R@1/R@5 of a trained retrieval run (``--run``) on the held-out split of a synthetic world (``--world``),
  embedded once in fp32 and once in bf16 by ``evaluate_split`` (the ``crossview eval`` code), and the cosine of
  every descriptor of both.
- ``locate``: ``locate-index`` tiles/s (``index_tiles``) and ``locate`` photos/s (``Locator.locate``) on the world's
  tiles with the trained run, fp32 and bf16 alternating, plus tiles/s of a full-size ``mfrgn_vigor``.
- ``fine``: fine-grained FPS of each fine model through ``crossview.fine.localize`` (the locate path), fp32 vs bf16
  alternating, with the position (m) and heading (deg) difference between the two answers.
- ``int8``: torch dynamic quantisation of the Linear layers of ``mfrgn_cvusa`` (the only layers it quantises;
  ConvNeXt's 1x1 MLPs are Linear), img/s and cosine against fp32.

Writes ``benchmarks/results/cpu_precision.json`` (with the load average before and after).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import environment
from crossview.device import (
    as_input,
    cpu_bf16_supported,
    cpu_flags,
    embedder,
    inference_autocast,
    prepare_for_inference,
    subnetwork_autocast,
)

RESULTS = Path(__file__).parent / "results" / "cpu_precision.json"
PATHS = ("fp32", "bf16")


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def _interleaved(calls: dict, reps: int) -> dict:
    """Run ``calls[path](rep)`` for every path, ``reps`` times, order flipped each repetition; returns per-path lists of
    (output, wall s, cpu s)."""
    runs = {p: [] for p in calls}
    for r in range(reps):
        for p in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
            runs[p].append(_timed(lambda p=p, r=r: calls[p](r)))
    return runs


def _rate(runs, n_items):
    wall = statistics.median(w for _, w, _ in runs)
    cpu = statistics.median(c for _, _, c in runs)
    return {"items_per_s": round(n_items / wall, 3), "items_per_cpu_s": round(n_items / cpu, 3),
            "wall_s": [round(w, 3) for _, w, _ in runs]}


def _images(world: Path | None, view: str, n: int, hw: tuple[int, int], seed: int) -> torch.Tensor:
    """``n`` images (N, 3, H, W) in [0, 1]: the world's panoramas / tiles when given, else seeded noise."""
    if world is not None:
        from PIL import Image

        folder = world / ("ground" if view == "ground" else "satellite")
        every = sorted(f for f in folder.rglob("*") if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
        files = every[seed * n:(seed + 1) * n] or every[:n]
        if len(files) == n:
            arr = [np.asarray(Image.open(f).convert("RGB").resize((hw[1], hw[0]), Image.BILINEAR)) for f in files]
            return torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2).float() / 255
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, *hw, generator=g)


def bench_mfrgn(args, world) -> dict:
    from crossview.models import create_model, input_spec

    out = {}
    for name in ("mfrgn_cvusa", "mfrgn_vigor"):
        torch.manual_seed(0)
        fp32 = create_model(name).eval()
        bf16 = prepare_for_inference(copy.deepcopy(fp32), "bf16")
        compiled = prepare_for_inference(copy.deepcopy(fp32), "bf16")
        paths = (*PATHS, "bf16_compiled")
        for view in ("ground", "aerial"):
            (h, w), mean, std = input_spec(fp32, view)
            m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
            batches = [(_images(world, view, args.batch, (h, w), r) - m) / s for r in range(args.reps)]

            fast = embedder(compiled, view, args.batch, True)
            fns = {"fp32": fp32.embed, "bf16": bf16.embed, "bf16_compiled": lambda x, view, f=fast: f(x)}

            def call(p, r, batches=batches, view=view, fns=fns):
                prec = "fp32" if p == "fp32" else "bf16"
                with torch.no_grad(), inference_autocast(prec):
                    return fns[p](as_input(batches[r], prec), view=view).float()

            warm = {}
            for p in paths:  # warm-up: oneDNN builds its bf16 kernels on the first call; inductor compiles
                warm[p] = round(_timed(lambda p=p: call(p, 0))[1], 1)
            runs = _interleaved({p: (lambda r, p=p: call(p, r)) for p in paths}, args.reps)
            rec = {"input_hw": [h, w], "batch": args.batch, "images": "the world's" if world else "seeded noise",
                   **{p: _rate(runs[p], args.batch) for p in paths}, "first_call_s": warm}
            for p, tag in (("bf16", ""), ("bf16_compiled", "_compiled")):
                cos = torch.cat([torch.nn.functional.cosine_similarity(a[0], b[0])
                                 for a, b in zip(runs["fp32"], runs[p])])
                rec["speedup_wall" + tag] = round(rec[p]["items_per_s"] / rec["fp32"]["items_per_s"], 2)
                rec["speedup_cpu" + tag] = round(rec[p]["items_per_cpu_s"] / rec["fp32"]["items_per_cpu_s"], 2)
                rec["cosine_min" + tag], rec["cosine_images"] = float(cos.min()), int(cos.numel())
            out[f"{name}/{view}"] = rec
            print(name, view, json.dumps({k: v for k, v in rec.items() if k.startswith(("speedup", "cosine_min"))}),
                  {p: rec[p]["items_per_s"] for p in paths}, flush=True)
    return out


def bench_int8(args, world) -> dict:
    from crossview.models import create_model, input_spec

    torch.manual_seed(0)
    fp32 = create_model("mfrgn_cvusa").eval()
    q8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
    bf16 = prepare_for_inference(copy.deepcopy(fp32), "bf16")
    (h, w), mean, std = input_spec(fp32, "ground")
    x = (_images(world, "ground", args.batch, (h, w), 0) - torch.tensor(mean).view(1, 3, 1, 1)) / \
        torch.tensor(std).view(1, 3, 1, 1)
    nets = {"fp32": (fp32, "fp32"), "int8_dynamic_linear": (q8, "fp32"), "bf16": (bf16, "bf16")}

    def call(k):
        net, p = nets[k]
        with torch.no_grad(), inference_autocast(p):
            return net.embed(as_input(x, p), view="ground").float()

    res = {k: [] for k in nets}
    for k in nets:
        call(k)
    for r in range(max(2, args.reps - 1)):
        for k in (list(nets) if r % 2 == 0 else list(nets)[::-1]):
            res[k].append(_timed(lambda k=k: call(k)))
    out = {"model": "mfrgn_cvusa", "view": "ground", "batch": args.batch,
           "method": "torch.ao.quantization.quantize_dynamic({nn.Linear}, qint8): weights int8, activations "
                     "quantised per call; convolutions (stem, downsampling, depthwise 7x7) stay fp32"}
    for k in nets:
        out[k] = _rate(res[k], args.batch)
        if k != "fp32":
            out[k]["cosine_min"] = float(torch.nn.functional.cosine_similarity(res["fp32"][0][0], res[k][0][0]).min())
    print("int8", json.dumps(out), flush=True)
    return out


def bench_recall(args, world: Path, run: Path) -> dict:
    from crossview.data import read_dataset
    from crossview.evaluate.report import evaluate_split
    from crossview.models import resolve_model
    from crossview.search.shards import load_shards

    model, name, info = resolve_model(str(run))
    cfg = info.get("config", {})
    split = read_dataset("vigor", world, cfg.get("eval_split") or "test", area=cfg.get("area") or "same")
    total = len(split.records)
    if args.queries and args.queries < len(split.records):  # evenly spread held-out queries, every reference kept
        keep = np.linspace(0, len(split.records) - 1, args.queries).round().astype(int)
        split = dataclasses.replace(split, records=[split.records[i] for i in sorted(set(keep))])
    out, descs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for p in PATHS:
            rec = evaluate_split(copy.deepcopy(model), split, Path(tmp) / p, pictures=0, precision=p, model_name=name,
                                 root=world, log=lambda *a: None)
            out[p] = {k: rec[k] for k in ("R@1", "R@5", "R@10", "embed_s") if k in rec}
            descs[p] = [load_shards(sub, dtype=torch.float32)[1] for sub in sorted((Path(tmp) / p / "embeddings")
                                                                                    .iterdir())]
    cos = torch.cat([torch.nn.functional.cosine_similarity(a, b) for a, b in zip(descs["fp32"], descs["bf16"])])
    out.update(queries=len(split.records), held_out_queries=total, references=len(split.references), run=str(run),
               world=str(world),
               r1_diff_points=round(out["bf16"]["R@1"] - out["fp32"]["R@1"], 3), cosine_min=float(cos.min()),
               cosine_images=int(cos.numel()))
    print("recall", json.dumps(out), flush=True)
    return out


def bench_locate(args, world: Path, run: Path) -> dict:
    from crossview.locate import Locator, index_tiles
    from crossview.models import create_model
    from crossview.search.embed import embed_images
    from crossview.tiles import build_tiles, read_manifest

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = build_tiles(world / "satellite", tmp / "tiles")
        n_tiles = len(read_manifest(manifest))
        runs = _interleaved({p: (lambda r, p=p: index_tiles(manifest, run, tmp / f"{p}{r}.index", precision=p))
                             for p in PATHS}, args.reps)
        out["locate_index"] = {"tiles": n_tiles, "model": "trained run (mfrgn_tiny)",
                               **{p: _rate(runs[p], n_tiles) for p in PATHS}}
        torch.manual_seed(0)
        big = create_model("mfrgn_vigor")
        paths = [t.path for t in read_manifest(manifest)[:args.big_tiles]]
        nets = {"fp32": big, "bf16": copy.deepcopy(big)}
        runs = _interleaved({p: (lambda r, p=p, nets=nets: embed_images(nets[p], paths, "aerial", batch=8, precision=p))
                             for p in PATHS}, 1)
        out["locate_index_mfrgn_vigor"] = {"tiles": len(paths), "model": "mfrgn_vigor, random weights",
                                           **{p: _rate(runs[p], len(paths)) for p in PATHS}}
        index = tmp / "fp320.index"
        poses = [json.loads(s) for s in (world / "crossview_poses.jsonl").read_text().splitlines() if s.strip()]
        photos = [world / r["image"] for r in poses if r.get("split") == "test"
                  and r.get("camera", "panorama") == "panorama"][:args.photos]
        for fine in (None, "hcnet_tiny"):
            locs = {p: Locator(index, precision=p, fine_model=fine) for p in PATHS}
            runs = _interleaved({p: (lambda r, p=p, locs=locs: [locs[p].locate(f, heading_prior=(0.0, 20.0), top_k=5)
                                                     for f in photos]) for p in PATHS}, args.reps)
            same = sum(a["tile"] == b["tile"] for a, b in zip(runs["fp32"][0][0], runs["bf16"][0][0]))
            out["locate" if fine is None else f"locate_fine_{fine}"] = {
                "photos": len(photos), "fine_model": fine and f"{fine} (random weights: speed only)",
                **{p: _rate(runs[p], len(photos)) for p in PATHS}, "same_answer_tile": f"{same}/{len(photos)}"}
    for k, v in out.items():
        print(k, {p: v[p]["items_per_s"] for p in PATHS}, flush=True)
    return out


def bench_fine(args) -> dict:
    from crossview.fine import localize
    from crossview.fine.registry import create_fine
    from crossview.geometry.angles import angle_diff_deg

    out = {}
    names = args.fine.split(",")
    for name in names:
        torch.manual_seed(0)
        try:
            fp32 = create_fine(name).eval()
        except Exception as exc:  # noqa: BLE001 — a variant that cannot be built here is reported, not fatal
            out[name] = {"skipped": f"{type(exc).__name__}: {exc}"}
            continue
        bf16 = prepare_for_inference(copy.deepcopy(fp32), "bf16")
        nets = {"fp32": fp32, "bf16": bf16}
        (gh, gw), side = fp32.input_sizes("panorama")
        rng = np.random.default_rng(0)
        ground = (rng.random((gh, gw, 3)) * 255).astype(np.uint8)
        tile = (rng.random((side, side, 3)) * 255).astype(np.uint8)

        def call(p, r, nets=nets, ground=ground, tile=tile):
            with subnetwork_autocast(nets[p], p):
                return localize(ground, tile, "panorama", heading_prior=30.0, model=nets[p], metres_per_pixel=0.1)

        first = {p: _timed(lambda p=p: call(p, 0)) for p in PATHS}  # warm-up, also sizes the run
        reps = args.reps if first["fp32"][1] < 20 else 1
        runs = _interleaved({p: (lambda r, p=p: call(p, r)) for p in PATHS}, reps)
        a, b = runs["fp32"][0][0], runs["bf16"][0][0]
        rec = {"input": {"ground_hw": [gh, gw], "aerial": side}, "params_m": round(sum(
            q.numel() for q in fp32.parameters()) / 1e6, 2), **{p: _rate(runs[p], 1) for p in PATHS},
               "xy_diff_m": float(np.hypot(a.x_m - b.x_m, a.y_m - b.y_m)),
               "heading_diff_deg": float(abs(angle_diff_deg(a.heading_deg, b.heading_deg)))}
        rec["speedup_wall"] = round(rec["bf16"]["items_per_s"] / rec["fp32"]["items_per_s"], 2)
        out[name] = rec
        print(name, json.dumps(rec), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="mfrgn,recall,locate,fine,int8")
    ap.add_argument("--world", type=Path, help="a `crossview synth --layout vigor` world (recall, locate)")
    ap.add_argument("--run", type=Path, help="a retrieval run trained on --world (recall, locate)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--photos", type=int, default=10, help="photos located per path and repetition")
    ap.add_argument("--queries", type=int, default=400, help="held-out queries for R@1 (0: all)")
    ap.add_argument("--big-tiles", type=int, default=8, help="tiles indexed with the full-size mfrgn_vigor")
    ap.add_argument("--fine", default="hcnet_tiny,fg2_tiny,geodistill_tiny,homoflow_lite0,pillarmatch_tiny_test,"
                                      "hcnet_vigor,geodistill_vigor,fg2_vigor")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--note", default="", help="how the machine was during the run (stored in the JSON)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    result.update({
        "benchmark": "CPU inference, our fp32 path vs bf16 autocast + channels-last (crossview.device), interleaved",
        "machine": {"cpu_bf16": cpu_bf16_supported(), "flags": sorted(cpu_flags() & {
            "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "avx2"})},
        "environment": environment(),
        "note": "fp32 and bf16 repetitions alternate so other load on the machine hits both alike; items_per_cpu_s "
                "(process CPU time) is the less load-sensitive figure; see runs[] for the load average of each run"})
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    world = args.world
    run_rec = {"parts": parts, "loadavg_before": [round(v, 2) for v in load_before], "threads": args.threads,
               "reps": args.reps, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "note": args.note}
    result.setdefault("runs", []).append(run_rec)
    benches = {"mfrgn": lambda: bench_mfrgn(args, world), "int8": lambda: bench_int8(args, world),
               "recall": lambda: bench_recall(args, world, args.run),
               "locate": lambda: bench_locate(args, world, args.run),
               "fine": lambda: bench_fine(args)}
    for part in parts:
        if part in ("recall", "locate") and not (world and args.run):
            continue
        result[part] = benches[part]()
        # written after every part, so a long run stopped part-way keeps what it measured
        run_rec.update({"loadavg_after": [round(v, 2) for v in os.getloadavg()],
                        "seconds": round(time.perf_counter() - t0, 1), "done": parts[:parts.index(part) + 1]})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
