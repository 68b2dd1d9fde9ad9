"""Configuration sweep of the Triton graph scan at TGMamba's block configuration (one GPU call).

K_A = 2 time-varying operators (graphconv: [I, A_t]) and the same operators on the readout side, z, D,
delta_bias and softplus, as the TGMamba block calls it. Each line: one configuration given as
environment overrides (see ssm_kernels.graph_scan.triton), fwd and fwd+bwd ms (CUDA events, median).
    python packages/ssm-kernels/benchmarks/gpu_graph_scan_sweep.py [--shapes tusz,raw] [--budget-s 400]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from ssm_kernels.graph_scan.triton import graph_selective_scan_triton
from ssm_kernels.testing.bench import cuda_event_ms
from ssm_kernels.testing.graph_scan import graph_scan_grad_names, make_graph_scan_inputs, timing_closures

SHAPES = {"tusz": dict(batch=256, V=19, D=64, N=16, L=10), "raw": dict(batch=16, V=19, D=64, N=16, L=2000)}
BLOCK = dict(K=2, T="L", mix_C=True, K_C=2, T_C="L", with_D=True, with_z=True, with_bias=True, softplus=True)
CONFIGS = {  # name: env overrides
    "default": {},
    "no-unroll": {"SSM_KERNELS_GRAPH_SCAN_UNROLL": "0"},
    "all-states": {"SSM_KERNELS_GRAPH_SCAN_ALL_STATES": "1"},
    "bwd-bd8": {"SSM_KERNELS_GRAPH_SCAN_BD_BWD": "8"},
    "bwd-bd2": {"SSM_KERNELS_GRAPH_SCAN_BD_BWD": "2"},
    "fwd-bd16": {"SSM_KERNELS_GRAPH_SCAN_BD_FWD": "16"},
    "fwd-bd4": {"SSM_KERNELS_GRAPH_SCAN_BD_FWD": "4"},
    "warps4": {"SSM_KERNELS_GRAPH_SCAN_WARPS_FWD": "4", "SSM_KERNELS_GRAPH_SCAN_WARPS_BWD": "4"},
    "bd2-warps4": {"SSM_KERNELS_GRAPH_SCAN_BD_BWD": "2", "SSM_KERNELS_GRAPH_SCAN_BD_FWD": "4",
                   "SSM_KERNELS_GRAPH_SCAN_WARPS_FWD": "4", "SSM_KERNELS_GRAPH_SCAN_WARPS_BWD": "4"},
    "stages1": {"SSM_KERNELS_GRAPH_SCAN_STAGES_FWD": "1", "SSM_KERNELS_GRAPH_SCAN_STAGES_BWD": "1"},
    "stages2": {"SSM_KERNELS_GRAPH_SCAN_STAGES_FWD": "2", "SSM_KERNELS_GRAPH_SCAN_STAGES_BWD": "2"},
    "maxnreg128": {"SSM_KERNELS_GRAPH_SCAN_MAXNREG_FWD": "128", "SSM_KERNELS_GRAPH_SCAN_MAXNREG_BWD": "128"},
    "fwd-maxnreg128": {"SSM_KERNELS_GRAPH_SCAN_MAXNREG_FWD": "128"},
    "bwd-maxnreg168": {"SSM_KERNELS_GRAPH_SCAN_MAXNREG_BWD": "168"},
    "warps4-maxnreg128": {"SSM_KERNELS_GRAPH_SCAN_WARPS_FWD": "4", "SSM_KERNELS_GRAPH_SCAN_WARPS_BWD": "4",
                          "SSM_KERNELS_GRAPH_SCAN_MAXNREG_FWD": "128", "SSM_KERNELS_GRAPH_SCAN_MAXNREG_BWD": "128"},
}  # fmt: skip


def run(shape, dtype, prec, names_cfg, iters, deadline):
    torch.set_float32_matmul_precision(prec)
    inputs = make_graph_scan_inputs(**SHAPES[shape], **BLOCK, dtype=dtype, device="cuda", seed=3, requires_grad=True)
    fwd, fwdbwd = timing_closures(graph_selective_scan_triton, inputs, graph_scan_grad_names(inputs))

    print(f"== {shape} {str(dtype)[6:]} matmul precision {prec}", flush=True)
    for name in names_cfg:
        if time.time() > deadline:
            print("   (time budget reached)")
            return
        env = CONFIGS[name]
        os.environ.update(env)
        try:
            fwd(), fwdbwd()
            torch.cuda.synchronize()
            t_f, t_fb = cuda_event_ms(fwd, rounds=iters, warmup=0), cuda_event_ms(fwdbwd, rounds=iters, warmup=0)
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fwdbwd()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            print(f"   {name:14s} fwd {t_f:8.3f} ms  fwd+bwd {t_fb:8.3f} ms  peak {peak:7.0f} MiB", flush=True)
        except Exception as exc:  # one bad config must not end the sweep
            print(f"   {name:14s} {type(exc).__name__}: {str(exc)[:200]}", flush=True)
        finally:
            for k in env:
                os.environ.pop(k, None)
    torch.set_float32_matmul_precision("highest")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="tusz,raw")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--budget-s", type=float, default=400)
    args = ap.parse_args()
    deadline = time.time() + args.budget_s
    names = args.configs.split(",")
    for shape in args.shapes.split(","):
        iters = 20 if shape == "tusz" else 3
        cfgs = names if shape == "tusz" else [n for n in names if n in ("default", "no-unroll", "bwd-bd8", "warps4")]
        run(shape, torch.float32, "high", cfgs, iters, deadline)
        if shape == "tusz":
            run(shape, torch.bfloat16, "highest", ["default", "no-unroll", "bwd-bd8", "warps4"], iters, deadline)
            run(shape, torch.float32, "highest", ["default"], iters, deadline)


if __name__ == "__main__":
    main()
