"""Configuration sweep of the Triton graph scan at TGMamba's block configuration (one GPU call).

K_A = 2 time-varying operators (graphconv: [I, A_t]) and the same operators on the readout side, z, D,
delta_bias and softplus, as the TGMamba block calls it. Each line: one configuration given as
environment overrides (see ssm_kernels.graph_scan.triton), fwd and fwd+bwd ms (CUDA events, median), the
forward and adjoint kernels' GPU time (torch.profiler) and peak memory.
    python packages/ssm-kernels/benchmarks/gpu_graph_scan_sweep.py [--shapes tusz,raw] [--budget-s 400]
        [--identity implicit|stored] [--configs default,prec-3xtf32,...] [--accuracy]

``--identity``: TGMamba's graphconv operators [I, A_t] passed with the identity implicit (mix holds A_t only, W
one operator more; the block's default) or stored. ``--accuracy``: max relative errors of the output, the last
state and every gradient against the float64 reference, per dot precision.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from ssm_kernels.graph_scan.triton import graph_selective_scan_triton
from ssm_kernels.testing.bench import cuda_event_ms, kernel_us
from ssm_kernels.testing.graph_scan import (
    check_graph_scan_against_reference,
    graph_scan_grad_names,
    make_graph_scan_inputs,
    timing_closures,
)

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
    "prec-3xtf32": {"SSM_KERNELS_GRAPH_SCAN_PRECISION": "3xtf32"},
    "prec-tf32x3": {"SSM_KERNELS_GRAPH_SCAN_PRECISION": "tf32x3"},
    "prec-tf32": {"SSM_KERNELS_GRAPH_SCAN_PRECISION": "tf32"},
    "prec-ieee": {"SSM_KERNELS_GRAPH_SCAN_PRECISION": "ieee"},
    "adj-warps4": {"SSM_KERNELS_GRAPH_SCAN_WARPS_BWD": "4"},
    "adj-warps8": {"SSM_KERNELS_GRAPH_SCAN_WARPS_BWD": "8"},
    "warps4-maxnreg128": {"SSM_KERNELS_GRAPH_SCAN_WARPS_FWD": "4", "SSM_KERNELS_GRAPH_SCAN_WARPS_BWD": "4",
                          "SSM_KERNELS_GRAPH_SCAN_MAXNREG_FWD": "128", "SSM_KERNELS_GRAPH_SCAN_MAXNREG_BWD": "128"},
}  # fmt: skip


def block_inputs(shape: str, dtype: torch.dtype, identity: str, seed: int = 3) -> dict:
    """The scan's inputs at TGMamba's call; one operator tensor on both sides (the block's readout shares it)."""
    inputs = make_graph_scan_inputs(**SHAPES[shape], **BLOCK, dtype=dtype, device="cuda", seed=seed,
                                    identity_first=True)  # fmt: skip
    if identity == "stored":
        mix = inputs["mix_A"]
        eye = torch.eye(mix.shape[-1], device=mix.device, dtype=mix.dtype).expand(*mix.shape[:2], 1, *mix.shape[3:])
        inputs["mix_A"] = torch.cat([eye, mix], 2).contiguous()
    inputs = {k: v.detach().requires_grad_(True) if _grad(v) else v for k, v in inputs.items()}
    inputs["mix_C"] = inputs["mix_A"]
    return inputs


def _grad(v) -> bool:
    return isinstance(v, torch.Tensor) and v.is_floating_point()


def run(shape, dtype, prec, names_cfg, iters, deadline, identity="implicit"):
    torch.set_float32_matmul_precision(prec)
    inputs = block_inputs(shape, dtype, identity)
    names = [n for n in graph_scan_grad_names(inputs) if n != "mix_C"]
    fwd, fwdbwd = timing_closures(graph_selective_scan_triton, inputs, names)

    print(f"== {shape} {str(dtype)[6:]} matmul precision {prec}, identity {identity}", flush=True)
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
            per = kernel_us(fwdbwd, reps=1 if shape == "raw" else 3)
            k_fwd = sum(v for k, v in per.items() if "fwd_kernel" in k) / 1e3
            k_adj = sum(v for k, v in per.items() if "adj_kernel" in k or "bwd_kernel" in k) / 1e3
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fwdbwd()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            print(f"   {name:14s} fwd {t_f:8.3f} ms  fwd+bwd {t_fb:8.3f} ms  kernels: fwd {k_fwd:7.3f} ms, "
                  f"adjoint/bwd {k_adj:7.3f} ms  peak {peak:7.0f} MiB", flush=True)  # fmt: skip
        except Exception as exc:  # one bad config must not end the sweep
            print(f"   {name:14s} {type(exc).__name__}: {str(exc)[:200]}", flush=True)
        finally:
            for k in env:
                os.environ.pop(k, None)
    torch.set_float32_matmul_precision("highest")


def accuracy(shapes: list[str], precisions: list[str]) -> None:
    """Max relative error against the float64 reference (output, last state, every gradient) per precision."""
    for shape in shapes:
        inputs = make_graph_scan_inputs(**SHAPES[shape], **BLOCK, device="cuda", seed=5, identity_first=True)
        for prec in precisions:
            os.environ["SSM_KERNELS_GRAPH_SCAN_PRECISION"] = prec
            try:
                # factor 1e9: report the errors, do not judge them (the GPU tests do)
                errs = check_graph_scan_against_reference(
                    graph_selective_scan_triton, inputs, shared_mix=True, factor=1e9
                )
                rel = {k: float(f"{v:.3g}") for k, v in errs.items()}
                print(json.dumps({"shape": shape, "prec": prec, "max_rel": rel}), flush=True)
            finally:
                os.environ.pop("SSM_KERNELS_GRAPH_SCAN_PRECISION", None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="tusz,raw")
    ap.add_argument("--configs", default=None, help="comma-separated names of CONFIGS (default: all at TUSZ)")
    ap.add_argument("--identity", choices=("implicit", "stored"), default="implicit")
    ap.add_argument("--accuracy", action="store_true", help="errors against float64 per precision, no timing")
    ap.add_argument("--budget-s", type=float, default=400)
    args = ap.parse_args()
    shapes = args.shapes.split(",")
    if args.accuracy:
        accuracy(shapes, ["tf32x3", "3xtf32", "tf32"])
        return
    deadline = time.time() + args.budget_s
    few = ["default", "no-unroll", "bwd-bd8", "warps4"]
    for shape in shapes:
        iters = 20 if shape == "tusz" else 3
        if args.configs:
            run(shape, torch.float32, "highest", args.configs.split(","), iters, deadline, args.identity)
            continue
        cfgs = list(CONFIGS) if shape == "tusz" else few
        run(shape, torch.float32, "high", cfgs, iters, deadline, args.identity)
        if shape == "tusz":
            run(shape, torch.bfloat16, "highest", few, iters, deadline, args.identity)
            run(shape, torch.float32, "highest", ["default"], iters, deadline, args.identity)


if __name__ == "__main__":
    main()
