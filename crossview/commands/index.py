"""``crossview index build|search``: exact or IVF-PQ tile indexes over descriptor shards."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from crossview.models.loading import add_model_arguments
from crossview.safe_load import add_trust_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build or search a tile index (faiss flat or IVF-PQ)",
                       description="Build a faiss index from reference descriptor shards, or search one with "
                                   "query shards or a photo. The index records the model that made it; queries "
                                   "from another model are refused.")
    s = p.add_subparsers(dest="index_command", metavar="ACTION")
    b = s.add_parser("build", help="build an index from descriptor shards")
    b.add_argument("--shards", required=True,
                   help="a shard folder (DIR/<view>) or an embed folder (its reference view is used)")
    b.add_argument("--out", required=True, help="index file to write (a sidecar INDEX.json is written beside it)")
    b.add_argument("--kind", choices=["flat", "ivfpq"], default="flat")
    b.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~4*sqrt(N))")
    b.add_argument("--m", type=int, default=32, help="PQ sub-vectors (must divide the dimension)")
    b.add_argument("--nbits", type=int, default=8, help="bits per PQ code")
    b.add_argument("--opq", action="store_true", help="learn an OPQ rotation before PQ (slower training)")
    b.add_argument("--refine", choices=["flat", "sq8", "none"], default="flat",
                   help="re-rank PQ candidates with exact (flat) or 8-bit vectors")
    b.add_argument("--nprobe", type=int, default=32)
    add_trust_argument(b)
    b.set_defaults(func=build)
    q = s.add_parser("search", help="top-k tiles for query shards or one photo")
    q.add_argument("index", metavar="INDEX")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--query-shards", metavar="DIR", help="query descriptor shard folder (or embed folder)")
    src.add_argument("--image", metavar="PHOTO", help="a photo to embed with --model")
    q.add_argument("--model", help="run folder or checkpoint (with --image)")
    add_model_arguments(q)
    q.add_argument("--view", default="ground", help="view kind of --image (ground, pinhole, drone, aerial)")
    q.add_argument("-k", type=int, default=10)
    q.add_argument("--nprobe", type=int, default=None)
    q.add_argument("--json", dest="json_out", help="write the results to this JSON file")
    add_trust_argument(q)
    q.set_defaults(func=search)
    i = s.add_parser("info", help="what an index holds: tiles, cells, bytes, the model, the area covered")
    i.add_argument("index", metavar="INDEX")
    i.add_argument("--json", dest="json_out", action="store_true", help="print JSON")
    i.add_argument("--picture", metavar="PNG", help="region index: draw its cells (tile count per cell) to PNG")
    i.set_defaults(func=info)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def info(args: argparse.Namespace) -> int:
    from crossview.search.index import load_index
    from crossview.search.shards import describe_model

    idx = load_index(args.index)
    if hasattr(idx, "summary"):
        out = idx.summary()
    else:
        import numpy as np

        path = Path(args.index)
        g = idx.gps[~np.isnan(idx.gps).any(axis=1)]
        out = {"path": str(path), "kind": idx.params.get("kind"), "tiles": len(idx), "cells": None, "dim": idx.dim,
               "bytes": {"index": path.stat().st_size, "sidecar": (path.parent / f"{path.name}.json").stat().st_size},
               "model": describe_model(idx.meta),
               "bounds": None if not len(g) else {"south": float(g[:, 0].min()), "north": float(g[:, 0].max()),
                                                  "west": float(g[:, 1].min()), "east": float(g[:, 1].max())}}
        out["bytes"]["total"] = sum(out["bytes"].values())
    if args.picture:
        if not hasattr(idx, "summary"):
            from crossview.errors import ConfigError

            raise ConfigError("--picture draws a region index's cells; this is a flat index")
        _draw_cells(idx, args.picture)
        out["picture"] = args.picture
    if args.json_out:
        print(json.dumps(out, indent=2))
        return 0
    b = out["bounds"]
    print(f"{out['path']}: {out['kind']} index of {out['tiles']:,} tiles"
          + (f" in {out['cells']:,} H3 cells (resolution {out['h3_resolution']})" if out.get("cells") else ""))
    print(f"  model: {out['model']}, descriptors {out['dim']}-d" + (f" {out['dtype']}" if out.get("dtype") else ""))
    print("  bytes: " + ", ".join(f"{k} {v / 2**20:,.1f} MiB" for k, v in out["bytes"].items()))
    if b:
        print(f"  area: lat {b['south']:.5f} .. {b['north']:.5f}, lon {b['west']:.5f} .. {b['east']:.5f}"
              + (f"; cells cover {out['cells_area_km2']:,} km²" if out.get("cells_area_km2") is not None else ""))
    if out.get("global_search"):
        print(f"  search without a fix: {out['global_search']}")
    if out.get("picture"):
        print(f"  picture: {out['picture']}")
    return 0


def _draw_cells(idx, png: str) -> None:
    """Each cell's hexagon filled by its tile count, in lon/lat (a coverage picture)."""
    import math

    import h3
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    polys, counts = [], []
    for hx, (_, n) in idx.cells.items():
        polys.append([(lon, lat) for lat, lon in h3.cell_to_boundary(hx)])
        counts.append(n)
    fig, ax = plt.subplots(figsize=(7, 7))
    coll = PolyCollection(polys, array=counts, cmap="viridis", edgecolors="none")
    ax.add_collection(coll)
    ax.autoscale_view()
    ax.set_aspect(1 / max(0.1, math.cos(math.radians(idx.info["bounds"]["north"]))))
    fig.colorbar(coll, ax=ax, label="tiles per cell")
    ax.set_title(f"{len(idx):,} tiles in {len(idx.cells):,} H3 cells")
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _shard_folder(path: str, role: str) -> Path:
    from crossview.errors import CrossviewError

    path = Path(path)
    if (path / "manifest.json").exists():
        return path
    for sub in sorted(path.glob("*/manifest.json")):
        if json.loads(sub.read_text()).get("role") == role:
            return sub.parent
    raise CrossviewError(f"{path} holds no {role} descriptor shards (expected manifest.json there or in a "
                         "sub-folder); run `crossview embed` first")


