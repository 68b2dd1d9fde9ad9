"""Just-in-time builds of the package's CUDA extensions (torch.utils.cpp_extension), shared by the selective scan
and the graph scan: one cache folder per extension, torch version, CUDA version, GPU architecture and source hash,
so a torch or driver upgrade or an edited source rebuilds instead of loading a stale binary."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch


def sources_hash(csrc: Path) -> str:
    """Hash of every C++ / CUDA source and header in ``csrc``."""
    h = hashlib.sha256()
    for p in sorted(csrc.iterdir()):
        if p.suffix in (".cpp", ".cu", ".cuh", ".h"):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:10]


def arch_tag(arch: str | None = None) -> str:
    """``"90"`` for ``"sm_90"`` / ``"9.0"`` / ``"90"``; the current GPU's when None."""
    if arch:
        return arch.replace("sm_", "").replace(".", "")
    major, minor = torch.cuda.get_device_capability()
    return f"{major}{minor}"


def build_directory(csrc: Path, arch: str | None = None, prefix: str = "") -> Path:
    """Cache folder under ``$SSM_KERNELS_CACHE`` (default ``~/.cache/ssm_kernels``) for these sources."""
    base = Path(os.environ.get("SSM_KERNELS_CACHE", Path.home() / ".cache" / "ssm_kernels"))
    tag = f"{prefix}torch{torch.__version__}-cuda{torch.version.cuda}-sm{arch_tag(arch)}-{sources_hash(csrc)}"
    return base / tag.replace("+", "_").replace("/", "_")


def jit_load(name: str, sources: list[Path], csrc: Path, build_dir: Path, arch: str, verbose: bool = False,
             defines: dict[str, int] | None = None):  # fmt: skip
    """Compile (if needed) and import one extension for sm_``arch``; raises with the reason on failure. ``defines``
    (macros for nvcc) must be part of ``build_dir``'s name."""
    from torch.utils.cpp_extension import CUDA_HOME, load

    if torch.version.cuda is None:
        raise RuntimeError("this torch build has no CUDA support")
    if CUDA_HOME is None:
        raise RuntimeError("nvcc was not found (install the CUDA toolkit or set CUDA_HOME)")
    build_dir.mkdir(parents=True, exist_ok=True)
    cuda_flags = [
        "-O3",
        f"-gencode=arch=compute_{arch},code=sm_{arch}",
        "-lineinfo",
        "-U__CUDA_NO_HALF_OPERATORS__",
        "-U__CUDA_NO_HALF_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
        *[f"-D{k}={v}" for k, v in (defines or {}).items()],
    ]
    return load(
        name=name,
        sources=[str(p) for p in sources],
        extra_cflags=["-O3"],
        extra_cuda_cflags=cuda_flags,
        extra_include_paths=[str(csrc)],
        build_directory=str(build_dir),
        verbose=verbose,
        with_cuda=True,
    )
