"""Stand-alone GPU check of the Triton SSD (no pytest): accuracy vs the reference, then timings.

    PYTHONPATH=packages/ssm-kernels/src python packages/ssm-kernels/benchmarks/gpu_ssd_check.py [--no-profile]

Every case runs in its own try/except and prints its traceback, so one failure does not hide the rest.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import torch

from ssm_kernels.testing import max_rel_err
from ssm_kernels.testing.ssd import compare_ssd_with_reference, make_inputs, ssd_tolerance

BASELINE_MS = {
    (4, 2048, 80, 64, 1, 128): {"fwd": 0.952, "fwdbwd": 3.905},
    (8, 4096, 32, 64, 1, 64): {"fwd": 0.839, "fwdbwd": 4.029},
}


def accuracy(shape, dtype, chunk, hi_dtype, **opts):
    b, l, h, p, g, n = shape
    inp = make_inputs(b, l, h, p, g, n, dtype=dtype, device="cuda", D_shape=opts.pop("D_shape", "h"), seed=1, **opts)
    kw = dict(chunk_size=chunk, dt_softplus=True, return_final_states=True)
    t = time.time()
    rows = compare_ssd_with_reference(inp, kw, hi_dtype=hi_dtype)
    ok = True
    parts = []
    for name, fast, hi, lo in rows:
        tol = ssd_tolerance(name, dtype)
        err, ref_err = max_rel_err(fast, hi), max_rel_err(lo, hi)
        floor = tol.get("floor") or {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
        allowed = max(floor, tol["factor"] * ref_err)
        good = err <= allowed
        ok &= good
        parts.append(f"{name}={err:.1e}/{allowed:.1e}{'' if good else ' FAIL'}")
    print(f"[{'PASS' if ok else 'FAIL'}] {shape} {dtype} chunk={chunk} ({time.time() - t:.1f}s): " + " ".join(parts))
    return ok


def time_ms(fn, rounds=20, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(rounds):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def bench(shape, backend, profile):
    from ssm_kernels import mamba_chunk_scan_combined

    b, l, h, p, g, n = shape
    inp = make_inputs(
        b,
        l,
        h,
        p,
        g,
        n,
        dtype=torch.bfloat16,
        device="cuda",
        D_shape="h",
        z=False,
        init=False,
        seed=0,
        requires_grad=True,
    )
    leaves = [v for v in inp.values() if v is not None]
    dout = torch.randn(b, l, h, p, device="cuda", dtype=torch.bfloat16)

    def fwd():
        with torch.no_grad():
            return mamba_chunk_scan_combined(chunk_size=256, dt_softplus=True, backend=backend, **inp)

    def fwdbwd():
        out = mamba_chunk_scan_combined(chunk_size=256, dt_softplus=True, backend=backend, **inp)
        return torch.autograd.grad(out, leaves, dout)

    rounds = 20 if backend == "triton" else 3
    t_f = time_ms(fwd, rounds=rounds)
    t_fb = time_ms(fwdbwd, rounds=rounds)
    base = BASELINE_MS[shape]
    print(
        f"{backend:9s} {shape}: fwd {t_f:.3f} ms (mamba_ssm {base['fwd']:.3f}, x{base['fwd'] / t_f:.2f})   "
        f"fwd+bwd {t_fb:.3f} ms (mamba_ssm {base['fwdbwd']:.3f}, x{base['fwdbwd'] / t_fb:.2f})"
    )
    if profile and backend == "triton":
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        with prof(activities=[ProfilerActivity.CUDA]) as pr:
            for _ in range(3):
                fwdbwd()
            torch.cuda.synchronize()
        print(pr.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    return t_f, t_fb


def main():
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check")
        return 1
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    import triton

    print("triton", triton.__version__)
    profile = "--no-profile" not in sys.argv
    failures = 0
    os.environ["SSM_KERNELS_AUTOTUNE"] = "0"  # accuracy: one config per kernel (fewer compilations)
    for args in [
        ((2, 257, 6, 17, 2, 24), torch.float32, 64, torch.float64, {}),
        ((2, 257, 6, 17, 2, 24), torch.bfloat16, 64, torch.float64, {"D_shape": "hp"}),
        ((1, 600, 8, 64, 1, 128), torch.bfloat16, 256, torch.float64, {}),
        ((1, 600, 8, 64, 1, 128), torch.float16, 256, torch.float64, {"z": False}),
        ((4, 2048, 80, 64, 1, 128), torch.bfloat16, 256, torch.float32, {"z": False, "init": False}),
        ((8, 4096, 32, 64, 1, 64), torch.bfloat16, 256, torch.float32, {"z": False, "init": False}),
    ]:
        shape, dtype, chunk, hi, opts = args
        try:
            failures += not accuracy(shape, dtype, chunk, hi, **opts)
        except Exception:
            failures += 1
            print(f"[ERROR] accuracy {shape} {dtype}")
            traceback.print_exc()
        torch.cuda.empty_cache()
    from ssm_kernels.ssd.triton_ssd import clear_autotune_cache

    os.environ.pop("SSM_KERNELS_AUTOTUNE", None)  # timings: full autotuning
    clear_autotune_cache()
    for shape in BASELINE_MS:
        for backend in ("triton", "reference"):
            try:
                bench(shape, backend, profile)
            except Exception:
                failures += 1
                print(f"[ERROR] bench {shape} {backend}")
                traceback.print_exc()
            torch.cuda.empty_cache()
    print("failures:", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
