"""Time, on a GPU, the cuBLAS products of the graph scan's split backward (operator gradients and the readout's dC)
for one recomputed chunk of the raw EEG shape, each alone, at fp32 ("highest") and tf32 ("high") precision.

    python packages/ssm-kernels/benchmarks/gpu_graph_scan_opgrad_gemms.py

One chunk of TGMamba's raw call: 38 steps x batch 16 (x = 608 (step, batch) pairs), V 19, d_inner 64, N 16, so
H_{t-1}, dP and their products are 47 MB each. The products are those of ``_split_backward`` in
``ssm_kernels/graph_scan/triton.py`` (graphconv: the identity operator plus one vertex operator), with the
alternatives that were considered: the W gradient as one long ``addmm`` instead of per-(step, batch) products, and
the readout's Q by a broadcasting matmul instead of a permuted copy of the states. ``h200-logs/run22-graph-scan-
opgrad-gemms.log`` is its output (H200): every product takes 50-76 us per chunk at either precision, about the
time of reading its 47 MB operands, so they are memory-bound and tf32 does not help; 53 chunks x about 390 us
is the ~21 ms of GEMM time in the raw block's 68 ms (``tgmamba-models`` run20c profile). A kernel forming them
from one read of H_{t-1} and dP (``SSM_KERNELS_GRAPH_SCAN_OPGRAD=triton``) was tried next: correct but not faster
(run22, ``h200-logs/run22-graph-scan-opgrad-kernel-ab.log``); it was dropped in run27.
"""

from __future__ import annotations

import torch

from ssm_kernels.testing.bench import back_to_back_us


def main() -> None:
    torch.manual_seed(0)
    x, V, Dm, N = 608, 19, 64, 16
    dev = "cuda"
    Hp = torch.randn(x, V, Dm * N, device=dev)  # H_{t-1} per (step, batch)
    DP = torch.randn(x, V, Dm * N, device=dev)  # the adjoint's dP
    Z = torch.empty_like(DP)
    W = torch.randn(N, N, device=dev)
    mix = torch.randn(x, V, V, device=dev)
    dW_x, dW, gm = torch.zeros(x, N, N, device=dev), torch.zeros(N, N, device=dev), torch.zeros(x, V, V, device=dev)
    dy = torch.randn(x, V, Dm, device=dev)
    H4 = Hp.view(x, V, Dm, N)
    ops = {
        "dPW^T mm": lambda: torch.mm(DP.view(-1, N), W.t(), out=Z.view(-1, N)),
        "dmix baddbmm (x,V,DmN)@(x,DmN,V)": lambda: gm.baddbmm_(Z, Hp.transpose(1, 2)),
        "mix^T dP bmm": lambda: torch.bmm(mix.transpose(1, 2), DP, out=Z),
        "dW per-x baddbmm": lambda: dW_x.baddbmm_(Hp.view(x, V * Dm, N).transpose(1, 2), Z.view(x, V * Dm, N)),
        "dW one addmm": lambda: dW.addmm_(Hp.view(-1, N).t(), Z.view(-1, N)),
        "Q via permute copy + bmm": lambda: torch.bmm(dy, H4.permute(0, 2, 1, 3).reshape(x, Dm, V * N)),
        "Q permute copy alone": lambda: H4.permute(0, 2, 1, 3).reshape(x, Dm, V * N),
        "Q' broadcast matmul (x,1,V,Dm)@(x,V,Dm,N)": lambda: torch.matmul(dy[:, None], H4),
    }
    for prec in ("highest", "high"):
        torch.set_float32_matmul_precision(prec)
        for name, f in ops.items():
            print(f"{prec:8s} {name:45s} {back_to_back_us(f, reps=1, warmup=3):9.1f} us/chunk", flush=True)


if __name__ == "__main__":
    main()
