"""Public causal conv1d ops: check the contract, pick a backend, dispatch.

Same signatures as the ``causal_conv1d`` package (``causal_conv1d_fn``, ``causal_conv1d_update``),
so switching is a change of import. Backends: ``triton`` (CUDA tensors, or CPU under
``TRITON_INTERPRET=1``) and ``reference`` (pure PyTorch, anywhere). Force one with
``SSM_KERNELS_BACKEND_CAUSAL_CONV1D=reference|triton`` (or the global ``SSM_KERNELS_BACKEND``).
The kernels compute in float32: float64 inputs go to the reference (forcing ``triton`` on
float64 raises).
"""

from __future__ import annotations

import torch

from .._checks import check_same_device, check_tensor
from ..backend import needs_autograd, select_backend
from .reference import causal_conv1d_ref, causal_conv1d_update_ref

__all__ = ["causal_conv1d_fn", "causal_conv1d_update"]

_FAST = ("triton",)
_INT_DTYPES = (torch.int32, torch.int64)
MAX_TRITON_WIDTH = 8


def _check_activation(activation):
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")


def causal_conv1d_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    return_final_states: bool = False,
    final_states_out: torch.Tensor | None = None,
    activation: str | None = None,
    backend: str | None = None,
):
    """Causal depthwise conv1d with optional SiLU, differentiable in every floating input.

    ``out[b, d, t] = act(bias[d] + sum_{k<W} weight[d, k] * xp[b, d, t + k])`` with ``xp`` = ``x``
    left-padded by ``initial_states`` (zeros if ``None``). With ``seq_idx`` a tap only reads
    positions of the same sequence (packed batches; the initial state belongs to the sequence of
    position 0). Arithmetic is in float32; ``x`` may be float32, float16 or bfloat16 and may be
    channel-last (``x.stride(1) == 1``).

    Shapes:
        x: (batch, dim, L); weight: (dim, width); bias: (dim,) or None;
        seq_idx: (batch, L) int32/int64 or None; initial_states: (batch, dim, width - 1) or None;
        final_states_out: (batch, dim, width - 1) or None (written when given).
        Returns out (batch, dim, L) in x.dtype, plus final_states (batch, dim, width - 1) when
        ``return_final_states``.
    """
    _check_activation(activation)
    check_tensor("x", x, shape=(None, None, None))
    batch, dim, seqlen = x.shape
    check_tensor("weight", weight, shape=(dim, None))
    width = weight.shape[1]
    if width < 1:
        raise ValueError(f"weight must have shape (dim, width) with width >= 1, got {tuple(weight.shape)}")
    check_tensor("bias", bias, shape=(dim,), optional=True)
    check_tensor("seq_idx", seq_idx, shape=(batch, seqlen), dtypes=_INT_DTYPES, optional=True)
    check_tensor("initial_states", initial_states, shape=(batch, dim, width - 1), optional=True)
    check_tensor("final_states_out", final_states_out, shape=(batch, dim, width - 1), optional=True)
    if final_states_out is not None and not return_final_states:
        raise ValueError("final_states_out is given but return_final_states=False")
    check_same_device(
        x=x, weight=weight, bias=bias, seq_idx=seq_idx, initial_states=initial_states, final_states_out=final_states_out
    )
    choice = select_backend(
        "causal_conv1d", [x, weight, bias, initial_states], fast=_FAST, backend=backend, fp32_kernels=True
    )
    if choice == "triton" and width > MAX_TRITON_WIDTH:
        raise ValueError(f"weight width {width} > {MAX_TRITON_WIDTH} is not supported by the triton backend")
    if choice == "reference":
        return causal_conv1d_ref(
            x, weight, bias, seq_idx, initial_states, return_final_states, final_states_out, activation
        )
    from .triton import causal_conv1d_triton

    return causal_conv1d_triton(
        x, weight, bias, seq_idx, initial_states, return_final_states, final_states_out, activation
    )


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    cache_seqlens: torch.Tensor | None = None,
    conv_state_indices: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Decoding step(s) of the causal conv1d; updates ``conv_state`` in place (inference only).

    Without ``cache_seqlens`` the state is a shift register holding the last ``state_len``
    inputs, oldest first. With ``cache_seqlens`` it is a circular buffer: inputs are written at
    ``(cache_seqlens[b] + i) % state_len`` and the ``width - 1`` previous inputs are read just
    before that position. ``conv_state_indices[b]`` selects the ``conv_state`` row used by batch
    entry ``b``. An inference op: the Triton backend has no backward and raises if grad mode is on
    and an input requires grad; the reference is differentiable in x, weight and bias (the incoming
    state is treated as a constant).

    Shapes:
        x: (batch, dim) or (batch, dim, seqlen); conv_state: (state_batch, dim, state_len) with
        state_len >= width - 1 (and >= seqlen with cache_seqlens); weight: (dim, width);
        bias: (dim,) or None; cache_seqlens: (batch,) int32/int64 or None;
        conv_state_indices: (batch,) int32/int64 or None (then state_batch == batch).
        Returns out shaped like x, in x.dtype.
    """
    _check_activation(activation)
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3):
        raise ValueError(
            f"x must have shape (batch, dim) or (batch, dim, seqlen), got {getattr(x, 'shape', type(x).__name__)}"
        )
    check_tensor("x", x)
    batch, dim = x.shape[:2]
    seqlen = x.shape[2] if x.dim() == 3 else 1
    check_tensor("weight", weight, shape=(dim, None))
    width = weight.shape[1]
    state_rows = batch if conv_state_indices is None else None
    check_tensor("conv_state", conv_state, shape=(state_rows, dim, None))
    state_len = conv_state.shape[2]
    if state_len < width - 1:
        raise ValueError(f"conv_state must have state_len >= width - 1 = {width - 1}, got {state_len}")
    check_tensor("bias", bias, shape=(dim,), optional=True)
    check_tensor("cache_seqlens", cache_seqlens, shape=(batch,), dtypes=_INT_DTYPES, optional=True)
    if cache_seqlens is not None and seqlen > state_len:
        raise ValueError(f"with cache_seqlens, seqlen ({seqlen}) must be <= conv_state's state_len ({state_len})")
    check_tensor("conv_state_indices", conv_state_indices, shape=(batch,), dtypes=_INT_DTYPES, optional=True)
    check_same_device(
        x=x,
        conv_state=conv_state,
        weight=weight,
        bias=bias,
        cache_seqlens=cache_seqlens,
        conv_state_indices=conv_state_indices,
    )
    choice = select_backend(
        "causal_conv1d", [x, conv_state, weight, bias], fast=_FAST, backend=backend, fp32_kernels=True
    )
    if choice == "triton" and width > MAX_TRITON_WIDTH:
        raise ValueError(f"weight width {width} > {MAX_TRITON_WIDTH} is not supported by the triton backend")
    if choice == "reference":
        return causal_conv1d_update_ref(x, conv_state, weight, bias, activation, cache_seqlens, conv_state_indices)
    if needs_autograd(x, conv_state, weight, bias):
        raise RuntimeError(
            "causal_conv1d_update's triton backend has no backward; call it under torch.no_grad() (decoding) "
            "or force SSM_KERNELS_BACKEND_CAUSAL_CONV1D=reference"
        )
    from .triton import causal_conv1d_update_triton

    return causal_conv1d_update_triton(x, conv_state, weight, bias, activation, cache_seqlens, conv_state_indices)
