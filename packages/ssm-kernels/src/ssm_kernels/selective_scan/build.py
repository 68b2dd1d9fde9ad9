"""Compile the selective-scan CUDA extension ahead of time.

Usage: ``ssm-kernels-build [--arch 90] [--verbose] [--graph-scan]`` or ``python -m ssm_kernels.selective_scan.build``.
The binary lands in the same cache folder the just-in-time path uses, so later calls load it
without compiling. ``MAX_JOBS`` bounds parallel compile jobs; ``SSM_KERNELS_CACHE`` moves the cache.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ssm-kernels-build", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=None, help="GPU architecture, e.g. 90 (default: the current GPU's)")
    parser.add_argument("--verbose", action="store_true", help="show the compiler's output")
    parser.add_argument(
        "--graph-scan",
        action="store_true",
        help="also build the graph scan's CUDA forward recurrence (SSM_KERNELS_GRAPH_SCAN_CUDA_FWD=1)",
    )
    args = parser.parse_args(argv)

    import torch

    from . import cuda as scan_cuda

    if args.arch is None and not torch.cuda.is_available():
        print("ssm-kernels-build: no CUDA GPU visible; pass --arch (e.g. --arch 90) to build for one", file=sys.stderr)
        return 2
    if not _build("selective_scan", scan_cuda.load_extension, args, scan_cuda.build_directory(args.arch)):
        return 1
    if args.graph_scan:
        from ..graph_scan import cuda as gs_cuda

        if not _build("graph_scan", gs_cuda.load_extension, args):
            return 1
    return 0


def _build(label: str, load, args, where=None) -> bool:
    t0 = time.perf_counter()
    try:
        load(verbose=args.verbose, arch=args.arch)
    except Exception as exc:
        print(f"ssm-kernels-build: {label} build failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    print(f"{label} extension ready{f' in {where}' if where else ''} ({time.perf_counter() - t0:.1f} s)")
    return True


if __name__ == "__main__":
    sys.exit(main())
