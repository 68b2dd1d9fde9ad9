"""Check that an ssm-kernels wheel carries the kernel sources compiled just in time and the Triton files."""

from __future__ import annotations

import sys
import zipfile

REQUIRED_SUFFIXES = {".cu": "CUDA kernel sources", ".cpp": "CUDA extension bindings"}
REQUIRED_FILES = [
    "ssm_kernels/graph_scan/triton.py",
    "ssm_kernels/graph_scan/reference.py",
    "ssm_kernels/backend.py",
    # the graph scan's CUDA recurrences (one-file extension plus its kernel headers)
    "ssm_kernels/graph_scan/csrc/graph_scan.cu",
    "ssm_kernels/graph_scan/csrc/graph_scan_fwd.cuh",
    "ssm_kernels/graph_scan/csrc/graph_scan_adj.cuh",
]


def main(wheel: str) -> int:
    names = zipfile.ZipFile(wheel).namelist()
    problems = []
    for suffix, what in REQUIRED_SUFFIXES.items():
        hits = [n for n in names if n.endswith(suffix) and "/csrc/" in n]
        if not hits:
            problems.append(f"no {what} (*{suffix} under csrc/)")
        else:
            print(f"{what}: {', '.join(sorted(hits))}")
    for f in REQUIRED_FILES:
        if f not in names:
            problems.append(f"missing {f}")
    if problems:
        print(f"{wheel}: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"{wheel}: kernel sources present ({len(names)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
