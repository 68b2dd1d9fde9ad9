"""Public entry point of the vertex mixing: Triton for a per-step mix of CUDA tensors, PyTorch otherwise.

Dispatch (``ssm_kernels.backend.select_backend``, op name ``vertex_mix``): Triton for CUDA tensors when Triton is
importable and the mix varies over time (T = L > 1), the reference otherwise (a mix shared by all steps is one
batched cuBLAS product on the channel-major layout, without copies, so it needs no kernel). ``SSM_KERNELS_BACKEND``
or ``SSM_KERNELS_BACKEND_VERTEX_MIX`` (``auto``/``reference``/``triton``) force a backend; float64 inputs go to the
reference under ``auto``.
"""

from __future__ import annotations

import torch

from ..backend import select_backend
from .reference import check_vertex_mix_inputs, vertex_mix_ref

__all__ = ["vertex_mix_fn"]


def vertex_mix_fn(x: torch.Tensor, mix: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """Mix a channel-major graph signal across vertices with a (possibly per-step) vertex operator.

    ::

        out[b, i, c, l] = sum_j mix[b, t, i, j] * x[b, j, c, l]  (+ residual[b, i, c, l])    t = l, or 0 if T = 1

    ``mix[..., i, j]`` weights vertex j into vertex i (a dense adjacency ``adj[b, t, i, j]`` of j -> i edges, or a
    normalised operator built from it). This is a graph convolution's propagation step on the layout the SSM kernels
    use, (batch, V, channels, L), with no permuted copies: TGMamba's input-side graph convolution is
    ``vertex_mix_fn(u W_1, M_1, residual=u W_0)``. Gradients flow to x, mix and residual.

    Shapes:
        x: (batch, V, C, L), fp32 / bf16 / fp16 / fp64; time (the last dim) contiguous for the Triton path (else it
            is copied once)
        mix: (batch or 1, T, V, V) with T = 1 (one graph for all steps) or T = L; any floating dtype, any strides
        residual: like x (shape and dtype), optional

    Returns:
        (batch, V, C, L) in x's dtype; the products are computed in float32 (float64 for float64 inputs).

    Raises:
        ValueError / TypeError naming the argument when a shape, dtype or device is wrong.
    """
    check_vertex_mix_inputs(x, mix, residual)
    backend = select_backend("vertex_mix", [x, mix, residual], fast=("triton",), fp32_kernels=True)
    if backend == "triton" and mix.shape[1] > 1:
        from .triton import vertex_mix_triton

        return vertex_mix_triton(x, mix, residual)
    return vertex_mix_ref(x, mix, residual)
