"""Reference vertex mixing (pure PyTorch) and the input contract shared with the Triton path."""

from __future__ import annotations

import torch

from .._checks import check_same_device, check_tensor

__all__ = ["check_vertex_mix_inputs", "vertex_mix_ref"]


def check_vertex_mix_inputs(x: torch.Tensor, mix: torch.Tensor, residual: torch.Tensor | None) -> None:
    """Raise an error naming the argument when a shape, dtype or device is wrong."""
    check_tensor("x", x)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (batch, V, C, L), got {tuple(x.shape)}")
    batch, V, _, L = x.shape
    check_tensor("mix", mix)
    if mix.dim() != 4 or mix.shape[0] not in (1, batch) or mix.shape[1] not in (1, L) or mix.shape[2:] != (V, V):
        raise ValueError(f"mix must have shape (1 or batch={batch}, 1 or L={L}, V={V}, V={V}), got {tuple(mix.shape)}")
    check_tensor("residual", residual, shape=tuple(x.shape), dtypes=(x.dtype,), optional=True)
    check_same_device(x=x, mix=mix, residual=residual)


def _compute_dtype(x: torch.Tensor, mix: torch.Tensor) -> torch.dtype:
    """float64 when either input is float64, else float32 (half inputs are mixed in float32)."""
    return torch.promote_types(torch.promote_types(x.dtype, mix.dtype), torch.float32)


def vertex_mix_ref(x: torch.Tensor, mix: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """Reference of :func:`ssm_kernels.vertex_mix_fn`: the mixing in float32 (float64 for float64 inputs), the
    result in x's dtype. A graph shared by all steps (T = 1) is one batched product over the flattened (C, L)
    columns (no copy of x); a per-step graph (T = L) mixes in the time-major layout and returns a view of it."""
    check_vertex_mix_inputs(x, mix, residual)
    batch, V, C, L = x.shape
    ct = _compute_dtype(x, mix)
    xc, m = x.to(ct), mix.to(ct)
    if mix.shape[1] == 1:
        out = torch.matmul(m[:, 0], xc.reshape(batch, V, C * L)).view(batch, V, C, L)
        if residual is not None:
            out = out + residual.to(ct)
        return out.to(x.dtype)
    # time-major (b, L, V, C) storage, returned as a (b, V, C, L) view: the reference graph scan reads one step's
    # (V, C) slice at a time, contiguous in this layout
    out = torch.matmul(m, xc.permute(0, 3, 1, 2))
    if residual is not None:
        out = out + residual.to(ct).permute(0, 3, 1, 2)
    return out.to(x.dtype).permute(0, 2, 3, 1)
