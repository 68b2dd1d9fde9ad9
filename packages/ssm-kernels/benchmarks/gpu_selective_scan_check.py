"""One-shot GPU check of the CUDA selective scan (no pytest): build, correctness, timings.

Run from the repository root on a GPU machine:

    PYTHONPATH=packages/ssm-kernels/src python packages/ssm-kernels/benchmarks/gpu_selective_scan_check.py

Every case catches its own exceptions and the script keeps going; a summary line lists failures.
Set SSM_KERNELS_DEBUG=1 to synchronise and check errors after every kernel launch.
Correctness runs the default kernels; timings run the default kernels, the lane-split short kernels
(SSM_KERNELS_SCAN_SHORT_ROWS=0), plain and with staged B / C (SSM_KERNELS_SCAN_SHORT_STAGE=1), the general backward without
time segments (SSM_KERNELS_SCAN_BWD_SEGMENTS=1), and the long-sequence kernels (SSM_KERNELS_SCAN_LONG=1, with each rows-per-warp
choice of the long backward, SSM_KERNELS_SCAN_LONG_RW) in the same process and compare their results. ``--quick`` skips the fp16 correctness sweep.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import torch

from ssm_kernels.testing import assert_close_to_reference
from ssm_kernels.testing.bench import cuda_event_ms
from ssm_kernels.testing.selective_scan import compare_scan_to_reference, make_scan_inputs

H200_COPY_GBPS = 4300.0
# mamba_ssm CUDA kernel on an H200 (issue 6): (forward ms, forward+backward ms)
BASELINE = {"big": (0.590, 3.061), "tusz": (1.355, 5.01), "raw": (1.755, 8.05)}
TARGET = {"big": 1.3, "tusz": 10.0, "raw": 1.3}
SHAPES = {
    "big": (8, 2048, 2048, 16, torch.bfloat16),
    "tusz": (4864, 64, 10, 16, torch.float32),
    "raw": (304, 64, 2000, 16, torch.float32),
}

failures: list[str] = []


def section(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def build() -> bool:
    section("build")
    from ssm_kernels.selective_scan import cuda as scan_cuda

    t0 = time.perf_counter()
    try:
        scan_cuda.load_extension(verbose=os.environ.get("VERBOSE", "0") == "1")
    except Exception:
        traceback.print_exc()
        failures.append("build")
        return False
    print(f"extension built/loaded in {time.perf_counter() - t0:.1f} s into {scan_cuda.build_directory()}", flush=True)
    return True


def correctness() -> None:
    section("correctness (fast path vs float64 reference; allowed = max(floor, 2 x low-precision reference error))")
    cases = [
        # name, batch, dim, L, N, kwargs
        ("tiny", 2, 3, 5, 4, dict(with_initial_state=True)),
        ("L1", 2, 3, 1, 4, dict(with_initial_state=True)),
        ("dim65-L7", 2, 65, 7, 16, {}),
        ("L100-N16", 2, 64, 100, 16, dict(with_initial_state=True)),
        ("L257-N64", 2, 64, 257, 64, dict(with_initial_state=True)),
        ("grouped-nonuniform", 3, 65, 100, 16, dict(bc="grouped", groups=5, with_initial_state=True)),
        ("grouped-uniform", 2, 96, 100, 16, dict(bc="grouped", groups=3)),
        ("constant-BC", 2, 3, 257, 4, dict(bc="constant", with_initial_state=True)),
        ("packed", 1, 65, 100, 16, dict(cu_seqlens=[0, 1, 1, 40, 99, 100], with_initial_state=True)),
        ("N5-padded", 2, 33, 50, 5, dict(with_initial_state=True)),
        ("tusz-small", 512, 64, 10, 16, {}),
        # 16-byte vector paths: L a multiple of 8, several tiles / chunks, staged B/C, partial last block
        ("vec-L304", 2, 128, 304, 16, dict(with_initial_state=True)),
        ("vec-rows80-L48", 2, 40, 48, 16, {}),
        ("flat-L13-N8", 7, 50, 13, 8, dict(with_initial_state=True)),
        ("odd-L33", 3, 70, 33, 16, {}),
    ]
    dtypes = (
        (torch.float32, torch.bfloat16) if "--quick" in sys.argv else (torch.float32, torch.bfloat16, torch.float16)
    )
    for dtype in dtypes:
        for name, batch, dim, L, N, kw in cases:
            label = f"{name}-{str(dtype).replace('torch.', '')}"
            rows = []

            def check(n, out, hi, lo, rows=rows):
                try:
                    assert_close_to_reference(n, out, hi, lo)
                    rows.append((n, True, ""))
                except AssertionError as exc:
                    rows.append((n, False, str(exc)))

            try:
                x = make_scan_inputs(batch, dim, L, N, dtype=dtype, device="cuda", seed=1, **kw)
                rep = compare_scan_to_reference(x, seed=2, check=check)
                bad = [r for r in rows if not r[1]]
                worst = max(rep.items(), key=lambda kv: kv[1][0] / max(kv[1][1], 1e-12))
                status = "ok  " if not bad else "FAIL"
                print(
                    f"{status} {label:28s} worst {worst[0]}: err {worst[1][0]:.2e} (ref-lo err {worst[1][1]:.2e})",
                    flush=True,
                )
                for r in bad:
                    print(f"       {r[2]}", flush=True)
                if bad:
                    failures.append(label)
            except Exception:
                print(f"FAIL {label}: exception", flush=True)
                traceback.print_exc()
                failures.append(label)


def _nbytes(*ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


# (label, environment, shapes): the default kernels, then the long-sequence kernels at L >= 128
VARIANTS = [
    ("default", {"SSM_KERNELS_SCAN_LONG": "0"}, ("big", "tusz", "raw")),
    ("noseg", {"SSM_KERNELS_SCAN_LONG": "0", "SSM_KERNELS_SCAN_BWD_SEGMENTS": "1"}, ("big", "raw")),
    ("lanes", {"SSM_KERNELS_SCAN_SHORT_ROWS": "0"}, ("tusz",)),
    ("staged", {"SSM_KERNELS_SCAN_SHORT_STAGE": "1", "SSM_KERNELS_SCAN_SHORT_ROWS": "0"}, ("tusz",)),
    ("long", {"SSM_KERNELS_SCAN_LONG": "1"}, ("big", "raw")),
    *[(f"long-rw{rw}", {"SSM_KERNELS_SCAN_LONG": "1", "SSM_KERNELS_SCAN_LONG_RW": str(rw)}, ("big", "raw"))
      for rw in (1, 2, 4, 8)],
]  # fmt: skip


def timings() -> None:
    section("timings (median of CUDA-event timed calls; z, D, delta_bias, softplus)")
    table = []
    for label, env, shapes in VARIANTS:
        os.environ.update(env)
        print(f"--- kernels {label}", flush=True)
        _timings(label, table, shapes)
        for k in env:
            os.environ.pop(k, None)
    section("variants vs default at the timing shapes (out and every gradient; max|a - b| / max|b|)")
    from ssm_kernels.testing import max_rel_err

    for label, _env, shapes in VARIANTS[1:]:
        for name in shapes:
            a, b = RESULTS.get((label, name)), RESULTS.get(("default", name))
            if a is None or b is None:
                continue
            tol = 1e-4 if SHAPES[name][-1] == torch.float32 else 1.6e-2
            errs = {k: max_rel_err(a[k], b[k]) for k in b}
            worst = max(errs, key=errs.get)
            ok = all(e <= tol for e in errs.values())
            print(f"{'ok  ' if ok else 'FAIL'} {label:8s} {name:5s} worst {worst}: {errs[worst]:.2e} (tol {tol:.0e})",
                  flush=True)  # fmt: skip
            if not ok:
                print(f"       {errs}", flush=True)
                failures.append(f"{label}-vs-default-{name}")
    RESULTS.clear()
    section("timing table (ms; speedup vs mamba_ssm; target)")
    for row in table:
        print(row, flush=True)


RESULTS: dict = {}


def _timings(impl: str, table: list, shapes) -> None:
    from ssm_kernels import selective_scan_fn

    for name in shapes:
        batch, dim, L, N, dtype = SHAPES[name]
        try:
            x = make_scan_inputs(batch, dim, L, N, dtype=dtype, device="cuda", seed=3)
            fwd_bytes = _nbytes(x["u"], x["delta"], x["z"], x["B"], x["C"]) + _nbytes(x["u"])
            bwd_bytes = (
                fwd_bytes
                + _nbytes(x["u"], x["delta"], x["z"], x["B"], x["C"], x["u"])
                + _nbytes(x["u"], x["delta"], x["z"], x["B"], x["C"])
            )

            def fwd(x=x):
                with torch.no_grad():
                    selective_scan_fn(**x, delta_softplus=True, backend="cuda")

            xg = {k: (v.detach().requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
                  for k, v in x.items()}  # fmt: skip
            gen = torch.Generator(device="cpu").manual_seed(4)  # same dout for every variant
            dout = torch.randn(x["u"].shape, generator=gen).to(device="cuda", dtype=x["u"].dtype)
            leaves = [v for v in xg.values() if isinstance(v, torch.Tensor) and v.requires_grad]

            def fwdbwd(xg=xg, leaves=leaves, dout=dout):
                out = selective_scan_fn(**xg, delta_softplus=True, backend="cuda")
                torch.autograd.grad(out, leaves, dout)

            for mode, fn, nbytes, base in (
                ("fwd", fwd, fwd_bytes, BASELINE[name][0]),
                ("fwd+bwd", fwdbwd, bwd_bytes, BASELINE[name][1]),
            ):
                ms = cuda_event_ms(fn)
                gbps = nbytes / (ms * 1e-3) / 1e9
                speedup = base / ms
                ok = speedup >= TARGET[name]
                table.append(f"{impl:8s} {name:5s} {mode:8s} {ms:8.3f} ms  {speedup:5.2f}x  (target {TARGET[name]}x, "
                             f"<= {base / TARGET[name]:.3f} ms) {'ok' if ok else 'BELOW'}")  # fmt: skip
                print(f"{name:5s} {mode:8s} {ms:8.3f} ms  {gbps:7.1f} GB/s ({100 * gbps / H200_COPY_GBPS:5.1f}% of copy bw)  "
                      f"mamba_ssm {base:.3f} ms -> {speedup:5.2f}x (target {TARGET[name]}x) {'ok' if ok else 'BELOW TARGET'}",
                      flush=True)  # fmt: skip
            out = selective_scan_fn(**xg, delta_softplus=True, backend="cuda")
            names = [k for k, v in xg.items() if isinstance(v, torch.Tensor) and v.requires_grad]
            grads = torch.autograd.grad(out, leaves, dout)
            RESULTS[(impl, name)] = {"out": out.detach(), **{f"d{k}": g for k, g in zip(names, grads)}}
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"      peak memory so far {peak:.2f} GiB", flush=True)
        except Exception:
            print(f"FAIL timing {name}: exception", flush=True)
            traceback.print_exc()
            failures.append(f"timing-{impl}-{name}")


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device", flush=True)
        return 1
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}", flush=True)
    if not build():
        return 1
    correctness()
    timings()
    section("summary")
    print("all passed" if not failures else f"FAILURES: {failures}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
