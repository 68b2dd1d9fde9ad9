"""Triton kernels for the causal depthwise conv1d: forward, backward and the decoding update.

Forward: one program per (batch, block of BD channels, block of BL positions); each of the
``WIDTH`` taps loads a shifted (BD, BL) tile of ``xp`` (``x`` left-padded by ``initial_states``)
and accumulates in float32. Arbitrary strides (including channel-last ``x``) are honoured.

Backward: ``dpre = dy * silu'(pre)`` (no activation: ``dpre = dy``) and
``dx[s] = sum_k w[k] * dpre[s + W - 1 - k]``. A program owns BD channels of one batch row and a run
of positions, which it streams in chunks of BL positions as columns of BD values, one channel per
thread: it carries the last ``W - 1`` columns of ``x`` and ``dpre`` from step to step, so every input
is read once, no shifted copy is loaded and no column is recomputed; ``W - 1`` extra steps past its run
finish its last sources. A chunk is read as BL column loads where channels are contiguous
(channel-last) and as one (BD, BL) load split into columns otherwise. ``dinitial_states`` comes from
the program holding position 0; float32 partials of ``dweight`` and ``dbias`` per program are reduced
with torch (deterministic).
"""

from __future__ import annotations

import os

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
def _mask(m_d, cond):
    """``m_d & cond`` for a scalar ``cond``, as a select (the interpreter makes ``vector & scalar`` int32)."""
    return tl.where(cond, m_d, False)


