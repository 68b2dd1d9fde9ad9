"""Time the SSD forward at the benchmark shapes with each chunk-scan and state-scan launch configuration
forced in turn (GPU kernel time from the profiler and wall time of the whole call), then with full autotuning,
printing the autotuner's choice. Finds configurations that win in isolation but lose in the full call.

    PYTHONPATH=packages/ssm-kernels/src python packages/ssm-kernels/benchmarks/gpu_ssd_fwd_configs.py
"""

from __future__ import annotations

import torch
import triton

import ssm_kernels.ssd.triton_ssd as T
from ssm_kernels import mamba_chunk_scan_combined
from ssm_kernels.testing.bench import cuda_event_ms, kernel_us
from ssm_kernels.testing.ssd import make_inputs

SHAPES = {"b4-l2048-h80-p64-n128": (4, 2048, 80, 64, 1, 128), "b8-l4096-h32-p64-n64": (8, 4096, 32, 64, 1, 64)}


def main() -> None:
    print(torch.cuda.get_device_name(), "triton", triton.__version__, flush=True)
    for name, (b, l, h, p, g, n) in SHAPES.items():
        inp = make_inputs(b, l, h, p, g, n, dtype=torch.bfloat16, device="cuda", D_shape="h", z=False, init=False,
                          seed=0)  # fmt: skip

        def fwd(inp=inp):
            with torch.no_grad():
                return mamba_chunk_scan_combined(chunk_size=256, dt_softplus=True, backend="triton", **inp)

        for kname in ("_chunk_scan_fwd_kernel", "_state_scan_fwd_kernel"):
            kern = getattr(T, kname)
            full = list(T._GPU_CONFIGS[kname])
            for cfg in full:
                kern.configs = [cfg]
                kern.cache.clear()
                fwd()
                w = cuda_event_ms(fwd, rounds=30)
                ks = kernel_us(fwd, width=28)
                mine = {k: v for k, v in ks.items() if k.startswith(kname[:20])}
                print(f"{name} {kname} {cfg}: wall {w:.3f} ms  kernel {mine}", flush=True)
            kern.configs = full
            kern.cache.clear()
        w = cuda_event_ms(fwd, rounds=30)
        ks = kernel_us(fwd, width=28)
        print(f"{name} autotuned: wall {w:.3f} ms  kernels {ks}", flush=True)
        for kname in ("_chunk_scan_fwd_kernel", "_state_scan_fwd_kernel"):
            print(f"   {kname} best: {getattr(T, kname).best_config}", flush=True)


if __name__ == "__main__":
    main()
