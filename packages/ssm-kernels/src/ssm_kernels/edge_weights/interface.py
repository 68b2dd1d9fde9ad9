"""Public entry point of the learned edge weights: Triton for CUDA tensors, PyTorch otherwise.

Dispatch (``ssm_kernels.backend.select_backend``, op name ``edge_weights``): Triton for CUDA tensors when Triton is
importable and V <= 64, the reference otherwise. ``SSM_KERNELS_BACKEND`` or ``SSM_KERNELS_BACKEND_EDGE_WEIGHTS``
(``auto``/``reference``/``triton``) force a backend; float64 inputs go to the reference under ``auto``.
"""

from __future__ import annotations

import torch

from ..backend import BackendUnavailableError, requested_backend, select_backend
from .reference import check_edge_weights_inputs, edge_weights_ref, out_dtype

__all__ = ["edge_weights_fn"]


def edge_weights_fn(
    q: torch.Tensor | None,
    k: torch.Tensor | None,
    g: torch.Tensor | None,
    adj0: torch.Tensor | None = None,
    skip: torch.Tensor | None = None,
    *,
    attn_scale: float,
    threshold: float,
    dyn_scale: float,
) -> torch.Tensor:
    """Per-step dense edge weights from vertex embeddings: TGMamba's EdgeLearner graph, fused.

    For every batch row b and step t, with ``[.]`` an indicator::

        S     = softmax_j(q[b, t] @ k[b, t]^T * attn_scale)                 (V, V), row softmax
        base  = where(sym >= threshold, sym, 0) + adj0[b, t]                sym = (S + S^T) / 2
        dyn   = sigmoid(g[b, t] @ g[b, t]^T * dyn_scale)
        out   = skip * base + (1 - skip) * dyn * [base > 0]                 with the diagonal set to 0

    Without q, k (no attention) ``base = adj0``; without g ``out = base`` (diagonal 0). ``out[..., i, j]`` is the
    weight of the edge j -> i. Gradients flow to q, k, g, adj0 and skip (not through the threshold and ``[base > 0]``
    masks, whose entries have zero gradient).

    Shapes:
        q, k: (batch, T, V, E) or both None; g: (batch, T, V, F) or None (at least one of q, g)
        adj0: (1 or batch, 1 or T, V, V) or None (required without q); skip: 0-dim, required with g (the caller
            clamps it to [0, 1])

    Returns:
        (batch, T, V, V) in the promoted dtype of the inputs; the Triton path computes in float32.

    Raises:
        ValueError / TypeError naming the argument when a shape, dtype, device or constant is wrong.
    """
    batch, T, V = check_edge_weights_inputs(q, k, g, adj0, skip, attn_scale, threshold, dyn_scale)
    backend = select_backend("edge_weights", [q, k, g, adj0, skip], fast=("triton",), fp32_kernels=True)
    if backend == "triton":
        from .triton import MAX_VERTICES, edge_weights_triton

        if V <= MAX_VERTICES:
            return edge_weights_triton(q, k, g, adj0, skip, attn_scale, threshold, dyn_scale, out_dtype(q, k, g, adj0))
        if requested_backend("edge_weights") == "triton":
            raise BackendUnavailableError(f"edge_weights' Triton kernels take V <= {MAX_VERTICES} vertices, got {V}")
    return edge_weights_ref(q, k, g, adj0, skip, attn_scale=attn_scale, threshold=threshold, dyn_scale=dyn_scale)
