"""Time MFRGN inference and training at the official configurations on one GPU; JSON to benchmarks/results/.

Settings mirror the official timing (shared/reference/official_mfrgn_h100.json): random weights, batch 128 for
inference, 64 pairs per training step, sizes CVUSA/CVACT (256² / 128×512) and VIGOR (320² / 320×640).
Ours: bf16 autocast, channels-last, optional torch.compile, fused AdamW, no host syncs inside the timed loop.
Also checks that the fast path computes the same descriptors as the plain fp32 path (relative error).

    python -m benchmarks.bench_mfrgn_gpu [--configs cvusa vigor] [--compile] [--out benchmarks/results/mfrgn_gpu.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.common import environment, write_result

CONFIGS = {"cvusa": ("mfrgn_cvusa", (256, 256), (128, 512)), "vigor": ("mfrgn_vigor", (320, 320), (320, 640))}


def _sync_time(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    times.sort()
    return times[len(times) // 2]


def bench_inference(model, view: str, size, batch: int, dtype, compile_: bool, iters: int) -> dict:
    x = torch.randn(batch, 3, *size, device="cuda").contiguous(memory_format=torch.channels_last)
    def fn(t):
        return (model.embed(t, view=view))
    if compile_:
        fn = torch.compile(fn)

    @torch.no_grad()
    def step():
        with torch.autocast("cuda", dtype=dtype):
            fn(x)

    t = _sync_time(step, 3, iters)
    return {"img_per_s": batch / t, "s_per_batch": t}


def check_parity(model, view: str, size) -> float:
    x = torch.randn(16, 3, *size, device="cuda")
    with torch.no_grad():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        ref = model.embed(x, view=view).double()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = model.embed(x.contiguous(memory_format=torch.channels_last), view=view).double()
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return float((fast - ref).norm() / ref.norm())


def bench_train(model, sizes, batch: int, dtype, compile_: bool, iters: int) -> dict:
    from crossview.train.losses import symmetric_infonce

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    g = torch.randn(batch, 3, *sizes[1], device="cuda").contiguous(memory_format=torch.channels_last)
    a = torch.randn(batch, 3, *sizes[0], device="cuda").contiguous(memory_format=torch.channels_last)

    def fwd(g, a):
        return model.embed(g, view="ground"), model.embed(a, view="aerial")

    f = torch.compile(fwd) if compile_ else fwd

    def step():
        with torch.autocast("cuda", dtype=dtype):
            dg, da = f(g, a)
        loss = symmetric_infonce(dg, da, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 100.0)
        opt.step()

    model.train()
    torch.cuda.reset_peak_memory_stats()
    t = _sync_time(step, 3, iters)
    return {"pairs_per_s": batch / t, "s_per_step": t, "peak_GiB": torch.cuda.max_memory_allocated() / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--infer-batch", type=int, default=128)
    ap.add_argument("--out", default="benchmarks/results/mfrgn_gpu.json")
    args = ap.parse_args()
    import timm

    from crossview.models import create_model

    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    result = {"environment": environment(timm=timm.__version__), "compile": args.compile, "dtype": "bf16",
              "channels_last": True, "infer_batch": args.infer_batch, "train_batch_pairs": args.train_batch}
    for name in args.configs:
        reg, sat, grd = CONFIGS[name]
        model = create_model(reg).cuda().to(memory_format=torch.channels_last).eval()
        r = {"sat_size": sat, "grd_size": grd}
        r["parity_rel_err_bf16_vs_fp32_grd"] = check_parity(model, "ground", grd)
        r["parity_rel_err_bf16_vs_fp32_sat"] = check_parity(model, "aerial", sat)
        r["infer_grd"] = bench_inference(model, "ground", grd, args.infer_batch, torch.bfloat16, args.compile,
                                         args.iters)
        r["infer_sat"] = bench_inference(model, "aerial", sat, args.infer_batch, torch.bfloat16, args.compile,
                                         args.iters)
        r["train"] = bench_train(model, (sat, grd), args.train_batch, torch.bfloat16, args.compile, args.iters)
        result[name] = r
        print(name, json.dumps(r), flush=True)
        del model
        torch.cuda.empty_cache()
    write_result(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
