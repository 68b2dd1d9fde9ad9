"""Mamba-1 selective scan: pure-PyTorch reference and JIT-compiled CUDA kernels.

Public names: :func:`selective_scan_fn`, :func:`mamba_inner_fn` (``interface``),
:func:`selective_scan_ref`, :func:`mamba_inner_ref` (``reference``). Importing this package
compiles nothing; the CUDA extension is built on the first call with CUDA tensors.
"""

from .interface import mamba_inner_fn, selective_scan_fn
from .reference import mamba_inner_ref, selective_scan_ref

__all__ = ["mamba_inner_fn", "mamba_inner_ref", "selective_scan_fn", "selective_scan_ref"]