def build(args: argparse.Namespace) -> int:
    from crossview.search.index import build_index, save_index
    from crossview.search.shards import load_shards

    folder = _shard_folder(args.shards, "reference")
    ids, desc, gps, man = load_shards(folder, trust_checkpoint=args.trust_checkpoint)
    meta = {**man["model"], "dim": int(desc.shape[1]), "view": man.get("view"), "dataset": man.get("dataset"),
            "split": man.get("split"), "precision": man.get("precision", "fp32")}
    idx = build_index(desc, ids, gps, meta, kind=args.kind, nlist=args.nlist, m=args.m, nbits=args.nbits,
                      opq=args.opq, refine=args.refine, nprobe=args.nprobe)
    save_index(idx, args.out)
    print(f"{args.out}: {args.kind} index of {len(idx)} {man.get('view')} descriptors (dim {idx.dim}) from "
          f"model {meta.get('name')}")
    return 0


def search(args: argparse.Namespace) -> int:
    import numpy as np

    from crossview.errors import ConfigError
    from crossview.io import write_json_atomic
    from crossview.search.index import load_index

    idx = load_index(args.index)
    if args.nprobe:
        idx.set_nprobe(args.nprobe)
    if args.query_shards:
        from crossview.search.shards import load_shards

        qids, q, _, man = load_shards(_shard_folder(args.query_shards, "query"), trust_checkpoint=args.trust_checkpoint)
        idx.check_query_model({**man["model"], "dim": int(q.shape[1])}, what=f"the model of {args.query_shards}")
    else:
        if not args.model:
            raise ConfigError("--image needs --model (the model that built the index)")
        from crossview.models import resolve_model
        from crossview.search.embed import embed_images, model_identity

        model, name, _ = resolve_model(args.model, arch=args.arch, random_weights=args.random_weights,
                                       trust=args.trust_checkpoint)
        idx.check_query_model(model_identity(model, name, [args.view]), what=f"--model {args.model}")
        q = embed_images(model, [args.image], args.view)
        qids = [str(args.image)]
    scores, ids = idx.search(q, args.k)
    row_of = {i: n for n, i in enumerate(idx.ids)}
    results = []
    for qi, qid in enumerate(qids):
        hits = []
        for s, rid in zip(scores[qi], ids[qi]):
            if rid is None:
                continue
            g = idx.gps[row_of[rid]]
            gps = None if np.isnan(g).any() else [float(g[0]), float(g[1])]
            hits.append({"id": rid, "score": float(s), "gps": gps})
        results.append({"query": qid, "top": hits})
    for r in results[:20]:
        print(r["query"])
        for j, h in enumerate(r["top"]):
            where = f"  ({h['gps'][0]:.6f}, {h['gps'][1]:.6f})" if h["gps"] else ""
            print(f"  {j + 1:>3}. {h['score']:.4f}  {h['id']}{where}")
    if len(results) > 20:
        print(f"... {len(results) - 20} more queries")
    if args.json_out:
        write_json_atomic(args.json_out, {"index": str(args.index), "k": args.k, "results": results})
    return 0
