"""Test helpers reused by all three packages' test suites: devices, tolerances, input factories.

The tolerance rule (from flash-attention): a fast path's error against a high-precision
reference may be at most ``factor`` (default 2) times the error of the same reference computed
in the fast path's own precision, plus a small absolute floor.
"""

from __future__ import annotations

import os

import pytest
import torch

from ..backend import triton_available, triton_interpret

__all__ = [
    "assert_close_to_reference",
    "autograd_node_count",
    "cuda_available",
    "devices",
    "max_rel_err",
    "poison_",
    "requires_cuda",
    "requires_triton",
    "seed_all",
]


def cuda_available() -> bool:
    return torch.cuda.is_available()


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
requires_triton = pytest.mark.skipif(
    not triton_available() or not (torch.cuda.is_available() or triton_interpret()),
    reason="needs triton with a CUDA GPU or TRITON_INTERPRET=1",
)


def devices() -> list[str]:
    """Devices to parametrise over: always cpu, plus cuda when present."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def seed_all(seed: int = 0) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill a fresh allocation with NaN (integers: a large sentinel) so unwritten output shows."""
    if t.is_floating_point():
        return t.fill_(float("nan"))
    return t.fill_(-(2**30))


def autograd_node_count(out: torch.Tensor, name: str) -> int:
    """Number of autograd nodes of type ``name`` (e.g. ``"SelectBackward0"``) reachable from ``out``.

    Used to check that a loop over time builds a graph whose size does not depend on the length in ways it
    should not (per-step ``x[..., t]`` indexing makes one full-length zero-filled gradient per step).
    """
    seen, stack, n = set(), [out.grad_fn], 0
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        n += type(fn).__name__ == name
        stack.extend(f for f, _ in fn.next_functions)
    return n


def max_rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref||_inf / ||ref||_inf, in float64; NaN anywhere gives inf.

    A reference that is exactly zero everywhere (e.g. the gradient of the decay A at L = 1 with no
    initial state, which the maths makes 0 while a fused kernel computes it as a difference of equal
    rounded terms) has no scale of its own: the error is then the absolute error (unit scale).
    """
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out64).all():
        return float("inf")
    if not out64.numel():
        return 0.0
    scale = ref64.abs().max().item()
    return (out64 - ref64).abs().max().item() / (scale if scale > 0 else 1.0)


def assert_close_to_reference(
    name: str,
    out: torch.Tensor,
    ref_hi: torch.Tensor,
    ref_lo: torch.Tensor | None = None,
    factor: float = 2.0,
    floor: float | None = None,
) -> None:
    """Assert ``out`` is as close to ``ref_hi`` as the reference's own low-precision run is.

    Args:
        name: printed in the failure message (e.g. ``"dA"``).
        out: the fast path's result.
        ref_hi: the reference computed in float64 (or float32) on upcast inputs.
        ref_lo: the reference computed in ``out``'s precision; ``None`` uses only ``floor``.
        factor: allowed multiple of the reference's own error.
        floor: absolute floor on the allowed relative error (defaults by dtype).
    """
    assert out.shape == ref_hi.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref_hi.shape)}"
    # a reference that overflows would allow any error (its own error is then infinite): such inputs test nothing
    assert torch.isfinite(ref_hi).all(), f"{name}: the reference is not finite (inputs that diverge)"
    if floor is None:
        floor = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}.get(
            out.dtype, 1e-4
        )
        if os.environ.get("SSM_KERNELS_TF32", "0") == "1" and out.dtype == torch.float32:
            floor = 1e-3
    err = max_rel_err(out, ref_hi)
    allowed = floor
    if ref_lo is not None:
        allowed = max(allowed, factor * max_rel_err(ref_lo, ref_hi))
    assert err <= allowed, f"{name}: relative error {err:.3e} exceeds allowed {allowed:.3e}"
