"""Stand-alone GPU check of the Triton SSD (no pytest): accuracy vs the reference, then timings.

    PYTHONPATH=packages/ssm-kernels/src python packages/ssm-kernels/benchmarks/gpu_ssd_check.py \
        [--no-profile] [--full] [--cb32]

Accuracy (small/medium shapes; ``--full`` adds fp16 and the two benchmark shapes against the fp32
reference), then timings of the forward and of forward+backward for each variant (default "v2", "v2+save" with
the chunk states kept for the backward; ``--cb32`` adds the forward's C.B in fp32), a
compact per-kernel profile of v2, the autotuned configs, registers/spills of the compiled kernels, and a
summary table last.

Every case runs in its own try/except and prints its traceback, so one failure does not hide the rest.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import torch

from ssm_kernels.testing import max_rel_err
from ssm_kernels.testing.bench import cuda_event_ms
from ssm_kernels.testing.ssd import compare_ssd_with_reference, make_inputs, ssd_tolerance

ACC_LINES: list[str] = []
BASELINE_MS = {
    (4, 2048, 80, 64, 1, 128): {"fwd": 0.952, "fwdbwd": 3.905},
    (8, 4096, 32, 64, 1, 64): {"fwd": 0.839, "fwdbwd": 4.029},
}


def accuracy(shape, dtype, chunk, hi_dtype, **opts):
    b, l, h, p, g, n = shape
    seq = opts.pop("seq", False)
    inp = make_inputs(b, l, h, p, g, n, dtype=dtype, device="cuda", D_shape=opts.pop("D_shape", "h"), seed=1, **opts)
    kw = dict(chunk_size=chunk, dt_softplus=True, return_final_states=True)
    if seq:
        si = torch.zeros(b, l, dtype=torch.int32, device="cuda")
        si[:, l // 3 :] = 1
        si[:, l // 2 + 5 :] = 4
        kw["seq_idx"] = si
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
    ACC_LINES.append(f"{'PASS' if ok else 'FAIL'} {shape} {dtype} chunk={chunk} seq={seq}")
    print(
        f"[{'PASS' if ok else 'FAIL'}] {shape} {dtype} chunk={chunk} seq={seq} ({time.time() - t:.1f}s): "
        + " ".join(parts)
    )
    return ok


def _inputs(shape):
    b, l, h, p, g, n = shape
    inp = make_inputs(
        b, l, h, p, g, n, dtype=torch.bfloat16, device="cuda", D_shape="h", z=False, init=False, seed=0,
        requires_grad=True,
    )  # fmt: skip
    dout = torch.randn(b, l, h, p, device="cuda", dtype=torch.bfloat16)
    return inp, dout


def _fns(inp, dout):
    from ssm_kernels import mamba_chunk_scan_combined

    leaves = [v for v in inp.values() if v is not None]

    def fwd():
        with torch.no_grad():
            return mamba_chunk_scan_combined(chunk_size=256, dt_softplus=True, backend="triton", **inp)

    def fwdbwd():
        out = mamba_chunk_scan_combined(chunk_size=256, dt_softplus=True, backend="triton", **inp)
        return torch.autograd.grad(out, leaves, dout)

    return fwd, fwdbwd


def _profile(fn, title):
    """Compact per-kernel GPU time table (3 calls of ``fn``): calls, total and mean microseconds per call."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    try:
        with prof(activities=[ProfilerActivity.CUDA]) as pr:
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
        rows = []
        for ev in pr.key_averages():
            t = getattr(ev, "self_device_time_total", None)
            if t is None:
                t = getattr(ev, "self_cuda_time_total", 0.0)
            if t > 0:
                rows.append((t, ev.count, ev.key))
    except Exception as exc:  # the profiler is a diagnostic: never let it stop the timings
        print(f"(profiler failed: {exc!r})")
        return
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(f"  profile {title}: GPU busy {total / 3:.1f} us per call")
    for t, count, key in rows[:14]:
        print(f"    {t / 3:8.1f} us/call  {count // 3:3d}x  {key[:70]}")


def _best_configs():
    import ssm_kernels.ssd.triton_ssd as T

    parts = []
    for name in T._GPU_CONFIGS:
        tuner = getattr(T, name)
        for key, cfg in getattr(tuner, "cache", {}).items():
            parts.append(f"  {name} {key[:6]}: {cfg}")
    return "\n".join(parts)