@triton.jit
def _columns(t, BD: tl.constexpr, U: tl.constexpr, LOG2U: tl.constexpr):
    """(BD, U) -> tuple of its U columns (BD,), by halving splits (each level splits every part into the
    columns of even and odd index; listing all even parts before all odd ones keeps the tuple in order)."""
    cols = (t,)
    for lvl in tl.static_range(LOG2U):
        evens = ()
        odds = ()
        for c in tl.static_range(1 << lvl):
            if (U >> lvl) == 2:
                a, b = tl.split(cols[c])
            else:
                a, b = tl.split(tl.reshape(cols[c], [BD, (U >> lvl) // 2, 2]))
            evens = evens + (a,)
            odds = odds + (b,)
        cols = evens + odds
    if LOG2U == 0:
        cols = (tl.reshape(t, [BD]),)
    return cols


@triton.jit
def _join_columns(cols, BD: tl.constexpr, U: tl.constexpr, LOG2U: tl.constexpr):
    """Inverse of :func:`_columns`: tuple of U columns (BD,) -> (BD, U)."""
    for lvl in tl.static_range(LOG2U):
        parts = ()
        for c in tl.static_range(U >> (lvl + 1)):
            parts = parts + (tl.reshape(tl.join(cols[c], cols[c + (U >> (lvl + 1))]), [BD, 2 << lvl]),)
        cols = parts
    if LOG2U == 0:
        out = tl.reshape(cols[0], [BD, 1])
    else:
        out = cols[0]
    return out


@triton.jit
def _load_block(P, base, o_d, m_d, t0, o_u, t_end, stride_d, stride_l,
                AS_COLS: tl.constexpr, BD: tl.constexpr, U: tl.constexpr, LOG2U: tl.constexpr):  # fmt: skip
    """Positions ``t0 .. t0 + U - 1`` (zero from ``t_end`` on) of one (batch, channel block) as U fp32
    columns (BD,). ``AS_COLS``: one load per column (channels contiguous); else one (BD, U) load."""
    if AS_COLS:
        cols = ()
        for u in tl.static_range(U):
            cols = cols + (
                tl.load(P + base + o_d * stride_d + (t0 + u) * stride_l, mask=_mask(m_d, t0 + u < t_end), other=0.0).to(
                    tl.float32
                ),
            )
    else:
        o_t = t0 + o_u
        b_blk = tl.load(
            P + base + o_d[:, None] * stride_d + o_t[None, :] * stride_l,
            mask=m_d[:, None] & (o_t < t_end)[None, :],
            other=0.0,
        ).to(tl.float32)
        cols = _columns(b_blk, BD, U, LOG2U)
    return cols


@triton.jit
def _load_xcol(X, INIT, x_base, init_base, o_d, m_d, s, stride_xd, stride_xl, stride_id, stride_il, L,
               WIDTH: tl.constexpr, HAS_INIT: tl.constexpr):  # fmt: skip
    """fp32 column (BD,) of the padded input at the scalar position ``s`` (negative: initial state)."""
    b_x = tl.load(X + x_base + o_d * stride_xd + s * stride_xl, mask=_mask(m_d, (s >= 0) & (s < L)), other=0.0)
    b_x = b_x.to(tl.float32)
    if HAS_INIT:
        i = tl.maximum(s + WIDTH - 1, 0)
        b_x += tl.load(INIT + init_base + o_d * stride_id + i * stride_il, mask=_mask(m_d, (s < 0) & (s >= 1 - WIDTH)),
                       other=0.0).to(tl.float32)  # fmt: skip
    return b_x


@triton.jit
def _bwd_step(x_t, dy_t, seq_t, xwin, dwin, swin, ws, b_bias, dw, db,
              WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, ACT: tl.constexpr,
              ACC: tl.constexpr):  # fmt: skip
    """One target position ``t``: columns (BD,) of x and dy at ``t``; the windows hold x, dpre and the
    sequence ids at ``t - W + 1 .. t - 1``. Returns ``dsrc`` at ``s = t - W + 1``, the windows moved on
    by one and, with ``ACC``, dweight / dbias with ``t``'s contributions added."""
    b_pre = ws[WIDTH - 1] * x_t
    if HAS_BIAS:
        b_pre += b_bias
    xs = ()
    for k in tl.static_range(WIDTH - 1):
        b_xk = xwin[k]
        if HAS_SEQ:
            b_xk = tl.where(swin[k] == seq_t, b_xk, 0.0)
        b_pre += ws[k] * b_xk
        xs = xs + (b_xk,)
    xs = xs + (x_t,)
    if ACT:
        b_sig = tl.sigmoid(b_pre)
        b_dpre = dy_t * b_sig * (1.0 + b_pre * (1.0 - b_sig))
    else:
        b_dpre = dy_t
    if ACC:
        db += b_dpre
        dw_new = ()
        for k in tl.static_range(WIDTH):
            dw_new = dw_new + (dw[k] + b_dpre * xs[k],)
        dw = dw_new
    # dsrc[s] = sum_m w[W - 1 - m] * dpre[s + m]: m < W - 1 from the window, m = W - 1 is t itself
    b_dsrc = ws[0] * b_dpre
    if HAS_SEQ and WIDTH > 1:
        b_dsrc = tl.where(swin[0] == seq_t, b_dsrc, 0.0)
    for m in tl.static_range(WIDTH - 1):
        b_term = ws[WIDTH - 1 - m] * dwin[m]
        if HAS_SEQ:
            b_term = tl.where(swin[0] == swin[m], b_term, 0.0)
        b_dsrc += b_term
    xwin_new = ()
    dwin_new = ()
    swin_new = ()
    for k in tl.static_range(1, WIDTH - 1):
        xwin_new = xwin_new + (xwin[k],)
        dwin_new = dwin_new + (dwin[k],)
        if HAS_SEQ:
            swin_new = swin_new + (swin[k],)
    if WIDTH > 1:
        xwin_new = xwin_new + (x_t,)
        dwin_new = dwin_new + (b_dpre,)
        if HAS_SEQ:
            swin_new = swin_new + (seq_t,)
    return b_dsrc, xwin_new, dwin_new, swin_new, dw, db


@triton.jit
def _store_src(DX, DINIT, dx_base, dinit_base, o_d, m_d, col, s, lo, hi, stride_dxd, stride_dxl, stride_did,
               stride_dil, WIDTH: tl.constexpr, HAS_INIT: tl.constexpr, TO_DX: tl.constexpr):  # fmt: skip
    """Store the column ``col`` of source ``s`` (kept when ``lo <= s < hi``): dx, or dinitial_states for s < 0."""
    keep = (s >= lo) & (s < hi)
    if TO_DX:
        tl.store(DX + dx_base + o_d * stride_dxd + s * stride_dxl, col.to(DX.dtype.element_ty),
                 mask=_mask(m_d, keep & (s >= 0)))  # fmt: skip
    if HAS_INIT:
        i = tl.maximum(s + WIDTH - 1, 0)
        tl.store(DINIT + dinit_base + o_d * stride_did + i * stride_dil, col.to(DINIT.dtype.element_ty),
                 mask=_mask(m_d, keep & (s < 0)))  # fmt: skip


@triton.jit
def _causal_conv1d_bwd_kernel(
    X, INIT, SEQ, Wt, BIAS, DY, DX, DINIT, DW_PART, DB_PART,
    stride_xb, stride_xd, stride_xl, stride_ib, stride_id, stride_il, stride_sb, stride_sl,
    stride_wd, stride_wk, stride_dyb, stride_dyd, stride_dyl, stride_dxb, stride_dxd, stride_dxl,
    stride_dib, stride_did, stride_dil, D, L, chunks_per_program, n_splits,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr,
    ACT: tl.constexpr, X_COLS: tl.constexpr, DY_COLS: tl.constexpr, DX_COLS: tl.constexpr,
    BD: tl.constexpr, BL: tl.constexpr, LOG2BL: tl.constexpr,
):  # fmt: skip
    """Program (split, channel block, batch) streams the targets ``t`` of its positions ``[a, a + n)``
    in chunks of ``BL``, then ``W - 1`` more (the halo), carrying the last ``W - 1`` columns of x and
    dpre: every input is read once, and each chunk's ``dsrc`` covers ``s = t - W + 1``."""
    i_sp = tl.program_id(0)
    i_d = tl.program_id(1)
    i_b = tl.program_id(2).to(tl.int64)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    o_u = tl.arange(0, BL)
    span = chunks_per_program * BL
    a = i_sp * span  # first target (and source) of this program
    hi = tl.minimum(a + span, L)  # sources [lo, hi) are stored here
    if HAS_INIT:
        lo = tl.where(i_sp == 0, 1 - WIDTH, a)
    else:
        lo = a
    x_base = i_b * stride_xb
    init_base = i_b * stride_ib
    seq_base = i_b * stride_sb
    dy_base = i_b * stride_dyb
    dx_base = i_b * stride_dxb
    dinit_base = i_b * stride_dib
    ws = ()
    for k in tl.static_range(WIDTH):
        ws = ws + (tl.load(Wt + o_d * stride_wd + k * stride_wk, mask=m_d, other=0.0).to(tl.float32),)
    if HAS_BIAS:
        b_bias = tl.load(BIAS + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        b_bias = tl.zeros([BD], dtype=tl.float32)
    xwin = ()
    dwin = ()
    swin = ()
    for j in tl.static_range(WIDTH - 1):
        s = a - (WIDTH - 1) + j
        xwin = xwin + (_load_xcol(X, INIT, x_base, init_base, o_d, m_d, s, stride_xd, stride_xl, stride_id,
                                  stride_il, L, WIDTH, HAS_INIT),)  # fmt: skip
        dwin = dwin + (tl.zeros([BD], dtype=tl.float32),)  # dpre before a: only feeds sources < a
        if HAS_SEQ:
            swin = swin + (_load_seq(SEQ, seq_base, s, stride_sl, L),)
    dw = ()
    for k in tl.static_range(WIDTH):
        dw = dw + (tl.zeros([BD], dtype=tl.float32),)
    db = tl.zeros([BD], dtype=tl.float32)
    for c in range(0, chunks_per_program):
        t0 = a + c * BL
        xs = _load_block(X, x_base, o_d, m_d, t0, o_u, L, stride_xd, stride_xl, X_COLS, BD, BL, LOG2BL)
        dys = _load_block(DY, dy_base, o_d, m_d, t0, o_u, L, stride_dyd, stride_dyl, DY_COLS, BD, BL, LOG2BL)
        outs = ()
        for u in tl.static_range(BL):
            seq_t = 0
            if HAS_SEQ:
                seq_t = _load_seq(SEQ, seq_base, t0 + u, stride_sl, L)
            b_dsrc, xwin, dwin, swin, dw, db = _bwd_step(xs[u], dys[u], seq_t, xwin, dwin, swin, ws, b_bias, dw, db,
                                                         WIDTH, HAS_BIAS, HAS_SEQ, ACT, True)  # fmt: skip
            outs = outs + (b_dsrc,)
            _store_src(DX, DINIT, dx_base, dinit_base, o_d, m_d, b_dsrc, t0 + u - (WIDTH - 1), lo, hi, stride_dxd,
                       stride_dxl, stride_did, stride_dil, WIDTH, HAS_INIT, DX_COLS)  # fmt: skip
        if not DX_COLS:
            o_s = t0 - (WIDTH - 1) + o_u
            tl.store(
                DX + dx_base + o_d[:, None] * stride_dxd + o_s[None, :] * stride_dxl,
                _join_columns(outs, BD, BL, LOG2BL).to(DX.dtype.element_ty),
                mask=m_d[:, None] & ((o_s >= lo) & (o_s >= 0) & (o_s < hi))[None, :],
            )
    # halo: the targets a + span .. a + span + W - 2 complete the last W - 1 sources (no dweight / dbias)
    for j in tl.static_range(WIDTH - 1):
        t = a + span + j
        m_t = _mask(m_d, t < L)
        x_t = tl.load(X + x_base + o_d * stride_xd + t * stride_xl, mask=m_t, other=0.0).to(tl.float32)
        dy_t = tl.load(DY + dy_base + o_d * stride_dyd + t * stride_dyl, mask=m_t, other=0.0).to(tl.float32)
        seq_t = 0
        if HAS_SEQ:
            seq_t = _load_seq(SEQ, seq_base, t, stride_sl, L)
        b_dsrc, xwin, dwin, swin, dw, db = _bwd_step(x_t, dy_t, seq_t, xwin, dwin, swin, ws, b_bias, dw, db,
                                                     WIDTH, HAS_BIAS, HAS_SEQ, ACT, False)  # fmt: skip
        _store_src(DX, DINIT, dx_base, dinit_base, o_d, m_d, b_dsrc, t - (WIDTH - 1), lo, hi, stride_dxd, stride_dxl,
                   stride_did, stride_dil, WIDTH, HAS_INIT, True)  # fmt: skip
    o_part = (i_b * n_splits + i_sp) * D + o_d
    for k in tl.static_range(WIDTH):
        tl.store(DW_PART + o_part * WIDTH + k, dw[k], mask=m_d)
    if HAS_BIAS:
        tl.store(DB_PART + o_part, db, mask=m_d)


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
    """(BD, BL) tile sizes. Forward: chosen from the register use of the compiled sm_90 kernels (no spills).

    Backward: BD channels per program (64, one per thread of two warps: a channel-last column is 256
    contiguous bytes of fp32) and chunks of BL = 16 positions (unrolled; the sm_90 kernel then needs 80
    registers at width 4, 168 at BL = 32); a short row is one chunk.
    """
    np2 = next_pow2
    channel_last = x.stride(1) == 1 and x.stride(2) != 1
    if backward:
        return min(np2(dim), 64), min(np2(max(seqlen, 1)), 16)
    budget = 1024 if channel_last else 2048
    if channel_last:
        bd = min(np2(dim), 64)
        bl = min(np2(max(seqlen, 1)), max(budget // bd, 1))
    else:
        bl = min(np2(max(seqlen, 1)), 256)
        bd = min(np2(dim), max(budget // bl, 1))
    return bd, bl


_ENV_BWD = "SSM_KERNELS_CONV_BWD_"


def _env_int(name: str, pow2: bool = False) -> int | None:
    """A positive integer from the environment variable ``name`` (read at call time), or None when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a positive integer") from None
    if value < 1 or (pow2 and value & (value - 1)):
        raise ValueError(f"{name}={raw!r}: expected a positive {'power of two' if pow2 else 'integer'}")
    return value


def _bwd_config(x: torch.Tensor, dim: int, seqlen: int) -> dict:
    """Backward launch: BD channels and chunks of BL positions per program, warps, and how a row's chunks
    are shared out: ``n_splits`` programs per (batch, channel block), ``chunks_per_program`` each.

    Default: one channel per thread (``num_warps = BD / 32``) and about 96 warps' worth of programs per SM
    (about four waves; each split costs ``width - 1`` extra steps and one partial row). Environment overrides, read at each call:
    ``SSM_KERNELS_CONV_BWD_BD`` / ``_BL`` / ``_WARPS`` (powers of two) and ``_SPLITS`` (programs along the
    length per (batch, channel block), capped at the number of chunks).
    """
    bd, bl = _tiles(x, dim, seqlen, True)
    bd = _env_int(_ENV_BWD + "BD", pow2=True) or bd
    bl = _env_int(_ENV_BWD + "BL", pow2=True) or bl
    warps = _env_int(_ENV_BWD + "WARPS", pow2=True) or min(max(bd // 32, 1), 8)
    n_chunks = cdiv(seqlen, bl)
    n_dblocks = cdiv(dim, bd)
    splits = _env_int(_ENV_BWD + "SPLITS")
    if splits is None:
        n_sm = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 1
        splits = cdiv(cdiv(96 * n_sm, warps), max(x.shape[0] * n_dblocks, 1))
    n_splits = max(1, min(n_chunks, splits))
    chunks_per_program = cdiv(n_chunks, n_splits)
    n_splits = cdiv(n_chunks, chunks_per_program) if chunks_per_program else 1
    return {
        "BD": bd, "BL": bl, "num_warps": warps, "n_dblocks": n_dblocks, "n_splits": n_splits,
        "chunks_per_program": chunks_per_program,
    }  # fmt: skip


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
    if x.stride(1) == 1 and x.stride(2) != 1:  # channel-last like the input (also when x is a strided view)
        dx = torch.empty((batch, seqlen, dim), device=x.device, dtype=x.dtype).transpose(1, 2)
    else:
        dx = torch.empty_like(x)
    dinit = torch.empty_like(initial_states) if initial_states is not None else None
    cfg = _bwd_config(x, dim, seqlen)
    bl, n_splits = cfg["BL"], cfg["n_splits"]
    dw_part = torch.empty((batch * n_splits, dim, width), device=x.device, dtype=torch.float32)
    db_part = torch.empty((batch * n_splits, dim), device=x.device, dtype=torch.float32) if bias is not None else None
    if batch * dim > 0:
        fast(_causal_conv1d_bwd_kernel)[(n_splits, cfg["n_dblocks"], batch)](
            x, initial_states if initial_states is not None else x, seq_idx if seq_idx is not None else x,
            weight, bias if bias is not None else weight, dy, dx,
            dinit if dinit is not None else dx, dw_part, db_part if db_part is not None else dw_part,
            *_strides3(x), *_strides3(initial_states),
            seq_idx.stride(0) if seq_idx is not None else 0, seq_idx.stride(1) if seq_idx is not None else 0,
            weight.stride(0), weight.stride(1), *_strides3(dy), *_strides3(dx), *_strides3(dinit),
            dim, seqlen, cfg["chunks_per_program"], n_splits,
            WIDTH=width, HAS_BIAS=bias is not None, HAS_INIT=initial_states is not None,
            HAS_SEQ=seq_idx is not None, ACT=activation is not None,
            X_COLS=x.stride(1) == 1, DY_COLS=dy.stride(1) == 1, DX_COLS=dx.stride(1) == 1,
            BD=cfg["BD"], BL=bl, LOG2BL=bl.bit_length() - 1, num_warps=cfg["num_warps"],
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
