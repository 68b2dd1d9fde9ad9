"""Where the wall time of a call goes: host launch work against GPU kernel time (one GPU call).

For each op at its benchmark shape: the wall time of one call on an idle device (CUDA events), the host
time per call when calls are queued back to back (no synchronisation, so the GPU never starves the
host), the summed GPU kernel time per call (torch.profiler), and the Python functions with the most own
time (cProfile) for the forward calls. When host time per call approaches the kernel time, launch work,
not the kernels, bounds the call.

    PYTHONPATH=packages/ssm-kernels/src python packages/ssm-kernels/benchmarks/gpu_host_overhead.py [--cprofile]
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import traceback

import torch

from ssm_kernels import mamba_chunk_scan_combined, selective_scan_fn
from ssm_kernels.testing.bench import cuda_event_ms, host_us, kernel_us
from ssm_kernels.testing.selective_scan import make_scan_inputs
from ssm_kernels.testing.ssd import make_inputs


def cases():
    x = make_scan_inputs(4864, 64, 10, 16, dtype=torch.float32, device="cuda", seed=3)

    def scan_fwd():
        with torch.no_grad():
            selective_scan_fn(**x, delta_softplus=True, backend="cuda")

    xg = {k: (v.detach().requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
          for k, v in x.items()}  # fmt: skip
    leaves = [v for v in xg.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    dout = torch.randn_like(x["u"])

    def scan_fwdbwd():
        torch.autograd.grad(selective_scan_fn(**xg, delta_softplus=True, backend="cuda"), leaves, dout)

    yield "selective_scan tusz fwd", scan_fwd, True
    yield "selective_scan tusz fwd+bwd", scan_fwdbwd, True
    for name, (b, l, h, p, g, n) in {
        "b8-l4096": (8, 4096, 32, 64, 1, 64),
        "b4-l2048": (4, 2048, 80, 64, 1, 128),
    }.items():
        inp = make_inputs(b, l, h, p, g, n, dtype=torch.bfloat16, device="cuda", D_shape="h", z=False, init=False,
                          seed=0)  # fmt: skip

        def ssd_fwd(inp=inp):
            with torch.no_grad():
                mamba_chunk_scan_combined(chunk_size=256, dt_softplus=True, backend="triton", **inp)

        yield f"ssd {name} fwd", ssd_fwd, True


def main() -> int:
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    prof = "--cprofile" in sys.argv
    for name, fn, do_cprofile in cases():
        try:
            for _ in range(5):
                fn()
            wall = cuda_event_ms(fn, rounds=50) * 1e3
            host = host_us(fn)
            per = kernel_us(fn, reps=10)
            gpu = sum(per.values())
            print(f"{name:30s} wall {wall:8.1f} us  host/call {host:8.1f} us  GPU kernels {gpu:8.1f} us  "
                  f"(wall - kernels {wall - gpu:7.1f} us)", flush=True)  # fmt: skip
            for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:8]:
                print(f"      {v:8.1f} us  {k}", flush=True)
            if prof and do_cprofile:
                pr = cProfile.Profile()
                pr.enable()
                for _ in range(200):
                    fn()
                pr.disable()
                torch.cuda.synchronize()
                s = io.StringIO()
                pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(14)
                print("\n".join(line for line in s.getvalue().splitlines() if line.strip())[:4000], flush=True)
        except Exception:
            print(f"FAIL {name}", flush=True)
            traceback.print_exc()
    return 0


if __name__ == "__main__":
    sys.exit(main())
