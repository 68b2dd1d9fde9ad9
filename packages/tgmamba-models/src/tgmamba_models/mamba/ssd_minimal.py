"""Minimal SSD (Listing 1 of the Mamba-2 paper), its discrete/continuous forms and a sequential oracle.

The *discrete* SSM with scalar decay per head is::

    h_t = exp(A_t) * h_{t-1} + B_t x_t^T        (h: (headdim, d_state) per head)
    y_t = h_t C_t

The *continuous* (Mamba-2 block) parametrisation has a step ``dt`` and a rate ``A < 0`` per head and is
turned into the discrete one by ``discretize``: ``X <- X * dt`` and ``A <- A * dt`` (zero-order hold on A,
Euler on B, as in the paper). :func:`ssd_minimal_discrete` and :func:`segsum` (re-exported from
:mod:`ssm_kernels.ssd.minimal`) compute the discrete form chunk by chunk with matrix products; :func:`ssd_recurrent` runs the recurrence step by step
and is the oracle the tests compare it with.
"""

from __future__ import annotations

import torch

from ssm_kernels.ssd.minimal import segsum, ssd_minimal_discrete

__all__ = ["discretize", "segsum", "ssd_minimal_continuous", "ssd_minimal_discrete", "ssd_recurrent"]


def discretize(X: torch.Tensor, dt: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous -> discrete parameters: ``(X * dt, A * dt)``.

    Shapes:
        X: (batch, L, heads, headdim); dt: (batch, L, heads) (positive, after softplus);
        A: (heads,) -> X_d (batch, L, heads, headdim), A_d (batch, L, heads).
    """
    return X * dt[..., None], A[None, None, :] * dt


def ssd_minimal_continuous(
    X: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    block_len: int,
    initial_states: torch.Tensor | None = None,
):
    """SSD in the Mamba-2 block's (continuous) parametrisation via :func:`discretize`.

    Equals ``mamba_chunk_scan_combined(X, dt, A, B, C, chunk_size)`` with ``D = None``, ``z = None``
    and heads not grouped (B, C given per head).

    Shapes:
        X: (batch, L, heads, headdim); dt: (batch, L, heads); A: (heads,); B, C: (batch, L, heads, d_state).
    """
    Xd, Ad = discretize(X, dt, A)
    return ssd_minimal_discrete(Xd, Ad, B, C, block_len, initial_states=initial_states)


def ssd_recurrent(
    X: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    initial_states: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The discrete SSM one step at a time (the oracle), computed in the inputs' dtype.

    Shapes:
        X: (batch, L, heads, headdim); A: (batch, L, heads); B, C: (batch, L, heads, d_state);
        initial_states: (batch, heads, headdim, d_state) or None -> Y (batch, L, heads, headdim),
        final state (batch, heads, headdim, d_state).
    """
    b, L, h, p = X.shape
    n = B.shape[-1]
    state = X.new_zeros(b, h, p, n) if initial_states is None else initial_states
    ys = []
    # per-step views from one unbind each (indexing [:, t] in the loop makes autograd zero-fill a full-length
    # gradient per step: quadratic in L)
    for a_t, x_t, b_t, c_t in zip(A.unbind(1), X.unbind(1), B.unbind(1), C.unbind(1)):
        state = torch.exp(a_t)[..., None, None] * state + x_t[..., None] * b_t[:, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, c_t))
    return torch.stack(ys, dim=1), state
