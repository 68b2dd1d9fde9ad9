"""CUDA forward recurrence of the graph selective scan (``csrc/graph_scan_fwd.cuh``), opt-in.

One thread per (vertex, channel) row keeps the row's states in registers; the state products run in the thread
with fp32 FMAs, the vertex products through shared memory with one barrier per step (see the source). It replaces
the Triton forward kernel where that kernel runs the recurrence alone: the split design's training forward with
the parallel readout (the default) and the split backward's recompute of each chunk. Opt-in with
``SSM_KERNELS_GRAPH_SCAN_CUDA_FWD=1`` until timed on a GPU. ``SSM_KERNELS_GRAPH_SCAN_CUDA_BD`` sets the channels
per block. The extension (one .cu file) is compiled just in time like the selective scan's, into its own cache
folder; if it cannot be built the Triton kernel runs, with one warning.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from pathlib import Path

import torch

from .._jit import arch_tag, build_directory, jit_load

_NAME = "ssm_kernels_graph_scan"
_LOCK = threading.Lock()
_ERROR: str | None = None
MAX_N, MAX_V, MAX_K, MAX_THREADS = 32, 64, 3, 512  # as checked in csrc/graph_scan.cu (gsk::kMaxThreads)
SMEM_LIMIT = 227 * 1024


def csrc_dir() -> Path:
    return Path(__file__).resolve().parent / "csrc"


def enabled() -> bool:
    """``SSM_KERNELS_GRAPH_SCAN_CUDA_FWD=1`` (default off)."""
    return os.environ.get("SSM_KERNELS_GRAPH_SCAN_CUDA_FWD", "0") == "1"


@functools.cache
def _load(arch: str, verbose: bool):
    d = csrc_dir()
    return jit_load(_NAME, [d / "graph_scan.cu"], d, build_directory(d, arch, "graph_scan-"), arch, verbose)


def load_extension(verbose: bool = False, arch: str | None = None):
    """Compile (if needed) and import the extension; raises on failure (a later call tries again)."""
    with _LOCK:
        return _load(arch_tag(arch), verbose)


def smem_bytes(N: int, V: int, K: int, eye: bool, bd: int) -> int:
    """Shared memory of one block (mirrors ``gsk::fwd_smem_floats``)."""
    NP = 8 if N <= 8 else (16 if N <= 16 else 32)
    KW = K + int(eye)
    return 4 * (KW * NP * NP + (2 * K * V * V + 3) // 4 * 4 + 2 * V * NP + 2 * K * V * bd * NP)


def supports(V: int, N: int, K: int) -> bool:
    return N <= MAX_N and V <= MAX_V and 1 <= K <= MAX_K


def channels_per_block(batch: int, V: int, D: int, N: int, K: int, eye: bool, sms: int) -> int:
    """Channels per block: 8 (fewer while the grid has fewer blocks than SMs), within the thread and shared
    memory limits; ``SSM_KERNELS_GRAPH_SCAN_CUDA_BD`` overrides. Untimed: a starting point for the GPU sweep."""
    env = os.environ.get("SSM_KERNELS_GRAPH_SCAN_CUDA_BD")
    bd = int(env) if env else 8
    if not env:
        while bd > 1 and batch * -(-D // bd) < sms:
            bd //= 2
    while bd > 1 and (V * bd > MAX_THREADS or smem_bytes(N, V, K, eye, bd) > SMEM_LIMIT):
        bd //= 2
    return max(1, min(bd, D))


def usable() -> bool:
    """Whether the extension is built (building it on first call); warns once with the reason if not."""
    global _ERROR
    if _ERROR is not None:
        return False
    try:
        load_extension()
    except Exception as exc:
        _ERROR = f"{type(exc).__name__}: {str(exc)[-2000:]}"
        warnings.warn(f"ssm_kernels.graph_scan: the CUDA forward recurrence is unavailable ({_ERROR}); using the "
                      "Triton kernel", RuntimeWarning, stacklevel=3)  # fmt: skip
        return False
    return True


def fwd_recurrence(u, delta, A, B, mix, W, delta_bias, softplus, h0, t0, t1, chunk, eye, states=None, ckpt=None,
                   last=None, sms: int = 132) -> None:  # fmt: skip
    """Steps t0 .. t1 - 1 from h0 (rows (V, D, N) contiguous, or None: zeros) into states / ckpt / last (fp32)."""
    batch, V, Dm, L = u.shape
    N = A.shape[1]
    K = mix.shape[2]
    bd = channels_per_block(batch, V, Dm, N, K, eye, sms)
    f32 = [None if t is None else t.float().contiguous() for t in (A, W, delta_bias)]
    load_extension().fwd_recurrence(
        u, delta, f32[0], B, mix if mix.dtype in (torch.float32, u.dtype) else mix.float(), f32[1], f32[2],
        bool(softplus), h0, t0, t1, chunk, states, ckpt, last,
        bool(eye), bd,
    )  # fmt: skip


def cuda_fwd_applies(u: torch.Tensor, delta: torch.Tensor, B: torch.Tensor, mix: torch.Tensor, N: int,
                     h0: torch.Tensor | None = None) -> bool:  # fmt: skip
    """Opted in, a CUDA call the kernel supports (u, delta and B of one float dtype, an fp32 initial state with
    contiguous rows), and the extension built."""
    return (
        enabled()
        and u.is_cuda
        and u.dtype in (torch.float32, torch.float16, torch.bfloat16)
        and delta.dtype == u.dtype
        and B.dtype == u.dtype
        and (h0 is None or (h0.dtype == torch.float32 and h0[0].is_contiguous()))
        and supports(u.shape[1], N, mix.shape[2])
        and usable()
    )
