"""Mamba2Simple: the minimal Mamba-2 block (no MLP branch, no decoding cache), on :mod:`ssm_kernels`.

::

    z, xBC, dt = split(in_proj(u))
    x, B, C = split(silu(causal_depthwise_conv1d(xBC)))
    dt = clamp(softplus(dt + dt_bias), dt_limit)
    y = RMSNormGated(SSD(x, dt, A, B, C, D, initial_states), z)   # norm(y * silu(z))
    out = out_proj(y)

Optionally the initial SSM state is a learned parameter (``learnable_init_states``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ._ops import check_hidden, get_ops, init_ssd_head_params
from .mamba2 import _gated_norm

__all__ = ["Mamba2Simple"]


class Mamba2Simple(nn.Module):
    """A simpler Mamba-2 (SSD) mixer for training and full-sequence inference.

    Args:
        d_model: model width.
        d_state: state size N per head.
        d_conv: causal convolution width.
        conv_init: if given, the convolution weights are uniform in ``[-conv_init, conv_init]``.
        expand: ``d_inner = expand * d_model``.
        headdim: channels per head; ``nheads = d_inner // headdim``.
        ngroups: groups of heads sharing B and C.
        A_init_range: ``-A`` is initialised uniform in this range.
        dt_min, dt_max, dt_init_floor: initial step-size range (through ``dt_bias``).
        dt_limit: clamp of the step size after softplus.
        learnable_init_states: learn the initial state (nheads, headdim, d_state).
        activation: ``"silu"`` or ``"swish"`` (the same function).
        bias, conv_bias: biases of the projections / the convolution.
        chunk_size: chunk length of the SSD scan.
        use_mem_eff_path: recompute the inner part in backward (activation checkpointing).
        use_fast_path: dispatching kernels (``True``) or the references (``False``).

    Shapes:
        forward: u (batch, L, d_model) -> (batch, L, d_model); seq_idx (batch, L) int32 or None.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        d_conv: int = 4,
        conv_init: float | None = None,
        expand: int = 2,
        headdim: int = 128,
        ngroups: int = 1,
        A_init_range: tuple[float, float] = (1, 16),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple[float, float] = (0.0, float("inf")),
        learnable_init_states: bool = False,
        activation: str = "swish",
        bias: bool = False,
        conv_bias: bool = True,
        chunk_size: int = 256,
        use_mem_eff_path: bool = True,
        use_fast_path: bool = True,
        layer_idx: int | None = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if activation not in ("silu", "swish"):
            raise ValueError(f"activation must be 'silu' or 'swish', got {activation!r}")
        fk = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.headdim = headdim
        self.ngroups = ngroups
        if self.d_inner % headdim != 0:
            raise ValueError(f"d_inner ({self.d_inner}) must be a multiple of headdim ({headdim})")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups != 0:
            raise ValueError(f"nheads ({self.nheads}) must be a multiple of ngroups ({ngroups})")
        self.dt_limit = (float(dt_limit[0]), float(dt_limit[1]))
        self.learnable_init_states = learnable_init_states
        self.activation = activation
        self.chunk_size = chunk_size
        self.use_mem_eff_path = use_mem_eff_path
        self.use_fast_path = use_fast_path
        self.layer_idx = layer_idx

        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads  # [z, x, B, C, dt]
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=bias, **fk)
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, kernel_size=d_conv, groups=self.conv_dim, padding=d_conv - 1,
            bias=conv_bias, **fk,
        )  # fmt: skip
        if conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -conv_init, conv_init)
        if learnable_init_states:
            self.init_states = nn.Parameter(torch.zeros(self.nheads, headdim, d_state, **fk))
            self.init_states._no_weight_decay = True
        self.act = nn.SiLU()

        init_ssd_head_params(self, self.nheads, self.nheads, A_init_range, dt_min, dt_max, dt_init_floor, device)

        import ssm_kernels as sk

        self.norm = sk.RMSNormGated(self.d_inner, eps=1e-5, norm_before_gate=False, **fk)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **fk)

    def forward(self, u: torch.Tensor, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Shapes: u (batch, L, d_model) -> (batch, L, d_model)."""
        check_hidden("u", u, self.d_model)
        zxbcdt = self.in_proj(u)  # (B, L, d_in_proj)
        if self.use_mem_eff_path and torch.is_grad_enabled() and zxbcdt.requires_grad:
            y = checkpoint(self._mix, zxbcdt, seq_idx, use_reentrant=False)
        else:
            y = self._mix(zxbcdt, seq_idx)
        return self.out_proj(y)

    def _mix(self, zxbcdt: torch.Tensor, seq_idx: torch.Tensor | None) -> torch.Tensor:
        ops = get_ops(self.use_fast_path)
        batch, L, _ = zxbcdt.shape
        gn = self.ngroups * self.d_state
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.d_inner + 2 * gn, self.nheads], dim=-1)
        dt = F.softplus(dt.float() + self.dt_bias.float())  # (B, L, H)
        if self.dt_limit != (0.0, math.inf):
            dt = dt.clamp(*self.dt_limit)
        conv_kwargs: dict[str, Any] = {"activation": "silu"}
        if seq_idx is not None:
            conv_kwargs["seq_idx"] = seq_idx
        xBC = ops.causal_conv1d(
            xBC.transpose(1, 2), self.conv1d.weight.squeeze(1), self.conv1d.bias, **conv_kwargs
        ).transpose(1, 2)  # (B, L, conv_dim)
        x, B, C = torch.split(xBC, [self.d_inner, gn, gn], dim=-1)
        A = -torch.exp(self.A_log.float())  # (H,)
        scan_kwargs: dict[str, Any] = {}
        if seq_idx is not None:
            scan_kwargs["seq_idx"] = seq_idx
        if self.learnable_init_states:
            scan_kwargs["initial_states"] = self.init_states.unsqueeze(0).expand(batch, -1, -1, -1)
        y = ops.chunk_scan(
            x.reshape(batch, L, self.nheads, self.headdim),
            dt,
            A,
            B.reshape(batch, L, self.ngroups, self.d_state),
            C.reshape(batch, L, self.ngroups, self.d_state),
            self.chunk_size,
            D=self.D.float(),
            **scan_kwargs,
        )
        y = y.reshape(batch, L, self.d_inner)
        return _gated_norm(self.norm, ops, y, z)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, nheads={self.nheads}, headdim={self.headdim}, "
            f"ngroups={self.ngroups}, chunk_size={self.chunk_size}, use_fast_path={self.use_fast_path}"
        )
