"""Backend selection shared by every op.

Rules
-----
* ``SSM_KERNELS_BACKEND`` forces a backend for every op: ``reference`` (pure PyTorch, any device),
  ``triton``, ``cuda`` or ``auto`` (default). A per-op variable ``SSM_KERNELS_BACKEND_<OP>``
  (for example ``SSM_KERNELS_BACKEND_GRAPH_SCAN=reference``) wins over the global one.
* ``auto`` picks the first fast backend an op offers whose toolchain is usable for the given
  tensors (CUDA tensors, Triton importable, the CUDA extension buildable), else ``reference``.
* Forcing a fast backend that cannot run raises :class:`BackendUnavailableError` naming why; it
  never silently falls back. Triton on CPU tensors is allowed only under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Iterable, Sequence

import torch

BACKENDS = ("auto", "reference", "triton", "cuda")


class BackendUnavailableError(RuntimeError):
    """A backend was forced (or requested) that cannot run here."""


@functools.cache
def triton_available() -> bool:
    """True when ``triton`` can be imported (checked once, without importing it)."""
    return importlib.util.find_spec("triton") is not None


def needs_autograd(*tensors) -> bool:
    """Whether autograd will record an op on these tensors. Inference calls skip the ops'
    ``torch.autograd.Function`` (its bookkeeping costs as much as a small kernel launch on the host)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for host-side grids and block counts. ``triton.cdiv`` is a constexpr function
    whose host calls cost microseconds each (argument unwrapping), several per kernel launch."""
    return -(-a // b)


def next_pow2(x: int) -> int:
    """Smallest power of two >= ``x`` (1 for ``x <= 1``); the host-side ``triton.next_power_of_2``."""
    return 1 << max(0, (int(x) - 1).bit_length())


def triton_interpret() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


DOT_PRECISIONS = ("ieee", "tf32", "tf32x3", "3xtf32")


def dot_precision(dtype: torch.dtype, override_env: str, tf32_dtypes: tuple[torch.dtype, ...]) -> str:
    """Precision of the fp32 ``tl.dot`` products in a Triton op's kernels (see ``ssm_kernels._tl_dot``).

    ``override_env`` (the op's variable, e.g. ``SSM_KERNELS_GRAPH_SCAN_PRECISION``) forces one of
    :data:`DOT_PRECISIONS`. Otherwise inputs of a dtype in ``tf32_dtypes`` get ``"tf32"`` (the op chooses where
    tf32 is fine enough for those inputs), and the others follow PyTorch's global fp32 matmul precision:
    ``"highest"`` (PyTorch's default) gives ``"3xtf32"`` (about fp32 accuracy), ``"high"`` or ``"medium"`` give
    ``"tf32"``, as does ``SSM_KERNELS_TF32=1``.
    """
    prec = os.environ.get(override_env)
    if prec is None:
        tf32 = (
            dtype in tf32_dtypes
            or os.environ.get("SSM_KERNELS_TF32", "0") == "1"
            or torch.get_float32_matmul_precision() != "highest"
        )
        prec = "tf32" if tf32 else "3xtf32"
    if prec not in DOT_PRECISIONS:
        raise ValueError(f"{override_env}={prec!r}: expected one of {', '.join(DOT_PRECISIONS)}")
    return prec


def requested_backend(op: str) -> str:
    """The backend asked for by the environment for ``op`` (``auto`` when nothing is set)."""
    key = f"SSM_KERNELS_BACKEND_{op.upper()}"
    value = os.environ.get(key) or os.environ.get("SSM_KERNELS_BACKEND") or "auto"
    value = value.strip().lower()
    if value not in BACKENDS:
        raise ValueError(f"{key if key in os.environ else 'SSM_KERNELS_BACKEND'}={value!r}: expected one of {BACKENDS}")
    return value


def _all_cuda(tensors: Iterable[torch.Tensor | None]) -> bool:
    ts = [t for t in tensors if t is not None]
    return bool(ts) and all(t.is_cuda for t in ts)


def triton_usable(tensors: Iterable[torch.Tensor | None]) -> tuple[bool, str]:
    """Whether a Triton kernel can run on these tensors, and if not, why."""
    if not triton_available():
        return False, "triton is not installed (pip install 'ssm-kernels[triton]')"
    if triton_interpret():
        return True, ""
    if not _all_cuda(tensors):
        return False, "Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 on CPU)"
    return True, ""


def select_backend(
    op: str,
    tensors: Sequence[torch.Tensor | None],
    fast: Sequence[str] = ("triton",),
    cuda_usable=None,
    backend: str | None = None,
    fp32_kernels: bool = False,
) -> str:
    """Pick the backend for one call of ``op``.

    Args:
        op: short op name used for the per-op environment variable (e.g. ``"graph_scan"``).
        tensors: the call's tensors (used to decide device eligibility).
        fast: fast backends this op implements, in order of preference.
        cuda_usable: callable ``(tensors) -> (bool, reason)`` for ops with a CUDA backend.
        backend: explicit choice from the caller (``None`` = use the environment).
        fp32_kernels: the fast kernels compute in fp32/fp16/bf16 only: float64 inputs go to the
            reference under ``auto``, and forcing a fast backend on them raises.
    """
    choice = (backend or requested_backend(op)).lower()
    if choice not in BACKENDS:
        raise ValueError(f"backend={choice!r}: expected one of {BACKENDS}")
    checks = {"triton": triton_usable}
    if cuda_usable is not None:
        checks["cuda"] = cuda_usable
    if choice == "reference":
        return "reference"
    has_f64 = fp32_kernels and any(t is not None and t.dtype == torch.float64 for t in tensors)
    if choice == "auto":
        if has_f64:
            return "reference"
        for name in fast:
            ok, _ = checks[name](tensors)
            if ok:
                return name
        return "reference"
    if has_f64 and choice in fast:
        raise BackendUnavailableError(
            f"{op}: backend {choice!r} forced but an input is float64 (kernels: fp32/fp16/bf16)"
        )
    if choice not in fast:
        raise BackendUnavailableError(
            f"{op}: backend {choice!r} is not implemented (available: reference, {', '.join(fast)})"
        )
    ok, why = checks[choice](tensors)
    if not ok:
        raise BackendUnavailableError(f"{op}: backend {choice!r} forced but unusable: {why}")
    return choice
