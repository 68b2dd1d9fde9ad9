"""Triton kernels for the causal depthwise conv1d: forward, backward and the decoding update.

Forward: one program per (batch, block of BD channels, block of BL positions); each of the
``WIDTH`` taps loads a shifted (BD, BL) tile of ``xp`` (``x`` left-padded by ``initial_states``)
and accumulates in float32. Arbitrary strides (including channel-last ``x``) are honoured.

Backward: ``dpre = dy * silu'(pre)`` is recomputed on the fly (no activation: ``dpre = dy``).
Each program owns a run of position tiles of one (batch, channel block) and produces
``dx[s] = sum_k w[k] * dpre[s + W - 1 - k]`` for its positions (and ``dinitial_states`` for the
negative positions, in the program holding position 0), plus float32 partials of ``dweight``
and ``dbias`` that are reduced with torch (deterministic).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._launch import fast
from ..backend import cdiv, needs_autograd, next_pow2

__all__ = ["causal_conv1d_triton", "causal_conv1d_update_triton"]


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def _load_xp(
    X, INIT, x_base, init_base, o_d, m_d, s, stride_xd, stride_xl, stride_id, stride_il, L,
    WIDTH: tl.constexpr, HAS_INIT: tl.constexpr,
):  # fmt: skip
    """fp32 tile (BD, BS) of the padded input at positions ``s`` (negative: initial state)."""
    m_pos = (s >= 0) & (s < L)
    b_x = tl.load(
        X + x_base + o_d[:, None] * stride_xd + s[None, :] * stride_xl,
        mask=m_d[:, None] & m_pos[None, :],
        other=0.0,
    ).to(tl.float32)
    if HAS_INIT:
        m_neg = (s < 0) & (s >= 1 - WIDTH)
        b_x += tl.load(
            INIT + init_base + o_d[:, None] * stride_id + (s + WIDTH - 1)[None, :] * stride_il,
            mask=m_d[:, None] & m_neg[None, :],
            other=0.0,
        ).to(tl.float32)
    return b_x


@triton.jit
def _load_seq(SEQ, seq_base, s, stride_sl, L):
    """Sequence id at positions ``s``; negative positions belong to the sequence of position 0."""
    s_c = tl.maximum(s, 0)
    return tl.load(SEQ + seq_base + s_c * stride_sl, mask=s_c < L, other=-1)


@triton.jit
def _conv_pre(
    X, INIT, SEQ, Wt, BIAS, x_base, init_base, seq_base, o_d, m_d, t,
    stride_xd, stride_xl, stride_id, stride_il, stride_sl, stride_wd, stride_wk, L,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr,
    BD: tl.constexpr, BS: tl.constexpr,
):  # fmt: skip
    """Pre-activation conv output (BD, BS) at positions ``t``, float32."""
    if HAS_BIAS:
        b_acc = tl.zeros([BD, BS], dtype=tl.float32) + tl.load(BIAS + o_d, mask=m_d, other=0.0).to(tl.float32)[:, None]
    else:
        b_acc = tl.zeros([BD, BS], dtype=tl.float32)
    if HAS_SEQ:
        b_seq_t = _load_seq(SEQ, seq_base, t, stride_sl, L)
    for k in tl.static_range(WIDTH):
        s = t - (WIDTH - 1) + k
        b_x = _load_xp(X, INIT, x_base, init_base, o_d, m_d, s, stride_xd, stride_xl, stride_id, stride_il, L,
                       WIDTH, HAS_INIT)  # fmt: skip
        if HAS_SEQ:
            b_same = _load_seq(SEQ, seq_base, s, stride_sl, L) == b_seq_t
            b_x = tl.where(b_same[None, :], b_x, 0.0)
        b_w = tl.load(Wt + o_d * stride_wd + k * stride_wk, mask=m_d, other=0.0).to(tl.float32)
        b_acc += b_w[:, None] * b_x
    return b_acc


@triton.jit
def _causal_conv1d_fwd_kernel(
    X, INIT, SEQ, Wt, BIAS, Y,
    stride_xb, stride_xd, stride_xl, stride_ib, stride_id, stride_il, stride_sb, stride_sl,
    stride_wd, stride_wk, stride_yb, stride_yd, stride_yl, D, L,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr,
    ACT: tl.constexpr, BD: tl.constexpr, BL: tl.constexpr,
):  # fmt: skip
    i_l = tl.program_id(0)  # position tiles on axis 0 (no 65535 limit for long sequences)
    i_d = tl.program_id(1)
    i_b = tl.program_id(2).to(tl.int64)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    o_t = i_l * BL + tl.arange(0, BL)
    m_t = o_t < L
    b_y = _conv_pre(X, INIT, SEQ, Wt, BIAS, i_b * stride_xb, i_b * stride_ib, i_b * stride_sb, o_d, m_d, o_t,
                    stride_xd, stride_xl, stride_id, stride_il, stride_sl, stride_wd, stride_wk, L,
                    WIDTH, HAS_BIAS, HAS_INIT, HAS_SEQ, BD, BL)  # fmt: skip
    if ACT:
        b_y = b_y * tl.sigmoid(b_y)
    tl.store(
        Y + i_b * stride_yb + o_d[:, None] * stride_yd + o_t[None, :] * stride_yl,
        b_y.to(Y.dtype.element_ty),
        mask=m_d[:, None] & m_t[None, :],
    )


@triton.jit
def _bwd_tile(
    X, INIT, SEQ, Wt, BIAS, DY, x_base, init_base, seq_base, dy_base, o_d, m_d, o_s,
    stride_xd, stride_xl, stride_id, stride_il, stride_sl, stride_wd, stride_wk, stride_dyd, stride_dyl, L,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr,
    ACT: tl.constexpr, BD: tl.constexpr, BS: tl.constexpr, BJ: tl.constexpr,
):  # fmt: skip
    """Backward of one tile of source positions ``o_s`` (may be negative: the initial state).

    Loads the ``2W - 1`` shifted input tiles once as a (BD, BS, BJ) block (shift ``j - (W - 1)``),
    recomputes the pre-activation at the ``W`` targets ``t = s + m`` that read ``s``, and returns
    ``dsrc[s] = sum_m w[W - 1 - m] * dpre[s + m]`` plus this tile's dweight (BD, BJ; column k is
    tap k) and dbias (BD,) contributions, which come from the targets ``t = s`` (m = 0).
    """
    o_j = tl.arange(0, BJ)
    m_j = o_j < 2 * WIDTH - 1
    src = o_s[:, None] + (o_j - (WIDTH - 1))[None, :]  # (BS, BJ)
    m_src = m_j[None, :] & (src >= 1 - WIDTH) & (src < L)
    b_x3 = tl.load(
        X + x_base + o_d[:, None, None] * stride_xd + src[None, :, :] * stride_xl,
        mask=m_d[:, None, None] & (m_src & (src >= 0))[None, :, :],
        other=0.0,
    ).to(tl.float32)  # (BD, BS, BJ)
    if HAS_INIT:
        b_x3 += tl.load(
            INIT + init_base + o_d[:, None, None] * stride_id + (src + WIDTH - 1)[None, :, :] * stride_il,
            mask=m_d[:, None, None] & (m_src & (src < 0))[None, :, :],
            other=0.0,
        ).to(tl.float32)
    if HAS_SEQ:
        b_seq3 = _load_seq(SEQ, seq_base, src, stride_sl, L)  # (BS, BJ)
        b_seq_s = _load_seq(SEQ, seq_base, o_s, stride_sl, L)  # (BS,)
    if HAS_BIAS:
        b_bias = tl.load(BIAS + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_dsrc = tl.zeros([BD, BS], dtype=tl.float32)
    b_dw = tl.zeros([BD, BJ], dtype=tl.float32)
    b_db = tl.zeros([BD], dtype=tl.float32)
    for m in tl.static_range(WIDTH):
        t = o_s + m
        m_t = (t >= 0) & (t < L)
        b_dpre = tl.load(
            DY + dy_base + o_d[:, None] * stride_dyd + t[None, :] * stride_dyl,
            mask=m_d[:, None] & m_t[None, :],
            other=0.0,
        ).to(tl.float32)
        if HAS_SEQ:
            b_seq_t = _load_seq(SEQ, seq_base, t, stride_sl, L)
            b_xm = tl.where((b_seq3 == b_seq_t[:, None])[None, :, :], b_x3, 0.0)
        else:
            b_xm = b_x3
        if ACT:
            # target t reads shifts j - (W - 1) = m - (W - 1) + k, i.e. tap k = j - m
            o_k = o_j - m
            b_wm = tl.load(
                Wt + o_d[:, None] * stride_wd + o_k[None, :] * stride_wk,
                mask=m_d[:, None] & ((o_k >= 0) & (o_k < WIDTH))[None, :],
                other=0.0,
            ).to(tl.float32)  # (BD, BJ)
            b_pre = tl.sum(b_xm * b_wm[:, None, :], axis=2)
            if HAS_BIAS:
                b_pre += b_bias[:, None]
            b_sig = tl.sigmoid(b_pre)
            b_dpre = b_dpre * b_sig * (1.0 + b_pre * (1.0 - b_sig))
        if m == 0:
            b_dw += tl.sum(b_dpre[:, :, None] * b_xm, axis=1)
            b_db += tl.sum(b_dpre, axis=1)
        b_wk = tl.load(Wt + o_d * stride_wd + (WIDTH - 1 - m) * stride_wk, mask=m_d, other=0.0).to(tl.float32)
        if HAS_SEQ:
            b_dpre = tl.where((b_seq_t == b_seq_s)[None, :], b_dpre, 0.0)
        b_dsrc += b_wk[:, None] * b_dpre
    return b_dsrc, b_dw, b_db


@triton.jit
def _causal_conv1d_bwd_kernel(
    X, INIT, SEQ, Wt, BIAS, DY, DX, DINIT, DW_PART, DB_PART,
    stride_xb, stride_xd, stride_xl, stride_ib, stride_id, stride_il, stride_sb, stride_sl,
    stride_wd, stride_wk, stride_dyb, stride_dyd, stride_dyl, stride_dxb, stride_dxd, stride_dxl,
    stride_dib, stride_did, stride_dil, D, L, tiles_per_program, n_splits,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr,
    ACT: tl.constexpr, BD: tl.constexpr, BL: tl.constexpr, BJ: tl.constexpr, BI: tl.constexpr,
):  # fmt: skip
    i_sp = tl.program_id(0)
    i_d = tl.program_id(1)
    i_b = tl.program_id(2).to(tl.int64)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    o_j = tl.arange(0, BJ)
    x_base = i_b * stride_xb
    init_base = i_b * stride_ib
    seq_base = i_b * stride_sb
    dy_base = i_b * stride_dyb
    b_dw = tl.zeros([BD, BJ], dtype=tl.float32)
    b_db = tl.zeros([BD], dtype=tl.float32)
    for it in range(0, tiles_per_program):
        o_s = (i_sp * tiles_per_program + it) * BL + tl.arange(0, BL)
        m_s = o_s < L
        b_dx, b_dw_t, b_db_t = _bwd_tile(
            X, INIT, SEQ, Wt, BIAS, DY, x_base, init_base, seq_base, dy_base, o_d, m_d, o_s,
            stride_xd, stride_xl, stride_id, stride_il, stride_sl, stride_wd, stride_wk, stride_dyd, stride_dyl, L,
            WIDTH, HAS_BIAS, HAS_INIT, HAS_SEQ, ACT, BD, BL, BJ,
        )  # fmt: skip
        b_dw += b_dw_t
        b_db += b_db_t
        tl.store(
            DX + i_b * stride_dxb + o_d[:, None] * stride_dxd + o_s[None, :] * stride_dxl,
            b_dx.to(DX.dtype.element_ty),
            mask=m_d[:, None] & m_s[None, :],
        )
    if HAS_INIT:
        if i_sp == 0:
            o_i = tl.arange(0, BI)  # index into initial_states; position o_i - (WIDTH - 1)
            b_dinit, b_unused_dw, b_unused_db = _bwd_tile(
                X, INIT, SEQ, Wt, BIAS, DY, x_base, init_base, seq_base, dy_base, o_d, m_d, o_i - (WIDTH - 1),
                stride_xd, stride_xl, stride_id, stride_il, stride_sl, stride_wd, stride_wk, stride_dyd, stride_dyl, L,
                WIDTH, HAS_BIAS, HAS_INIT, HAS_SEQ, ACT, BD, BI, BJ,
            )  # fmt: skip
            tl.store(
                DINIT + i_b * stride_dib + o_d[:, None] * stride_did + o_i[None, :] * stride_dil,
                b_dinit.to(DINIT.dtype.element_ty),
                mask=m_d[:, None] & (o_i < WIDTH - 1)[None, :],
            )
    o_part = (i_b * n_splits + i_sp) * D + o_d
    tl.store(DW_PART + o_part[:, None] * WIDTH + o_j[None, :], b_dw, mask=m_d[:, None] & (o_j < WIDTH)[None, :])
    if HAS_BIAS:
        tl.store(DB_PART + o_part, b_db, mask=m_d)


@triton.jit
def _causal_conv1d_update_kernel(
    X, STATE, Wt, BIAS, Y, CACHE_SEQLENS, STATE_IDX,
    stride_xb, stride_xd, stride_xl, stride_sb, stride_sd, stride_sl, stride_wd, stride_wk,
    stride_yb, stride_yd, stride_yl, D, SEQLEN, S,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, CIRCULAR: tl.constexpr,
    HAS_STATE_IDX: tl.constexpr, BD: tl.constexpr, BS: tl.constexpr,
):  # fmt: skip
    i_b = tl.program_id(0).to(tl.int64)
    i_d = tl.program_id(1)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    if HAS_STATE_IDX:
        i_sb = tl.load(STATE_IDX + i_b).to(tl.int64)
    else:
        i_sb = i_b
    p_x = X + i_b * stride_xb + o_d * stride_xd
    p_s = STATE + i_sb * stride_sb + o_d * stride_sd
    if CIRCULAR:
        pos = tl.load(CACHE_SEQLENS + i_b).to(tl.int64)
    # outputs first (every read of the state happens before any write)
    for t in range(0, SEQLEN):
        if HAS_BIAS:
            b_y = tl.load(BIAS + o_d, mask=m_d, other=0.0).to(tl.float32)
        else:
            b_y = tl.zeros([BD], dtype=tl.float32)
        for k in tl.static_range(WIDTH):
            j = tl.zeros([BD], dtype=tl.int64) + (t - (WIDTH - 1) + k)  # position relative to the first new input
            if CIRCULAR:
                idx_s = ((pos + j) % S + S) % S
            else:
                idx_s = S + j
            b_old = tl.load(p_s + idx_s * stride_sl, mask=m_d & (j < 0), other=0.0).to(tl.float32)
            b_new = tl.load(p_x + tl.maximum(j, 0) * stride_xl, mask=m_d & (j >= 0), other=0.0).to(tl.float32)
            b_w = tl.load(Wt + o_d * stride_wd + k * stride_wk, mask=m_d, other=0.0).to(tl.float32)
            b_y += b_w * (b_old + b_new)
        if ACT:
            b_y = b_y * tl.sigmoid(b_y)
        tl.store(Y + i_b * stride_yb + o_d * stride_yd + t * stride_yl, b_y.to(Y.dtype.element_ty), mask=m_d)
    o_j = tl.arange(0, BS)
    if CIRCULAR:
        m_j = o_j < SEQLEN
        b_new = tl.load(p_x[:, None] + o_j[None, :] * stride_xl, mask=m_d[:, None] & m_j[None, :], other=0.0)
        tl.debug_barrier()
        idx_s = (pos + o_j) % S
        tl.store(p_s[:, None] + idx_s[None, :] * stride_sl, b_new.to(STATE.dtype.element_ty),
                 mask=m_d[:, None] & m_j[None, :])  # fmt: skip
    else:
        # shift register: new_state[j] = concat(state, x)[j + SEQLEN]
        src = o_j + SEQLEN
        m_j = o_j < S
        b_old = tl.load(p_s[:, None] + src[None, :] * stride_sl, mask=m_d[:, None] & (m_j & (src < S))[None, :],
                        other=0.0).to(tl.float32)  # fmt: skip
        b_new = tl.load(p_x[:, None] + (src - S)[None, :] * stride_xl, mask=m_d[:, None] & (m_j & (src >= S))[None, :],
                        other=0.0).to(tl.float32)  # fmt: skip
        tl.debug_barrier()
        tl.store(p_s[:, None] + o_j[None, :] * stride_sl, (b_old + b_new).to(STATE.dtype.element_ty),
                 mask=m_d[:, None] & m_j[None, :])  # fmt: skip


# ----------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------
def _tiles(x: torch.Tensor, dim: int, seqlen: int, backward: bool) -> tuple[int, int]:
    """(BD, BL) tile sizes. Chosen from the register use of the compiled sm_90 kernels (no spills):
    the backward holds a (BD, BL, BJ) block of shifted inputs, so its 2-D tile is small."""
    np2 = next_pow2
    channel_last = x.stride(1) == 1 and x.stride(2) != 1
    budget = 256 if backward else 2048
    if channel_last:
        budget //= 2
        bd = min(np2(dim), 32 if backward else 64)
        bl = min(np2(max(seqlen, 1)), max(budget // bd, 1))
    else:
        bl = min(np2(max(seqlen, 1)), 128 if backward else 256)
        bd = min(np2(dim), max(budget // bl, 1))
    return bd, bl


def _strides3(t: torch.Tensor | None) -> tuple[int, int, int]:
    return (t.stride(0), t.stride(1), t.stride(2)) if t is not None else (0, 0, 0)


def _fwd(x, weight, bias, seq_idx, initial_states, activation):
    batch, dim, seqlen = x.shape
    width = weight.shape[1]
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    bd, bl = _tiles(x, dim, seqlen, backward=False)
    grid = (cdiv(seqlen, bl), cdiv(dim, bd), batch)
    fast(_causal_conv1d_fwd_kernel)[grid](
        x, initial_states if initial_states is not None else x, seq_idx if seq_idx is not None else x,
        weight, bias if bias is not None else weight, y,
        *_strides3(x), *_strides3(initial_states),
        seq_idx.stride(0) if seq_idx is not None else 0, seq_idx.stride(1) if seq_idx is not None else 0,
        weight.stride(0), weight.stride(1), *_strides3(y), dim, seqlen,
        WIDTH=width, HAS_BIAS=bias is not None, HAS_INIT=initial_states is not None,
        HAS_SEQ=seq_idx is not None, ACT=activation is not None, BD=bd, BL=bl, num_warps=4,
    )  # fmt: skip
    return y


def _bwd(x, weight, bias, seq_idx, initial_states, dy, activation):
    batch, dim, seqlen = x.shape
    width = weight.shape[1]
    dx = torch.empty_like(x)
    dinit = torch.empty_like(initial_states) if initial_states is not None else None
    bd, bl = _tiles(x, dim, seqlen, backward=True)
    n_dblocks = cdiv(dim, bd)
    n_tiles = cdiv(seqlen, bl)
    if x.is_cuda:
        target = 8 * torch.cuda.get_device_properties(x.device).multi_processor_count
    else:
        target = 4
    n_splits = max(1, min(n_tiles, cdiv(target, batch * n_dblocks)))
    tiles_per_program = cdiv(n_tiles, n_splits)
    n_splits = cdiv(n_tiles, tiles_per_program)
    dw_part = torch.empty((batch * n_splits, dim, width), device=x.device, dtype=torch.float32)
    db_part = torch.empty((batch * n_splits, dim), device=x.device, dtype=torch.float32) if bias is not None else None
    fast(_causal_conv1d_bwd_kernel)[(n_splits, n_dblocks, batch)](
        x, initial_states if initial_states is not None else x, seq_idx if seq_idx is not None else x,
        weight, bias if bias is not None else weight, dy, dx,
        dinit if dinit is not None else dx, dw_part, db_part if db_part is not None else dw_part,
        *_strides3(x), *_strides3(initial_states),
        seq_idx.stride(0) if seq_idx is not None else 0, seq_idx.stride(1) if seq_idx is not None else 0,
        weight.stride(0), weight.stride(1), *_strides3(dy), *_strides3(dx), *_strides3(dinit),
        dim, seqlen, tiles_per_program, n_splits,
        WIDTH=width, HAS_BIAS=bias is not None, HAS_INIT=initial_states is not None,
        HAS_SEQ=seq_idx is not None, ACT=activation is not None, BD=bd, BL=bl,
        BJ=next_pow2(2 * width - 1), BI=next_pow2(max(width - 1, 1)), num_warps=4,
    )  # fmt: skip
    dw = dw_part.sum(0).to(weight.dtype)
    db = db_part.sum(0).to(bias.dtype) if bias is not None else None
    return dx, dinit, dw, db


def _final_states(x, initial_states, width):
    batch, dim, seqlen = x.shape
    if seqlen >= width - 1:
        return x[..., seqlen - (width - 1) :]
    pad = initial_states if initial_states is not None else x.new_zeros(batch, dim, width - 1)
    return torch.cat([pad.to(x.dtype), x], dim=-1)[..., seqlen:]


def _forward(x, weight, bias, seq_idx, initial_states, return_final_states, activation):
    """(y, final states or None, x as the kernels read it)."""
    if x.stride(2) != 1 and x.stride(1) != 1:
        x = x.contiguous()
    y = _fwd(x, weight, bias, seq_idx, initial_states, activation)
    final = _final_states(x, initial_states, weight.shape[1]).to(x.dtype).contiguous() if return_final_states else None
    return y, final, x


class _CausalConv1dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, seq_idx, initial_states, return_final_states, activation):
        y, final, x = _forward(x, weight, bias, seq_idx, initial_states, return_final_states, activation)
        ctx.save_for_backward(x, weight, bias, seq_idx, initial_states)
        ctx.activation = activation
        return y if final is None else (y, final)

    @staticmethod
    def backward(ctx, dy, dfinal=None):
        x, weight, bias, seq_idx, initial_states = ctx.saved_tensors
        if dy.stride(2) != 1 and dy.stride(1) != 1:
            dy = dy.contiguous()
        dx, dinit, dw, db = _bwd(x, weight, bias, seq_idx, initial_states, dy, ctx.activation)
        if dfinal is not None:
            width, seqlen = weight.shape[1], x.shape[2]
            n = min(width - 1, seqlen)
            if n > 0:
                dx[..., seqlen - n :] += dfinal[..., width - 1 - n :].to(dx.dtype)
            if dinit is not None and width - 1 > seqlen:
                dinit[..., seqlen:] += dfinal[..., : width - 1 - seqlen].to(dinit.dtype)
        return (
            dx,  # x
            dw,  # weight
            db,  # bias
            None,  # seq_idx
            dinit,  # initial_states
            None,  # return_final_states
            None,  # activation
        )


def causal_conv1d_triton(x, weight, bias, seq_idx, initial_states, return_final_states, final_states_out, activation):
    """Triton causal conv1d; see :func:`ssm_kernels.causal_conv1d.interface.causal_conv1d_fn`."""
    if needs_autograd(x, weight, bias, initial_states):
        out = _CausalConv1dFn.apply(x, weight, bias, seq_idx, initial_states, return_final_states, activation)
    else:  # inference: no autograd node
        y, final, _ = _forward(x, weight, bias, seq_idx, initial_states, return_final_states, activation)
        out = y if final is None else (y, final)
    if not return_final_states:
        return out
    y, final = out
    if final_states_out is not None:
        with torch.no_grad():
            final_states_out.copy_(final)
        return y, final_states_out
    return y, final


def causal_conv1d_update_triton(x, conv_state, weight, bias, activation, cache_seqlens, conv_state_indices):
    """Triton decoding update; see :func:`ssm_kernels.causal_conv1d.interface.causal_conv1d_update`."""
    unsqueeze = x.dim() == 2
    x3 = x.unsqueeze(-1) if unsqueeze else x
    batch, dim, seqlen = x3.shape
    width = weight.shape[1]
    state_len = conv_state.shape[2]
    y = torch.empty_like(x3)
    if x3.numel() > 0:
        bd = min(next_pow2(dim), 64)
        fast(_causal_conv1d_update_kernel)[(batch, cdiv(dim, bd))](
            x3, conv_state, weight, bias if bias is not None else weight, y,
            cache_seqlens if cache_seqlens is not None else x3,
            conv_state_indices if conv_state_indices is not None else x3,
            *_strides3(x3), *_strides3(conv_state), weight.stride(0), weight.stride(1), *_strides3(y),
            dim, seqlen, state_len,
            WIDTH=width, HAS_BIAS=bias is not None, ACT=activation is not None, CIRCULAR=cache_seqlens is not None,
            HAS_STATE_IDX=conv_state_indices is not None, BD=bd,
            BS=next_pow2(max(state_len, seqlen, 1)), num_warps=4,
        )  # fmt: skip
    return y.squeeze(-1) if unsqueeze else y
