"""Time the selective scan's forward kernels from a cubin, without building the torch extension.

The extension takes about three minutes to compile on the lent H200 host; a cubin of just the kernels under study
compiles in seconds anywhere nvcc is installed (the workstation has nvcc 13), so kernel variants can be timed in
one short GPU call. Build the cubin (or pass ``--nvcc`` to build it here) from the package's own sources:

    nvcc -std=c++17 -arch=sm_90 -cubin -O3 -I packages/ssm-kernels/src/ssm_kernels/selective_scan/csrc \\
        -o scan_fwd.cubin scan_fwd.cu       # scan_fwd.cu: the text of INSTANTIATIONS below

then, on the GPU machine:

    PYTHONPATH=packages/ssm-kernels/src python packages/ssm-kernels/benchmarks/gpu_cubin_timing.py \\
        --cubin scan_fwd.cubin --shapes big,raw,raw-bf16

Each kernel is launched through the driver API (``cuModuleLoadData`` / ``cuLaunchKernel``) with a
:class:`ssm_kernels.testing.scan_params.ScanParams` built from :func:`make_scan_inputs` data (z, D, delta_bias,
softplus; no initial state, no checkpoints), its output and last state are compared with the float64 reference,
and it is timed with CUDA events (median of 5 x 20 back-to-back launches). The cubin's kernels must match the
package's ``ScanParams`` layout (same sources). ``h200-logs/run21-prod-cubins.log`` and ``run21-tile-variants.log``
come from the scratch harness this tool was written from (same launches and checks); ``run22-gpu_cubin_timing.log``
is the tool's own first GPU run (a cubin built on the workstation).
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import tempfile
from pathlib import Path

import torch

from ssm_kernels.selective_scan.reference import selective_scan_ref
from ssm_kernels.testing.bench import back_to_back_us
from ssm_kernels.testing.scan_params import ScanParams
from ssm_kernels.testing.selective_scan import make_scan_inputs

CSRC = Path(__file__).resolve().parents[1] / "src" / "ssm_kernels" / "selective_scan" / "csrc"
INSTANTIATIONS = """#include "selective_scan_long.cuh"
namespace ssk {
template __global__ void scan_fwd_tile_kernel<__nv_bfloat16, __nv_bfloat16, 4>(const ScanParams);
template __global__ void scan_fwd_tile_kernel<__nv_bfloat16, __nv_bfloat16, 5>(const ScanParams);
template __global__ void scan_fwd_tile_kernel<float, float, 4>(const ScanParams);
template __global__ void scan_fwd_tile_kernel<float, float, 5>(const ScanParams);
template __global__ void scan_fwd_state_kernel<16, 4, __nv_bfloat16, __nv_bfloat16>(const ScanParams);
template __global__ void scan_fwd_state_kernel<16, 4, float, float>(const ScanParams);
}
"""
# name: (mangled name with {T} for the element type, rows per 128-thread block, dynamic shared memory bytes)
_TILE_SMEM = 4 * (32 * (2 * 16 + 4) + 2 * 16 * 16 + 128 * (16 + 4))  # ssk::tile_smem_bytes()
KERNELS = {
    "tile-minb4": ("_ZN3ssk20scan_fwd_tile_kernelI{T}Li4EEEvNS_10ScanParamsE", 32, _TILE_SMEM),
    "tile-minb5": ("_ZN3ssk20scan_fwd_tile_kernelI{T}Li5EEEvNS_10ScanParamsE", 32, _TILE_SMEM),
    "state-ns4": ("_ZN3ssk21scan_fwd_state_kernelILi16ELi4E{T}EEvNS_10ScanParamsE", 32, 0),
}
MANGLED = {torch.bfloat16: "13__nv_bfloat16S1_", torch.float32: "ff"}
SHAPES = {  # batch, dim, L, N, dtype
    "big": (8, 2048, 2048, 16, torch.bfloat16),
    "b4": (4, 2048, 2048, 16, torch.bfloat16),
    "raw": (304, 64, 2000, 16, torch.float32),
    "raw-bf16": (304, 64, 2000, 16, torch.bfloat16),
}
_DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # ssk::DType


class Cubin:
    """A cubin loaded into torch's CUDA context."""

    def __init__(self, path: Path):
        torch.zeros(1, device="cuda")  # torch creates and binds the primary context
        self._cuda = ctypes.CDLL("libcuda.so.1")
        self._mod = ctypes.c_void_p()
        self._check(self._cuda.cuModuleLoadData(ctypes.byref(self._mod), path.read_bytes()), f"loading {path}")

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            msg = ctypes.c_char_p()
            self._cuda.cuGetErrorString(code, ctypes.byref(msg))
            raise RuntimeError(f"{what}: CUDA driver error {code} ({msg.value.decode() if msg.value else '?'})")

    def launcher(self, name: str, grid: int, smem: int, params: ScanParams):
        fn = ctypes.c_void_p()
        self._check(self._cuda.cuModuleGetFunction(ctypes.byref(fn), self._mod, name.encode()), f"kernel {name}")
        args = (ctypes.c_void_p * 1)(ctypes.c_void_p(ctypes.addressof(params)))

        def launch() -> None:
            stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
            self._check(self._cuda.cuLaunchKernel(fn, grid, 1, 1, 128, 1, 1, smem, stream, args, None), name)

        return launch


