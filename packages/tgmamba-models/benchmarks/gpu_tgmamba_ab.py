"""A/B timings of the TGMamba block on a GPU, beyond the pytest-benchmark suite (one GPU call each).

    PYTHONPATH=packages/ssm-kernels/src:packages/tgmamba-models/src \
        python packages/tgmamba-models/benchmarks/gpu_tgmamba_ab.py identity|host|compile|precision [--shapes tusz,raw]

- ``identity``: fwd+bwd with ``block.implicit_identity`` False / True, interleaved rounds (CUDA events, median of
  three per round), then the GPU kernel time of each (torch.profiler) with its largest kernels.
- ``host``: where the TUSZ block's time goes: fwd and fwd+bwd with the value checks on / off, the host time of
  launching fwd+bwd without waiting, the syncs and launches per call, and a CPU-side profile.
- ``compile``: ``torch.compile(block)`` in the default and ``reduce-overhead`` modes against eager, interleaved,
  with the largest relative difference of the output and every gradient. Run with ``TORCH_LOGS=graph_breaks``
  to see where Dynamo breaks the graph.
- ``precision``: fwd+bwd and fwd under torch's fp32 matmul precision ``highest`` (the default: 3xtf32 graph-scan
  dots, fp32 cuBLAS) and ``high`` (tf32 for both), with the GPU kernel time grouped by kind, the largest kernels
  and the peak memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_tgmamba import TUSZ_BLOCK, electrode_graph

from ssm_kernels.testing.bench import cuda_event_ms, host_us, kernel_us
from tgmamba_models import TGMamba

SHAPES = {"tusz": (256, 10), "raw": (16, 2000)}  # batch, L; V 19, d_model 32, d_state 16
V = 19


def setup(shape: str):
    batch, L = SHAPES[shape]
    torch.manual_seed(0)
    block = TGMamba(d_model=32, d_state=16, num_vertices=V, **TUSZ_BLOCK).cuda()
    x = torch.randn(batch * V, L, 32, device="cuda", requires_grad=True)
    ei, ew = electrode_graph(batch, V, device="cuda")
    gout = torch.randn_like(x)

    def fwdbwd(module=block):
        block.zero_grad(set_to_none=True)
        x.grad = None
        y = module(x, ei, ew)
        y.backward(gout)
        return y

    def fwd():
        with torch.no_grad():
            block(x, ei, ew)

    return block, x, fwdbwd, fwd


def median_ms(fn, shape: str) -> float:
    rounds = 30 if shape == "tusz" else 4
    return sorted(cuda_event_ms(fn, rounds=rounds, warmup=2) for _ in range(3))[1]


def identity_ab(shapes: list[str]) -> None:
    for shape in shapes:
        block, _, fwdbwd, _ = setup(shape)
        walls: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(4):
            for flag in (False, True):
                block.implicit_identity = flag
                fwdbwd()
                torch.cuda.synchronize()
                walls[flag].append(round(median_ms(fwdbwd, shape), 2))
        for flag in (False, True):
            block.implicit_identity = flag
            per = kernel_us(fwdbwd, reps=3 if shape == "tusz" else 1, width=40)
            top = dict(sorted(per.items(), key=lambda kv: -kv[1])[:12])
            print(json.dumps({"shape": shape, "implicit_identity": flag, "wall_ms": walls[flag],
                              "gpu_ms": round(sum(per.values()) / 1e3, 3),
                              "top_kernels_us": {k: round(v) for k, v in top.items()}}), flush=True)  # fmt: skip


def host(shape: str) -> None:
    block, _, fwdbwd, fwd = setup(shape)
    for _ in range(3):
        fwdbwd()
    torch.cuda.synchronize()
    res: dict[str, list[float]] = {}
    for _ in range(3):
        for check in (True, False):
            block.validate_inputs = check
            res.setdefault(f"fwdbwd validate={check}", []).append(round(median_ms(fwdbwd, shape), 2))
            res.setdefault(f"fwd validate={check}", []).append(round(median_ms(fwd, shape), 2))
    print(json.dumps(res), flush=True)
    block.validate_inputs = False
    host_ms = host_us(fwdbwd, reps=20) / 1e3
    print(
        json.dumps({"host_ms_per_fwdbwd": round(host_ms, 2), "wall_ms_per_fwdbwd": round(median_ms(fwdbwd, shape), 2)})
    )
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    launch_names = ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC")
    sync_words = ("Synchronize", "DtoH", "_local_scalar", "cudaMemcpy", "nonzero")
    for check in (True, False):
        block.validate_inputs = check
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(5):
                fwdbwd()
            torch.cuda.synchronize()
        ka = prof.key_averages()
        syncs = {e.key: e.count // 5 for e in ka if any(w in e.key for w in sync_words)}
        launches = sum(e.count for e in ka if e.key in launch_names) // 5
        print(json.dumps({"validate": check, "sync_like_per_call": syncs, "launches_per_call": launches}), flush=True)
        print(ka.table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=55), flush=True)


def grads_of(block, x, fn) -> dict[str, torch.Tensor]:
    """Output and gradients of one call of ``fn`` (which runs fwd+bwd and returns the output)."""
    y = fn().detach()
    params = {n: p.grad.detach().clone() for n, p in block.named_parameters() if p.grad is not None}
    return {"out": y, "x": x.grad.detach().clone(), **params}


def compiled(shape: str, modes: list[str]) -> None:
    block, x, fwdbwd, _ = setup(shape)
    block.validate_inputs = False  # value checks sync and raise on data: a graph break each
    ref = grads_of(block, x, fwdbwd)
    for mode in modes:
        torch._dynamo.reset()
        t0 = time.time()
        try:
            module = torch.compile(block, mode=None if mode == "default" else mode)

            def comp(module=module):
                return fwdbwd(module)

            got = grads_of(block, x, comp)
            compile_s = time.time() - t0
            err = max(((got[k] - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-30)).item() for k in ref)
            walls: dict[str, list[float]] = {}
            for _ in range(3):
                walls.setdefault("eager", []).append(round(median_ms(fwdbwd, shape), 2))
                walls.setdefault(mode, []).append(round(median_ms(comp, shape), 2))
            rec = {"mode": mode, "compile_s": round(compile_s, 1), "max_rel_diff_vs_eager": float(f"{err:.3g}")}
            print(json.dumps({**rec, "ms": walls}), flush=True)
        except Exception as exc:  # report and go on to the next mode
            print(json.dumps({"mode": mode, "error": repr(exc)[:1500], "s": round(time.time() - t0, 1)}), flush=True)


KINDS = ("_graph_scan_adj", "_graph_scan_fwd", "readout_adj_q", "readout_q", "causal_conv", "gated", "gemm",
         "gemv", "splitk", "reduce", "elementwise", "copy", "cat", "index", "softmax")  # fmt: skip


def kind_of(kernel: str) -> str:
    name = kernel.lower()
    return next((k for k in KINDS if k in name), "other")


def precision(shapes: list[str]) -> None:
    for shape in shapes:
        block, _, fwdbwd, fwd = setup(shape)
        block.validate_inputs = False
        for prec in ("highest", "high"):
            torch.set_float32_matmul_precision(prec)
            try:
                fwdbwd()
                torch.cuda.synchronize()
                walls = [round(median_ms(fwdbwd, shape), 2) for _ in range(2)]
                fwd_ms = round(median_ms(fwd, shape), 2)
                per = kernel_us(fwdbwd, reps=1 if shape == "raw" else 5, width=60)
                kinds: dict[str, float] = {}
                for k, v in per.items():
                    kinds[kind_of(k)] = kinds.get(kind_of(k), 0.0) + v
                torch.cuda.reset_peak_memory_stats()
                fwdbwd()
                torch.cuda.synchronize()
                top = dict(sorted(per.items(), key=lambda kv: -kv[1])[:25])
                print(json.dumps({"shape": shape, "precision": prec, "fwdbwd_ms": walls, "fwd_ms": fwd_ms,
                                  "gpu_ms": round(sum(per.values()) / 1e3, 2),
                                  "peak_MiB": round(torch.cuda.max_memory_allocated() / 2**20),
                                  "kinds_us": {k: round(v) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
                                  "top_us": {k: round(v) for k, v in top.items()}}), flush=True)  # fmt: skip
            finally:
                torch.set_float32_matmul_precision("highest")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("identity", "host", "compile", "precision"))
    ap.add_argument("--shapes", default="tusz,raw")
    ap.add_argument("--modes", default="default,reduce-overhead", help="torch.compile modes (compile)")
    args = ap.parse_args()
    shapes = args.shapes.split(",")
    if args.what == "identity":
        identity_ab(shapes)
    elif args.what == "host":
        host(shapes[0])
    elif args.what == "precision":
        precision(shapes)
    else:
        compiled(shapes[0], args.modes.split(","))


if __name__ == "__main__":
    main()
