"""Mamba (Mamba-1): the selective state-space mixer of Gu & Dao (2023), on :mod:`ssm_kernels`.

The block maps ``(batch, L, d_model) -> (batch, L, d_model)``::

    x, z = split(in_proj(u))                      # two (batch, L, d_inner) branches
    x = silu(causal_depthwise_conv1d(x))          # short causal convolution, width d_conv
    dt, B, C = split(x_proj(x))                   # input-dependent (selective) SSM parameters
    dt = softplus(dt_proj(dt))                    # (batch, L, d_inner) step sizes, bias-initialised
    y = selective_scan(x, dt, A, B, C, D) * silu(z)
    out = out_proj(y)

With ``use_fast_path=True`` (default) training/inference without a cache goes through the fused
``mamba_inner_fn``; with a cache (prefill) the composed path uses the dispatching ``causal_conv1d_fn`` and
``selective_scan_fn``. With ``use_fast_path=False`` every step uses the ``*_ref`` references (an oracle).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._ops import check_hidden, get_ops, init_dt_bias_, states_from_cache

__all__ = ["Mamba"]


class Mamba(nn.Module):
    """Mamba-1 selective SSM mixer.

    Args:
        d_model: model (input/output) width.
        d_state: SSM state size N per channel.
        d_conv: width of the causal depthwise convolution.
        expand: ``d_inner = expand * d_model``.
        dt_rank: rank of the Delta projection; ``"auto"`` is ``ceil(d_model / 16)``.
        dt_min, dt_max: range of the log-uniform initial step size Delta.
        dt_init: ``"random"`` (uniform in +-std) or ``"constant"`` initialisation of ``dt_proj.weight``.
        dt_scale: scale of that initialisation (std = dt_rank ** -0.5 * dt_scale).
        dt_init_floor: lower clamp of the initial Delta.
        conv_bias: bias in the convolution.
        bias: biases in ``in_proj`` and ``out_proj``.
        use_fast_path: fused kernels (``True``) or the pure-PyTorch references (``False``).
        layer_idx: key of this layer's states in an inference cache (required for decoding).

    Shapes:
        forward: hidden_states (batch, L, d_model) -> (batch, L, d_model).
        step: hidden_states (batch, 1, d_model); conv_state (batch, d_inner, d_conv);
        ssm_state (batch, d_inner, d_state) -> (batch, 1, d_model) and the updated states (in place).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_fast_path: bool = True,
        layer_idx: int | None = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, val in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv), ("expand", expand)):
            if not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        fk = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        if self.dt_rank < 1:
            raise ValueError(f"dt_rank must be 'auto' or a positive integer, got {dt_rank!r}")
        self.use_fast_path = use_fast_path
        self.layer_idx = layer_idx
        self.activation = "silu"

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **fk)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=conv_bias,
            **fk,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **fk)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **fk)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **fk)

        # Delta projection: weight so that its output keeps unit-ish scale, bias so that softplus(bias)
        # (the initial step size) is log-uniform in [dt_min, dt_max].
        std = self.dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                self.dt_proj.weight.fill_(std)
            else:
                self.dt_proj.weight.uniform_(-std, std)
        init_dt_bias_(self.dt_proj.bias, dt_min, dt_max, dt_init_floor)
        self.dt_proj.bias._no_reinit = True  # frameworks that zero biases must skip this one

        # S4D-real initialisation: A[d, n] = -(n + 1), stored as log(-A) in fp32.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)  # (D, N)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device, dtype=torch.float32))
        self.D._no_weight_decay = True

    # ------------------------------------------------------------------ forward
    def forward(self, hidden_states: torch.Tensor, inference_params: Any = None) -> torch.Tensor:
        """Apply the mixer; with ``inference_params`` also fill (prefill) or advance (decode) the cache.

        Shapes:
            hidden_states: (batch, L, d_model) -> (batch, L, d_model).
        """
        check_hidden("hidden_states", hidden_states, self.d_model)
        batch, seqlen, _ = hidden_states.shape
        conv_state = ssm_state = None
        if inference_params is not None:
            conv_state, ssm_state = self._get_states_from_cache(inference_params, batch)
            if inference_params.seqlen_offset > 0:
                outs = [self.step(hidden_states[:, t : t + 1], conv_state, ssm_state)[0] for t in range(seqlen)]
                return torch.cat(outs, dim=1)

        ops = get_ops(self.use_fast_path)
        A = -torch.exp(self.A_log.float())  # (D, N)
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (B, 2D, L)
        if self.use_fast_path and conv_state is None:
            import ssm_kernels as sk

            return sk.mamba_inner_fn(
                xz,
                self.conv1d.weight,
                self.conv1d.bias,
                self.x_proj.weight,
                self.dt_proj.weight,
                self.out_proj.weight,
                self.out_proj.bias,
                A,
                None,
                None,
                self.D.float(),
                delta_bias=self.dt_proj.bias.float(),
                delta_softplus=True,
            )

        x, z = xz.chunk(2, dim=1)  # (B, D, L) each
        if conv_state is not None:
            # the cache keeps the last d_conv inputs of the convolution (zero-padded on the left)
            conv_state.copy_(F.pad(x, (self.d_conv - x.shape[-1], 0)).to(conv_state.dtype))
        x = ops.causal_conv1d(x, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation=self.activation)
        x_dbl = self.x_proj(x.transpose(1, 2))  # (B, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (B, D, L), bias added inside the scan
        B = B.transpose(1, 2).contiguous()  # (B, N, L)
        C = C.transpose(1, 2).contiguous()  # (B, N, L)
        res = ops.selective_scan(
            x,
            dt,
            A,
            B,
            C,
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            return_last_state=ssm_state is not None,
        )
        if ssm_state is not None:
            y, last_state = res
            ssm_state.copy_(last_state.to(ssm_state.dtype))
        else:
            y = res
        return self.out_proj(y.transpose(1, 2))  # (B, L, d_model)

    # ------------------------------------------------------------------ decoding
    def step(
        self, hidden_states: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance one token; ``conv_state`` and ``ssm_state`` are updated in place.

        Shapes:
            hidden_states: (batch, 1, d_model); conv_state: (batch, d_inner, d_conv);
            ssm_state: (batch, d_inner, d_state) -> out (batch, 1, d_model), conv_state, ssm_state.
        """
        if hidden_states.dim() != 3 or hidden_states.shape[1] != 1 or hidden_states.shape[2] != self.d_model:
            raise ValueError(
                f"step: hidden_states must have shape (batch, 1, {self.d_model}), got {tuple(hidden_states.shape)}"
            )
        batch = hidden_states.shape[0]
        if conv_state.shape != (batch, self.d_inner, self.d_conv):
            raise ValueError(
                f"step: conv_state must have shape {(batch, self.d_inner, self.d_conv)}, got {tuple(conv_state.shape)}"
            )
        if ssm_state.shape != (batch, self.d_inner, self.d_state):
            raise ValueError(
                f"step: ssm_state must have shape {(batch, self.d_inner, self.d_state)}, got {tuple(ssm_state.shape)}"
            )
        ops = get_ops(self.use_fast_path)
        xz = self.in_proj(hidden_states.squeeze(1))  # (B, 2D)
        x, z = xz.chunk(2, dim=-1)  # (B, D)
        x = ops.causal_conv1d_update(
            x, conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation=self.activation
        )
        x_db = self.x_proj(x)  # (B, R + 2N)
        dt, B, C = torch.split(x_db, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # (B, D)
        A = -torch.exp(self.A_log.float())  # (D, N)
        y = ops.state_update(
            ssm_state, x, dt, A, B, C, self.D.float(), z=z, dt_bias=self.dt_proj.bias.float(), dt_softplus=True
        )  # (B, D)
        out = self.out_proj(y.to(hidden_states.dtype))
        return out.unsqueeze(1), conv_state, ssm_state

    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero states for decoding: conv_state (batch, d_inner, d_conv), ssm_state (batch, d_inner, d_state)."""
        device = self.out_proj.weight.device
        conv_dtype = self.conv1d.weight.dtype if dtype is None else dtype
        ssm_dtype = self.dt_proj.weight.dtype if dtype is None else dtype
        conv_state = torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=conv_dtype)
        ssm_state = torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=ssm_dtype)
        return conv_state, ssm_state

    def _get_states_from_cache(
        self, inference_params: Any, batch_size: int, initialize_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return states_from_cache(self, inference_params, batch_size, initialize_states, input_name="hidden_states")

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"dt_rank={self.dt_rank}, use_fast_path={self.use_fast_path}"
        )
