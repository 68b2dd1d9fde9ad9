"""Per-kernel CUDA time of one TGMamba block forward+backward (torch.profiler), for performance work.

PYTHONPATH=packages/ssm-kernels/src:packages/tgmamba-models/src python packages/tgmamba-models/benchmarks/profile_tgmamba.py [tusz|raw] [--ops] [--bf16]

``--ops``: per operator and input shapes instead (CPU and CUDA activity, ``group_by_input_shape``), which tells
the call sites of the cuBLAS and element-wise kernels apart; the value checks are off. ``--bf16``: under bf16
autocast (the bench's ``fused-autocast`` rows).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_tgmamba import TUSZ_BLOCK, electrode_graph

from tgmamba_models import TGMamba


def main(shape: str = "tusz", ops: bool = False, bf16: bool = False) -> None:
    batch, L = (256, 10) if shape == "tusz" else (16, 2000)
    V = 19
    torch.manual_seed(0)
    block = TGMamba(d_model=32, d_state=16, num_vertices=V, **TUSZ_BLOCK).cuda()
    block.validate_inputs = False
    x = torch.randn(batch * V, L, 32, device="cuda", requires_grad=True)
    ei, ew = electrode_graph(batch, V, device="cuda")
    g = torch.randn_like(x)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        with autocast:
            y = block(x, ei, ew)
        y.backward(g)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    steps = 5 if shape == "tusz" else 1
    acts = [torch.profiler.ProfilerActivity.CUDA] + ([torch.profiler.ProfilerActivity.CPU] if ops else [])
    with torch.profiler.profile(activities=acts, record_shapes=ops) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    mode = "bf16 autocast" if bf16 else "fp32"
    print(f"TGMamba block {shape} (batch {batch}, V {V}, L {L}, {mode}) fwd+bwd x{steps}")
    if ops:
        table = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cuda_time_total", row_limit=50, max_name_column_width=40, max_shapes_column_width=110
        )
    else:
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60)
    print(table)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(next((a for a in args if not a.startswith("--")), "tusz"), "--ops" in args, "--bf16" in args)
