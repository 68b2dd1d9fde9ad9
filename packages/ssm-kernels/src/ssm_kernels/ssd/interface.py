"""Public SSD entry point: ``mamba_chunk_scan_combined`` (dispatches to Triton or the reference)."""

from __future__ import annotations

import torch

from ..backend import BackendUnavailableError, requested_backend, select_backend
from .reference import ssd_chunk_scan_ref, validate_ssd_inputs

__all__ = ["mamba_chunk_scan_combined"]


def mamba_chunk_scan_combined(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
    return_varlen_states: bool = False,
    *,
    backend: str | None = None,
):
    """SSD (Mamba-2) chunked scan with mamba_ssm's semantics; differentiable in every float input.

    Per batch and head, with ``dt_t = clamp(softplus?(dt_t + dt_bias), *dt_limit)`` and the state
    ``S`` of shape ``(p, n)`` starting at ``initial_states`` (zeros if ``None``)::

        S_t = exp(dt_t * A) S_{t-1} + dt_t x_t B_t^T;   y_t = S_t C_t + D x_t;   out_t = y_t * silu(z_t)

    Heads share ``B``/``C`` within groups of ``h // g``. ``seq_idx`` resets the state wherever it
    changes; ``cu_seqlens`` (batch 1) delimits packed sequences (it also implies the resets when
    ``seq_idx`` is ``None``) and ``return_varlen_states`` returns each sequence's last state.

    Args:
        chunk_size: SSD chunk length (256 is typical; any positive int, ``l`` need not be a multiple).
        dt_softplus: apply softplus to ``dt + dt_bias``.
        dt_limit: clamp range for the processed ``dt``; ``(0, inf)`` skips the clamp.
        return_final_states: also return the state after the last step.
        return_varlen_states: also return the state after each sequence of ``cu_seqlens``.
        backend: force ``"reference"`` or ``"triton"`` (default: environment / automatic).

    Returns:
        ``out`` (dtype of ``x``), then ``final_states`` and ``varlen_states`` if requested (float32,
        float64 for double inputs).

    Shapes:
        x, z, out: ``(b, l, h, p)``; dt: ``(b, l, h)``; A, dt_bias: ``(h,)``; B, C: ``(b, l, g, n)``;
        D: ``(h,)`` or ``(h, p)``; initial_states, final_states: ``(b, h, p, n)``;
        seq_idx: ``(b, l)`` int32/int64; cu_seqlens: ``(nseq + 1,)``; varlen_states: ``(nseq, h, p, n)``.
    """
    validate_ssd_inputs(
        x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, cu_seqlens, dt_limit, return_varlen_states
    )
    which = select_backend("ssd", [x, dt, A, B, C, D, z, dt_bias, initial_states], fast=("triton",), backend=backend)
    args = dict(
        D=D,
        z=z,
        dt_bias=dt_bias,
        initial_states=initial_states,
        seq_idx=seq_idx,
        cu_seqlens=cu_seqlens,
        dt_softplus=dt_softplus,
        dt_limit=dt_limit,
        return_final_states=return_final_states,
        return_varlen_states=return_varlen_states,
    )
    if which == "triton":
        if x.dtype == torch.float64:  # the kernels compute in fp32: double inputs go to the reference
            if (backend or requested_backend("ssd")).lower() == "triton":
                raise BackendUnavailableError(
                    "ssd: backend 'triton' forced but x is float64 (kernels support bf16/fp16/fp32)"
                )
            return ssd_chunk_scan_ref(x, dt, A, B, C, chunk_size, **args)
        from .triton_ssd import ssd_chunk_scan_triton

        return ssd_chunk_scan_triton(x, dt, A, B, C, chunk_size, **args)
    return ssd_chunk_scan_ref(x, dt, A, B, C, chunk_size, **args)
