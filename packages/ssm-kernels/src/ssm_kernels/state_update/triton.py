"""Triton kernel for the single-step selective state update (inference only, no backward).

One program per (block of BP head channels, batch entry, head); it streams its (BP, N) state
tile through registers once: read, decay and add ``dt * B * x``, write back in place, and
contract with ``C`` for the output. Every input is addressed by its strides, so stride-0
broadcasts (``dt``, ``A``, ``D``, ``dt_bias`` expanded from per-head values) cost no copies;
when ``dt`` and ``A`` are constant within a head (``TIE_HDIM``) they are loaded as scalars.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._launch import fast
from ..backend import cdiv, next_pow2

__all__ = ["selective_state_update_triton"]


@triton.jit
def _softplus(x):
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))), x)


@triton.jit
def _state_update_kernel(
    STATE, X, DT, DT_BIAS, A, B, C, D, Z, OUT, STATE_IDX,
    stride_s_b, stride_s_h, stride_s_p, stride_s_n,
    stride_x_b, stride_x_h, stride_x_p,
    stride_dt_b, stride_dt_h, stride_dt_p,
    stride_dtb_h, stride_dtb_p,
    stride_a_h, stride_a_p, stride_a_n,
    stride_b_b, stride_b_g, stride_b_n,
    stride_c_b, stride_c_g, stride_c_n,
    stride_d_h, stride_d_p,
    stride_z_b, stride_z_h, stride_z_p,
    stride_o_b, stride_o_h, stride_o_p,
    P, N, heads_per_group,
    HAS_DT_BIAS: tl.constexpr, DT_SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_STATE_IDX: tl.constexpr, TIE_HDIM: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    i_p = tl.program_id(0)
    i_b = tl.program_id(1).to(tl.int64)
    i_h = tl.program_id(2).to(tl.int64)
    i_g = i_h // heads_per_group
    if HAS_STATE_IDX:
        i_sb = tl.load(STATE_IDX + i_b).to(tl.int64)
    else:
        i_sb = i_b
    o_p = i_p * BP + tl.arange(0, BP)
    o_n = tl.arange(0, BN)
    m_p = o_p < P
    m_n = o_n < N
    m_pn = m_p[:, None] & m_n[None, :]
    p_s = STATE + i_sb * stride_s_b + i_h * stride_s_h + o_p[:, None] * stride_s_p + o_n[None, :] * stride_s_n
    b_s = tl.load(p_s, mask=m_pn, other=0.0).to(tl.float32)
    b_x = tl.load(X + i_b * stride_x_b + i_h * stride_x_h + o_p * stride_x_p, mask=m_p, other=0.0).to(tl.float32)
    if TIE_HDIM:
        b_dt = tl.load(DT + i_b * stride_dt_b + i_h * stride_dt_h).to(tl.float32)
        if HAS_DT_BIAS:
            b_dt += tl.load(DT_BIAS + i_h * stride_dtb_h).to(tl.float32)
        if DT_SOFTPLUS:
            b_dt = _softplus(b_dt)
        b_a = tl.load(A + i_h * stride_a_h).to(tl.float32)
        b_da = tl.exp(b_a * b_dt)  # scalar
        b_dbx = (b_dt * b_x)[:, None]
    else:
        b_dt = tl.load(DT + i_b * stride_dt_b + i_h * stride_dt_h + o_p * stride_dt_p, mask=m_p, other=0.0).to(
            tl.float32
        )
        if HAS_DT_BIAS:
            b_dt += tl.load(DT_BIAS + i_h * stride_dtb_h + o_p * stride_dtb_p, mask=m_p, other=0.0).to(tl.float32)
        if DT_SOFTPLUS:
            b_dt = _softplus(b_dt)
        b_a = tl.load(
            A + i_h * stride_a_h + o_p[:, None] * stride_a_p + o_n[None, :] * stride_a_n, mask=m_pn, other=0.0
        ).to(tl.float32)
        b_da = tl.exp(b_a * b_dt[:, None])
        b_dbx = (b_dt * b_x)[:, None]
    b_B = tl.load(B + i_b * stride_b_b + i_g * stride_b_g + o_n * stride_b_n, mask=m_n, other=0.0).to(tl.float32)
    b_C = tl.load(C + i_b * stride_c_b + i_g * stride_c_g + o_n * stride_c_n, mask=m_n, other=0.0).to(tl.float32)
    b_s = b_s * b_da + b_dbx * b_B[None, :]
    tl.store(p_s, b_s.to(STATE.dtype.element_ty), mask=m_pn)
    b_out = tl.sum(b_s * b_C[None, :], axis=1)
    if HAS_D:
        b_out += b_x * tl.load(D + i_h * stride_d_h + o_p * stride_d_p, mask=m_p, other=0.0).to(tl.float32)
    if HAS_Z:
        b_z = tl.load(Z + i_b * stride_z_b + i_h * stride_z_h + o_p * stride_z_p, mask=m_p, other=0.0).to(tl.float32)
        b_out = b_out * b_z * tl.sigmoid(b_z)
    tl.store(OUT + i_b * stride_o_b + i_h * stride_o_h + o_p * stride_o_p, b_out.to(OUT.dtype.element_ty), mask=m_p)


def _s(t: torch.Tensor | None, n: int) -> tuple[int, ...]:
    return tuple(t.stride()) if t is not None else (0,) * n


def selective_state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices):
    """Triton single-step update; see :func:`ssm_kernels.state_update.interface.selective_state_update`."""
    mamba1 = x.dim() == 2
    if mamba1:
        state_v = state.unsqueeze(1)
        x, dt, A, B, C = x.unsqueeze(1), dt.unsqueeze(1), A.unsqueeze(0), B.unsqueeze(1), C.unsqueeze(1)
        D = D.unsqueeze(0) if D is not None else None
        z = z.unsqueeze(1) if z is not None else None
        dt_bias = dt_bias.unsqueeze(0) if dt_bias is not None else None
    else:
        state_v = state
    batch, nheads, headdim = x.shape
    dstate = state_v.shape[-1]
    ngroups = B.shape[1]
    out = torch.empty_like(x)
    if out.numel() == 0:
        return out.squeeze(1) if mamba1 else out
    bn = next_pow2(dstate)
    bp = min(next_pow2(headdim), max(16, 4096 // bn))
    tie = (
        dt.stride(-1) == 0 and A.stride(-1) == 0 and A.stride(-2) == 0 and (dt_bias is None or dt_bias.stride(-1) == 0)
    )
    grid = (cdiv(headdim, bp), batch, nheads)
    fast(_state_update_kernel)[grid](
        state_v, x, dt, dt_bias if dt_bias is not None else dt, A, B, C, D if D is not None else x,
        z if z is not None else x, out, state_batch_indices if state_batch_indices is not None else x,
        *_s(state_v, 4), *_s(x, 3), *_s(dt, 3), *_s(dt_bias, 2), *_s(A, 3), *_s(B, 3), *_s(C, 3),
        *_s(D, 2), *_s(z, 3), *_s(out, 3),
        headdim, dstate, nheads // ngroups,
        HAS_DT_BIAS=dt_bias is not None, DT_SOFTPLUS=dt_softplus, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_STATE_IDX=state_batch_indices is not None, TIE_HDIM=tie, BP=bp, BN=bn,
        num_warps=8 if bp * bn >= 4096 else 4,  # sm_90: <= ~100 registers per thread
    )  # fmt: skip
    return out.squeeze(1) if mamba1 else out
