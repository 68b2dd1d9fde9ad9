"""CUDA backend of the selective scan: JIT build of ``csrc/`` and the autograd glue.

The extension is compiled with :func:`torch.utils.cpp_extension.load` on first use (or ahead of
time with ``ssm-kernels-build``) into ``$SSM_KERNELS_CACHE`` (default ``~/.cache/ssm_kernels``)
under a folder named after the torch version, CUDA version and GPU architecture, so a torch or
driver upgrade rebuilds instead of loading a stale binary. ``MAX_JOBS`` bounds the parallel
compile jobs (one per .cu file). Without nvcc or a GPU, or when the build fails, the op warns once
and uses the reference. ``SSM_KERNELS_DEBUG=1`` synchronises and checks after every launch.

Kernel choice: sequences of at most :data:`SHORT_MAX_L` steps without ``cu_seqlens`` run the
short-sequence kernels (``csrc/selective_scan_short.cuh``, no checkpoints): one thread per row when N <= 16
and the groups of variable B / C are whole warps (``SSM_KERNELS_SCAN_SHORT_ROWS=0`` turns that off), else the
states of a row split over several lanes; ``SSM_KERNELS_SCAN_SHORT=0`` turns the short kernels off (e.g. for
A/B timing against the general kernels). Inference calls with at least :data:`LONG_MIN_L` steps and no ``cu_seqlens`` run the
long-sequence forward (faster there; ``SSM_KERNELS_SCAN_LONG=0`` turns it off). In training, with
``SSM_KERNELS_SCAN_LONG=1``, such sequences run the long-sequence forward (``csrc/selective_scan_long.cuh``: one warp per row,
time split over its lanes; it writes the general backward's checkpoints). The long backward
(same file) runs when the forward ran long and every group of variable B / C is a multiple of
:data:`LONG_WARPS` channels; otherwise the long forward writes checkpoints for the general backward.
In training, the general kernels split time into segments when their rows leave the GPU idle (``bwd_segments`` in
``csrc/selective_scan.h``; ``SSM_KERNELS_SCAN_BWD_SEGMENTS=1`` turns that off, ``=n`` asks for n;
``SSM_KERNELS_SCAN_FWD_SEGMENTS=0`` keeps the forward in one pass).
The state-lane forward (``scan_fwd_state_kernel``: a row's states split over adjacent lanes, each lane walking time
alone) replaces the long forward in inference and the general forward in training (L >= :data:`LONG_MIN_L`, no
``cu_seqlens``) where ``state_fwd_auto`` in ``csrc/selective_scan.h`` says: padded N >= 16, at least one block per SM
and, in inference, 16-bit B / C. ``SSM_KERNELS_SCAN_STATE_FWD=1`` runs it wherever it can, ``=0`` never.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import torch

from .._jit import arch_tag, jit_load
from .._jit import build_directory as _build_directory
from ..backend import needs_autograd
from .reference import ScanInputs

__all__ = [
    "build_directory",
    "cuda_usable",
    "load_extension",
    "long_inference_path",
    "long_path",
    "selective_scan_cuda",
    "short_path",
]

_NAME = "ssm_kernels_selective_scan"
_LOCK = threading.Lock()
_EXT = None
_ERROR: str | None = None
_WARNED = False
_FAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_STATE = 64
SHORT_MAX_L = 16  # kShortMaxL in csrc/selective_scan.h
LONG_MIN_L = 128  # kLongMinL in csrc/selective_scan.h
LONG_BWD_CHUNK = 128  # kLongBwdChunk: the long backward's chunk = the forward's checkpoint interval
LONG_WARPS = 4  # kLongWarps: rows per block of the long kernels (per warp row loop in the backward)


def short_path(seqlen: int, has_cu_seqlens: bool) -> bool:
    """Whether the short-sequence kernels run (mirrors ``use_short`` in csrc/selective_scan.cpp)."""
    off = os.environ.get("SSM_KERNELS_SCAN_SHORT") == "0"
    return not off and not has_cu_seqlens and 1 <= seqlen <= SHORT_MAX_L


def _scan_long_env() -> str | None:
    """``SSM_KERNELS_SCAN_LONG`` (``"1"``: long kernels in training too; ``"0"``: never; unset: inference only)."""
    return os.environ.get("SSM_KERNELS_SCAN_LONG")


def long_path(seqlen: int, has_cu_seqlens: bool) -> bool:
    """Whether the long-sequence forward kernel runs (mirrors ``use_long`` in csrc/selective_scan.cpp):
    ``SSM_KERNELS_SCAN_LONG=1``, at least :data:`LONG_MIN_L` steps, no ``cu_seqlens``."""
    return _scan_long_env() == "1" and not has_cu_seqlens and seqlen >= LONG_MIN_L


def long_inference_path(seqlen: int, has_cu_seqlens: bool) -> bool:
    """Whether an inference call (no checkpoints) runs the long-sequence forward (mirrors ``use_long_inference``
    in csrc/selective_scan.cpp): at least :data:`LONG_MIN_L` steps, no ``cu_seqlens``, unless
    ``SSM_KERNELS_SCAN_LONG=0``."""
    return _scan_long_env() != "0" and not has_cu_seqlens and seqlen >= LONG_MIN_L


def long_backward(seqlen: int, has_cu_seqlens: bool, dim: int, B: torch.Tensor, C: torch.Tensor) -> bool:
    """Whether the long-sequence backward runs (checkpoints every :data:`LONG_BWD_CHUNK` steps): the long
    path, and every group of variable B / C a multiple of :data:`LONG_WARPS` channels (a block of the
    backward sums dB / dC over rows of one group)."""
    if not long_path(seqlen, has_cu_seqlens):
        return False
    for t in (B, C):
        if t.dim() >= 3:
            groups = 1 if t.dim() == 3 else t.shape[1]
            if (dim // groups) % LONG_WARPS != 0:
                return False
    return True


def csrc_dir() -> Path:
    return Path(__file__).resolve().parent / "csrc"


def sources() -> list[Path]:
    d = csrc_dir()
    return [d / "selective_scan.cpp", *sorted(d.glob("selective_scan_*.cu"))]


def build_directory(arch: str | None = None) -> Path:
    """Cache folder for this torch / CUDA / GPU-architecture / source combination."""
    return _build_directory(csrc_dir(), arch)


def load_extension(verbose: bool = False, arch: str | None = None):
    """Compile (if needed) and import the extension; raises on failure."""
    global _EXT
    if _EXT is not None:
        return _EXT
    with _LOCK:
        if _EXT is None:
            a = arch_tag(arch)
            _EXT = jit_load(_NAME, sources(), csrc_dir(), build_directory(a), a, verbose)
        return _EXT


def _warn_once(reason: str) -> None:
    global _WARNED
    if not _WARNED:
        _WARNED = True
        warnings.warn(
            f"ssm_kernels.selective_scan: CUDA kernels unavailable ({reason}); using the PyTorch reference",
            RuntimeWarning,
            stacklevel=4,
        )


_WARNED_UNSUPPORTED = False


def _warn_unsupported_once(reason: str) -> None:
    global _WARNED_UNSUPPORTED
    if not _WARNED_UNSUPPORTED:
        _WARNED_UNSUPPORTED = True
        warnings.warn(
            f"ssm_kernels.selective_scan: {reason}; using the (slow) PyTorch reference", RuntimeWarning, stacklevel=4
        )


def _extension_status() -> tuple[bool, str]:
    global _ERROR
    if _EXT is not None:
        return True, ""
    if _ERROR is not None:
        return False, _ERROR
    try:
        load_extension()
    except Exception as exc:
        _ERROR = f"building the extension failed: {type(exc).__name__}: {str(exc)[-2000:]}"
        _warn_once(_ERROR)
        return False, _ERROR
    return True, ""


def cuda_usable(tensors) -> tuple[bool, str]:
    """Whether the CUDA kernels can run these ``(u, delta, A, B, C, ...)`` tensors, and if not why."""
    ts = [t for t in tensors if t is not None]
    if not ts or not all(t.is_cuda for t in ts):
        return False, "the CUDA kernels need CUDA tensors"
    u, A = tensors[0], tensors[2]
    if u.dtype not in _FAST_DTYPES:
        return False, f"u has dtype {u.dtype}; the CUDA kernels take float32, float16 or bfloat16"
    if A.dtype != torch.float32 or A.dim() != 2:
        return False, "the CUDA kernels need A of shape (dim, N) in float32"
    if A.shape[1] > MAX_STATE:
        why = f"the CUDA kernels support N <= {MAX_STATE}, got N={A.shape[1]}"
        _warn_unsupported_once(why)
        return False, why
    if u.dim() != 3 or u.shape[-1] == 0 or u.shape[0] * u.shape[1] == 0:
        return False, "empty inputs use the reference"
    return _extension_status()


# ---------------------------------------------------------------------------------------------
# autograd glue
# ---------------------------------------------------------------------------------------------


def _as(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``t`` in ``dtype``, contiguous; ``t`` itself when it already is (no dispatcher round trips: this runs
    for every input on every call)."""
    if t is None or (t.dtype == dtype and t.is_contiguous()):
        return t
    return t.to(dtype).contiguous()


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return _as(t, torch.float32)


