"""Pure-PyTorch references for the fused norms.

``rms_norm_ref`` / ``layer_norm_ref`` follow mamba_ssm's ``ops.triton.layer_norm`` references
(residual add, prenorm); ``rms_norm_gated_ref`` follows ``ops.triton.layernorm_gated.rms_norm_ref``
(gate before or after the norm, group-wise normalisation). All are differentiable with autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["layer_norm_ref", "rms_norm_gated_ref", "rms_norm_ref"]


def _upcast_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _norm_ref(x, weight, bias, residual, eps, prenorm, upcast, residual_in_fp32, is_rms_norm):
    dtype = x.dtype
    if residual is not None:
        residual_dtype = residual.dtype
    else:
        residual_dtype = torch.float32 if residual_in_fp32 else dtype
    if upcast:
        cdt = _upcast_dtype(x, weight, bias, residual)
        x = x.to(cdt)
        residual = residual.to(cdt) if residual is not None else None
        weight = weight.to(cdt)
        bias = bias.to(cdt) if bias is not None else None
    else:
        residual = residual.to(x.dtype) if residual is not None else None
        weight, bias = weight.to(x.dtype), (bias.to(x.dtype) if bias is not None else None)
    if residual is not None:
        x = x + residual
    if is_rms_norm:
        rstd = torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps)
        out = x * rstd * weight
        if bias is not None:
            out = out + bias
    else:
        out = F.layer_norm(x, x.shape[-1:], weight=weight, bias=bias, eps=eps)
    out = out.to(dtype)
    if not prenorm:
        return out
    return out, x.to(residual_dtype)


def rms_norm_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    eps: float = 1e-6,
    prenorm: bool = False,
    upcast: bool = True,
    residual_in_fp32: bool = False,
):
    """RMSNorm of ``x + residual`` over the last dim, times ``weight`` (plus ``bias``).

    ``h = x + residual``; ``out = h / sqrt(mean(h**2) + eps) * weight + bias``. With ``upcast``
    (default) the arithmetic is float32 (float64 for float64 inputs), else in ``x``'s dtype.

    Shapes:
        x, residual: (..., N); weight, bias: (N,).
        Returns out (..., N) in x.dtype; with ``prenorm`` also residual_out = h (..., N) in
        residual.dtype if residual is given, else float32 if ``residual_in_fp32`` else x.dtype.
    """
    return _norm_ref(x, weight, bias, residual, eps, prenorm, upcast, residual_in_fp32, True)


def layer_norm_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    eps: float = 1e-6,
    prenorm: bool = False,
    upcast: bool = True,
    residual_in_fp32: bool = False,
):
    """LayerNorm of ``x + residual`` over the last dim (``(h - mean) / sqrt(var + eps) * weight + bias``).

    Shapes:
        x, residual: (..., N); weight, bias: (N,).
        Returns out (..., N) in x.dtype; with ``prenorm`` also residual_out (see :func:`rms_norm_ref`).
    """
    return _norm_ref(x, weight, bias, residual, eps, prenorm, upcast, residual_in_fp32, False)


def rms_norm_gated_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    eps: float = 1e-6,
    group_size: int | None = None,
    norm_before_gate: bool = True,
    upcast: bool = True,
) -> torch.Tensor:
    """Gated RMSNorm as in Mamba-2: normalise groups of the last dim, gate with ``silu(z)``.

    ``norm_before_gate``: ``out = rmsnorm(x) * weight (+ bias), then * silu(z)``;
    otherwise ``out = rmsnorm(x * silu(z)) * weight (+ bias)``. ``rmsnorm`` normalises each
    group of ``group_size`` consecutive features independently (``None``: the whole row).

    Shapes:
        x, z: (..., N); weight, bias: (N,); N divisible by group_size. Returns (..., N) in x.dtype.
    """
    dtype = x.dtype
    n = x.shape[-1]
    if upcast:
        cdt = _upcast_dtype(x, weight, bias, z)
        x, weight = x.to(cdt), weight.to(cdt)
        bias = bias.to(cdt) if bias is not None else None
        z = z.to(cdt) if z is not None else None
    if z is not None and not norm_before_gate:
        x = x * F.silu(z)
    g = n if group_size is None else group_size
    xg = x.reshape(*x.shape[:-1], n // g, g)
    rstd = torch.rsqrt(xg.square().mean(dim=-1, keepdim=True) + eps)
    out = (xg * rstd).reshape(x.shape) * weight
    if bias is not None:
        out = out + bias
    if z is not None and norm_before_gate:
        out = out * F.silu(z)
    return out.to(dtype)
