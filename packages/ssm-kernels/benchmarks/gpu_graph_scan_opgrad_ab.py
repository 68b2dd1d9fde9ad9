"""A/B on a GPU of the split backward's operator-gradient forms at TGMamba's raw call (fp32 inputs):
``SSM_KERNELS_GRAPH_SCAN_OPGRAD=cublas`` (default) against ``triton`` (``_graph_scan_opgrad_kernel``).

    PYTHONPATH=packages/ssm-kernels/src python packages/ssm-kernels/benchmarks/gpu_graph_scan_opgrad_ab.py
    SSM_KERNELS_GRAPH_SCAN_PRECISION=tf32 ... (both forms in tf32)

Scan fwd+bwd per call (CUDA events, four interleaved rounds, the first compiling), the largest relative difference
of every gradient between the two forms, and each form's GPU kernel times (torch.profiler).
``h200-logs/run22-graph-scan-opgrad-kernel-ab.log`` came from the scratch script this file was written from (the same
steps), on the H200.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_graph_scan_sweep import block_inputs

from ssm_kernels.graph_scan.triton import graph_selective_scan_triton
from ssm_kernels.testing.bench import kernel_us


def _step(inputs: dict, leaves: list[str], dout: torch.Tensor):
    out = graph_selective_scan_triton(**inputs)
    return torch.autograd.grad(out, [inputs[k] for k in leaves], dout)


def main() -> None:
    for shape in ("raw",):
        inputs = block_inputs(shape, torch.float32, "implicit")
        leaves = [k for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.requires_grad and k != "mix_C"]
        dout = torch.randn(*inputs["u"].shape, device="cuda")
        step = functools.partial(_step, inputs, leaves, dout)
        grads, ms = {}, {"cublas": [], "triton": []}
        for _ in range(4):
            for mode in ("cublas", "triton"):
                os.environ["SSM_KERNELS_GRAPH_SCAN_OPGRAD"] = mode
                torch.cuda.synchronize()
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                g = step()
                b.record()
                torch.cuda.synchronize()
                ms[mode].append(round(a.elapsed_time(b), 2))
                grads[mode] = g
        errs = {
            k: float(((x - y).abs().max() / y.abs().max().clamp_min(1e-30)).item())
            for k, x, y in zip(leaves, grads["triton"], grads["cublas"])
        }
        print(shape, "fwd+bwd ms (first round compiles)", ms, flush=True)
        print(shape, "max rel diff triton vs cublas", {k: f"{v:.1e}" for k, v in errs.items()}, flush=True)
        for mode in ("cublas", "triton"):
            os.environ["SSM_KERNELS_GRAPH_SCAN_OPGRAD"] = mode
            top = dict(sorted(kernel_us(step, reps=2).items(), key=lambda kv: -kv[1])[:8])
            print(shape, mode, "kernels us", top, flush=True)


if __name__ == "__main__":
    main()
