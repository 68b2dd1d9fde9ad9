"""Mamba-2: the SSD mixer of Dao & Gu (2024), on :mod:`ssm_kernels`.

Per head h the state-space model has a scalar decay ``A[h] < 0`` and a step ``dt[b, t, h]``; the heads
share ``B``/``C`` within a group (``ngroups`` groups, like grouped-query attention)::

    z0, x0, z, xBC, dt = split(in_proj(u))        # x0/z0: optional gated-MLP part (d_ssm < d_inner)
    x, B, C = split(silu(causal_depthwise_conv1d(xBC)))
    y = SSD(x, softplus(dt + dt_bias), A, B, C, D)  # chunked scan, mamba_chunk_scan_combined
    y = RMSNormGated(y, z)  (or y * silu(z) when rmsnorm=False)
    out = out_proj(cat([silu(z0) * x0, y]))

``use_fast_path=False`` composes the ``*_ref`` references instead of the dispatching kernels (an oracle).
``use_mem_eff_path=True`` recomputes the convolution, scan and norm in backward (activation
checkpointing) instead of storing their intermediates; it does not change the values.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ._ops import Ops, check_hidden, get_ops, init_ssd_head_params, states_from_cache

__all__ = ["Mamba2"]


def _gated_norm(norm: nn.Module, ops: Ops, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    if ops.fast:
        return norm(y, z)
    import ssm_kernels as sk

    return sk.rms_norm_gated_ref(
        y, norm.weight, getattr(norm, "bias", None), z=z, eps=norm.eps, group_size=norm.group_size,
        norm_before_gate=norm.norm_before_gate,
    )  # fmt: skip


class Mamba2(nn.Module):
    """Mamba-2 (SSD) mixer.

    Args:
        d_model: model width.
        d_state: SSM state size N per head (typically 64 or 128).
        d_conv: causal convolution width.
        conv_init: if given, the convolution weights are uniform in ``[-conv_init, conv_init]``.
        expand: ``d_inner = expand * d_model``.
        headdim: channels per head P; ``nheads = d_ssm // headdim``.
        d_ssm: channels that go through the SSM (default ``d_inner``); the other ``d_inner - d_ssm``
            channels form a gated MLP branch.
        ngroups: groups of heads sharing B and C.
        A_init_range: ``-A`` is initialised uniform in this range (per head).
        D_has_hdim: skip connection D per channel (``True``) or per head.
        rmsnorm: gated RMS norm on the output (``False``: ``y * silu(z)`` inside the scan).
        norm_before_gate: with ``rmsnorm``, ``norm(y) * silu(z)`` instead of ``norm(y * silu(z))``.
        dt_min, dt_max, dt_init_floor: log-uniform initial step size range (through ``dt_bias``).
        dt_limit: clamp of the step size after softplus.
        bias, conv_bias: biases of the projections / the convolution.
        chunk_size: chunk length of the SSD scan.
        use_mem_eff_path: recompute the inner part in backward (saves activation memory).
        use_fast_path: dispatching kernels (``True``) or the references (``False``).
        layer_idx: key of this layer's states in an inference cache.

    Shapes:
        forward: u (batch, L, d_model) -> (batch, L, d_model) (or (batch * L, d_model) with ``seqlen``).
        step: hidden_states (batch, 1, d_model); conv_state (batch, d_ssm + 2 * ngroups * d_state, d_conv);
        ssm_state (batch, nheads, headdim, d_state) -> (batch, 1, d_model) and the states (in place).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        conv_init: float | None = None,
        expand: int = 2,
        headdim: int = 64,
        d_ssm: int | None = None,
        ngroups: int = 1,
        A_init_range: tuple[float, float] = (1, 16),
        D_has_hdim: bool = False,
        rmsnorm: bool = True,
        norm_before_gate: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple[float, float] = (0.0, float("inf")),
        bias: bool = False,
        conv_bias: bool = True,
        chunk_size: int = 256,
        use_mem_eff_path: bool = True,
        use_fast_path: bool = True,
        layer_idx: int | None = None,
        process_group: Any = None,
        sequence_parallel: bool = True,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if process_group is not None:
            raise NotImplementedError("Mamba2: tensor parallelism (process_group) is not supported")
        for name, val in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv), ("headdim", headdim),
                          ("ngroups", ngroups), ("chunk_size", chunk_size)):  # fmt: skip
            if not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        fk = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.conv_init = conv_init
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.d_ssm = self.d_inner if d_ssm is None else int(d_ssm)
        self.headdim = headdim
        self.ngroups = ngroups
        if not 0 < self.d_ssm <= self.d_inner:
            raise ValueError(f"d_ssm must be in (0, d_inner={self.d_inner}], got {d_ssm!r}")
        if self.d_ssm % headdim != 0:
            raise ValueError(f"d_ssm ({self.d_ssm}) must be a multiple of headdim ({headdim})")
        self.nheads = self.d_ssm // headdim
        if self.nheads % ngroups != 0:
            raise ValueError(f"nheads ({self.nheads}) must be a multiple of ngroups ({ngroups})")
        if not (0 < A_init_range[0] <= A_init_range[1]):
            raise ValueError(f"A_init_range must satisfy 0 < lo <= hi, got {A_init_range!r}")
        self.D_has_hdim = D_has_hdim
        self.rmsnorm = rmsnorm
        self.norm_before_gate = norm_before_gate
        self.dt_limit = (float(dt_limit[0]), float(dt_limit[1]))
        self.activation = "silu"
        self.chunk_size = chunk_size
        self.use_mem_eff_path = use_mem_eff_path
        self.use_fast_path = use_fast_path
        self.layer_idx = layer_idx

        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads  # [z0, x0, z, x, B, C, dt]
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=bias, **fk)
        self.conv_dim = self.d_ssm + 2 * ngroups * d_state
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, kernel_size=d_conv, groups=self.conv_dim, padding=d_conv - 1,
            bias=conv_bias, **fk,
        )  # fmt: skip
        if conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -conv_init, conv_init)
        self.act = nn.SiLU()

        # dt_bias, A_log (one scalar decay per head) and D
        init_ssd_head_params(self, self.nheads, self.d_ssm if D_has_hdim else self.nheads, A_init_range, dt_min,
                             dt_max, dt_init_floor, device)  # fmt: skip

        if rmsnorm:
            import ssm_kernels as sk

            self.norm = sk.RMSNormGated(
                self.d_ssm, eps=1e-5, norm_before_gate=norm_before_gate, group_size=self.d_ssm // ngroups, **fk
            )
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **fk)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        u: torch.Tensor,
        seqlen: int | None = None,
        seq_idx: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        inference_params: Any = None,
    ) -> torch.Tensor:
        """Apply the mixer; with ``inference_params`` also fill (prefill) or advance (decode) the cache.

        Shapes:
            u: (batch, L, d_model), or (batch * seqlen, d_model) with ``seqlen`` given -> same shape as u.
            seq_idx: (batch, L) int32 sequence index of each token (packed sequences) or None.
            cu_seqlens: (num_sequences + 1,) cumulative lengths, passed to the scan, or None.
        """
        flat = u.dim() == 2
        if flat:
            if seqlen is None or u.shape[0] % seqlen != 0:
                raise ValueError(f"u of shape {tuple(u.shape)} is flat: pass seqlen dividing its first dim")
            u = u.reshape(u.shape[0] // seqlen, seqlen, u.shape[1])
        check_hidden("u", u, self.d_model)
        batch, L, _ = u.shape
        conv_state = ssm_state = None
        if inference_params is not None:
            if cu_seqlens is not None:
                raise NotImplementedError("Mamba2: cu_seqlens with an inference cache is not supported")
            conv_state, ssm_state = self._get_states_from_cache(inference_params, batch)
            if inference_params.seqlen_offset > 0:
                out = torch.cat([self.step(u[:, t : t + 1], conv_state, ssm_state)[0] for t in range(L)], dim=1)
                return out.reshape(batch * L, -1) if flat else out

        zxbcdt = self.in_proj(u)  # (B, L, d_in_proj)
        if self.use_mem_eff_path and conv_state is None and torch.is_grad_enabled() and zxbcdt.requires_grad:
            y = checkpoint(self._mix, zxbcdt, None, None, seq_idx, cu_seqlens, use_reentrant=False)
        else:
            y = self._mix(zxbcdt, conv_state, ssm_state, seq_idx, cu_seqlens)
        out = self.out_proj(y)  # (B, L, d_model)
        return out.reshape(batch * L, -1) if flat else out

    def _mix(
        self,
        zxbcdt: torch.Tensor,
        conv_state: torch.Tensor | None,
        ssm_state: torch.Tensor | None,
        seq_idx: torch.Tensor | None,
        cu_seqlens: torch.Tensor | None,
    ) -> torch.Tensor:
        ops = get_ops(self.use_fast_path)
        batch, L, _ = zxbcdt.shape
        gn = self.ngroups * self.d_state
        d_mlp = (zxbcdt.shape[-1] - 2 * self.d_ssm - 2 * gn - self.nheads) // 2
        z0, x0, z, xBC, dt = torch.split(zxbcdt, [d_mlp, d_mlp, self.d_ssm, self.d_ssm + 2 * gn, self.nheads], dim=-1)
        xBC_t = xBC.transpose(1, 2)  # (B, conv_dim, L)
        if conv_state is not None:
            conv_state.copy_(F.pad(xBC_t, (self.d_conv - L, 0)).to(conv_state.dtype))
        conv_kwargs: dict[str, Any] = {"activation": self.activation}
        if seq_idx is not None:
            conv_kwargs["seq_idx"] = seq_idx
        xBC = ops.causal_conv1d(xBC_t, self.conv1d.weight.squeeze(1), self.conv1d.bias, **conv_kwargs).transpose(1, 2)
        x, B, C = torch.split(xBC, [self.d_ssm, gn, gn], dim=-1)
        A = -torch.exp(self.A_log.float())  # (H,)
        scan_kwargs: dict[str, Any] = {}
        if seq_idx is not None:
            scan_kwargs["seq_idx"] = seq_idx
        if cu_seqlens is not None:
            scan_kwargs["cu_seqlens"] = cu_seqlens
        if self.dt_limit != (0.0, math.inf):
            scan_kwargs["dt_limit"] = self.dt_limit
        if ssm_state is not None:
            scan_kwargs["return_final_states"] = True
        D = self.D.float().view(self.nheads, self.headdim) if self.D_has_hdim else self.D.float()
        res = ops.chunk_scan(
            x.reshape(batch, L, self.nheads, self.headdim),
            dt,
            A,
            B.reshape(batch, L, self.ngroups, self.d_state),
            C.reshape(batch, L, self.ngroups, self.d_state),
            self.chunk_size,
            D=D,
            z=None if self.rmsnorm else z.reshape(batch, L, self.nheads, self.headdim),
            dt_bias=self.dt_bias.float(),
            dt_softplus=True,
            **scan_kwargs,
        )
        if ssm_state is not None:
            y, last_state = res
            ssm_state.copy_(last_state.to(ssm_state.dtype))
        else:
            y = res
        y = y.reshape(batch, L, self.d_ssm)
        if self.rmsnorm:
            y = _gated_norm(self.norm, ops, y, z)
        if d_mlp > 0:
            y = torch.cat([F.silu(z0) * x0, y], dim=-1)
        return y  # (B, L, d_inner)

    # ------------------------------------------------------------------ decoding
    def step(
        self, hidden_states: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance one token; the states are updated in place.

        Shapes:
            hidden_states: (batch, 1, d_model); conv_state: (batch, conv_dim, d_conv);
            ssm_state: (batch, nheads, headdim, d_state) -> (batch, 1, d_model), conv_state, ssm_state.
        """
        if hidden_states.dim() != 3 or hidden_states.shape[1] != 1 or hidden_states.shape[2] != self.d_model:
            raise ValueError(
                f"step: hidden_states must have shape (batch, 1, {self.d_model}), got {tuple(hidden_states.shape)}"
            )
        batch = hidden_states.shape[0]
        if conv_state.shape != (batch, self.conv_dim, self.d_conv):
            raise ValueError(
                f"step: conv_state must have shape {(batch, self.conv_dim, self.d_conv)}, got {tuple(conv_state.shape)}"
            )
        if ssm_state.shape != (batch, self.nheads, self.headdim, self.d_state):
            raise ValueError(
                f"step: ssm_state must have shape {(batch, self.nheads, self.headdim, self.d_state)}, "
                f"got {tuple(ssm_state.shape)}"
            )
        ops = get_ops(self.use_fast_path)
        gn = self.ngroups * self.d_state
        zxbcdt = self.in_proj(hidden_states.squeeze(1))  # (B, d_in_proj)
        d_mlp = (zxbcdt.shape[-1] - 2 * self.d_ssm - 2 * gn - self.nheads) // 2
        z0, x0, z, xBC, dt = torch.split(zxbcdt, [d_mlp, d_mlp, self.d_ssm, self.d_ssm + 2 * gn, self.nheads], dim=-1)
        xBC = ops.causal_conv1d_update(
            xBC, conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation=self.activation
        )
        x, B, C = torch.split(xBC, [self.d_ssm, gn, gn], dim=-1)
        H, P, N = self.nheads, self.headdim, self.d_state
        A = (-torch.exp(self.A_log.float()))[:, None, None].expand(H, P, N)  # (H, P, N)
        if self.dt_limit != (0.0, math.inf):
            # the kernel has no clamp: apply bias, softplus and the limit here, as the chunked scan does
            dt = F.softplus(dt.float() + self.dt_bias.float()).clamp(*self.dt_limit)
            dt_bias, softplus = None, False
        else:
            dt_bias, softplus = self.dt_bias.float()[:, None].expand(H, P), True
        dt = dt[:, :, None].expand(batch, H, P)  # (B, H, P)
        D = self.D.float().view(H, P) if self.D_has_hdim else self.D.float()[:, None].expand(H, P)
        y = ops.state_update(
            ssm_state,
            x.reshape(batch, H, P),
            dt,
            A,
            B.reshape(batch, self.ngroups, N),
            C.reshape(batch, self.ngroups, N),
            D,
            z=None if self.rmsnorm else z.reshape(batch, H, P),
            dt_bias=dt_bias,
            dt_softplus=softplus,
        )  # (B, H, P)
        y = y.reshape(batch, self.d_ssm)
        if self.rmsnorm:
            y = _gated_norm(self.norm, ops, y, z)
        if d_mlp > 0:
            y = torch.cat([F.silu(z0) * x0, y], dim=-1)
        out = self.out_proj(y.to(hidden_states.dtype))
        return out.unsqueeze(1), conv_state, ssm_state

    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero states: conv_state (batch, conv_dim, d_conv), ssm_state (batch, nheads, headdim, d_state)."""
        device = self.out_proj.weight.device
        conv_dtype = self.conv1d.weight.dtype if dtype is None else dtype
        ssm_dtype = self.in_proj.weight.dtype if dtype is None else dtype
        conv_state = torch.zeros(batch_size, self.conv_dim, self.d_conv, device=device, dtype=conv_dtype)
        ssm_state = torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=device, dtype=ssm_dtype)
        return conv_state, ssm_state

    def _get_states_from_cache(
        self, inference_params: Any, batch_size: int, initialize_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return states_from_cache(self, inference_params, batch_size, initialize_states, input_name="u")

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_ssm={self.d_ssm}, nheads={self.nheads}, "
            f"headdim={self.headdim}, ngroups={self.ngroups}, chunk_size={self.chunk_size}, "
            f"use_fast_path={self.use_fast_path}"
        )
