"""H200 A/B (run31b): the graph scan's per-step dmix_A from ``_graph_scan_dmix_kernel`` against cuBLAS ``baddbmm_``
(``SSM_KERNELS_GRAPH_SCAN_DMIX=kernel|bmm``) inside the TGMamba block: CUDA-graphed fwd+bwd in fp32 and bf16
autocast, the two modes timed three times interleaved in one process, and each mode's kernel time from the profiler.

PYTHONPATH=packages/ssm-kernels/src:packages/tgmamba-models/src python packages/tgmamba-models/benchmarks/gpu_dmix_ab.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_tgmamba import TUSZ_BLOCK, electrode_graph

from tgmamba_models import CUDAGraphedForward, TGMamba

MODES = ("bmm", "kernel")


def median_ms(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def graphed_step(block, x, ei, ew, g, autocast: bool):
    """A fwd+bwd replayed from a CUDA graph captured under the current SSM_KERNELS_GRAPH_SCAN_DMIX."""
    graphed = CUDAGraphedForward(block, max_graphs=1)

    def fn():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            y = graphed(x, ei, ew)
        y.backward(g)

    fn()
    return fn


def kernel_times(block, x, ei, ew, g) -> tuple[float, list]:
    """GPU time of one eager fwd+bwd and the dmix products' kernels (and cuBLAS's 32 x 32-tile GEMMs)."""
    block.validate_inputs = False
    for _ in range(2):
        block(x, ei, ew).backward(g)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        block(x, ei, ew).backward(g)
        torch.cuda.synchronize()
    block.validate_inputs = True
    events = prof.key_averages()
    total = sum(e.self_device_time_total for e in events) / 1e3
    picked = [(e.key[:60], round(e.self_device_time_total / 1e3, 3), e.count) for e in events
              if "dmix" in e.key or ("gemm" in e.key and "32x32" in e.key)]  # fmt: skip
    return total, picked


def main() -> None:
    for shape in ("tusz", "raw"):
        batch, L = (256, 10) if shape == "tusz" else (16, 2000)
        torch.manual_seed(0)
        block = TGMamba(d_model=32, d_state=16, num_vertices=19, **TUSZ_BLOCK).cuda()
        x = torch.randn(batch * 19, L, 32, device="cuda", requires_grad=True)
        ei, ew = electrode_graph(batch, 19, device="cuda")
        g = torch.randn_like(x)
        reps = 30 if shape == "tusz" else 8
        for autocast in (False, True):
            fns = {}
            for mode in MODES:
                os.environ["SSM_KERNELS_GRAPH_SCAN_DMIX"] = mode
                fns[mode] = graphed_step(block, x, ei, ew, g, autocast)
            res = {m: [] for m in MODES}
            for _ in range(3):  # interleaved rounds
                for m in MODES:
                    res[m].append(median_ms(fns[m], reps))
            res = {m: sorted(v) for m, v in res.items()}
            tag = "bf16 autocast" if autocast else "fp32"
            print(f"{shape} {tag} graphed fwd+bwd ms: " + ", ".join(f"{m} {v}" for m, v in res.items()), flush=True)
        for mode in MODES:
            os.environ["SSM_KERNELS_GRAPH_SCAN_DMIX"] = mode
            total, picked = kernel_times(block, x, ei, ew, g)
            print(f"{shape} fp32 eager {mode}: GPU time {total:.3f} ms; dmix / 32x32 GEMMs {picked}", flush=True)


if __name__ == "__main__":
    main()
