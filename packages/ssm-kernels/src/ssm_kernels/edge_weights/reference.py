"""Reference edge weights (pure PyTorch) and the input contract shared with the Triton path."""

from __future__ import annotations

import math

import torch

from .._checks import check_same_device, check_tensor

__all__ = ["check_edge_weights_inputs", "edge_weights_ref", "out_dtype"]


def _check_rows(name: str, t: torch.Tensor, like: tuple[int, int, int] | None) -> tuple[int, int, int]:
    check_tensor(name, t)
    if t.dim() != 4:
        raise ValueError(f"{name} must have shape (batch, T, V, features), got {tuple(t.shape)}")
    if like is not None and tuple(t.shape[:3]) != like:
        want = "(" + ", ".join(str(s) for s in like) + ", features)"
        raise ValueError(f"{name} must have shape {want} like the other embeddings, got {tuple(t.shape)}")
    return tuple(t.shape[:3])


def check_edge_weights_inputs(
    q: torch.Tensor | None,
    k: torch.Tensor | None,
    g: torch.Tensor | None,
    adj0: torch.Tensor | None,
    skip: torch.Tensor | None,
    attn_scale: float,
    threshold: float,
    dyn_scale: float,
) -> tuple[int, int, int]:
    """Raise an error naming the argument when a shape, dtype, device or constant is wrong; returns (batch, T, V)."""
    if (q is None) != (k is None):
        raise ValueError("q and k must be given together (the attention graph) or both be None")
    if q is None and g is None:
        raise ValueError("nothing to compute: give q and k (attention), g (similarity re-weighting) or both")
    if q is None and adj0 is None:
        raise ValueError("adj0 is required without attention (q, k): it is the graph that g re-weights")
    rows = None
    if q is not None:
        rows = _check_rows("q", q, None)
        _check_rows("k", k, rows)
        if k.shape[-1] != q.shape[-1]:
            raise ValueError(f"k must have q's feature size {q.shape[-1]}, got {k.shape[-1]}")
    if g is not None:
        rows = _check_rows("g", g, rows)
        check_tensor("skip", skip, shape=())
    batch, T, V = rows
    if adj0 is not None:
        check_tensor("adj0", adj0)
        if (
            adj0.dim() != 4
            or adj0.shape[0] not in (1, batch)
            or adj0.shape[1] not in (1, T)
            or adj0.shape[2:] != (V, V)
        ):
            raise ValueError(
                f"adj0 must have shape (1 or batch={batch}, 1 or T={T}, V={V}, V={V}), got {tuple(adj0.shape)}"
            )
    for name, value in (("attn_scale", attn_scale), ("threshold", threshold), ("dyn_scale", dyn_scale)):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value}")
    check_same_device(q=q, k=k, g=g, adj0=adj0, skip=skip)
    return batch, T, V


def out_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The result's dtype: the promotion of the given inputs' dtypes (float32 for fp32 q, k and bf16 g)."""
    dt = None
    for t in tensors:
        if t is not None:
            dt = t.dtype if dt is None else torch.promote_types(dt, t.dtype)
    return dt


def edge_weights_ref(
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
    """Reference of :func:`ssm_kernels.edge_weights_fn`, in the promoted dtype of the inputs (see there)."""
    batch, T, V = check_edge_weights_inputs(q, k, g, adj0, skip, attn_scale, threshold, dyn_scale)
    dt = out_dtype(q, k, g, adj0)
    base = None
    if q is not None:
        s = torch.softmax(torch.matmul(q.to(dt), k.to(dt).transpose(-1, -2)) * attn_scale, dim=-1)
        s = 0.5 * (s + s.transpose(-1, -2))
        base = torch.where(s >= threshold, s, 0.0)
        if adj0 is not None:
            base = base + adj0.to(dt)
    else:
        base = adj0.to(dt).expand(batch, T, V, V)
    if g is not None:
        gd = g.to(dt)
        dyn = torch.sigmoid(torch.matmul(gd, gd.transpose(-1, -2)) * dyn_scale)
        w = skip.to(dt)
        base = w * base + (1.0 - w) * dyn * (base > 0).to(dt)
    return base.masked_fill(torch.eye(V, dtype=torch.bool, device=base.device), 0.0)
