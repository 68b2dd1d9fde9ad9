"""The residual block around a mixer (pre-norm, "add -> norm -> mixer"), and the gated MLP.

``Block`` keeps the residual stream separate from the block output, like ``mamba_ssm``::

    residual = hidden_states + residual          (residual = hidden_states in the first block)
    hidden_states = mixer(norm(residual))
    [ residual = hidden_states + residual; hidden_states = mlp(norm2(residual)) ]   if an MLP is given
    return hidden_states, residual

so the last block's output still needs ``norm_f(hidden_states + residual)``. ``residual_in_fp32`` keeps the
residual stream in float32 under low-precision weights; ``fused_add_norm`` uses the fused add+norm kernels
of :mod:`ssm_kernels` (one pass over memory) when they are available, with identical values otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Block", "GatedMLP", "add_norm"]


@cache
def _fused_norm_fn(kind: str) -> Callable[..., Any] | None:
    """ssm_kernels' rms_norm_fn / layer_norm_fn if it takes ``residual`` and ``prenorm`` (fused add+norm)."""
    try:
        import ssm_kernels as sk

        fn = sk.rms_norm_fn if kind == "rms" else sk.layer_norm_fn
        params = inspect.signature(fn).parameters
    except (AttributeError, ImportError, TypeError, ValueError):
        return None
    needed = ("residual", "prenorm", "residual_in_fp32", "eps")
    return fn if all(k in params for k in needed) else None


def _is_rms(norm: nn.Module) -> bool:
    return "rms" in type(norm).__name__.lower()


def add_norm(
    norm: nn.Module,
    hidden_states: torch.Tensor,
    residual: torch.Tensor | None,
    residual_in_fp32: bool = False,
    fused: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual <- hidden_states + residual``; return ``(norm(residual), residual)``.

    The normalised output has the norm weight's dtype; the returned residual is float32 when
    ``residual_in_fp32`` (else the sum's dtype).

    Shapes:
        hidden_states, residual: (..., dim) -> two tensors (..., dim).
    """
    fn = _fused_norm_fn("rms" if _is_rms(norm) else "layer") if fused else None
    if fn is not None:
        out, res = fn(
            hidden_states,
            norm.weight,
            getattr(norm, "bias", None),
            residual=residual,
            prenorm=True,
            residual_in_fp32=residual_in_fp32,
            eps=norm.eps,
        )
        return out, res
    residual = hidden_states if residual is None else hidden_states + residual
    out = norm(residual.to(dtype=norm.weight.dtype))
    if residual_in_fp32:
        residual = residual.to(torch.float32)
    return out, residual


class GatedMLP(nn.Module):
    """SwiGLU-style MLP: ``fc2(silu(gate) * x)`` with ``x, gate = split(fc1(u))``.

    ``hidden_features`` defaults to ``8/3 * in_features`` and is rounded up to ``multiple_of``.

    Shapes:
        forward: (..., in_features) -> (..., out_features).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] = F.silu,
        bias: bool = False,
        multiple_of: int = 128,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        out_features = in_features if out_features is None else out_features
        hidden = hidden_features if hidden_features is not None else int(8 * in_features / 3)
        hidden = (hidden + multiple_of - 1) // multiple_of * multiple_of
        self.fc1 = nn.Linear(in_features, 2 * hidden, bias=bias, **fk)
        self.activation = activation
        self.fc2 = nn.Linear(hidden, out_features, bias=bias, **fk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, gate = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(y * self.activation(gate))


class Block(nn.Module):
    """Pre-norm residual block: ``norm -> mixer`` (``-> norm2 -> mlp``), residual kept separately.

    Args:
        dim: model width.
        mixer_cls: callable ``dim -> nn.Module`` (e.g. ``functools.partial(Mamba, layer_idx=i)``).
        mlp_cls: callable ``dim -> nn.Module`` or ``None`` / ``nn.Identity`` for no MLP.
        norm_cls: callable ``dim -> nn.Module`` (``nn.LayerNorm`` or an RMSNorm).
        fused_add_norm: use the fused add+norm kernels where available.
        residual_in_fp32: keep the residual stream in float32.

    Shapes:
        forward: hidden_states (batch, L, dim), residual (batch, L, dim) or None ->
        (hidden_states (batch, L, dim), residual (batch, L, dim)).
    """

    def __init__(
        self,
        dim: int,
        mixer_cls: Callable[[int], nn.Module],
        mlp_cls: Callable[[int], nn.Module] | None = None,
        norm_cls: Callable[[int], nn.Module] = nn.LayerNorm,
        fused_add_norm: bool = False,
        residual_in_fp32: bool = False,
    ) -> None:
        super().__init__()
        self.residual_in_fp32 = residual_in_fp32
        self.fused_add_norm = fused_add_norm
        self.norm = norm_cls(dim)
        self.mixer = mixer_cls(dim)
        if mlp_cls is not None and mlp_cls is not nn.Identity:
            self.norm2 = norm_cls(dim)
            self.mlp = mlp_cls(dim)
        else:
            self.mlp = None

    def forward(
        self,
        hidden_states: torch.Tensor,
        residual: torch.Tensor | None = None,
        inference_params: Any = None,
        **mixer_kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if hidden_states.dim() != 3:
            raise ValueError(f"hidden_states must have shape (batch, seqlen, dim), got {tuple(hidden_states.shape)}")
        if residual is not None and residual.shape != hidden_states.shape:
            raise ValueError(
                f"residual must have the shape of hidden_states {tuple(hidden_states.shape)}, got {tuple(residual.shape)}"
            )
        hidden_states, residual = add_norm(
            self.norm, hidden_states, residual, self.residual_in_fp32, fused=self.fused_add_norm
        )
        if inference_params is not None:
            mixer_kwargs["inference_params"] = inference_params
        hidden_states = self.mixer(hidden_states, **mixer_kwargs)
        if self.mlp is not None:
            hidden_states, residual = add_norm(
                self.norm2, hidden_states, residual, self.residual_in_fp32, fused=self.fused_add_norm
            )
            hidden_states = self.mlp(hidden_states)
        return hidden_states, residual

    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> Any:
        return self.mixer.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype, **kwargs)
