"""A/B on a GPU of graph-scan settings (environment overrides) at TGMamba's call: the scan alone and the block.

    PYTHONPATH=packages/ssm-kernels/src:packages/tgmamba-models/src \
        python packages/tgmamba-models/benchmarks/gpu_graph_scan_env_ab.py [--shapes raw,tusz]
        [--configs default,readout-parallel,readout-fwd,readout-bwd,prefetch-off]

For each shape: the scan alone (fwd and fwd+bwd, CUDA events, interleaved rounds over the configurations), the
GPU kernel time of each (torch.profiler), then the TGMamba block's fwd and fwd+bwd the same way, and its GPU
kernel time and peak memory per configuration. ``prefetch-off`` turns off the sequential kernels' prefetch of
the next step's loads (run17c/e compared it with the default); ``readout-*`` puts the readout and / or its
adjoint in their own parallel kernels (``SSM_KERNELS_GRAPH_SCAN_READOUT_FWD/_BWD=parallel``; the forward's is the
default since run18a) or both inline in the sequential kernels (``readout-inline``, the default before); ``chunk-*`` sets
the split backward's steps per recomputed chunk (more memory, fewer chunks; run17a compared 40 / 80 / 160);
``readout-q-*`` where the split backward forms the readout gradients' Q (``SSM_KERNELS_GRAPH_SCAN_READOUT_Q``).
``a+b`` combines two configurations.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[2] / "ssm-kernels" / "benchmarks"))
from gpu_graph_scan_sweep import block_inputs
from gpu_tgmamba_ab import median_ms, setup

from ssm_kernels.graph_scan.triton import graph_selective_scan_triton
from ssm_kernels.testing.bench import cuda_event_ms, kernel_us
from ssm_kernels.testing.graph_scan import timing_closures

CONFIGS = {
    "default": {},
    "prefetch-off": {"SSM_KERNELS_GRAPH_SCAN_PREFETCH_FWD": "0", "SSM_KERNELS_GRAPH_SCAN_PREFETCH_BWD": "0"},
    "readout-parallel": {"SSM_KERNELS_GRAPH_SCAN_READOUT_FWD": "parallel", "SSM_KERNELS_GRAPH_SCAN_READOUT_BWD": "parallel"},
    "readout-fwd": {"SSM_KERNELS_GRAPH_SCAN_READOUT_FWD": "parallel"},
    "readout-inline": {"SSM_KERNELS_GRAPH_SCAN_READOUT_FWD": "inline", "SSM_KERNELS_GRAPH_SCAN_READOUT_BWD": "inline"},
    "readout-bwd": {"SSM_KERNELS_GRAPH_SCAN_READOUT_BWD": "parallel"},  # (these two: the other side's default)
    "readout-q": {"SSM_KERNELS_GRAPH_SCAN_READOUT_FWD": "q", "SSM_KERNELS_GRAPH_SCAN_READOUT_BWD": "q"},  # default since run20b
    "readout-18a": {"SSM_KERNELS_GRAPH_SCAN_READOUT_FWD": "parallel", "SSM_KERNELS_GRAPH_SCAN_READOUT_BWD": "inline"},
    "cuda-fwd": {"SSM_KERNELS_GRAPH_SCAN_CUDA_FWD": "1"},  # the CUDA-core recurrences (opt-in)
    "cuda-bwd": {"SSM_KERNELS_GRAPH_SCAN_CUDA_BWD": "1"},
    "cuda": {"SSM_KERNELS_GRAPH_SCAN_CUDA_FWD": "1", "SSM_KERNELS_GRAPH_SCAN_CUDA_BWD": "1"},
    "chunk-80": {"SSM_KERNELS_GRAPH_SCAN_CHUNK": "80"},  # split backward: steps per recomputed chunk (raw: 40)
    "chunk-160": {"SSM_KERNELS_GRAPH_SCAN_CHUNK": "160"},
    "opgrad-stored": {"SSM_KERNELS_GRAPH_SCAN_OPGRAD": "stored"},  # their products on operands the kernels kept
    "opgrad-cublas": {"SSM_KERNELS_GRAPH_SCAN_OPGRAD": "cublas"},  # the default before run23: operands re-formed
    "readout-q-kernel": {"SSM_KERNELS_GRAPH_SCAN_READOUT_Q": "kernel"},  # the readout's Q in its adjoint kernel (default)
    "readout-q-bmm": {"SSM_KERNELS_GRAPH_SCAN_READOUT_Q": "bmm"},  # its copy and batched product (before run24)
    "readout-q-fused": {"SSM_KERNELS_GRAPH_SCAN_READOUT_Q": "fused"},  # Q contracted there into R and dmix_C
    "dw-bmm": {"SSM_KERNELS_GRAPH_SCAN_DW": "bmm"},  # stored operands' dW_A by batched cuBLAS (before run25)
    "dw-kernel": {"SSM_KERNELS_GRAPH_SCAN_DW": "kernel"},  # ... by _graph_scan_dw_kernel (default)
    "adj-full": {"SSM_KERNELS_GRAPH_SCAN_ADJ": "full"},  # one adjoint kernel: recurrence and element-wise grads
    "adj-lean": {"SSM_KERNELS_GRAPH_SCAN_ADJ": "lean"},  # the recurrence alone, then the element-wise grads kernel
    "bwd-bd4": {"SSM_KERNELS_GRAPH_SCAN_BD_BWD": "4"},  # launch overrides of the backward's kernels
    "bwd-w4": {"SSM_KERNELS_GRAPH_SCAN_WARPS_BWD": "4"},
    "lean-tt4": {"SSM_KERNELS_GRAPH_SCAN_LEAN_TT": "4"},  # the lean adjoint's element-wise kernel: 4 steps per tile
    "lean-w4": {"SSM_KERNELS_GRAPH_SCAN_LEAN_WARPS": "4"},  # ... 4 warps (default 8)
    "lean-g1": {"SSM_KERNELS_GRAPH_SCAN_LEAN_GROUPS": "1"},  # ... one channel group (dB straight, no partials)
    "lean-bd16": {"SSM_KERNELS_GRAPH_SCAN_LEAN_BD": "16"},  # ... 16 channels per tile (default: 32 at N 16)
    "overlap": {"SSM_KERNELS_GRAPH_SCAN_OVERLAP": "1"},  # readout / recompute on a side stream, two buffer slots
    "no-overlap": {"SSM_KERNELS_GRAPH_SCAN_OVERLAP": "0"},
    "fwd-bd8": {"SSM_KERNELS_GRAPH_SCAN_BD_FWD": "8"},  # the recurrence: 8 channels per program (one per SM at raw)
    "chunk-67": {"SSM_KERNELS_GRAPH_SCAN_CHUNK": "67"},  # the one-stream default at raw
    "chunk-44": {"SSM_KERNELS_GRAPH_SCAN_CHUNK": "44"},  # the overlap's default at raw
}  # fmt: skip
CFG: list[str] = []  # the configurations of this run


def set_cfg(name: str) -> None:
    """Apply configuration ``name``; ``a+b`` applies both (the later one wins where they set the same variable)."""
    for env in {k for cfg in CONFIGS.values() for k in cfg}:
        os.environ.pop(env, None)
    for part in name.split("+"):
        os.environ.update(CONFIGS[part])


def top(per: dict[str, float], n: int = 6) -> dict[str, int]:
    return {k: round(v) for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:n]}


def scan_ab(shape: str) -> None:
    inp = block_inputs(shape, torch.float32, "implicit")
    names = [k for k, v in inp.items() if isinstance(v, torch.Tensor) and v.requires_grad]
    fwd, fwdbwd = timing_closures(graph_selective_scan_triton, inp, names)

    rounds = 3 if shape == "raw" else 20
    for name in CFG:  # compile every variant first
        set_cfg(name)
        fwdbwd()
        fwd()
    torch.cuda.synchronize()
    res: dict[str, list] = collections.defaultdict(list)
    for _ in range(3):
        for name in CFG:
            set_cfg(name)
            res[f"scan fwd {name}"].append(round(cuda_event_ms(fwd, rounds=rounds), 2))
            res[f"scan fwdbwd {name}"].append(round(cuda_event_ms(fwdbwd, rounds=rounds), 2))
    print(json.dumps({"shape": shape, **res}), flush=True)
    for name in CFG:
        set_cfg(name)
        per = kernel_us(fwdbwd, reps=1 if shape == "raw" else 5)
        gpu_ms = round(sum(per.values()) / 1e3, 2)
        print(json.dumps({"shape": shape, "cfg": name, "scan fwdbwd gpu_ms": gpu_ms, "top": top(per)}), flush=True)


def block_ab(shape: str) -> None:
    block, _, fwdbwd, fwd = setup(shape)
    block.validate_inputs = False
    for name in CFG:
        set_cfg(name)
        fwdbwd()
    res: dict[str, list] = collections.defaultdict(list)
    for _ in range(3):
        for name in CFG:
            set_cfg(name)
            res[f"block fwdbwd {name}"].append(round(median_ms(fwdbwd, shape), 2))
            res[f"block fwd {name}"].append(round(median_ms(fwd, shape), 2))
    print(json.dumps({"shape": shape, **res}), flush=True)
    for name in CFG:
        set_cfg(name)
        per = kernel_us(fwdbwd, reps=1 if shape == "raw" else 5)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fwdbwd()
        torch.cuda.synchronize()
        peak = round((torch.cuda.max_memory_allocated() - base) / 2**20)
        gpu_ms = round(sum(per.values()) / 1e3, 2)
        print(json.dumps({"shape": shape, "cfg": name, "block gpu_ms": gpu_ms, "peak_MiB": peak, "top": top(per, 10)}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="raw,tusz")
    ap.add_argument("--configs", default="default,readout-parallel,readout-fwd,readout-bwd")
    args = ap.parse_args()
    CFG[:] = args.configs.split(",")
    unknown = [c for c in CFG if any(part not in CONFIGS for part in c.split("+"))]
    if unknown:
        ap.error(f"unknown configurations {unknown}; known: {list(CONFIGS)}")
    for shape in args.shapes.split(","):
        scan_ab(shape)
        block_ab(shape)
        set_cfg("default")
        torch.cuda.empty_cache()