def host_ms(fn, rounds=10):
    """Median host (CPU) time to issue one call, the GPU idle before each: launch and Python overhead."""
    times = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    times.sort()
    return times[len(times) // 2]


def _set_env(env):
    for k in ("SSM_KERNELS_SSD_SAVE_STATES", "SSM_KERNELS_SSD_CB_FP32"):
        os.environ.pop(k, None)
    os.environ.update(env)


# variants timed: the first is the default
VARIANTS = [
    ("v2", {}),
    ("v2+save", {"SSM_KERNELS_SSD_SAVE_STATES": "1"}),
]
if "--cb32" in sys.argv:  # the forward's C.B in fp32 for bf16 inputs (re-tunes and recompiles: ~20 s more)
    VARIANTS.insert(2, ("v2+cb32", {"SSM_KERNELS_SSD_CB_FP32": "1"}))


def _compiled_report():
    """Registers, spills and shared memory of every compiled variant of the SSD kernels (best effort)."""
    import ssm_kernels.ssd.triton_ssd as T

    lines = []
    names = [*T._GPU_CONFIGS, "_prep_kernel", "_dt_bwd_kernel", "_gate_bwd_kernel"]
    for name in names:
        fn = getattr(T, name, None)
        fn = getattr(fn, "fn", fn)  # the autotuner wraps the JITFunction
        try:
            caches = getattr(fn, "device_caches", {})
            for dev_cache in caches.values():
                kernels = dev_cache[0] if isinstance(dev_cache, tuple) else dev_cache
                for k in kernels.values():
                    md = k.metadata
                    lines.append(
                        f"  {name:24s} warps={md.num_warps} stages={md.num_stages} regs={getattr(k, 'n_regs', '?')} "
                        f"spills={getattr(k, 'n_spills', '?')} smem={md.shared}"
                    )
        except Exception as exc:  # internals differ across triton versions
            lines.append(f"  {name}: (no report: {exc!r})")
    return "\n".join(lines)


def bench(shape, profile, results):
    """Time forward and forward+backward for every variant (the forward only where it can differ)."""
    inp, dout = _inputs(shape)
    fwd, fwdbwd = _fns(inp, dout)
    base = BASELINE_MS[shape]
    for label, env in VARIANTS:
        _set_env(env)
        t0 = time.time()
        if label in ("v2", "v2+cb32"):
            t_f = cuda_event_ms(fwd)
            results.append((shape, "fwd", label, t_f, base["fwd"], host_ms(fwd)))
        t_fb = cuda_event_ms(fwdbwd)
        results.append((shape, "fwd+bwd", label, t_fb, base["fwdbwd"], host_ms(fwdbwd)))
        print(f"  {shape} {label}: fwd+bwd {t_fb:.3f} ms ({time.time() - t0:.1f}s incl. tuning)", flush=True)
        if profile and label == VARIANTS[0][0]:
            _profile(fwdbwd, f"{shape} {label} fwd+bwd")
            _profile(fwd, f"{shape} fwd")
    _set_env(VARIANTS[0][1])


def main():
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check")
        return 1
    t_start = time.time()
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    import triton

    print("triton", triton.__version__)
    profile = "--no-profile" not in sys.argv
    failures = 0
    os.environ["SSM_KERNELS_AUTOTUNE"] = "0"  # accuracy: one config per kernel (fewer compilations)
    # few dtype/flag combinations: each compiles every kernel once more (the pytest GPU tests cover the rest)
    acc_cases = [
        ("v2", (2, 257, 6, 17, 2, 24), torch.float32, 64, torch.float64, {"seq": True}),
        ("v2", (1, 700, 12, 64, 2, 128), torch.bfloat16, 256, torch.float32, {"seq": True, "D_shape": "hp"}),
        ("v2", (2, 1024, 16, 64, 1, 64), torch.bfloat16, 256, torch.float32, {"z": False, "init": False}),
    ]
    if "--full" in sys.argv:
        acc_cases.append(("v2", (1, 600, 8, 64, 1, 128), torch.float16, 256, torch.float64, {"z": False}))
    if "--full" in sys.argv:  # the big benchmark shapes too (slow: fp32 reference, ~40 s more)
        acc_cases += [
            ("v2", (4, 2048, 80, 64, 1, 128), torch.bfloat16, 256, torch.float32, {"z": False, "init": False}),
            ("v2", (8, 4096, 32, 64, 1, 64), torch.bfloat16, 256, torch.float32, {"z": False, "init": False}),
        ]
    for variant, shape, dtype, chunk, hi, opts in acc_cases:
        try:
            failures += not accuracy(shape, dtype, chunk, hi, **opts)
        except Exception:
            failures += 1
            print(f"[ERROR] accuracy {variant} {shape} {dtype}")
            traceback.print_exc()
        torch.cuda.empty_cache()
    from ssm_kernels.ssd.triton_ssd import clear_autotune_cache

    os.environ.pop("SSM_KERNELS_AUTOTUNE", None)  # timings: full autotuning
    clear_autotune_cache()
    results = []
    for shape in BASELINE_MS:
        try:
            bench(shape, profile, results)
        except Exception:
            failures += 1
            print(f"[ERROR] bench {shape}")
            traceback.print_exc()
        torch.cuda.empty_cache()
    print("autotuned configs:")
    print(_best_configs())
    print("compiled kernels:")
    print(_compiled_report())
    print(
        f"\nsummary (bf16, chunk 256, dt_softplus, D (h,), no z; target: >= 1.2x mamba_ssm) [{time.time() - t_start:.0f}s]"
    )
    for shape, what, variant, t, base, t_host in results:
        print(
            f"  {str(shape):26s} {what:8s} {variant:8s} {t:7.3f} ms  mamba_ssm {base:.3f}  x{base / t:.2f}"
            f"  (host {t_host:.3f} ms)"
        )
    print("accuracy:")
    for line in ACC_LINES:
        print("  " + line)
    print("failures:", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
