"""``crossview embed MODEL DATASET_ROOT --out DIR [--shard i/n]``: descriptor shards, resumable, torchrun-ready."""

from __future__ import annotations

import argparse
from pathlib import Path

from crossview.device import add_precision_args
from crossview.models.loading import add_model_arguments
from crossview.safe_load import add_trust_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", help="extract descriptors of a dataset split into resumable shards",
        description="Writes DIR/<view>/shard-00003-of-00008.safetensors (ids, L2-normalised descriptors, GPS) and a "
                    "manifest per view. Finished shards are skipped, so re-running resumes. --shard I/N computes "
                    "only shard I of N (one per machine); under torchrun each rank takes its shards.")
    p.add_argument("model", help="run folder, checkpoint file (ours, or the authors' with --arch) or a registered "
                                   "model name with --random-weights")
    p.add_argument("root", metavar="DATASET_ROOT")
    p.add_argument("--dataset", required=True, help="cvusa | cvact | vigor | university1652")
    p.add_argument("--split", default="test")
    p.add_argument("--area", choices=["same", "cross"], default="same", help="VIGOR setting")
    p.add_argument("--label-set", help="dataset label set, if the reader has several")
    p.add_argument("--views", choices=["both", "query", "reference"], default="both")
    p.add_argument("--out", required=True, help="shard folder")
    p.add_argument("--shard", metavar="I/N", help="compute only shard I (0-based) of N")
    p.add_argument("--shard-size", type=int, default=8192, help="items per shard without --shard")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="stored descriptor type")
    p.add_argument("--device", default="auto")
    p.add_argument("--half", action="store_true", help="fp16 autocast on GPU")
    add_model_arguments(p)
    add_precision_args(p)
    add_trust_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from crossview.data import read_dataset
    from crossview.device import setup_inference
    from crossview.distributed import init_distributed, is_dist
    from crossview.models import resolve_model
    from crossview.search.embed import embed_split
    from crossview.search.shards import parse_shard_arg

    shard = parse_shard_arg(args.shard) if args.shard else None
    info = init_distributed(None if args.device == "auto" else args.device)
    device, precision = setup_inference(args, info.local_rank, warn=info.is_main)
    model, name, _ = resolve_model(args.model, arch=args.arch, random_weights=args.random_weights,
                                   trust=args.trust_checkpoint)
    model = model.to(device)
    kwargs = {"area": args.area}
    if args.label_set:
        kwargs["label_set"] = args.label_set
    split = read_dataset(args.dataset, args.root, args.split, **kwargs)
    roles = ("query", "reference") if args.views == "both" else (args.views,)
    folders = embed_split(model, split, args.out, roles=roles, shard=shard, shard_size=args.shard_size,
                          batch=args.batch, device=device, dtype=getattr(torch, args.dtype), half=args.half,
                          precision=precision,
                          model_name=name, root=Path(args.root), rank=info.rank, world=info.world_size,
                          trust_checkpoint=args.trust_checkpoint)
    if is_dist():
        torch.distributed.barrier()
    if info.is_main:
        print(f"precision: {precision}")
        for role, folder in folders.items():
            print(f"{role}: {folder}")
    return 0
