"""Public ``selective_state_update``: check the contract, pick a backend, dispatch.

Same signature as ``mamba_ssm.ops.triton.selective_state_update.selective_state_update``.
Backends: ``triton`` (CUDA tensors, or CPU under ``TRITON_INTERPRET=1``) and ``reference``.
Force one with ``SSM_KERNELS_BACKEND_STATE_UPDATE=reference|triton``. The kernels compute in float32:
float64 inputs go to the reference (forcing ``triton`` on float64 raises).

This is an inference op: it mutates ``state`` in place and has no backward. Calling it on
tensors that require grad while grad mode is on raises, rather than silently returning a
result that autograd would get wrong.
"""

from __future__ import annotations

import torch

from .._checks import check_same_device, check_tensor
from ..backend import needs_autograd, select_backend
from .reference import selective_state_update_ref

__all__ = ["selective_state_update"]

_FAST = ("triton",)
_INT_DTYPES = (torch.int32, torch.int64)


def _check_inputs(state, x, dt, A, B, C, D, z, dt_bias, state_batch_indices):
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3):
        raise ValueError(
            "x must have shape (batch, dim) (Mamba-1) or (batch, nheads, headdim) (Mamba-2), "
            f"got {getattr(x, 'shape', type(x).__name__)}"
        )
    check_tensor("x", x)
    mamba1 = x.dim() == 2
    batch = x.shape[0]
    rows = batch if state_batch_indices is None else None
    if mamba1:
        dim = x.shape[1]
        check_tensor("state", state, shape=(rows, dim, None))
        dstate = state.shape[-1]
        check_tensor("dt", dt, shape=(batch, dim))
        check_tensor("A", A, shape=(dim, dstate))
        check_tensor("B", B, shape=(batch, dstate))
        check_tensor("C", C, shape=(batch, dstate))
        check_tensor("D", D, shape=(dim,), optional=True)
        check_tensor("z", z, shape=(batch, dim), optional=True)
        check_tensor("dt_bias", dt_bias, shape=(dim,), optional=True)
    else:
        nheads, headdim = x.shape[1:]
        check_tensor("state", state, shape=(rows, nheads, headdim, None))
        dstate = state.shape[-1]
        check_tensor("dt", dt, shape=(batch, nheads, headdim))
        check_tensor("A", A, shape=(nheads, headdim, dstate))
        check_tensor("B", B, shape=(batch, None, dstate))
        ngroups = B.shape[1]
        if ngroups < 1 or nheads % ngroups != 0:
            raise ValueError(f"B must have ngroups dividing nheads={nheads}, got ngroups={ngroups}")
        check_tensor("C", C, shape=(batch, ngroups, dstate))
        check_tensor("D", D, shape=(nheads, headdim), optional=True)
        check_tensor("z", z, shape=(batch, nheads, headdim), optional=True)
        check_tensor("dt_bias", dt_bias, shape=(nheads, headdim), optional=True)
    check_tensor("state_batch_indices", state_batch_indices, shape=(batch,), dtypes=_INT_DTYPES, optional=True)
    check_same_device(
        state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, state_batch_indices=state_batch_indices
    )
    if needs_autograd(state, x, dt, A, B, C, D, z, dt_bias):
        raise RuntimeError(
            "selective_state_update is an inference op without backward; call it under torch.no_grad() "
            "or on tensors that do not require grad"
        )


def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    state_batch_indices: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """One decoding step of the selective SSM (Mamba-1 or Mamba-2 shapes); updates ``state`` in place.

    With ``dt' = softplus(dt + dt_bias)`` (plain sum without ``dt_softplus``) and head ``h``
    reading group ``g = h // (nheads // ngroups)``::

        state = state * exp(dt' * A) + dt' * B[g] * x
        out   = (state . C[g] + D * x) * silu(z)

    Arithmetic in float32; ``state`` keeps its dtype (float32 recommended). Broadcast inputs
    with stride 0 (``dt``, ``A``, ``D``, ``dt_bias`` expanded from per-head values) are read
    without copies by the Triton path. Inference only (no backward).

    Shapes (Mamba-2):
        state: (state_batch, nheads, headdim, dstate); x, dt, z: (batch, nheads, headdim);
        A: (nheads, headdim, dstate); B, C: (batch, ngroups, dstate); D, dt_bias: (nheads, headdim);
        state_batch_indices: (batch,) int32/int64 or None (then state_batch == batch).
    Shapes (Mamba-1):
        state: (state_batch, dim, dstate); x, dt, z: (batch, dim); A: (dim, dstate);
        B, C: (batch, dstate); D, dt_bias: (dim,).
    Returns:
        out shaped like x, in x.dtype.
    """
    _check_inputs(state, x, dt, A, B, C, D, z, dt_bias, state_batch_indices)
    choice = select_backend("state_update", [state, x, dt, A, B, C], fast=_FAST, backend=backend, fp32_kernels=True)
    if choice == "reference":
        return selective_state_update_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices)
    from .triton import selective_state_update_triton

    return selective_state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices)
