"""CUDA-core recurrences of the graph selective scan (``csrc/graph_scan_fwd.cuh``, ``csrc/graph_scan_adj.cuh``).

Each thread keeps four states of a (vertex, channel) row in registers (NP / 4 adjacent threads share a row, NP the
state count padded to 8, 16 or 32); the state products run with fp32 FMAs after the row's threads exchange their
parts, the vertex products through shared memory (see the sources). Both are opt-in: on an H200 the adjoint ties
the Triton one and the forward is slower (package README, run19a-d):

- ``SSM_KERNELS_GRAPH_SCAN_CUDA_FWD=1``: the forward recurrence (one barrier per step, the readout included at no
  extra barrier) replaces the Triton forward kernel in every call it supports: inference, the training forward
  (its readout then inline by default) and the split backward's recompute of each chunk;
- ``SSM_KERNELS_GRAPH_SCAN_CUDA_BWD=1``: the split backward's adjoint recurrence, with the readout's adjoint inline
  (two barriers per step), replaces the Triton adjoint kernel;
- ``SSM_KERNELS_GRAPH_SCAN_CUDA_BD``: channels per block of both.

The extension (one .cu file) is compiled just in time like the selective scan's, into its own cache folder; if it
cannot be built the Triton kernels run, with one warning.
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
MAX_N, MAX_V, MAX_K = 32, 64, 3  # as checked in csrc/graph_scan.cu
MAX_THREADS, MAX_THREADS_ADJ = 512, 512  # gsk::kMaxThreads, gsk::kMaxThreadsAdj
STATES_PER_THREAD = 4  # gsk::kNS
SMEM_LIMIT = 227 * 1024


def csrc_dir() -> Path:
    return Path(__file__).resolve().parent / "csrc"


def enabled(side: str = "FWD") -> bool:
    """``SSM_KERNELS_GRAPH_SCAN_CUDA_FWD=1`` / ``_CUDA_BWD=1`` (default off)."""
    return os.environ.get("SSM_KERNELS_GRAPH_SCAN_CUDA_" + side, "0") == "1"


@functools.cache
def _load(arch: str, verbose: bool, maxnreg: int | None):
    d = csrc_dir()
    defines, prefix = ({"GSK_MAXNREG": maxnreg}, f"graph_scan-r{maxnreg}-") if maxnreg else (None, "graph_scan-")
    return jit_load(_NAME, [d / "graph_scan.cu"], d, build_directory(d, arch, prefix), arch, verbose, defines)


def load_extension(verbose: bool = False, arch: str | None = None):
    """Compile (if needed) and import the extension; raises on failure (a later call tries again).
    ``SSM_KERNELS_GRAPH_SCAN_CUDA_MAXNREG`` (a tuning knob, read once per process) caps the kernels' registers per
    thread instead of the sources' default (96)."""
    env = os.environ.get("SSM_KERNELS_GRAPH_SCAN_CUDA_MAXNREG")
    with _LOCK:
        return _load(arch_tag(arch), verbose, int(env) if env else None)


def _pad(N: int) -> int:
    return 8 if N <= 8 else (16 if N <= 16 else 32)


