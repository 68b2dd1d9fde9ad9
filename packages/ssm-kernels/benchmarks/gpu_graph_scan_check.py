"""GPU smoke check of the fused graph scan (no pytest): errors, timings, memory, config sweep.

    PYTHONPATH=packages/ssm-kernels/src python packages/ssm-kernels/benchmarks/gpu_graph_scan_check.py [--quick]

Prints, for the TUSZ and raw shapes in fp32 and bf16 with T = 1 and T = L: the max relative
error of the output, last state and every gradient against a float64 reference (and the allowed
error from the tolerance rule), forward and forward+backward times (CUDA events, median) of the
Triton kernels and of the reference, and peak memory. Then sweeps the channels per program, the
checkpoint chunk and the dot precision for timing. Every case is wrapped in try/except so that
one failure does not hide the rest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback

import torch

from ssm_kernels.graph_scan.reference import graph_selective_scan_ref
from ssm_kernels.testing import max_rel_err
from ssm_kernels.testing.bench import cuda_event_ms
from ssm_kernels.testing.graph_scan import graph_scan_grad_names, make_graph_scan_inputs, timing_closures

SHAPES = {
    "tusz": dict(batch=256, V=19, D=64, N=16, L=10),
    "raw": dict(batch=16, V=19, D=64, N=16, L=2000),
}
MAMBA = dict(with_D=True, with_z=True, with_bias=True, softplus=True)
DEVICE = "cuda"
FLOOR = {torch.float32: 2e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def triton_fn(**extra):
    from ssm_kernels.graph_scan.triton import graph_selective_scan_triton

    return lambda **kw: graph_selective_scan_triton(**kw, **extra)


def run_grads(fn, inputs, names, d_out, d_last):
    leaves = {n: inputs[n].detach().clone().requires_grad_(True) for n in names}
    out, last = fn(**{**inputs, **leaves}, return_last_state=True)
    loss = (out.double() * d_out).sum() + (last.double() * d_last).sum()
    grads = torch.autograd.grad(loss, [leaves[n] for n in names])
    return {"out": out.detach(), "last_state": last.detach(), **{f"d{n}": g for n, g in zip(names, grads)}}


def check_errors(shape, dtype, T):
    extra = dict(mix_C=True, K_C=1, with_initial_state=True) if T == "L" else {}
    inputs = make_graph_scan_inputs(**SHAPES[shape], K=2, T=T, dtype=dtype, device=DEVICE, seed=21, **MAMBA, **extra)
    names = graph_scan_grad_names(inputs)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    b, V, Dm, L = inputs["u"].shape
    d_out = torch.randn(b, V, Dm, L, device=DEVICE, generator=g).to(dtype).double()
    d_last = torch.randn(b, V, Dm, inputs["A"].shape[1], device=DEVICE, generator=g).float().double()
    fast = run_grads(triton_fn(), inputs, names, d_out, d_last)
    hi_in = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    hi = run_grads(graph_selective_scan_ref, hi_in, names, d_out, d_last)
    lo = run_grads(graph_selective_scan_ref, inputs, names, d_out, d_last)
    worst = 0.0
    for key in fast:
        err = max_rel_err(fast[key], hi[key])
        allowed = max(FLOOR[dtype], 2 * max_rel_err(lo[key], hi[key]))
        worst = max(worst, err / allowed)
        flag = "ok " if err <= allowed else "FAIL"
        print(
            f"    {flag} {key:16s} err {err:.3e}  allowed {allowed:.3e}  (ref-in-{str(dtype)[6:]} {max_rel_err(lo[key], hi[key]):.3e})"
        )
    return worst


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def cuda_time(fn, iters):
    """Median ms per call: CUDA events on a GPU, wall time on CPU."""
    if DEVICE == "cuda":
        return cuda_event_ms(fn, rounds=iters, warmup=0)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def time_case(fn, inputs, names, iters, warmup=3):
    fwd, fwdbwd = timing_closures(fn, inputs, names)
    for _ in range(warmup):
        fwd()
        fwdbwd()
    sync()
    t_f = cuda_time(fwd, iters)
    t_fb = cuda_time(fwdbwd, iters)
    if DEVICE != "cuda":
        return t_f, t_fb, float("nan")
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fwdbwd()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    return t_f, t_fb, peak


def timing(shape, dtype, T, with_ref, iters):
    inputs = make_graph_scan_inputs(**SHAPES[shape], K=2, T=T, dtype=dtype, device=DEVICE, seed=3,
                                    requires_grad=True, **MAMBA)  # fmt: skip
    names = graph_scan_grad_names(inputs)
    t_f, t_fb, peak = time_case(triton_fn(), inputs, names, iters)
    line = f"    triton: fwd {t_f:8.3f} ms  fwd+bwd {t_fb:8.3f} ms  peak {peak:8.1f} MiB"
    if with_ref:
        r_f, r_fb, r_peak = time_case(graph_selective_scan_ref, inputs, names, 1 if shape == "raw" else 5, warmup=1)
        line += f"\n    ref   : fwd {r_f:8.3f} ms  fwd+bwd {r_fb:8.3f} ms  peak {r_peak:8.1f} MiB"
        line += f"  -> speedup fwd {r_f / t_f:.0f}x, fwd+bwd {r_fb / t_fb:.0f}x"
    print(line)


def sweep(shape, dtype, iters):
    """Channels per program first (default precision, chunk 32), then the chunk, then the precision."""
    inputs = make_graph_scan_inputs(**SHAPES[shape], K=2, T="1", dtype=dtype, device=DEVICE, seed=3,
                                    requires_grad=True, **MAMBA)  # fmt: skip
    names = graph_scan_grad_names(inputs)

    def one(prec, bdf, bdb, chunk):
        if prec != "default":
            os.environ["SSM_KERNELS_GRAPH_SCAN_PRECISION"] = prec
        try:
            fn = triton_fn(block_d_fwd=bdf, block_d_bwd=bdb, chunk=chunk)
            t_f, t_fb, peak = time_case(fn, inputs, names, iters, warmup=2)
        except Exception as exc:
            print(
                f"    {prec:6s} BD fwd {bdf:2d} bwd {bdb:2d} chunk {chunk:2d}: {type(exc).__name__}: {str(exc)[:300]}"
            )
            return float("inf"), float("inf")
        finally:
            os.environ.pop("SSM_KERNELS_GRAPH_SCAN_PRECISION", None)
        print(f"    {prec:7s} BD fwd {bdf:2d} bwd {bdb:2d} chunk {chunk:2d}: fwd {t_f:8.3f} ms  "
              f"fwd+bwd {t_fb:8.3f} ms  peak {peak:8.1f} MiB")  # fmt: skip
        return t_f, t_fb

    res = {bd: one("default", bd, bd, 32) for bd in (2, 4, 8, 16, 32)}
    bd_f = min(res, key=lambda b: res[b][0])
    bd_b = min(res, key=lambda b: res[b][1] - res[b][0] if res[b][1] < float("inf") else float("inf"))
    chunk = 32
    if shape == "raw":
        chunks = {c: one("default", bd_f, bd_b, c)[1] for c in (16, 64)}
        chunks[32] = one("default", bd_f, bd_b, 32)[1]
        chunk = min(chunks, key=chunks.get)
    for prec in ("ieee", "tf32x3", "tf32"):
        one(prec, bd_f, bd_b, chunk)
    for warps in ("2", "4", "8", "16"):
        os.environ["SSM_KERNELS_GRAPH_SCAN_WARPS_FWD"] = os.environ["SSM_KERNELS_GRAPH_SCAN_WARPS_BWD"] = warps
        print(f"    num_warps {warps}:")
        try:
            one("default", bd_f, bd_b, chunk)
        finally:
            os.environ.pop("SSM_KERNELS_GRAPH_SCAN_WARPS_FWD", None)
            os.environ.pop("SSM_KERNELS_GRAPH_SCAN_WARPS_BWD", None)
    print(
        f"    suggestion: SSM_KERNELS_GRAPH_SCAN_BD_FWD={bd_f} SSM_KERNELS_GRAPH_SCAN_BD_BWD={bd_b} "
        f"SSM_KERNELS_GRAPH_SCAN_CHUNK={chunk}"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="skip the config sweep and the raw reference timing")
    parser.add_argument("--no-sweep", action="store_true", help="errors and timings only")
    parser.add_argument("--sweep-only", action="store_true", help="the config sweep only")
    parser.add_argument(
        "--sweep-cases",
        default="tusz-bf16,raw-bf16,tusz-fp32,raw-fp32",
        help="comma-separated <shape>-<dtype> cases of the sweep (each compiles ~12 kernel pairs)",
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU + TRITON_INTERPRET=1, tiny shapes (logic check)")
    args = parser.parse_args()
    import triton

    global DEVICE
    if args.dry_run:
        DEVICE = "cpu"
        SHAPES["tusz"] = dict(batch=2, V=3, D=3, N=4, L=3)
        SHAPES["raw"] = dict(batch=1, V=3, D=2, N=4, L=9)
    elif not torch.cuda.is_available():
        print("no CUDA GPU: run with --dry-run under TRITON_INTERPRET=1 to check the script only")
        return 1

    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (interpreter)"
    print(f"torch {torch.__version__}  triton {triton.__version__}  device {name}", flush=True)
    failures = 0
    if not args.sweep_only:
        failures += check_and_time(args)
    if not (args.quick or args.no_sweep):
        print("== sweep: channels per program (BD), checkpoint chunk, dot precision (default: bf16 tf32, fp32 tf32x3)")
        dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
        for case in args.sweep_cases.split(","):
            print(f"  [{case}]", flush=True)
            try:
                shape, dt = case.strip().split("-")
                sweep(shape, dtypes[dt], 10 if shape == "tusz" else 3)
            except Exception:  # keep going, print the traceback
                traceback.print_exc(file=sys.stdout)
    print(f"== done: {failures} failing case(s)")
    return 1 if failures else 0


def check_and_time(args) -> int:
    failures = 0
    print("== errors vs float64 reference (out, last_state, every gradient)")
    for shape in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            for T in ("1", "L"):
                print(f"  [{shape} {str(dtype)[6:]} T={T}]", flush=True)
                try:
                    worst = check_errors(shape, dtype, T)
                    failures += worst > 1
                except Exception:  # keep going, print the traceback
                    failures += 1
                    traceback.print_exc(file=sys.stdout)
                if DEVICE == "cuda":
                    torch.cuda.empty_cache()
    print("== errors of the other dot precisions (default: fp32 tf32x3, bf16 tf32)")
    for prec, dtype in (("ieee", torch.float32), ("tf32", torch.float32), ("ieee", torch.bfloat16)):
        print(f"  [tusz {str(dtype)[6:]} T=L precision={prec}]", flush=True)
        os.environ["SSM_KERNELS_GRAPH_SCAN_PRECISION"] = prec
        try:
            check_errors("tusz", dtype, "L")
        except Exception:  # keep going, print the traceback
            traceback.print_exc(file=sys.stdout)
        finally:
            os.environ.pop("SSM_KERNELS_GRAPH_SCAN_PRECISION", None)
    print("== timings (TGMamba-like: K=2, T=1, D, z, delta_bias, softplus)")
    for shape in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            for T in ("1", "L"):
                print(f"  [{shape} {str(dtype)[6:]} T={T}]", flush=True)
                try:
                    with_ref = T == "1" and not (args.quick and shape == "raw")
                    timing(shape, dtype, T, with_ref, 20 if shape == "tusz" else 5)
                except Exception:  # keep going, print the traceback
                    failures += 1
                    traceback.print_exc(file=sys.stdout)
                if DEVICE == "cuda":
                    torch.cuda.empty_cache()
    return failures


if __name__ == "__main__":
    sys.exit(main())