def scan_params(x: dict, out: torch.Tensor, last: torch.Tensor) -> ScanParams:
    """The launch parameters of an inference forward (variable B / C as (batch, 1, N, L), softplus)."""
    batch, dim, L = x["u"].shape
    p = ScanParams(batch=batch, dim=dim, L=L, N=x["A"].shape[1], nrows=batch * dim, nseq=batch, softplus=1)
    p.bc_dtype = _DTYPE_CODE[x["B"].dtype]
    p.u, p.delta, p.z, p.A = (x[k].data_ptr() for k in ("u", "delta", "z", "A"))
    p.B, p.C = x["B"].data_ptr(), x["C"].data_ptr()
    p.b_groups = p.c_groups = 1
    p.D, p.delta_bias = x["D"].data_ptr(), x["delta_bias"].data_ptr()
    p.out, p.last, p.K = out.data_ptr(), last.data_ptr(), 1
    return p


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref).abs().max() / ref.abs().max()).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cubin", type=Path, help="prebuilt cubin of INSTANTIATIONS (default: build one with --nvcc)")
    ap.add_argument("--nvcc", default=None, help="nvcc to build the cubin with (e.g. nvcc)")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--shapes", default="big,raw,raw-bf16")
    args = ap.parse_args()
    path = args.cubin
    if path is None:
        if not args.nvcc:
            ap.error("pass --cubin or --nvcc")
        tmp = Path(tempfile.mkdtemp(prefix="ssk_cubin_"))
        (tmp / "scan_fwd.cu").write_text(INSTANTIATIONS)
        path = tmp / "scan_fwd.cubin"
        cmd = [args.nvcc, "-std=c++17", f"-arch={args.arch}", "-cubin", "-O3", f"-I{CSRC}", "-o", str(path)]
        subprocess.run([*cmd, str(tmp / "scan_fwd.cu")], check=True)
    cubin = Cubin(path)
    for shape in args.shapes.split(","):
        batch, dim, L, N, dtype = SHAPES[shape]
        x = make_scan_inputs(batch, dim, L, N, dtype=dtype, device="cuda", seed=3)
        hi = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in x.items()}
        ref, ref_last = selective_scan_ref(**hi, delta_softplus=True, return_last_state=True)
        lo = selective_scan_ref(**x, delta_softplus=True)
        print(f"{shape:9s} reference in {dtype}: rel err {rel_err(lo, ref):.1e}", flush=True)
        x = dict(x, B=x["B"].unsqueeze(1).contiguous(), C=x["C"].unsqueeze(1).contiguous())
        for label, (name, rows, smem) in KERNELS.items():
            out = torch.full_like(x["u"], float("nan"))
            last = torch.full((batch, dim, N), float("nan"), device="cuda")
            p = scan_params(x, out, last)
            launch = cubin.launcher(name.format(T=MANGLED[dtype]), (batch * dim + rows - 1) // rows, smem, p)
            launch()
            torch.cuda.synchronize()
            err, err_last = rel_err(out, ref), rel_err(last, ref_last)
            print(f"{shape:9s} {label:12s} {back_to_back_us(launch):8.1f} us | rel err out {err:.1e} last {err_last:.1e}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
