"""``crossview eval RUN_OR_CHECKPOINT --data ROOT --out EVAL_DIR``: retrieval metrics, table, metrics.json, pictures."""

from __future__ import annotations

import argparse
from pathlib import Path

from crossview.device import add_precision_args
from crossview.models.loading import add_model_arguments
from crossview.safe_load import add_trust_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate retrieval (R@K, R@1%%, hit rate, U1652 AP) with pictures",
        description="Embed a dataset split with a trained model (sharded, resumable), print one table and write "
                    "EVAL_DIR/metrics.json, a recall@k curve and each picture query's top-k tiles "
                    "(green = correct, orange = semi-positive, red = wrong). Similarities are streamed block by "
                    "block: no query x reference matrix is held in memory.")
    p.add_argument("model", metavar="RUN_OR_CHECKPOINT",
                   help="a run folder (model.safetensors or model.pt + config.json), a checkpoint file (ours or the "
                        "authors', with --arch), or a registered model name with --random-weights")
    p.add_argument("--data", help="dataset root (default: the run's data folder)")
    p.add_argument("--dataset", help="cvusa | cvact | vigor | university1652 (default: the run's)")
    p.add_argument("--split", help="split to evaluate (default: the run's eval_split, else test; University-1652: "
                                   "drone2sat and sat2drone)")
    p.add_argument("--area", choices=["same", "cross"], help="VIGOR setting (default: the run's)")
    p.add_argument("--label-set", help="dataset label set (default: the run's)")
    p.add_argument("--crop", action="store_true", help="read pre-cropped CVACT panoramas (default: the run's)")
    p.add_argument("--out", required=True, help="evaluation folder to write")
    p.add_argument("--direction", choices=["standard", "official"], default="standard",
                   help="standard = ground queries vs aerial references; official = MFRGN's CVUSA/CVACT swapped "
                        "direction (aerial queries vs ground references)")
    p.add_argument("--u1652-protocol", choices=["original", "sample4geo"], default="original",
                   help="University-1652: 'original' keeps the distractor gallery classes, 'sample4geo' drops them "
                        "(both are computed and written; this picks the headline)")
    p.add_argument("--top-k-pictures", type=int, default=8, metavar="N",
                   help="draw the top-k tiles of N queries (0: none)")
    p.add_argument("--picture-k", type=int, default=5, help="tiles per picture row")
    p.add_argument("--embeddings", help="descriptor shard folder to reuse/fill (default EVAL_DIR/embeddings)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--half", action="store_true", help="fp16 autocast for embedding on GPU")
    p.add_argument("--fov", type=float, metavar="DEG",
                   help="limited-FoV protocol: each ground query keeps a DEG-wide sector at a seeded random heading "
                        "(black elsewhere); reported beside the full panoramas")
    p.add_argument("--orientation", choices=["known", "unknown"], default="unknown",
                   help="with --fov: the sector stays at its true heading (known) or is rolled to the middle")
    add_model_arguments(p)
    add_precision_args(p)
    add_trust_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from crossview.data import read_dataset
    from crossview.device import setup_inference
    from crossview.distributed import init_distributed, is_dist
    from crossview.errors import ConfigError
    from crossview.evaluate.report import evaluate_split
    from crossview.models import resolve_model

    info = init_distributed(None if args.device == "auto" else args.device)
    device, precision = setup_inference(args, info.local_rank, warn=info.is_main)
    model, name, run_info = resolve_model(args.model, arch=args.arch, random_weights=args.random_weights,
                                          trust=args.trust_checkpoint)
    model = model.to(device)
    cfg = run_info.get("config", {})
    data = args.data or run_info.get("data")
    dataset = args.dataset or cfg.get("dataset")
    if not data or not dataset:
        raise ConfigError("give --data ROOT and --dataset NAME (they default only for a run folder)")
    if args.split:
        splits = [args.split]
    elif dataset == "university1652":  # both directions, each in its own sub-folder
        splits = ["drone2sat", "sat2drone"]
    else:
        splits = [cfg.get("eval_split") or "test"]
    area = args.area or cfg.get("area") or "same"
    kwargs = {"area": area}
    if args.label_set or cfg.get("label_set"):
        kwargs["label_set"] = args.label_set or cfg.get("label_set")
    if args.crop or cfg.get("crop"):
        kwargs["crop"] = True
    extra = {"checkpoint": str(args.model), "data": str(data)}
    if dataset == "vigor":
        extra["area"] = area
    if kwargs.get("crop"):
        extra["crop"] = True
    out = Path(args.out)
    records = {}
    for split_name in splits:
        split = read_dataset(dataset, data, split_name, **kwargs)
        sub = out if len(splits) == 1 else out / split_name
        if args.fov is not None:
            from crossview.evaluate.limited_fov import evaluate_limited_fov

            records[split_name] = evaluate_limited_fov(model, split, args.fov, args.orientation, batch=args.batch,
                                                       device=device, out=sub)
            continue
        emb = Path(args.embeddings) / split_name if (args.embeddings and len(splits) > 1) else \
            Path(args.embeddings) if args.embeddings else sub / "embeddings"
        if info.enabled:  # every rank embeds its shards; rank 0 evaluates
            from crossview.search.embed import embed_split

            embed_split(model, split, emb, batch=args.batch, device=device, half=args.half, precision=precision,
                        model_name=name,
                        root=Path(data), rank=info.rank, world=info.world_size,
                        trust_checkpoint=args.trust_checkpoint)
            if is_dist():
                torch.distributed.barrier()
            if not info.is_main:
                continue
        records[split_name] = evaluate_split(
            model, split, sub, direction=args.direction, protocol=args.u1652_protocol,
            pictures=args.top_k_pictures, picture_k=args.picture_k, embeddings=emb, device=device,
            batch=args.batch, half=args.half, precision=precision, model_name=name, root=Path(data), extra=extra,
            trust_checkpoint=args.trust_checkpoint)
    if len(splits) > 1 and info.is_main:  # headline = the first direction; every direction nested
        from crossview.io import write_json_atomic

        first = records[splits[0]]
        write_json_atomic(out / "metrics.json", {**first, "by_split": records})
        print(f"metrics of both directions: {out / 'metrics.json'}")
    return 0
