"""Training data-loader throughput on its own (no model): pairs/s from the memory-mapped uint8 cache.

The GPU must never wait for data. The official code decodes pickled arrays and runs albumentations per sample;
ours reads uint8 rows from one memory-mapped array per split and augments uint8 tensors. This measures the
loader alone at the official sizes so the number can be compared with the training step rate of the GPU
benchmarks (official H100 training: 337 pairs/s at CVUSA sizes, 173 at VIGOR sizes).

    python -m benchmarks.bench_loader [--config vigor] [--n 1024] [--workers 0 2] [--out benchmarks/results/loader.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.common import environment
from crossview.data.cache import ImageCache
from crossview.data.images import ImageSource
from crossview.data.records import Record, Reference, Split
from crossview.io import write_json_atomic
from crossview.train.data import BatchList, PairDataset
from crossview.train.loop import collate_pairs

SIZES = {"cvusa": ((128, 512), (256, 256)), "vigor": ((320, 640), (320, 320))}


def _source(folder: Path, name: str, n: int, size: tuple[int, int], rng: np.random.Generator) -> ImageSource:
    """An ImageSource backed by a memmap of random pixels (what `build_cache` writes, without decoding)."""
    path = folder / f"{name}.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=(n, *size, 3))
    for i in range(0, n, 64):
        mm[i:i + 64] = rng.integers(0, 256, size=(min(64, n - i), *size, 3), dtype=np.uint8)
    mm.flush()
    write_json_atomic(path.with_suffix(".json"), {"size": list(size), "paths": [f"{name}{i}" for i in range(n)],
                                                  "format": "uint8 NHWC raw"})
    src = ImageSource.__new__(ImageSource)
    src.paths, src.size, src.cache = [f"{name}{i}" for i in range(n)], size, ImageCache(path)
    return src


def measure(config: str, n: int, workers: int, batch: int, batches: int, photometric: bool) -> dict:
    q_size, r_size = SIZES[config]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        queries = _source(folder, "q", n, q_size, rng)
        refs = _source(folder, "r", n, r_size, rng)
        records = [Record(f"q{i}", Path(f"q{i}"), "ground", (i,)) for i in range(n)]
        split = Split("bench", "train", records, [Reference(i, Path(f"r{i}")) for i in range(n)])
        dataset = PairDataset(split, queries, refs, train=True, photometric=photometric)
        order = [rng.permutation(n)[: batch * batches].reshape(batches, batch)]
        sampler = BatchList(list(order[0]), 0, 0, 0, 0, 1)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_pairs,
                            persistent_workers=False)
        it = iter(loader)
        next(it)  # worker start-up is not throughput
        t0 = time.perf_counter()
        count = 0
        for q, _r, _ in it:
            count += len(q)
        dt = time.perf_counter() - t0
    return {"config": config, "workers": workers, "batch": batch, "photometric": photometric,
            "pairs": count, "seconds": dt, "pairs_per_s": count / dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", nargs="+", default=["cvusa", "vigor"], choices=sorted(SIZES))
    ap.add_argument("--n", type=int, default=768)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--out", default="benchmarks/results/loader.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for config in args.config:
        for workers in args.workers:
            for photometric in (False, True):
                row = measure(config, args.n, workers, args.batch, args.batches, photometric)
                print(json.dumps(row))
                rows.append(row)
    out = {"benchmark": "loader", "environment": environment(),
           "note": "loader alone from the uint8 memmap cache, random pixels, synchronised flip/rotate on; "
                   "photometric = colour jitter/blur/dropout as in training", "rows": rows}
    write_json_atomic(Path(args.out), out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
