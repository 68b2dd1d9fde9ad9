"""Triton SSD (Mamba-2) chunked scan: forward and backward kernels, launchers, autograd Function.

Decomposition (per batch ``b``, head ``h``, chunk ``c`` of ``Q`` steps; ``cs`` is the within-chunk
cumulative sum of ``dt * A``; ``S_c`` the state entering chunk ``c``):

* ``_state_scan_fwd_kernel``  chunk-local end states ``L_c = sum_j exp(cs_last - cs_j) dt_j x_j B_j^T``
                              fused with the passing ``S_{c+1} = exp(cs_last) S_c + L_c`` (loop over chunks);
* ``_chunk_scan_fwd_kernel``  ``y_i = exp(cs_i) S_c C_i + sum_{j<=i} (C_i.B_j) exp(cs_i - cs_j) dt_j x_j
                              + D x_i``, gated by ``silu(z)``; ``C.B`` per chunk and group comes from one
                              batched matmul shared by the group's heads;
* ``_state_scan_bwd_kernel``  the adjoint passing ``dS_c = G_c + exp(cs_last) dS_{c+1}`` fused with the
                              read-out adjoint ``G_c = sum_i exp(cs_i) dy_i C_i^T``, in reverse;
* ``_chunk_scan_bwd_kernel``  ``dx, dB, dC, dD`` and the gradients of ``dt`` and of the log decays, one
                              program per (chunk, group, row block, head split) looping over heads
                              (so ``dB``/``dC`` sum over heads in registers);
* ``_gate_bwd_kernel``        the ``silu(z)`` gate's backward.

The gradient of the cumulative log decay needs no extra pass: for step ``i`` of a chunk,
``dcs_i = dC_i . C_i - dt_i (x_i . dxdt_i)`` (+ ``<dS_{c+1}, S_{c+1}>`` at the chunk's last step),
where ``dxdt`` is the gradient with respect to ``dt_i x_i``. Cheap glue (``dt`` processing,
cumulative sums of ``(b, h, l)`` vectors, partial-sum reductions) stays in PyTorch. Segment resets
(``seq_idx``/``cu_seqlens``) enter as masks on the decay factors.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ..backend import triton_interpret
from .reference import process_dt, seq_segments

__all__ = ["ssd_chunk_scan_triton"]


def _configs(full: list[triton.Config], one: triton.Config) -> list[triton.Config]:
    return [one] if triton_interpret() else full


def _prune(configs, named_args, **kwargs):
    """Autotune over every config unless SSM_KERNELS_AUTOTUNE=0 (read at tuning time): then the first."""
    return configs[:1] if os.environ.get("SSM_KERNELS_AUTOTUNE", "1") == "0" else configs


def clear_autotune_cache() -> None:
    """Forget the autotuners' choices (e.g. before timing after a run with SSM_KERNELS_AUTOTUNE=0)."""
    for name in _GPU_CONFIGS:
        globals()[name].cache.clear()


@triton.jit
def _dot(a, b, PREC: tl.constexpr, UP: tl.constexpr):
    """tl.dot with fp32 accumulation; UP upcasts 16-bit operands (the CPU interpreter mis-multiplies bf16)."""
    if UP:
        return tl.dot(a.to(tl.float32), b.to(tl.float32))
    else:
        return tl.dot(a, b, input_precision=PREC)


# GPU autotune configurations (the interpreter runs only the small one next to each kernel). The first of
# each list is the conservative default used when SSM_KERNELS_AUTOTUNE=0 (tests: fewer compilations).
_CFG_STATE_SCAN_FWD = [
    triton.Config({"BP": 64, "BN": 64, "BK": 64}, num_warps=4, num_stages=2),
    triton.Config({"BP": 32, "BN": 64, "BK": 64}, num_warps=4, num_stages=3),
    triton.Config({"BP": 64, "BN": 32, "BK": 64}, num_warps=4, num_stages=3),
    triton.Config({"BP": 32, "BN": 32, "BK": 64}, num_warps=4, num_stages=3),
    triton.Config({"BP": 64, "BN": 64, "BK": 32}, num_warps=4, num_stages=3),
]
_CFG_STATE_SCAN_BWD = [
    triton.Config({"BK": 64}, num_warps=4, num_stages=2),
    triton.Config({"BK": 64}, num_warps=4, num_stages=3),
    triton.Config({"BK": 32}, num_warps=4, num_stages=3),
    triton.Config({"BK": 128}, num_warps=8, num_stages=2),
]
_CFG_CHUNK_SCAN_FWD = [
    triton.Config({"BM": 64, "BK": 64}, num_warps=4, num_stages=2),
    triton.Config({"BM": 64, "BK": 32}, num_warps=4, num_stages=3),
    triton.Config({"BM": 128, "BK": 64}, num_warps=8, num_stages=2),
    triton.Config({"BM": 64, "BK": 64}, num_warps=8, num_stages=3),
    triton.Config({"BM": 128, "BK": 32}, num_warps=8, num_stages=3),
]
_CFG_CHUNK_SCAN_BWD = [
    triton.Config({"BM": 32, "BK": 64}, num_warps=4, num_stages=2),
    triton.Config({"BM": 64, "BK": 32}, num_warps=4, num_stages=2),
    triton.Config({"BM": 64, "BK": 64}, num_warps=8, num_stages=2),
    triton.Config({"BM": 32, "BK": 32}, num_warps=4, num_stages=3),
    triton.Config({"BM": 64, "BK": 32}, num_warps=8, num_stages=3),
]
_GPU_CONFIGS = {
    "_state_scan_fwd_kernel": _CFG_STATE_SCAN_FWD,
    "_state_scan_bwd_kernel": _CFG_STATE_SCAN_BWD,
    "_chunk_scan_fwd_kernel": _CFG_CHUNK_SCAN_FWD,
    "_chunk_scan_bwd_kernel": _CFG_CHUNK_SCAN_BWD,
}

# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _cb_kernel(
    Bm,
    Cm,
    CB,
    l,
    nc,
    g,
    n,
    Q,
    s_bb,
    s_bl,
    s_bg,
    s_bn,
    s_cb,
    s_cl,
    s_cg,
    s_cn,
    PREC: tl.constexpr,
    UP: tl.constexpr,
    BQ: tl.constexpr,
    BKN: tl.constexpr,
):
    """CB[b, c, g, i, j] = C_i . B_j inside each chunk (fp32; zero where a step lies beyond l)."""
    i_bcg = tl.program_id(0)
    i_g = i_bcg % g
    i_c = (i_bcg // g) % nc
    i_b = i_bcg // (g * nc)
    o_i = tl.program_id(1) * BQ + tl.arange(0, BQ)
    o_j = tl.program_id(2) * BQ + tl.arange(0, BQ)
    t_i = i_c * Q + o_i
    t_j = i_c * Q + o_j
    m_i = (o_i < Q) & (t_i < l)
    m_j = (o_j < Q) & (t_j < l)
    acc = tl.zeros((BQ, BQ), dtype=tl.float32)
    for k0 in range(0, n, BKN):
        o_k = k0 + tl.arange(0, BKN)
        m_k = o_k < n
        b_c = tl.load(
            Cm + i_b * s_cb + t_i[:, None] * s_cl + i_g * s_cg + o_k[None, :] * s_cn,
            mask=m_i[:, None] & m_k[None, :],
            other=0.0,
        )
        b_bt = tl.load(
            Bm + i_b * s_bb + t_j[None, :] * s_bl + i_g * s_bg + o_k[:, None] * s_bn,
            mask=m_k[:, None] & m_j[None, :],
            other=0.0,
        )
        acc += _dot(b_c, b_bt, PREC, UP)
    p_cb = CB + i_bcg.to(tl.int64) * Q * Q + o_i[:, None] * Q + o_j[None, :]
    tl.store(p_cb, acc, mask=(o_i < Q)[:, None] & (o_j < Q)[None, :])


@triton.jit
def _chunk_state_block(
    X,
    Bm,
    CS,
    DT,
    SEG,
    i_b,
    i_c,
    i_h,
    i_g,
    o_p,
    o_n,
    m_p,
    m_n,
    l,
    T,
    h,
    Q,
    s_xb,
    s_xl,
    s_xh,
    s_xp,
    s_bb,
    s_bl,
    s_bg,
    s_bn,
    MODE: tl.constexpr,
    HAS_SEG: tl.constexpr,
    PREC: tl.constexpr,
    UP: tl.constexpr,
    BP: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    """One (BP, BN) block of sum_j X_j^T (w_j B_j) over chunk i_c.

    MODE 0 (chunk-local end state): w_j = exp(cs_last - cs_j) dt_j, only steps in the chunk's last segment.
    MODE 1 (read-out adjoint, X = dy, B = C): w_j = exp(cs_j), only steps that see the carried state.
    """
    o_cs = (i_b * h + i_h) * T + i_c * Q
    cs_last = tl.load(CS + o_cs + Q - 1)
    if HAS_SEG:
        if MODE == 0:
            seg_ref = tl.load(SEG + i_b * T + i_c * Q + Q - 1)
        else:
            seg_ref = tl.load(SEG + i_b * T + i_c * Q - 1, mask=i_c > 0, other=0)
    acc = tl.zeros((BP, BN), dtype=tl.float32)
    for k0 in range(0, Q, BK):
        o_k = k0 + tl.arange(0, BK)
        m_k = o_k < Q
        t_k = i_c * Q + o_k
        m_t = m_k & (t_k < l)
        p_x = X + i_b * s_xb + t_k[None, :] * s_xl + i_h * s_xh + o_p[:, None] * s_xp
        b_xt = tl.load(p_x, mask=m_p[:, None] & m_t[None, :], other=0.0)  # (BP, BK)
        p_b = Bm + i_b * s_bb + t_k[:, None] * s_bl + i_g * s_bg + o_n[None, :] * s_bn
        b_b = tl.load(p_b, mask=m_t[:, None] & m_n[None, :], other=0.0).to(tl.float32)  # (BK, BN)
        b_cs = tl.load(CS + o_cs + o_k, mask=m_k, other=0.0)
        if MODE == 0:
            b_dt = tl.load(DT + o_cs + o_k, mask=m_k, other=0.0)
            b_w = tl.exp(cs_last - b_cs) * b_dt
        else:
            b_w = tl.exp(b_cs)
        if HAS_SEG:
            b_seg = tl.load(SEG + i_b * T + t_k, mask=m_k, other=-1)
            b_w = tl.where(b_seg == seg_ref, b_w, 0.0)
        b_w = tl.where(m_t, b_w, 0.0)
        acc += _dot(b_xt, (b_b * b_w[:, None]).to(b_xt.dtype), PREC, UP)
    return acc


@triton.autotune(
    configs=_configs(_CFG_STATE_SCAN_FWD, triton.Config({"BP": 16, "BN": 16, "BK": 16}, num_warps=4)),
    prune_configs_by={"early_config_prune": _prune},
    key=["Q", "p", "n", "HAS_SEG", "HAS_INIT"],
)
@triton.jit
def _state_scan_fwd_kernel(
    X,
    Bm,
    CS,
    DT,
    SEG,
    CDEC,
    INIT,
    S_ALL,
    l,
    T,
    nc,
    h,
    hg,
    p,
    n,
    Q,
    s_xb,
    s_xl,
    s_xh,
    s_xp,
    s_bb,
    s_bl,
    s_bg,
    s_bn,
    HAS_SEG: tl.constexpr,
    HAS_INIT: tl.constexpr,
    PREC: tl.constexpr,
    UP: tl.constexpr,
    BP: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    """States entering every chunk (and the final one), chunk-local states and passing fused.

    S_ALL[b, 0, h] = init; S_ALL[b, c + 1, h] = CDEC[b, h, c] * S_ALL[b, c, h] + L_c  (fp32 (p, n) blocks).
    """
    i_bh = tl.program_id(0)
    i_b = i_bh // h
    i_h = i_bh % h
    i_g = i_h // hg
    o_p = tl.program_id(1) * BP + tl.arange(0, BP)
    o_n = tl.program_id(2) * BN + tl.arange(0, BN)
    m_p = o_p < p
    m_n = o_n < n
    m_pn = m_p[:, None] & m_n[None, :]
    o_pn = o_p[:, None] * n + o_n[None, :]
    if HAS_INIT:
        b_s = tl.load(INIT + i_bh.to(tl.int64) * p * n + o_pn, mask=m_pn, other=0.0).to(tl.float32)
    else:
        b_s = tl.zeros((BP, BN), dtype=tl.float32)
    for i_c in range(nc):
        tl.store(S_ALL + ((i_b * (nc + 1) + i_c) * h + i_h).to(tl.int64) * p * n + o_pn, b_s, mask=m_pn)
        b_loc = _chunk_state_block(
            X,
            Bm,
            CS,
            DT,
            SEG,
            i_b,
            i_c,
            i_h,
            i_g,
            o_p,
            o_n,
            m_p,
            m_n,
            l,
            T,
            h,
            Q,
            s_xb,
            s_xl,
            s_xh,
            s_xp,
            s_bb,
            s_bl,
            s_bg,
            s_bn,
            0,
            HAS_SEG,
            PREC,
            UP,
            BP,
            BN,
            BK,
        )
        b_s = tl.load(CDEC + i_bh * nc + i_c) * b_s + b_loc
    tl.store(S_ALL + ((i_b * (nc + 1) + nc) * h + i_h).to(tl.int64) * p * n + o_pn, b_s, mask=m_pn)


@triton.autotune(
    configs=_configs(_CFG_STATE_SCAN_BWD, triton.Config({"BK": 16}, num_warps=4)),
    prune_configs_by={"early_config_prune": _prune},
    key=["Q", "p", "n", "HAS_SEG", "HAS_DFIN", "BP", "BN"],
)
@triton.jit
def _state_scan_bwd_kernel(
    DY,
    Cm,
    CS,
    DT,
    SEG,
    CDEC,
    DFIN,
    S_ALL,
    DS_ALL,
    DOTS,
    l,
    T,
    nc,
    h,
    hg,
    p,
    n,
    Q,
    NBLK,
    s_yb,
    s_yl,
    s_yh,
    s_yp,
    s_cb,
    s_cl,
    s_cg,
    s_cn,
    HAS_SEG: tl.constexpr,
    HAS_DFIN: tl.constexpr,
    PREC: tl.constexpr,
    UP: tl.constexpr,
    BP: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    """Adjoint state passing: DS_ALL[b, c] = G_c + CDEC[c] DS_ALL[b, c + 1], DS_ALL[b, nc] = dfinal,
    with G_c = sum_i exp(cs_i) dy_i C_i^T; DOTS[b, h, c, blk] = partial <DS_ALL[c + 1], S_ALL[c + 1]>.
    """
    i_bh = tl.program_id(0)
    i_b = i_bh // h
    i_h = i_bh % h
    i_g = i_h // hg
    o_p = tl.program_id(1) * BP + tl.arange(0, BP)
    o_n = tl.program_id(2) * BN + tl.arange(0, BN)
    i_blk = tl.program_id(1) * tl.num_programs(2) + tl.program_id(2)
    m_p = o_p < p
    m_n = o_n < n
    m_pn = m_p[:, None] & m_n[None, :]
    o_pn = o_p[:, None] * n + o_n[None, :]
    if HAS_DFIN:
        b_ds = tl.load(DFIN + i_bh.to(tl.int64) * p * n + o_pn, mask=m_pn, other=0.0).to(tl.float32)
    else:
        b_ds = tl.zeros((BP, BN), dtype=tl.float32)
    for i_r in range(nc):
        i_c = nc - 1 - i_r
        o_next = ((i_b * (nc + 1) + i_c + 1) * h + i_h).to(tl.int64) * p * n + o_pn
        tl.store(DS_ALL + o_next, b_ds, mask=m_pn)
        b_sn = tl.load(S_ALL + o_next, mask=m_pn, other=0.0)
        tl.store(DOTS + (i_bh * nc + i_c) * NBLK + i_blk, tl.sum(tl.sum(b_ds * b_sn, axis=1), axis=0))
        b_g = _chunk_state_block(
            DY,
            Cm,
            CS,
            DT,
            SEG,
            i_b,
            i_c,
            i_h,
            i_g,
            o_p,
            o_n,
            m_p,
            m_n,
            l,
            T,
            h,
            Q,
            s_yb,
            s_yl,
            s_yh,
            s_yp,
            s_cb,
            s_cl,
            s_cg,
            s_cn,
            1,
            HAS_SEG,
            PREC,
            UP,
            BP,
            BN,
            BK,
        )
        b_ds = b_g + tl.load(CDEC + i_bh * nc + i_c) * b_ds
    tl.store(DS_ALL + ((i_b * (nc + 1)) * h + i_h).to(tl.int64) * p * n + o_pn, b_ds, mask=m_pn)


@triton.autotune(
    configs=_configs(_CFG_CHUNK_SCAN_FWD, triton.Config({"BM": 16, "BK": 16}, num_warps=4)),
    prune_configs_by={"early_config_prune": _prune},
    key=["Q", "p", "n", "HAS_Z", "HAS_SEG"],
)
@triton.jit
def _chunk_scan_fwd_kernel(
    X,
    DT,
    CS,
    CB,
    Cm,
    S_ALL,
    Dp,
    Z,
    SEG,
    OUT,
    Y,
    l,
    T,
    nc,
    h,
    hg,
    g,
    p,
    n,
    Q,
    s_xb,
    s_xl,
    s_xh,
    s_xp,
    s_cb,
    s_cl,
    s_cg,
    s_cn,
    s_zb,
    s_zl,
    s_zh,
    s_zp,
    HAS_D: tl.constexpr,
    D_HAS_P: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_SEG: tl.constexpr,
    PREC: tl.constexpr,
    UP: tl.constexpr,
    BP: tl.constexpr,
    BN: tl.constexpr,
    BM: tl.constexpr,
    BK: tl.constexpr,
):
    """out rows of one chunk: carried-state read-out + causal intra-chunk product + D skip, then the z gate."""
    # row blocks of one (b, c, h) are adjacent in launch order: they share S_c and x in L2
    NM = tl.cdiv(Q, BM)
    i_m = tl.program_id(0) % NM
    i_bch = tl.program_id(0) // NM
    i_pb = tl.program_id(1)
    i_h = i_bch % h
    i_c = (i_bch // h) % nc
    i_b = i_bch // (h * nc)
    i_g = i_h // hg
    o_i = i_m * BM + tl.arange(0, BM)
    m_i = o_i < Q
    t_i = i_c * Q + o_i
    mt_i = m_i & (t_i < l)
    o_p = i_pb * BP + tl.arange(0, BP)
    m_p = o_p < p
    o_n = tl.arange(0, BN)
    m_n = o_n < n
    o_cs = (i_b * h + i_h) * T + i_c * Q
    b_csi = tl.load(CS + o_cs + o_i, mask=m_i, other=0.0)
    p_c = Cm + i_b * s_cb + t_i[:, None] * s_cl + i_g * s_cg + o_n[None, :] * s_cn
    b_c = tl.load(p_c, mask=mt_i[:, None] & m_n[None, :], other=0.0)  # (BM, BN)
    if HAS_SEG:
        b_segi = tl.load(SEG + i_b * T + t_i, mask=m_i, other=-1)
        seg_prev = tl.load(SEG + i_b * T + i_c * Q - 1, mask=i_c > 0, other=0)
    # read-out of the carried state
    p_s = S_ALL + ((i_b * (nc + 1) + i_c) * h + i_h).to(tl.int64) * p * n + o_p[None, :] * n + o_n[:, None]
    b_st = tl.load(p_s, mask=m_n[:, None] & m_p[None, :], other=0.0)  # (BN, BP)
    w_in = tl.exp(b_csi)
    if HAS_SEG:
        w_in = tl.where(b_segi == seg_prev, w_in, 0.0)
    acc = _dot(b_c, b_st.to(b_c.dtype), PREC, UP) * w_in[:, None]
    # causal intra-chunk part
    hi = tl.minimum((i_m + 1) * BM, Q)
    for k0 in range(0, hi, BK):
        o_j = k0 + tl.arange(0, BK)
        m_j = o_j < hi
        t_j = i_c * Q + o_j
        mt_j = m_j & (t_j < l)
        p_cb = CB + ((i_b * nc + i_c) * g + i_g).to(tl.int64) * Q * Q + o_i[:, None] * Q + o_j[None, :]
        b_cb = tl.load(p_cb, mask=m_i[:, None] & m_j[None, :], other=0.0)  # (BM, BK) C_i . B_j
        b_csj = tl.load(CS + o_cs + o_j, mask=m_j, other=0.0)
        b_dtj = tl.load(DT + o_cs + o_j, mask=m_j, other=0.0)
        live = (o_j[None, :] <= o_i[:, None]) & mt_j[None, :]
        if HAS_SEG:
            b_segj = tl.load(SEG + i_b * T + t_j, mask=m_j, other=-2)
            live = live & (b_segj[None, :] == b_segi[:, None])
        b_dec = tl.exp(tl.where(live, b_csi[:, None] - b_csj[None, :], float("-inf")))
        b_w = b_cb * b_dec * b_dtj[None, :]
        p_x = X + i_b * s_xb + t_j[:, None] * s_xl + i_h * s_xh + o_p[None, :] * s_xp
        b_x = tl.load(p_x, mask=mt_j[:, None] & m_p[None, :], other=0.0)  # (BK, BP)
        acc += _dot(b_w.to(b_x.dtype), b_x, PREC, UP)
    m_out = mt_i[:, None] & m_p[None, :]
    if HAS_D:
        p_xi = X + i_b * s_xb + t_i[:, None] * s_xl + i_h * s_xh + o_p[None, :] * s_xp
        b_xi = tl.load(p_xi, mask=m_out, other=0.0).to(tl.float32)
        if D_HAS_P:
            b_d = tl.load(Dp + i_h * p + o_p, mask=m_p, other=0.0).to(tl.float32)
            acc += b_xi * b_d[None, :]
        else:
            acc += b_xi * tl.load(Dp + i_h).to(tl.float32)
    o_out = ((i_b * l + t_i[:, None]).to(tl.int64) * h + i_h) * p + o_p[None, :]
    if HAS_Z:
        tl.store(Y + o_out, acc.to(Y.dtype.element_ty), mask=m_out)
        p_z = Z + i_b * s_zb + t_i[:, None] * s_zl + i_h * s_zh + o_p[None, :] * s_zp
        b_z = tl.load(p_z, mask=m_out, other=0.0).to(tl.float32)
        acc = acc * b_z * tl.sigmoid(b_z)
    tl.store(OUT + o_out, acc.to(OUT.dtype.element_ty), mask=m_out)


@triton.autotune(
    configs=_configs(_CFG_CHUNK_SCAN_BWD, triton.Config({"BM": 16, "BK": 16}, num_warps=4)),
    prune_configs_by={"early_config_prune": _prune},
    key=["Q", "p", "n", "HAS_SEG", "HAS_D"],
)
@triton.jit
def _chunk_scan_bwd_kernel(
    X,
    DY,
    DT,
    CS,
    CB,
    Bm,
    Cm,
    S_ALL,
    DS_ALL,
    Dp,
    SEG,
    DX,
    DB,
    DC,
    DDT,
    DCS,
    DDP,
    bsz,
    l,
    T,
    nc,
    h,
    hg,
    g,
    p,
    n,
    Q,
    Q16,
    NSPLIT,
    HPS,
    s_xb,
    s_xl,
    s_xh,
    s_xp,
    s_bb,
    s_bl,
    s_bg,
    s_bn,
    s_cb,
    s_cl,
    s_cg,
    s_cn,
    HAS_D: tl.constexpr,
    D_HAS_P: tl.constexpr,
    HAS_SEG: tl.constexpr,
    PREC: tl.constexpr,
    UP: tl.constexpr,
    BP: tl.constexpr,
    BN: tl.constexpr,
    BM: tl.constexpr,
    BK: tl.constexpr,
):
    """Backward of the chunk scan and chunk state for rows ``r`` of one chunk, looping over a head split.

    Writes dx, per-split partial dB and dC, ``ddt_r = x_r . dxdt_r`` and the row part of ``dcs``.
    """
    # row blocks of one (b, c, g, split) are adjacent in launch order: they share dS, S, x, dy in L2
    NM = tl.cdiv(Q, BM)
    i_m = tl.program_id(0) % NM
    i_prog = tl.program_id(0) // NM
    i_sp = i_prog % NSPLIT
    i_g = (i_prog // NSPLIT) % g
    i_c = (i_prog // (NSPLIT * g)) % nc
    i_b = i_prog // (NSPLIT * g * nc)
    o_r = i_m * BM + tl.arange(0, BM)
    m_r = o_r < Q
    t_r = i_c * Q + o_r
    mt_r = m_r & (t_r < l)
    o_p = tl.arange(0, BP)
    m_p = o_p < p
    o_n = tl.arange(0, BN)
    m_n = o_n < n
    m_rn = mt_r[:, None] & m_n[None, :]
    m_rp = mt_r[:, None] & m_p[None, :]
    p_br = Bm + i_b * s_bb + t_r[:, None] * s_bl + i_g * s_bg + o_n[None, :] * s_bn
    p_cr = Cm + i_b * s_cb + t_r[:, None] * s_cl + i_g * s_cg + o_n[None, :] * s_cn
    if HAS_SEG:
        b_segr = tl.load(SEG + i_b * T + t_r, mask=m_r, other=-1)
        seg_last = tl.load(SEG + i_b * T + i_c * Q + Q - 1)
        seg_prev = tl.load(SEG + i_b * T + i_c * Q - 1, mask=i_c > 0, other=0)
    acc_db = tl.zeros((BM, BN), dtype=tl.float32)
    acc_dc = tl.zeros((BM, BN), dtype=tl.float32)
    h_lo = i_g * hg + i_sp * HPS
    h_hi = tl.minimum(h_lo + HPS, (i_g + 1) * hg)
    for i_h in range(h_lo, h_hi):
        o_cs = (i_b * h + i_h) * T + i_c * Q
        b_csr = tl.load(CS + o_cs + o_r, mask=m_r, other=0.0)
        b_dtr = tl.load(DT + o_cs + o_r, mask=m_r, other=0.0)
        cs_last = tl.load(CS + o_cs + Q - 1)
        p_xr = X + i_b * s_xb + t_r[:, None] * s_xl + i_h * s_xh + o_p[None, :] * s_xp
        b_xr = tl.load(p_xr, mask=m_rp, other=0.0)  # (BM, BP)
        o_dyr = ((i_b * l + t_r[:, None]).to(tl.int64) * h + i_h) * p + o_p[None, :]
        b_dyr = tl.load(DY + o_dyr, mask=m_rp, other=0.0)  # (BM, BP)
        # --- gradient w.r.t. dt_r x_r (dxdt) and dB_r: sum over later rows i >= r
        b_dxdt = tl.zeros((BM, BP), dtype=tl.float32)
        for k0 in range(i_m * BM, Q, BK):
            o_i = k0 + tl.arange(0, BK)
            m_i = o_i < Q
            t_i = i_c * Q + o_i
            mt_i = m_i & (t_i < l)
            b_ci = tl.load(
                Cm + i_b * s_cb + t_i[:, None] * s_cl + i_g * s_cg + o_n[None, :] * s_cn,
                mask=mt_i[:, None] & m_n[None, :],
                other=0.0,
            )  # (BK, BN)
            b_dyi = tl.load(
                DY + ((i_b * l + t_i[:, None]).to(tl.int64) * h + i_h) * p + o_p[None, :],
                mask=mt_i[:, None] & m_p[None, :],
                other=0.0,
            )  # (BK, BP)
            b_csi = tl.load(CS + o_cs + o_i, mask=m_i, other=0.0)
            live = (o_i[None, :] >= o_r[:, None]) & mt_i[None, :]
            if HAS_SEG:
                b_segi = tl.load(SEG + i_b * T + t_i, mask=m_i, other=-2)
                live = live & (b_segi[None, :] == b_segr[:, None])
            b_dec = tl.exp(tl.where(live, b_csi[None, :] - b_csr[:, None], float("-inf")))  # (BM, BK)
            p_cb = CB + ((i_b * nc + i_c) * g + i_g).to(tl.int64) * Q * Q + o_i[None, :] * Q + o_r[:, None]
            b_bc = tl.load(p_cb, mask=m_r[:, None] & m_i[None, :], other=0.0)  # (BM, BK) B_r . C_i
            b_dxdt += _dot((b_bc * b_dec).to(b_dyi.dtype), b_dyi, PREC, UP)
            b_xdy = _dot(b_xr, tl.trans(b_dyi), PREC, UP)  # x_r . dy_i
            acc_db += _dot((b_xdy * b_dec * b_dtr[:, None]).to(b_ci.dtype), b_ci, PREC, UP)
        # state part: L_c feeds S_{c+1}
        p_ds = DS_ALL + ((i_b * (nc + 1) + i_c + 1) * h + i_h).to(tl.int64) * p * n + o_p[:, None] * n + o_n[None, :]
        b_ds = tl.load(p_ds, mask=m_p[:, None] & m_n[None, :], other=0.0)  # (BP, BN) fp32
        w_st = tl.exp(cs_last - b_csr)
        if HAS_SEG:
            w_st = tl.where(b_segr == seg_last, w_st, 0.0)
        w_st = tl.where(mt_r, w_st, 0.0)
        b_br = tl.load(p_br, mask=m_rn, other=0.0)  # (BM, BN), reloaded per head (cache hit) to spare registers
        b_dxdt += _dot(b_br, tl.trans(b_ds).to(b_br.dtype), PREC, UP) * w_st[:, None]
        acc_db += _dot(b_xr, b_ds.to(b_xr.dtype), PREC, UP) * (w_st * b_dtr)[:, None]
        b_xr32 = b_xr.to(tl.float32)
        b_ddt = tl.sum(b_xr32 * b_dxdt, axis=1)  # (BM,)
        b_dx = b_dxdt * b_dtr[:, None]
        if HAS_D:
            if D_HAS_P:
                b_d = tl.load(Dp + i_h * p + o_p, mask=m_p, other=0.0).to(tl.float32)
                b_dx += b_dyr.to(tl.float32) * b_d[None, :]
            else:
                b_dx += b_dyr.to(tl.float32) * tl.load(Dp + i_h).to(tl.float32)
        tl.store(DX + o_dyr, b_dx.to(DX.dtype.element_ty), mask=m_rp)
        if HAS_D:
            # dD partial over these rows into 16-row slot i_m * BM // 16; the block's other slots get zeros
            i_slot = (i_b * nc + i_c) * Q16 + i_m * (BM // 16)
            b_dd = tl.sum(b_dyr.to(tl.float32) * b_xr32, axis=0)  # (BP,)
            tl.store(DDP + (i_slot * h + i_h).to(tl.int64) * p + o_p, b_dd, mask=m_p)
            for k in range(1, BM // 16):
                m_slot = (o_p * 0 + i_m * (BM // 16) + k) < Q16  # vector mask
                tl.store(DDP + ((i_slot + k) * h + i_h).to(tl.int64) * p + o_p, tl.zeros_like(b_dd), mask=m_p & m_slot)
        # --- dC_r: sum over earlier rows j <= r, plus the carried state's read-out
        b_dc = tl.zeros((BM, BN), dtype=tl.float32)
        hi = tl.minimum((i_m + 1) * BM, Q)
        for k0 in range(0, hi, BK):
            o_j = k0 + tl.arange(0, BK)
            m_j = o_j < hi
            t_j = i_c * Q + o_j
            mt_j = m_j & (t_j < l)
            b_bj = tl.load(
                Bm + i_b * s_bb + t_j[:, None] * s_bl + i_g * s_bg + o_n[None, :] * s_bn,
                mask=mt_j[:, None] & m_n[None, :],
                other=0.0,
            )  # (BK, BN)
            b_xj = tl.load(
                X + i_b * s_xb + t_j[:, None] * s_xl + i_h * s_xh + o_p[None, :] * s_xp,
                mask=mt_j[:, None] & m_p[None, :],
                other=0.0,
            )  # (BK, BP)
            b_csj = tl.load(CS + o_cs + o_j, mask=m_j, other=0.0)
            b_dtj = tl.load(DT + o_cs + o_j, mask=m_j, other=0.0)
            live = (o_j[None, :] <= o_r[:, None]) & mt_j[None, :]
            if HAS_SEG:
                b_segj = tl.load(SEG + i_b * T + t_j, mask=m_j, other=-2)
                live = live & (b_segj[None, :] == b_segr[:, None])
            b_dec = tl.exp(tl.where(live, b_csr[:, None] - b_csj[None, :], float("-inf")))
            b_dyx = _dot(b_dyr, tl.trans(b_xj), PREC, UP)  # dy_r . x_j
            b_dc += _dot((b_dyx * b_dec * b_dtj[None, :]).to(b_bj.dtype), b_bj, PREC, UP)
        p_s = S_ALL + ((i_b * (nc + 1) + i_c) * h + i_h).to(tl.int64) * p * n + o_p[:, None] * n + o_n[None, :]
        b_s = tl.load(p_s, mask=m_p[:, None] & m_n[None, :], other=0.0)  # (BP, BN)
        w_in = tl.exp(b_csr)
        if HAS_SEG:
            w_in = tl.where(b_segr == seg_prev, w_in, 0.0)
        b_dc += _dot(b_dyr, b_s.to(b_dyr.dtype), PREC, UP) * w_in[:, None]
        b_cr = tl.load(p_cr, mask=m_rn, other=0.0).to(tl.float32)
        b_dcs = tl.sum(b_dc * b_cr, axis=1) - b_dtr * b_ddt
        tl.store(DDT + o_cs + o_r, b_ddt, mask=m_r)
        tl.store(DCS + o_cs + o_r, b_dcs, mask=m_r)
        acc_dc += b_dc
    o_out = (((i_sp * bsz + i_b).to(tl.int64) * T + t_r[:, None]) * g + i_g) * n + o_n[None, :]
    tl.store(DB + o_out, acc_db, mask=m_r[:, None] & m_n[None, :])
    tl.store(DC + o_out, acc_dc, mask=m_r[:, None] & m_n[None, :])


@triton.jit
def _gate_bwd_kernel(
    DOUT,
    Z,
    Y,
    DY,
    DZ,
    l,
    h,
    p,
    s_zb,
    s_zl,
    s_zh,
    s_zp,
    BLOCK: tl.constexpr,
):
    """out = y * silu(z): dy = dout * silu(z), dz = dout * y * silu'(z). DOUT, Y, DY, DZ contiguous (b, l, h, p)."""
    i_bl = tl.program_id(0)
    o = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = o < h * p
    i_b = i_bl // l
    i_t = i_bl % l
    o_c = i_bl.to(tl.int64) * h * p + o
    b_do = tl.load(DOUT + o_c, mask=m, other=0.0).to(tl.float32)
    b_y = tl.load(Y + o_c, mask=m, other=0.0).to(tl.float32)
    p_z = Z + i_b * s_zb + i_t * s_zl + (o // p) * s_zh + (o % p) * s_zp
    b_z = tl.load(p_z, mask=m, other=0.0).to(tl.float32)
    sig = tl.sigmoid(b_z)
    tl.store(DY + o_c, (b_do * b_z * sig).to(DY.dtype.element_ty), mask=m)
    tl.store(DZ + o_c, (b_do * b_y * sig * (1.0 + b_z * (1.0 - sig))).to(DZ.dtype.element_ty), mask=m)


# ----------------------------------------------------------------------------------------------
# host launchers
# ----------------------------------------------------------------------------------------------


def _prec(dtype: torch.dtype) -> str:
    """tl.dot precision: exact fp32 unless SSM_KERNELS_TF32=1 (irrelevant for 16-bit operands)."""
    if dtype == torch.float32 and os.environ.get("SSM_KERNELS_TF32", "0") != "1":
        return "ieee"
    return "tf32"


def _up(dtype: torch.dtype) -> bool:
    return triton_interpret() and dtype in (torch.bfloat16, torch.float16)


def _pow2(v: int) -> int:
    return max(16, triton.next_power_of_2(v))


def _decays(dtp: torch.Tensor, A: torch.Tensor, Q: int, seg_p: torch.Tensor | None):
    """Padded ``dt`` and within-chunk cumulative log decay, both ``(b, h, T)`` fp32, and the chunk decays ``(b, h, nc)``."""
    b, l, h = dtp.shape
    nc = max(1, -(-l // Q))
    T = nc * Q
    dt_t = torch.nn.functional.pad(dtp.transpose(1, 2).float(), (0, T - l)).contiguous()  # (b, h, T)
    cs = (dt_t * A.float().view(1, h, 1)).view(b, h, nc, Q).cumsum(-1).view(b, h, T).contiguous()
    cdec = torch.exp(cs[..., Q - 1 :: Q])  # (b, h, nc)
    if seg_p is not None:
        seg_end = seg_p[:, Q - 1 :: Q]  # (b, nc)
        seg_prev = torch.nn.functional.pad(seg_end[:, :-1], (1, 0))
        cdec = cdec * (seg_end == seg_prev).unsqueeze(1)
    return dt_t, cs, cdec.contiguous()


_CB_INTERPRET_BLOCKS = (16, 16)  # (rows/cols, n) blocks of _cb_kernel under the interpreter (tests may raise them)


def _cb(B: torch.Tensor, C: torch.Tensor, Q: int, nc: int) -> torch.Tensor:
    """Per-chunk ``C_i . B_j`` for every group, shared by all heads of the group: (b, nc, g, Q, Q) fp32."""
    b, l, g, n = B.shape
    cb = torch.empty(b, nc, g, Q, Q, device=B.device, dtype=torch.float32)
    BQ, BKN = _CB_INTERPRET_BLOCKS if triton_interpret() else (64, min(64, _pow2(n)))
    grid = (b * nc * g, triton.cdiv(Q, BQ), triton.cdiv(Q, BQ))
    _cb_kernel[grid](
        B,
        C,
        cb,
        l,
        nc,
        g,
        n,
        Q,
        *B.stride(),
        *C.stride(),
        PREC=_prec(B.dtype),
        UP=_up(B.dtype),
        BQ=BQ,
        BKN=BKN,
        num_warps=4,
    )
    return cb


def _all_states(x, B, cs, dt_t, cdec, seg_p, init, Q, hg) -> torch.Tensor:
    """States entering every chunk plus the final state: (b, nc + 1, h, p, n) fp32."""
    b, l, h, p = x.shape
    n = B.shape[-1]
    T = cs.shape[-1]
    nc = T // Q
    s_all = torch.empty(b, nc + 1, h, p, n, device=x.device, dtype=torch.float32)
    grid = lambda META: (b * h, triton.cdiv(p, META["BP"]), triton.cdiv(n, META["BN"]))
    _state_scan_fwd_kernel[grid](
        x,
        B,
        cs,
        dt_t,
        cs if seg_p is None else seg_p,
        cdec,
        s_all if init is None else init.contiguous(),
        s_all,
        l,
        T,
        nc,
        h,
        hg,
        p,
        n,
        Q,
        *x.stride(),
        *B.stride(),
        HAS_SEG=seg_p is not None,
        HAS_INIT=init is not None,
        PREC=_prec(x.dtype),
        UP=_up(x.dtype),
    )
    return s_all


def _fwd(x, dt_t, cs, cdec, B, C, D, z, init, seg_p, Q):
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    hg = h // g
    nc = cs.shape[-1] // Q
    s_all = _all_states(x, B, cs, dt_t, cdec, seg_p, init, Q, hg)
    cb = _cb(B, C, Q, nc)
    out = torch.empty(b, l, h, p, device=x.device, dtype=x.dtype)
    y = torch.empty_like(out) if z is not None else None
    BP = min(_pow2(p), 64)
    grid = lambda META: (triton.cdiv(Q, META["BM"]) * b * nc * h, triton.cdiv(p, BP))
    zz = z if z is not None else x
    _chunk_scan_fwd_kernel[grid](
        x,
        dt_t,
        cs,
        cb,
        C,
        s_all,
        D if D is not None else cs,
        zz,
        seg_p if seg_p is not None else cs,
        out,
        y if y is not None else out,
        l,
        cs.shape[-1],
        nc,
        h,
        hg,
        g,
        p,
        n,
        Q,
        *x.stride(),
        *C.stride(),
        *zz.stride(),
        HAS_D=D is not None,
        D_HAS_P=D is not None and D.dim() == 2,
        HAS_Z=z is not None,
        HAS_SEG=seg_p is not None,
        PREC=_prec(x.dtype),
        UP=_up(x.dtype),
        BP=BP,
        BN=_pow2(n),
    )
    return out, y, s_all


def _varlen_states(cu_seqlens, x, B, dt_t, cs, seg_p, s_all, Q):
    """State after each packed sequence (batch 1), from the chunk-entry states: (nseq, h, p, n) fp32."""
    _, l, h, p = x.shape
    g = B.shape[2]
    ends = cu_seqlens[1:].to(device=x.device, dtype=torch.long) - 1
    c_idx, r_idx = ends // Q, ends % Q
    pos = c_idx[:, None] * Q + torch.arange(Q, device=x.device)  # (s, Q)
    live = (torch.arange(Q, device=x.device)[None, :] <= r_idx[:, None]) & (seg_p[0, pos] == seg_p[0, ends][:, None])
    cs_g = cs[0][:, pos]  # (h, s, Q)
    cs_e = cs[0][:, ends]  # (h, s)
    w = torch.exp(torch.where(live, cs_e[..., None] - cs_g, torch.full_like(cs_g, float("-inf")))) * dt_t[0][:, pos]
    pos_c = pos.clamp(max=l - 1)
    xg = x[0, pos_c].float()  # (s, Q, h, p)
    Bg = B[0, pos_c].float().repeat_interleave(h // g, dim=2)  # (s, Q, h, n)
    local = torch.einsum("hsj,sjhp,sjhn->shpn", w, xg, Bg)
    seg_prev = torch.nn.functional.pad(seg_p[0, Q - 1 :: Q][:-1], (1, 0))  # (nc,)
    carried = (seg_prev[c_idx] == seg_p[0, ends]).float()  # (s,)
    w_in = torch.exp(cs_e) * carried  # (h, s)
    return local + w_in.t()[:, :, None, None] * s_all[0, c_idx]


class _SSDChunkScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dtp, A, B, C, D, z, init, seg_p, cu_seqlens, Q, want_varlen):
        dt_t, cs, cdec = _decays(dtp, A, Q, seg_p)
        out, y, s_all = _fwd(x, dt_t, cs, cdec, B, C, D, z, init, seg_p, Q)
        final = s_all[:, -1]
        varlen = _varlen_states(cu_seqlens, x, B, dt_t, cs, seg_p, s_all, Q) if want_varlen else final.new_zeros(0)
        ctx.save_for_backward(x, dtp, A, B, C, D, z, y, init, seg_p)
        ctx.Q = Q
        ctx.mark_non_differentiable(varlen)
        ctx.set_materialize_grads(False)
        return out, final, varlen

    @staticmethod
    def backward(ctx, dout, dfinal, _dvarlen):
        x, dtp, A, B, C, D, z, y, init, seg_p = ctx.saved_tensors
        Q = ctx.Q
        b, l, h, p = x.shape
        g, n = B.shape[2], B.shape[3]
        hg = h // g
        dt_t, cs, cdec = _decays(dtp, A, Q, seg_p)
        T = cs.shape[-1]
        nc = T // Q
        s_all = _all_states(x, B, cs, dt_t, cdec, seg_p, init, Q, hg)
        dout = torch.zeros(b, l, h, p, device=x.device, dtype=x.dtype) if dout is None else dout.contiguous()
        dz = None
        if z is not None:
            dy = torch.empty(b, l, h, p, device=x.device, dtype=x.dtype)
            dz = torch.empty(b, l, h, p, device=x.device, dtype=z.dtype)
            BLOCK = min(1024, triton.next_power_of_2(h * p))
            _gate_bwd_kernel[(b * l, triton.cdiv(h * p, BLOCK))](
                dout, z, y, dy, dz, l, h, p, *z.stride(), BLOCK=BLOCK, num_warps=4
            )
        else:
            dy = dout.to(x.dtype)
        # reverse state passing (adjoint of the read-out folded in)
        ds_all = torch.empty_like(s_all)
        # block sizes fixed on the host (not autotuned) so the partial-dot slots do not depend on the config
        BPs, BNs = (16, 16) if triton_interpret() else (min(64, _pow2(p)), min(64, _pow2(n)))
        nblk = triton.cdiv(p, BPs) * triton.cdiv(n, BNs)
        dots = torch.empty(b, h, nc, nblk, device=x.device, dtype=torch.float32)
        dfin = dfinal.contiguous() if dfinal is not None else None
        grid = (b * h, triton.cdiv(p, BPs), triton.cdiv(n, BNs))
        _state_scan_bwd_kernel[grid](
            dy,
            C,
            cs,
            dt_t,
            cs if seg_p is None else seg_p,
            cdec,
            ds_all if dfin is None else dfin,
            s_all,
            ds_all,
            dots,
            l,
            T,
            nc,
            h,
            hg,
            p,
            n,
            Q,
            nblk,
            *dy.stride(),
            *C.stride(),
            HAS_SEG=seg_p is not None,
            HAS_DFIN=dfin is not None,
            PREC=_prec(x.dtype),
            UP=_up(x.dtype),
            BP=BPs,
            BN=BNs,
        )
        # chunk-scan backward
        HPS = min(hg, 8)
        NSPLIT = triton.cdiv(hg, HPS)
        dx = torch.empty(b, l, h, p, device=x.device, dtype=x.dtype)
        dB_part = torch.empty(NSPLIT, b, T, g, n, device=x.device, dtype=torch.float32)
        dC_part = torch.empty_like(dB_part)
        ddt = torch.empty(b, h, T, device=x.device, dtype=torch.float32)
        Q16 = triton.cdiv(Q, 16)
        ddp = torch.empty(b, nc, Q16, h, p, device=x.device, dtype=torch.float32) if D is not None else ddt
        dcs = torch.empty_like(ddt)
        grid = lambda META: (triton.cdiv(Q, META["BM"]) * b * nc * g * NSPLIT,)
        _chunk_scan_bwd_kernel[grid](
            x,
            dy,
            dt_t,
            cs,
            _cb(B, C, Q, nc),
            B,
            C,
            s_all,
            ds_all,
            D if D is not None else cs,
            seg_p if seg_p is not None else cs,
            dx,
            dB_part,
            dC_part,
            ddt,
            dcs,
            ddp,
            b,
            l,
            T,
            nc,
            h,
            hg,
            g,
            p,
            n,
            Q,
            Q16,
            NSPLIT,
            HPS,
            *x.stride(),
            *B.stride(),
            *C.stride(),
            HAS_D=D is not None,
            D_HAS_P=D is not None and D.dim() == 2,
            HAS_SEG=seg_p is not None,
            PREC=_prec(x.dtype),
            UP=_up(x.dtype),
            BP=_pow2(p),
            BN=_pow2(n),
        )
        # glue: log-decay gradient -> dt and A
        dcs = dcs.view(b, h, nc, Q)
        dcs[..., -1] += dots.sum(-1)
        da = dcs.flip(-1).cumsum(-1).flip(-1).view(b, h, T)
        ddt_total = (ddt + A.float().view(1, h, 1) * da)[..., :l].transpose(1, 2)
        dA = (dt_t * da).sum((0, 2)).to(A.dtype)
        dB = dB_part.sum(0)[:, :l].to(B.dtype) if NSPLIT > 1 else dB_part[0, :, :l].to(B.dtype)
        dC = dC_part.sum(0)[:, :l].to(C.dtype) if NSPLIT > 1 else dC_part[0, :, :l].to(C.dtype)
        dD = None
        if D is not None and ctx.needs_input_grad[5]:
            dD = ddp.sum((0, 1, 2))  # (h, p)
            dD = (dD if D.dim() == 2 else dD.sum(-1)).to(D.dtype)
        dinit = ds_all[:, 0].to(init.dtype) if init is not None else None
        return dx, ddt_total.to(dtp.dtype), dA, dB, dC, dD, dz, dinit, None, None, None, None


def ssd_chunk_scan_triton(
    x,
    dt,
    A,
    B,
    C,
    chunk_size,
    D=None,
    z=None,
    dt_bias=None,
    initial_states=None,
    seq_idx=None,
    cu_seqlens=None,
    dt_softplus=False,
    dt_limit=(0.0, float("inf")),
    return_final_states=False,
    return_varlen_states=False,
):
    """Triton path of :func:`ssm_kernels.mamba_chunk_scan_combined` (inputs already validated).

    Shapes: as in :func:`ssm_kernels.mamba_chunk_scan_combined`. ``varlen_states`` carry no gradient.
    """
    b, l, h, p = x.shape
    Q = chunk_size
    nc = max(1, -(-l // Q))
    dtp = process_dt(dt.float(), None if dt_bias is None else dt_bias.float(), dt_softplus, dt_limit)  # (b, l, h)
    seg = seq_segments(seq_idx, cu_seqlens, b, l, x.device)
    seg_p = None
    if seg is not None:
        seg_p = torch.cat([seg, seg[:, -1:].expand(b, nc * Q - l)], dim=1).to(torch.int32).contiguous()
    Dc = None if D is None else D.contiguous()
    out, final, varlen = _SSDChunkScanFn.apply(
        x, dtp, A, B, C, Dc, z, initial_states, seg_p, cu_seqlens, Q, bool(return_varlen_states)
    )
    res = [out]
    if return_final_states:
        res.append(final)
    if return_varlen_states:
        res.append(varlen)
    return res[0] if len(res) == 1 else tuple(res)