def _prep_bc(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """B or C as the kernel reads it: (dim, N) f32, or (batch, G, N, L) in ``dtype`` or f32."""
    if t.dim() == 2:
        return _f32(t)
    if t.dim() == 3:
        t = t.unsqueeze(1)
    return _as(t, t.dtype if t.dtype in (dtype, torch.float32) else torch.float32)


def _kernel_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens):
    """The tensors as csrc/selective_scan.cpp takes them (contiguous; delta / z in u's dtype; A, D,
    delta_bias, initial_state in fp32; variable B / C as (batch, G, N, L) of one dtype; cu_seqlens int32)."""
    dtype = u.dtype
    u_ = _as(u, dtype)
    delta_ = _as(delta, dtype)
    z_ = _as(z, dtype)
    B_, C_ = _prep_bc(B, dtype), _prep_bc(C, dtype)
    if B_.dim() == 4 and C_.dim() == 4 and B_.dtype != C_.dtype:
        B_, C_ = B_.float(), C_.float()
    cu_ = _as(cu_seqlens, torch.int32)
    return u_, delta_, _f32(A), B_, C_, _f32(D), z_, _f32(delta_bias), _f32(initial_state), cu_


class SelectiveScanCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens, softplus, return_last, need_grad):
        ext = load_extension()
        inputs = _kernel_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens)
        u_, delta_, A_, B_, C_, D_, z_, db_, h0_, cu_ = inputs
        L = u.shape[-1]
        if not need_grad:
            K = 0
        elif short_path(L, cu_ is not None):
            K = L  # one chunk: no checkpoints (the short backward keeps the row's states itself)
        elif long_backward(L, cu_ is not None, u.shape[1], B, C):
            K = LONG_BWD_CHUNK
        else:
            K = int(ext.choose_chunk(A.shape[1], L, u.shape[0] * u.shape[1]))
        out, last, ckpt = ext.fwd(u_, delta_, A_, B_, C_, D_, z_, db_, h0_, cu_, bool(softplus), bool(return_last), K)
        ctx.K = K
        ctx.softplus = bool(softplus)
        ctx.shapes = (B.shape, C.shape)
        ctx.dtypes = tuple(None if t is None else t.dtype for t in (u, delta, A, B, C, D, z, delta_bias, initial_state))
        ctx.has_init = initial_state is not None
        ctx.return_last = bool(return_last)
        if need_grad:
            ctx.save_for_backward(u_, delta_, A_, B_, C_, D_, z_, db_, h0_, cu_, ckpt)
        if return_last:
            return out, last
        return out

    @staticmethod
    def backward(ctx, dout, dlast=None):
        ext = load_extension()
        u_, delta_, A_, B_, C_, D_, z_, db_, h0_, cu_, ckpt = ctx.saved_tensors
        dout_ = _as(dout, u_.dtype)
        dlast_ = _f32(dlast)
        du, ddelta, dA, dB, dC, dD, dz, ddb, dh0 = ext.bwd(
            u_, delta_, A_, B_, C_, D_, z_, db_, h0_, cu_, ctx.softplus, ckpt, ctx.K, dout_, dlast_, ctx.has_init
        )
        if ctx.has_init and cu_ is not None:
            # empty packed sequences pass their initial state straight to last_state
            empty = (cu_[1:] == cu_[:-1])[:, None, None]
            dh0 = torch.where(empty, dlast_ if dlast_ is not None else torch.zeros_like(dh0), dh0)
        shape_b, shape_c = ctx.shapes
        raw = (du, ddelta, dA, dB.reshape(shape_b), dC.reshape(shape_c), dD, dz, ddb, dh0)
        needs = ctx.needs_input_grad
        grads = tuple(
            None if t is None or not needs[i] else (g if g.dtype == t else g.to(t))
            for i, (g, t) in enumerate(zip(raw, ctx.dtypes))
        )
        # (u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens, softplus, return_last, need_grad)
        return (*grads, None, None, None, None)


def selective_scan_cuda(
    info: ScanInputs, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state, cu_seqlens
):
    """Run the CUDA kernels (inputs already validated by :func:`.reference.check_scan_inputs`)."""
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    # checkpoints for the backward only when autograd will need them (Function.forward runs under no_grad)
    need_grad = needs_autograd(*tensors)
    if not need_grad:  # inference: no autograd node (its bookkeeping costs about as much as a small launch)
        inputs = _kernel_inputs(*tensors, cu_seqlens)
        out, last, _ = load_extension().fwd(*inputs, bool(delta_softplus), bool(return_last_state), 0)
        return (out, last) if return_last_state else out
    return SelectiveScanCuda.apply(*tensors, cu_seqlens, bool(delta_softplus), bool(return_last_state), need_grad)
