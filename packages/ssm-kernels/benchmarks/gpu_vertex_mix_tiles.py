"""Tile sweep of the vertex-mix kernels on a GPU (one-shot; CUDA-event medians, one process).

    python packages/ssm-kernels/benchmarks/gpu_vertex_mix_tiles.py [--shape raw|tusz]

For each (BC channels, TL steps, warps) the forward kernel ``_mix`` and the ``_dmix`` kernel are timed alone at
TGMamba's shape (x one channel half of a (batch, V, 2C, L) product, per-step mix), fp32 and bf16, beside the
current default (``_sizes`` / ``_WARPS``), with each result checked against the default's.
"""

from __future__ import annotations

import argparse
import functools
import itertools

import torch

from ssm_kernels.testing.bench import cuda_event_ms
from ssm_kernels.vertex_mix import triton as vmt

SHAPES = {"raw": (16, 19, 64, 2000), "tusz": (256, 19, 64, 10)}


def _fixed(sizes, *args):
    return sizes


def _time(fn, **patch):
    saved = {k: getattr(vmt, k) for k in patch}
    try:
        for k, v in patch.items():
            setattr(vmt, k, v)
        out = fn()
        return cuda_event_ms(fn, rounds=30, warmup=3), out
    finally:
        for k, v in saved.items():
            setattr(vmt, k, v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="raw", choices=list(SHAPES))
    ap.add_argument("--skip", nargs="*", default=[], help="dtype:kernel pairs not to sweep, e.g. float32:mix")
    args = ap.parse_args()
    args.skip = {(getattr(torch, p.split(":")[0]), p.split(":")[1]) for p in args.skip}
    batch, V, C, L = SHAPES[args.shape]
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        pq = torch.randn(batch, V, 2 * C, L, generator=g).cuda().to(dtype)
        mix = torch.rand(batch, L, V, V, generator=g).cuda()
        x, r = pq[:, :, C:], pq[:, :, :C]
        dout = torch.randn(batch, V, C, L, generator=g).cuda().to(dtype)
        kernels = {
            "mix": functools.partial(vmt._mix, x, mix, r, transpose=False),
            "dmix": functools.partial(vmt._dmix, dout, x),
        }
        VP, BC0, TL0 = vmt._sizes(V, C, L)
        for name, fn in kernels.items():
            base_ms, ref = _time(fn)
            bc0 = min(BC0, vmt._DMIX_BC) if name == "dmix" else BC0
            print(
                f"{args.shape} {str(dtype)[6:]} {name}: default BC {bc0} TL {TL0} warps {vmt._WARPS}: "
                f"{base_ms * 1e3:.1f} us",
                flush=True,
            )
            rows = []
            limit = 8192 if dtype == torch.float32 else 16384  # larger tiles need more than 227 KB of shared memory
            for bc, tl_, w in itertools.product((16, 32, 64), (4, 8, 16, 32), (4, 8)):
                if VP * max(VP, bc) * tl_ > limit or tl_ > max(4, L) or (dtype, name) in args.skip:
                    continue
                sizes = functools.partial(_fixed, (VP, bc, tl_))
                try:
                    ms, out = _time(fn, _sizes=sizes, _WARPS=w, _DMIX_BC=bc)  # dmix caps BC at _DMIX_BC
                except Exception as e:  # a config that fails to compile (shared memory) is reported, not fatal
                    print(f"  BC {bc:2d} TL {tl_:2d} w {w}: failed {type(e).__name__}: {str(e)[:80]}")
                    continue
                err = (out.float() - ref.float()).abs().max().item()
                rows.append((ms, bc, tl_, w, err))
            for ms, bc, tl_, w, err in sorted(rows)[:8]:
                print(
                    f"  BC {bc:2d} TL {tl_:2d} w {w}: {ms * 1e3:7.1f} us ({base_ms / ms:.2f}x default) "
                    f"max|diff| {err:.1e}"
                )


if __name__ == "__main__":
    main()