def block_threads(N: int, V: int, bd: int) -> int:
    """Threads of one block: NP / 4 per (vertex, channel) row (mirrors ``gsk::block_threads``)."""
    return V * bd * (_pad(N) // STATES_PER_THREAD)


def smem_bytes(N: int, V: int, K: int, eye: bool, bd: int, readout: tuple | None = None) -> int:
    """Shared memory of one forward block (mirrors ``gsk::fwd_smem_floats``); ``readout`` = (K_C, eye_c) with the
    readout (K_C = 0: no readout operators)."""
    NP = _pad(N)
    KC, eye_c = readout if readout is not None else (0, False)
    KWC = KC + int(eye_c) if KC else 0
    r4 = lambda x: (x + 3) // 4 * 4
    floats = (K + int(eye) + KWC) * NP * NP + 2 * (K + KC) * V * r4(V)  # staged operators: rows padded
    rows = (2 * (K + KC) + 1) * V * bd * NP  # h W_k and h W_C,k (two buffers each), the group exchange of h
    partial = r4(block_threads(N, V, bd)) if readout is not None else 0
    return 4 * (floats + (4 if readout is not None else 2) * V * NP + rows + partial)


def adj_smem_bytes(N: int, V: int, K_A: int, K_C: int, eye_a: bool, eye_c: bool, bd: int) -> int:
    """Shared memory of one adjoint block (mirrors ``gsk::adj_smem_floats``)."""
    NP = _pad(N)
    KWA, KWC = K_A + int(eye_a), (K_C + int(eye_c)) if K_C else 0
    r4 = lambda x: (x + 3) // 4 * 4
    floats = (KWA + KWC) * NP * NP + 2 * (K_A + K_C) * V * r4(V) + 4 * V * NP + KWC * V * NP
    return 4 * (floats + r4(V * bd) + (K_A + 2) * V * bd * NP + r4(2 * block_threads(N, V, bd)))


def supports(V: int, N: int, K: int) -> bool:
    return N <= MAX_N and V <= MAX_V and 1 <= K <= MAX_K


def channels_per_block(batch: int, V: int, D: int, N: int, K: int, eye: bool, sms: int, adj: tuple | None = None,
                       readout: tuple | None = None) -> int:  # fmt: skip
    """Channels per block: 8 (fewer while the grid has fewer blocks than SMs), within the thread and shared
    memory limits (``adj`` = (K_C, eye_c): the adjoint's; ``readout`` = (K_C, eye_c): the forward with its
    readout); ``SSM_KERNELS_GRAPH_SCAN_CUDA_BD`` overrides. On the H200 (run19a-c) the default 4 at the raw shape
    beat 2 by 16-22% (scan fwd+bwd); at TUSZ 4 and 8 tie."""
    env = os.environ.get("SSM_KERNELS_GRAPH_SCAN_CUDA_BD")
    bd = int(env) if env else 8
    if not env:
        while bd > 1 and batch * -(-D // bd) < sms:
            bd //= 2
    if adj is None:
        fits = lambda bd: block_threads(N, V, bd) <= MAX_THREADS and smem_bytes(N, V, K, eye, bd, readout) <= SMEM_LIMIT
    else:
        fits = lambda bd: (block_threads(N, V, bd) <= MAX_THREADS_ADJ
                           and adj_smem_bytes(N, V, K, adj[0], eye, adj[1], bd) <= SMEM_LIMIT)  # fmt: skip
    while bd > 1 and not fits(bd):
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
                   last=None, sms: int = 132, readout: dict | None = None) -> None:  # fmt: skip
    """Steps t0 .. t1 - 1 from h0 (rows (V, D, N) contiguous, or None: zeros) into states / ckpt / last (fp32).

    ``readout``: also the output, a dict of C, mix_C and W_C (or None), eye_c, D, z (or None) and out / y (the
    buffers to write, or None)."""
    batch, V, Dm, L = u.shape
    N = A.shape[1]
    K = mix.shape[2]
    ro = readout or {}
    mix_c = ro.get("mix_C")
    ro_key = None if readout is None else (mix_c.shape[2] if mix_c is not None else 0, bool(ro.get("eye_c")))
    bd = channels_per_block(batch, V, Dm, N, K, eye, sms, readout=ro_key)
    f32 = lambda t: None if t is None else t.float().contiguous()
    if h0 is not None and (h0.dtype != torch.float32 or not h0[0].is_contiguous()):
        h0 = f32(h0)  # (a user's initial state in the inputs' dtype; checkpoints are fp32 rows already)
    mix = mix if mix.dtype in (torch.float32, u.dtype) else mix.float()
    if mix_c is not None and mix_c.dtype != mix.dtype:
        mix, mix_c = mix.float(), mix_c.float()
    load_extension().fwd_recurrence(
        u, delta, f32(A), B, mix, f32(W), f32(delta_bias), bool(softplus), h0, t0, t1, chunk, states, ckpt, last,
        bool(eye), bd, ro.get("C"), mix_c, f32(ro.get("W_C")), bool(ro.get("eye_c")), f32(ro.get("D")), ro.get("z"),
        ro.get("out"), ro.get("y"),
    )  # fmt: skip


def adj_recurrence(u, delta, A, B, C, mix_A, W_A, mix_C, W_C, D, z, delta_bias, softplus, dout, ybuf, states, g, dp,
                   dy, du, ddelta, dz, dA, dD, dbias, dB, bc_atomic, lb, tb, t0, t1, eye_a, eye_c,
                   bd) -> None:  # fmt: skip
    """Steps t1 - 1 .. t0 of the split backward's adjoint (``csrc/graph_scan_adj.cuh``), buffers as the Triton
    adjoint kernel takes them."""
    f32 = lambda t: None if t is None else t.float().contiguous()
    mixes = [m if m is None or m.dtype in (torch.float32, u.dtype) else m.float() for m in (mix_A, mix_C)]
    if mixes[1] is not None and mixes[1].dtype != mixes[0].dtype:
        mixes = [m.float() for m in mixes]
    load_extension().adj_recurrence(
        u, delta, f32(A), B, C, mixes[0], f32(W_A), mixes[1], f32(W_C), f32(D), z, f32(delta_bias), bool(softplus),
        dout, ybuf, states, g, dp, dy, du, ddelta, dz, dA, dD, dbias, dB, bool(bc_atomic), lb, tb, t0, t1,
        bool(eye_a), bool(eye_c), bd,
    )  # fmt: skip


def cuda_adj_applies(u, delta, B, C, mix_A, mix_C, dout, z, N: int) -> bool:
    """Opted in (``SSM_KERNELS_GRAPH_SCAN_CUDA_BWD=1``), a CUDA call the adjoint supports (u, delta, B, C, z and
    d_out of one float dtype), and the extension built."""
    same = all(t is None or t.dtype == u.dtype for t in (delta, B, C, dout, z))
    K_C = mix_C.shape[2] if mix_C is not None else 0
    return (
        enabled("BWD")
        and u.is_cuda
        and u.dtype in (torch.float32, torch.float16, torch.bfloat16)
        and same
        and supports(u.shape[1], N, mix_A.shape[2])
        and K_C <= MAX_K
        and adj_smem_bytes(N, u.shape[1], mix_A.shape[2], K_C, True, True, 1) <= SMEM_LIMIT  # one channel fits
        and usable()
    )


def cuda_fwd_applies(u: torch.Tensor, delta: torch.Tensor, B: torch.Tensor, mix: torch.Tensor, N: int,
                     h0: torch.Tensor | None = None, readout: dict | None = None) -> bool:  # fmt: skip
    """Opted in, a CUDA call the kernel supports (u, delta and B, and with the readout C and z, of one float dtype;
    a floating-point initial state; the shared memory of one channel per block fits), and the
    extension built."""
    ro_key = None
    if readout is not None:
        mix_c, z = readout.get("mix_C"), readout.get("z")
        if readout["C"].dtype != u.dtype or (z is not None and z.dtype != u.dtype):
            return False
        if mix_c is not None and not 1 <= mix_c.shape[2] <= MAX_K:
            return False
        ro_key = (mix_c.shape[2] if mix_c is not None else 0, True)
    return (
        enabled()
        and u.is_cuda
        and u.dtype in (torch.float32, torch.float16, torch.bfloat16)
        and delta.dtype == u.dtype
        and B.dtype == u.dtype
        and (h0 is None or h0.is_floating_point())
        and supports(u.shape[1], N, mix.shape[2])
        and smem_bytes(N, u.shape[1], mix.shape[2], True, 1, ro_key) <= SMEM_LIMIT
        and usable()
    )
