"""``crossview figures tsne|response RUN --data DIR --out DIR``: the MFRGN paper's Fig. 8 and Fig. 9 for a run."""

from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run folder (trained model + config.json), checkpoint or model name")
    p.add_argument("--data", help="dataset root (default: the run's data folder)")
    p.add_argument("--dataset", help="cvusa | cvact | vigor | university1652 (default: the run's)")
    p.add_argument("--split", help="split (default: the run's eval_split)")
    p.add_argument("--area", choices=["same", "cross"], help="VIGOR setting (default: the run's)")
    p.add_argument("--out", required=True, help="folder for the PNG and its JSON")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figures", help="paper figures: t-SNE of descriptors (Fig. 8), response maps (Fig. 9)",
                       description="Draw the MFRGN paper's figures for a trained run.")
    kinds = p.add_subparsers(dest="figure", metavar="FIGURE")
    t = kinds.add_parser("tsne", help="t-SNE of same-area vs cross-area test descriptors (Fig. 8)",
                         description="Embed the run's test split (same-area) and a cross-area set (another dataset "
                                     "with --cross-data, or VIGOR's cross-area split of the same folder) and plot "
                                     "them together with t-SNE (scikit-learn if installed, else exact numpy).")
    _common(t)
    t.add_argument("--cross-data", help="cross-area dataset root (e.g. CVACT for a CVUSA run)")
    t.add_argument("--cross-dataset", help="its dataset name (default: the same as --dataset)")
    t.add_argument("--cross-split", help="its split (default: the run's eval_split)")
    t.add_argument("--cross-crop", action="store_true", help="read cross CVACT panoramas pre-cropped")
    t.add_argument("--view", choices=["query", "reference", "both"], default="query")
    t.add_argument("--max-points", type=int, default=500, help="images per group and view (default 500)")
    t.add_argument("--perplexity", type=float, default=30.0)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=run)
    r = kinds.add_parser("response", help="which regions drive a matched pair's similarity (Fig. 9)",
                         description="Grad-CAM of the cosine similarity on the deepest backbone feature map (or "
                                     "occlusion: the similarity drop when each cell is blanked) for N test pairs.")
    _common(r)
    r.add_argument("--n", type=int, default=4, help="pairs to draw (evenly spaced over the split)")
    r.add_argument("--method", choices=["gradcam", "occlusion"], default="gradcam")
    r.add_argument("--width", type=int, default=1200, help="PNG width in pixels")
    r.set_defaults(func=run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run(args: argparse.Namespace) -> int:
    from crossview.paper.figures import response_run, tsne_run

    common = {"data": args.data, "dataset": args.dataset, "split": args.split, "area": args.area,
              "device": args.device}
    if args.figure == "tsne":
        png = tsne_run(args.run, args.out, cross_data=args.cross_data, cross_dataset=args.cross_dataset,
                       cross_split=args.cross_split, cross_crop=args.cross_crop or None, view=args.view,
                       max_points=args.max_points, perplexity=args.perplexity, seed=args.seed, **common)
    else:
        png = response_run(args.run, args.out, n=args.n, method=args.method, width_px=args.width, **common)
    print(f"figure: {png}")
    return 0
