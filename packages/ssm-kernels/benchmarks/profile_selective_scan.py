"""Kernel-level profile of the CUDA selective scan at the benchmark shapes (torch.profiler).

Separates the scan kernels' GPU time from the host glue (casts, allocations, reductions) around them:
    python packages/ssm-kernels/benchmarks/profile_selective_scan.py [--shapes tusz,raw,big]
With ``SSM_KERNELS_SCAN_LONG=1`` the raw and big shapes run the long-sequence kernels.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from ssm_kernels.selective_scan.interface import selective_scan_fn
from ssm_kernels.testing.selective_scan import make_scan_inputs

SHAPES = {
    "big": (dict(batch=8, dim=2048, seqlen=2048, dstate=16), torch.bfloat16),
    "tusz": (dict(batch=4864, dim=64, seqlen=10, dstate=16), torch.float32),
    "raw": (dict(batch=304, dim=64, seqlen=2000, dstate=16), torch.float32),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="tusz,raw,big")
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    for name in args.shapes.split(","):
        shape, dtype = SHAPES[name]
        for grad in (False, True):
            x = make_scan_inputs(**shape, dtype=dtype, device="cuda", requires_grad=grad, seed=0)

            def step(x=x, grad=grad):
                out = selective_scan_fn(**x, delta_softplus=True, backend="cuda")
                if grad:
                    out.backward(torch.ones_like(out))

            for _ in range(3):
                step()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(args.iters):
                    step()
                torch.cuda.synchronize()
            print(f"== {name} {'fwd+bwd' if grad else 'fwd'} x{args.iters}")
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))


if __name__ == "__main__":
    main()
