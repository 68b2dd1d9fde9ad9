"""Public fused norms: functions with mamba_ssm's signatures and the modules built on them.

* :func:`rms_norm_fn` / :func:`layer_norm_fn`: norm of ``x + residual`` times ``weight`` (+ bias),
  optional prenorm output of the residual stream (``mamba_ssm.ops.triton.layer_norm``).
* :func:`rms_norm_gated_fn` and :class:`RMSNormGated`: Mamba-2's gated RMSNorm
  (``mamba_ssm.ops.triton.layernorm_gated``).
* :class:`RMSNorm`, :class:`LayerNorm`: modules with ``forward(x, residual=None, prenorm=False,
  residual_in_fp32=False)``.

Backends: ``triton`` (CUDA tensors, or CPU under ``TRITON_INTERPRET=1``) and ``reference``.
Force one with ``SSM_KERNELS_BACKEND_NORMS=reference|triton``. The kernels compute in float32:
float64 inputs go to the reference (forcing ``triton`` on float64 raises). The dual-input (``x1``,
``weight1``, ``bias1``), ``rowscale`` and dropout extras of flash-attn's fused norm are not
implemented and raise :class:`NotImplementedError` naming the argument.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_same_device, check_tensor
from ..backend import select_backend
from .reference import layer_norm_ref, rms_norm_gated_ref, rms_norm_ref

__all__ = ["LayerNorm", "RMSNorm", "RMSNormGated", "layer_norm_fn", "rms_norm_fn", "rms_norm_gated_fn"]

_FAST = ("triton",)


def _reject_extras(x1, weight1, bias1, dropout_p, rowscale, return_dropout_mask):
    for name, value in (("x1", x1), ("weight1", weight1), ("bias1", bias1), ("rowscale", rowscale)):
        if value is not None:
            raise NotImplementedError(
                f"{name} (flash-attn's dual-input/rowscale extras) is not supported by ssm_kernels"
            )
    if dropout_p:
        raise NotImplementedError(f"dropout_p={dropout_p} is not supported by ssm_kernels' fused norm (use 0.0)")
    if return_dropout_mask:
        raise NotImplementedError("return_dropout_mask=True is not supported by ssm_kernels' fused norm")


def _check_row_inputs(x, weight, bias, **same_as_x):
    check_tensor("x", x)
    if x.dim() < 1:
        raise ValueError("x must have shape (..., N) with at least one dimension")
    n = x.shape[-1]
    check_tensor("weight", weight, shape=(n,))
    check_tensor("bias", bias, shape=(n,), optional=True)
    for name, t in same_as_x.items():
        check_tensor(name, t, shape=tuple(x.shape), optional=True)
    check_same_device(x=x, weight=weight, bias=bias, **same_as_x)


def layer_norm_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    x1: torch.Tensor | None = None,
    weight1: torch.Tensor | None = None,
    bias1: torch.Tensor | None = None,
    eps: float = 1e-6,
    dropout_p: float = 0.0,
    rowscale: torch.Tensor | None = None,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    is_rms_norm: bool = False,
    return_dropout_mask: bool = False,
    backend: str | None = None,
):
    """Fused (residual add +) LayerNorm or RMSNorm over the last dim, differentiable.

    ``h = x + residual``; LayerNorm: ``out = (h - mean(h)) / sqrt(var(h) + eps) * weight + bias``;
    RMSNorm (``is_rms_norm``): ``out = h / sqrt(mean(h**2) + eps) * weight + bias``.
    Statistics are computed in float32.

    Shapes:
        x, residual: (..., N) (float32/float16/bfloat16; residual may differ in dtype);
        weight, bias: (N,).
    Returns:
        out (..., N) in x.dtype; with ``prenorm`` the tuple ``(out, residual_out)`` where
        ``residual_out = h`` in residual.dtype if residual is given, else float32 when
        ``residual_in_fp32``, else x.dtype.
    """
    _reject_extras(x1, weight1, bias1, dropout_p, rowscale, return_dropout_mask)
    _check_row_inputs(x, weight, bias, residual=None)
    if residual is not None:
        check_tensor("residual", residual, shape=tuple(x.shape))
        check_same_device(x=x, residual=residual)
    choice = select_backend("norms", [x, weight, bias, residual], fast=_FAST, backend=backend, fp32_kernels=True)
    if choice == "reference":
        ref = rms_norm_ref if is_rms_norm else layer_norm_ref
        return ref(x, weight, bias, residual, eps, prenorm, True, residual_in_fp32)
    from .triton import layer_norm_triton

    return layer_norm_triton(x, weight, bias, residual, eps, prenorm, residual_in_fp32, is_rms_norm)


def rms_norm_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    x1: torch.Tensor | None = None,
    weight1: torch.Tensor | None = None,
    bias1: torch.Tensor | None = None,
    eps: float = 1e-6,
    dropout_p: float = 0.0,
    rowscale: torch.Tensor | None = None,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    is_rms_norm: bool = True,
    return_dropout_mask: bool = False,
    backend: str | None = None,
):
    """Fused (residual add +) RMSNorm; :func:`layer_norm_fn` with ``is_rms_norm=True`` by default.

    Shapes:
        x, residual: (..., N); weight, bias: (N,). Returns out (..., N) in x.dtype, or
        ``(out, residual_out)`` with ``prenorm`` (see :func:`layer_norm_fn`).
    """
    return layer_norm_fn(
        x,
        weight,
        bias,
        residual,
        x1,
        weight1,
        bias1,
        eps,
        dropout_p,
        rowscale,
        prenorm,
        residual_in_fp32,
        is_rms_norm,
        return_dropout_mask,
        backend,
    )


def rms_norm_gated_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    eps: float = 1e-6,
    group_size: int | None = None,
    norm_before_gate: bool = True,
    backend: str | None = None,
) -> torch.Tensor:
    """Gated, group-wise RMSNorm (Mamba-2's ``rmsnorm_fn``), differentiable in x, weight, bias and z.

    ``norm_before_gate``: ``out = rmsnorm(x) * weight (+ bias) * silu(z)``; else
    ``out = rmsnorm(x * silu(z)) * weight (+ bias)``. Each group of ``group_size`` consecutive
    features is normalised independently (``None``: the whole row).

    Shapes:
        x, z: (..., N); weight, bias: (N,); N % group_size == 0. Returns (..., N) in x.dtype.
    """
    _check_row_inputs(x, weight, bias, z=z)
    n = x.shape[-1]
    if group_size is not None and (group_size < 1 or n % group_size != 0):
        raise ValueError(f"group_size must divide the last dim of x ({n}), got {group_size}")
    choice = select_backend("norms", [x, weight, bias, z], fast=_FAST, backend=backend, fp32_kernels=True)
    if choice == "reference":
        return rms_norm_gated_ref(x, weight, bias, z, eps, group_size, norm_before_gate, True)
    from .triton import rms_norm_gated_triton

    return rms_norm_gated_triton(x, weight, bias, z, eps, group_size, norm_before_gate)


class RMSNormGated(nn.Module):
    """Gated RMSNorm module (Mamba-2's ``RMSNormGated``); parameter ``weight`` (hidden_size,), ones.

    Shapes:
        forward(x (..., hidden_size), z (..., hidden_size) or None) -> (..., hidden_size).
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-5,
        group_size: int | None = None,
        norm_before_gate: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if group_size is not None and (group_size < 1 or hidden_size % group_size != 0):
            raise ValueError(f"group_size must divide hidden_size ({hidden_size}), got {group_size}")
        self.eps = eps
        self.group_size = group_size
        self.norm_before_gate = norm_before_gate
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return rms_norm_gated_fn(x, self.weight, self.bias, z, self.eps, self.group_size, self.norm_before_gate)

    def extra_repr(self) -> str:
        return (
            f"{self.weight.shape[0]}, eps={self.eps}, group_size={self.group_size}, "
            f"norm_before_gate={self.norm_before_gate}"
        )


class RMSNorm(nn.Module):
    """RMSNorm module on the fused :func:`rms_norm_fn`; parameter ``weight`` (hidden_size,), ones.

    Shapes:
        forward(x (..., hidden_size), residual (..., hidden_size) or None) -> out, or
        (out, residual_out) with ``prenorm``.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5, dropout_p: float = 0.0, device=None, dtype=None) -> None:
        super().__init__()
        if dropout_p:
            raise NotImplementedError(f"dropout_p={dropout_p} is not supported by ssm_kernels' fused norm (use 0.0)")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x, residual=None, prenorm: bool = False, residual_in_fp32: bool = False):
        return rms_norm_fn(
            x,
            self.weight,
            self.bias,
            residual=residual,
            eps=self.eps,
            prenorm=prenorm,
            residual_in_fp32=residual_in_fp32,
        )

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class LayerNorm(nn.Module):
    """LayerNorm module on the fused :func:`layer_norm_fn`; parameters ``weight`` (ones), ``bias`` (zeros).

    Shapes:
        forward(x (..., hidden_size), residual (..., hidden_size) or None) -> out, or
        (out, residual_out) with ``prenorm``.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5, dropout_p: float = 0.0, device=None, dtype=None) -> None:
        super().__init__()
        if dropout_p:
            raise NotImplementedError(f"dropout_p={dropout_p} is not supported by ssm_kernels' fused norm (use 0.0)")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(hidden_size, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x, residual=None, prenorm: bool = False, residual_in_fp32: bool = False):
        return layer_norm_fn(
            x,
            self.weight,
            self.bias,
            residual=residual,
            eps=self.eps,
            prenorm=prenorm,
            residual_in_fp32=residual_in_fp32,
        )

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
