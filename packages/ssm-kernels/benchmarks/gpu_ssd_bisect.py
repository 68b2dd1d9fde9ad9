"""Bisect a GPU-only SSD gradient error seen through Mamba2 (L not a multiple of the chunk; dt_bias/A grads).

Runs mamba_chunk_scan_combined directly with Mamba2's test configuration and single-feature variations and
prints each gradient's max relative error against the float64 reference, next to the reference's own error
in the input precision.
    python packages/ssm-kernels/benchmarks/gpu_ssd_bisect.py
"""

from __future__ import annotations

import torch

from ssm_kernels.testing import max_rel_err
from ssm_kernels.testing.ssd import compare_ssd_with_reference, make_inputs

BASE = dict(b=2, l=77, h=8, p=16, g=2, n=32, q=64, D_shape="h", z=False, init=False, final=False)
VARIANTS = {
    "mamba2": {},
    "L128": dict(l=128),
    "final_states": dict(final=True),
    "z": dict(z=True),
    "init": dict(init=True),
    "D_hp": dict(D_shape="hp"),
    "p17_n24": dict(p=17, n=24),
    "g1": dict(g=1),
}


def main() -> None:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for dtype in (torch.float32, torch.bfloat16):
        for name, change in VARIANTS.items():
            c = {**BASE, **change}
            inp = make_inputs(c["b"], c["l"], c["h"], c["p"], c["g"], c["n"], dtype=dtype, device=dev,
                              D_shape=c["D_shape"], z=c["z"], init=c["init"], seed=5)  # fmt: skip
            kw = dict(chunk_size=c["q"], dt_softplus=True, return_final_states=c["final"])
            errs = []
            for gname, fast, hi, lo in compare_ssd_with_reference(inp, kw):
                if gname in ("ddt", "ddt_bias", "dA", "dx", "dB", "dC", "out"):
                    errs.append(f"{gname} {max_rel_err(fast, hi):.1e}/{max_rel_err(lo, hi):.1e}")
            print(f"{str(dtype)[6:]:8s} {name:13s} " + "  ".join(errs), flush=True)


if __name__ == "__main__":
    main()
