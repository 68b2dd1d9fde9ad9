"""Graph-scan settings A/B, each in a fresh process, at TGMamba's call (one GPU call; run18b-d).

    PYTHONPATH=packages/ssm-kernels/src python packages/ssm-kernels/benchmarks/gpu_graph_scan_knobs.py raw \
        [base mmav2 tf32 ...]

``gpu_graph_scan_sweep.py`` changes the environment inside one process; some settings are read when Triton compiles
(``DISABLE_MMA_V3``: mma.sync instead of Hopper's warpgroup MMA), which Triton's in-memory kernel cache does not
key on, so here every configuration runs in its own process (its compile included once, before timing). Each line:
fwd+bwd ms (CUDA events, two medians), the GPU time of one fwd+bwd (torch.profiler) and its six largest kernels.
``constmix`` passes one operator set for all steps (T = 1) instead of per-step operators: what loading a step's
operators costs the sequential kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

KNOBS = {  # name (as in the run18b-d logs): environment overrides (run18b-d ran them with the then opt-in parallel forward readout, now default)
    "base": {},
    "mmav2": {"DISABLE_MMA_V3": "1"},
    "tf32": {"SSM_KERNELS_GRAPH_SCAN_PRECISION": "tf32"},
    "ieee": {"SSM_KERNELS_GRAPH_SCAN_PRECISION": "ieee"},
    "ieee8": {"SSM_KERNELS_GRAPH_SCAN_PRECISION": "ieee", "SSM_KERNELS_GRAPH_SCAN_WARPS_FWD": "8",
                         "SSM_KERNELS_GRAPH_SCAN_WARPS_BWD": "8"},
    "mmav2tf32": {"DISABLE_MMA_V3": "1", "SSM_KERNELS_GRAPH_SCAN_PRECISION": "tf32"},
    "constmix": {"KNOB_CONST_MIX": "1"},
    "warps8": {"SSM_KERNELS_GRAPH_SCAN_WARPS_FWD": "8"},
    "bd2": {"SSM_KERNELS_GRAPH_SCAN_BD_FWD": "2"},
    "bd2reg128": {"SSM_KERNELS_GRAPH_SCAN_BD_FWD": "2", "SSM_KERNELS_GRAPH_SCAN_MAXNREG_FWD": "128"},
    "bwdwarps4": {"SSM_KERNELS_GRAPH_SCAN_WARPS_BWD": "4"},
    "tf32w8": {"SSM_KERNELS_GRAPH_SCAN_PRECISION": "tf32", "SSM_KERNELS_GRAPH_SCAN_WARPS_BWD": "8"},
    # the CUDA-core forward recurrence (graph_scan/cuda.py), default channels per block, then 2 / 4 / 8 / 16
    "cudafwd": {"SSM_KERNELS_GRAPH_SCAN_CUDA_FWD": "1"},
    **{f"cudafwd-bd{bd}": {"SSM_KERNELS_GRAPH_SCAN_CUDA_FWD": "1", "SSM_KERNELS_GRAPH_SCAN_CUDA_BD": str(bd)}
       for bd in (2, 4, 8, 16)},
    # and the CUDA-core adjoint, alone and with the forward
    "cudabwd": {"SSM_KERNELS_GRAPH_SCAN_CUDA_BWD": "1"},
    "cuda": {"SSM_KERNELS_GRAPH_SCAN_CUDA_FWD": "1", "SSM_KERNELS_GRAPH_SCAN_CUDA_BWD": "1"},
    **{f"cuda-bd{bd}": {"SSM_KERNELS_GRAPH_SCAN_CUDA_FWD": "1", "SSM_KERNELS_GRAPH_SCAN_CUDA_BWD": "1",
                        "SSM_KERNELS_GRAPH_SCAN_CUDA_BD": str(bd)} for bd in (2, 4, 8)},
    # the readout (and its adjoint) through the folded readout operators (run20a: folded on the host; now in the
    # kernels), and the run18a defaults (forward readout parallel, adjoint's inline)
    "readq": {"SSM_KERNELS_GRAPH_SCAN_READOUT_FWD": "q", "SSM_KERNELS_GRAPH_SCAN_READOUT_BWD": "q"},
    "readqfwd": {"SSM_KERNELS_GRAPH_SCAN_READOUT_FWD": "q", "SSM_KERNELS_GRAPH_SCAN_READOUT_BWD": "inline"},
    "readqbwd": {"SSM_KERNELS_GRAPH_SCAN_READOUT_FWD": "parallel", "SSM_KERNELS_GRAPH_SCAN_READOUT_BWD": "q"},
    "read18a": {"SSM_KERNELS_GRAPH_SCAN_READOUT_FWD": "parallel", "SSM_KERNELS_GRAPH_SCAN_READOUT_BWD": "inline"},
    # both CUDA recurrences with another register cap per thread than the sources' 96 (each its own build)
    **{f"cuda-r{r}": {"SSM_KERNELS_GRAPH_SCAN_CUDA_FWD": "1", "SSM_KERNELS_GRAPH_SCAN_CUDA_BWD": "1",
                      "SSM_KERNELS_GRAPH_SCAN_CUDA_MAXNREG": str(r)} for r in (64, 80, 128)},
}  # fmt: skip


def measure(shape: str, name: str) -> None:
    """One configuration, in this process (its environment set by the caller)."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_graph_scan_sweep import block_inputs

    from ssm_kernels.graph_scan.triton import graph_selective_scan_triton
    from ssm_kernels.testing.bench import cuda_event_ms, kernel_us
    from ssm_kernels.testing.graph_scan import timing_closures

    inp = block_inputs(shape, torch.float32, "implicit")
    if os.environ.get("KNOB_CONST_MIX") == "1":
        mix = inp["mix_A"].detach()[:, :1].contiguous().requires_grad_(True)
        inp["mix_A"] = inp["mix_C"] = mix
    names = [k for k, v in inp.items() if isinstance(v, torch.Tensor) and v.requires_grad and k != "mix_C"]
    _, fwdbwd = timing_closures(graph_selective_scan_triton, inp, names)
    t0 = time.time()
    fwdbwd()
    torch.cuda.synchronize()
    compile_s = time.time() - t0
    rounds = 3 if shape == "raw" else 20
    ms = [round(cuda_event_ms(fwdbwd, rounds=rounds), 2) for _ in range(2)]
    per = kernel_us(fwdbwd, reps=1 if shape == "raw" else 5)
    top = {k[:28]: round(v) for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:6]}
    print(json.dumps({"shape": shape, "cfg": name, "fwdbwd_ms": ms, "gpu_ms": round(sum(per.values()) / 1e3, 2),
                      "compile_s": round(compile_s, 1), "top": top}), flush=True)  # fmt: skip


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        measure(argv[1], argv[2])
        return
    shape, names = argv[0], argv[1:] or list(KNOBS)
    unknown = [n for n in names if n not in KNOBS]
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}; known: {sorted(KNOBS)}")
    for name in names:
        env = {k: v for k, v in os.environ.items() if k not in {e for cfg in KNOBS.values() for e in cfg}}
        env.update(KNOBS[name])
        run = subprocess.run([sys.executable, __file__, "--one", shape, name], env=env, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
        lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
        print(lines[-1] if lines else json.dumps({"cfg": name, "error": run.stderr.strip()[-400:]}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
