"""Public entry point of the graph selective scan: dispatches to Triton or the reference.

Dispatch (``ssm_kernels.backend.select_backend``, op name ``graph_scan``): Triton for CUDA
tensors when Triton is importable, the pure-PyTorch reference otherwise. ``SSM_KERNELS_BACKEND``
or ``SSM_KERNELS_BACKEND_GRAPH_SCAN`` (``auto``/``reference``/``triton``) force a backend; under
``TRITON_INTERPRET=1`` a forced ``triton`` runs the kernels on CPU tensors. In ``auto`` mode
float64 inputs go to the reference (the kernels compute in fp32).
"""

from __future__ import annotations

import torch

from ..backend import requested_backend, select_backend
from .reference import check_graph_scan_inputs, graph_selective_scan_ref

__all__ = ["graph_selective_scan_fn"]


def graph_selective_scan_fn(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    mix_A: torch.Tensor,
    W_A: torch.Tensor,
    mix_C: torch.Tensor | None = None,
    W_C: torch.Tensor | None = None,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    return_last_state: bool = False,
):
    """Graph selective scan: TGMamba's state-mixing SSM recurrence, fused over time on GPU.

    For every batch element b and channel d, with the state ``H_t`` in ``R^{V x N}``::

        Delta_t[v] = softplus(delta[b, v, d, t] + delta_bias[d])    (plain sum without softplus)
        H_0 = initial_state[b, :, d, :]  (zeros if None)
        H_t = (sum_k mix_A[b, t, k] @ H_{t-1} @ W_A[k]) * exp(Delta_t[:, None] * A[d])
              + (Delta_t * u[b, :, d, t])[:, None] * B[b, :, :, t]
        G_t = sum_k mix_C[b, t, k] @ H_t @ W_C[k]                  (G_t = H_t without mix_C)
        y[b, :, d, t] = (G_t * C[b, :, :, t]).sum(-1) + D[d] * u[b, :, d, t]
        out = y * silu(z)                                          (y without z)

    ``mix[..., i, j]`` weights vertex j's state into vertex i. With K = 1, mix_A = I, W_A = I and
    no mix_C this is Mamba's selective scan on (batch * V, D, L). All floating inputs get
    gradients. Inputs may be fp32, bf16 or fp16; the state accumulates in fp32.

    Shapes:
        u, delta, z: (batch, V, D, L)
        A: (D, N), float32 (float64 accepted)
        B, C: (batch, V, N, L)
        mix_A, mix_C: (batch, T, K, V, V) with T = 1 (shared by all steps) or T = L
        W_A, W_C: (K, N, N), or (K + 1, N, N): then the first W acts with an implicit identity vertex operator,
            ``H_{t-1} @ W[0] + sum_k mix[b, t, k - 1] @ H_{t-1} @ W[k]`` (GraphConv / ChebConv root terms without a
            stored identity; the kernels skip its vertex products)
        D, delta_bias: (D,)
        initial_state: (batch, V, D, N)

    Returns:
        ``out`` (batch, V, D, L) in u's dtype, or ``(out, last_state)`` with last_state
        (batch, V, D, N) float32 (float64 from the reference on float64 inputs).

    Raises:
        ValueError / TypeError naming the argument when a shape, dtype or device is wrong.
    """
    args = (u, delta, A, B, C, mix_A, W_A, mix_C, W_C, D, z, delta_bias)
    check_graph_scan_inputs(*args, initial_state)
    backend = select_backend("graph_scan", [*args, initial_state], fast=("triton",))
    if backend == "triton" and u.dtype == torch.float64 and requested_backend("graph_scan") == "auto":
        backend = "reference"
    if backend == "triton":
        from .triton import _apply

        return _apply(*args, delta_softplus, initial_state, return_last_state)
    return graph_selective_scan_ref(*args, delta_softplus, initial_state, return_last_state)
