"""H200 sweep (run31b): warps per program of the edge-weights kernels at TGMamba's shapes, each kernel alone (CUDA-event
mean of 30 launches after 3 warm-up ones), and how many steps of the GPU tests' inputs have an attention entry near the
threshold.

PYTHONPATH=packages/ssm-kernels/src python packages/ssm-kernels/benchmarks/gpu_edge_weights_warps.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

import ssm_kernels.edge_weights.triton as ewt

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "edge_weights"))
import test_edge_weights as te


def mean_us(fn, reps: int = 30) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps * 1e3


def main() -> None:
    shapes = {"tusz": (256, 10, 19, 32), "raw": (16, 2000, 19, 32)}
    for name, (b, T, V, E) in shapes.items():
        qk = 0.1 * torch.randn(b, T, V, 2 * E, device="cuda")
        q, k = qk.chunk(2, -1)
        g = torch.randn(b, T, V, E, device="cuda")
        adj0 = (torch.rand(b, 1, V, V, device="cuda") < 0.2).float()
        skip = torch.tensor(0.25, device="cuda")
        dout = torch.randn(b, T, V, V, device="cuda")
        launch = ewt._Launch(q, k, g, adj0, skip, 1 / (math.sqrt(E) * 0.01), 0.1, E**-0.5)
        for warps in (1, 2, 4, 8):
            ewt._WARPS_FWD = ewt._WARPS_BWD = warps
            fwd = mean_us(lambda launch=launch: launch.forward(torch.float32))
            bwd = mean_us(lambda launch=launch, dout=dout: launch.backward(dout))
            print(f"{name} warps {warps}: fwd kernel {fwd:.1f} us, bwd kernel {bwd:.1f} us", flush=True)
        kw = dict(attn_scale=1 / (math.sqrt(E) * 0.01), threshold=0.1, dyn_scale=1 / math.sqrt(E))
        args = te._inputs(b, T, V, E, E, (b, 1), device="cuda", strided=True, seed=V, q_scale=0.1)
        near = te._near_threshold_steps(args[0], args[1], kw)
        print(f"{name}: {int(near.sum())} of {b * T} steps near the threshold", flush=True)


if __name__ == "__main__":
    main()
