"""Triton SSD (Mamba-2) chunked scan: forward and backward kernels, launchers, autograd Function.

Decomposition (per batch ``b``, head ``h``, chunk ``c`` of ``Q`` steps; ``cs`` is the within-chunk
cumulative sum of ``dt * A``; ``S_c`` the state entering chunk ``c``):

* ``_prep_kernel``            one launch: ``dt`` processing (bias, softplus, clamp) with the within-chunk
                              ``cs`` and chunk decays, and ``C.B`` per chunk and group (bf16 for bf16
                              inputs, fp32 otherwise), shared by the group's heads;
* ``_state_scan_fwd_kernel``  chunk-local end states ``L_c = sum_j exp(cs_last - cs_j) dt_j x_j B_j^T``
                              fused with the passing ``S_{c+1} = exp(cs_last) S_c + L_c`` (loop over chunks);
* ``_chunk_scan_fwd_kernel``  ``y_i = exp(cs_i) S_c C_i + sum_{j<=i} (C_i.B_j) exp(cs_i - cs_j) dt_j x_j
                              + D x_i``, gated by ``silu(z)``;
* ``_state_scan_bwd_kernel``  the adjoint passing ``dS_c = G_c + exp(cs_last) dS_{c+1}`` fused with the
                              read-out adjoint ``G_c = sum_i exp(cs_i) dy_i C_i^T``, in reverse;
* backward, three kernels after the state passing:
  ``_bwd_dcb_kernel``  per (chunk, group, lower tile): ``dCB_ij = sum_h (dy_i.x_j) exp(cs_i - cs_j) dt_j``
                       and, per head, the crossing sums of ``M_ij = dCB_h[i, j] CB[i, j]`` (below);
  ``_bwd_dbc_kernel``  per (chunk, group, row block, n block): ``dC = dCB B + read-out part``,
                       ``dB = dCB^T C + chunk-state part`` (the last two loop over the group's heads);
  ``_bwd_dx_kernel``   per (chunk, head, row block): ``dx``, the direct ``dt`` gradient, ``dD`` partials
                       and the state parts of the log-decay gradient; so ``dB``/``dC`` cost one product per
                       group instead of one per head;
* ``_dt_bwd_kernel``          gathers the log-decay gradient and chains through clamp/softplus/bias: raw ``dt``
                              gradient plus partial sums for ``dA`` and ``ddt_bias``;
* ``_gate_bwd_kernel``        the ``silu(z)`` gate's backward.

The log-decay gradient. Step k's increment ``a_k = dt_k A`` enters every decay ``exp(cs_i - cs_j)`` with
``j < k <= i``, so its gradient is the sum over the terms that span it: intra-chunk pairs
``sum_{i >= k > j} M_ij``, the read-out of the incoming state at steps ``i >= k``, the chunk's end state
(``CDEC <dS_{c+1}, S_c>``) and the chunk-local state contributions of steps ``j < k``. Each part is summed
directly over the pairs that span k. (The shorter route through ``dcs_i = dC_i . C_i - dt_i x_i . dxdt_i``
and its suffix sums subtracts two large sums whose near-diagonal terms cancel; on long chunks with slow
decay that lost an order of magnitude of accuracy in ``dA`` and ``dt_bias``.)
Off-diagonal tiles split the decay as ``exp(cs_i - cs_ref) exp(cs_ref - cs_j)`` with ``cs_ref`` between the
two blocks (both factors <= 1 when ``dt * A <= 0``, the usual ``A < 0``, ``dt >= 0``): two exp vectors
instead of a tile of exps. Segment resets (``seq_idx``/``cu_seqlens``) enter as masks on the decay factors.

Environment: ``SSM_KERNELS_SSD_SAVE_STATES=1`` (keep the chunk
states for the backward instead of recomputing them: faster, ``(b, nc + 1, h, p, n)`` fp32 more memory),
``SSM_KERNELS_SSD_CB_FP32=1`` (the forward's C.B in fp32 for bf16 inputs too; the backward always recomputes
it in fp32), ``SSM_KERNELS_AUTOTUNE=0`` (first config only),
``SSM_KERNELS_TF32=1`` (tf32 dots for fp32 inputs).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .._launch import clear_launch_caches, fast
from ..backend import cdiv, needs_autograd, next_pow2, triton_interpret
from .reference import seq_segments

__all__ = ["ssd_chunk_scan_triton"]


# Whether the kernels below were decorated for the CPU interpreter (TRITON_INTERPRET is read when
# triton.jit wraps them, i.e. at import), read once: the launchers consult it on every call.
_INTERPRET = triton_interpret()


def _configs(full: list[triton.Config], one: triton.Config) -> list[triton.Config]:
    return [one] if _INTERPRET else full


def _prune(configs, named_args, **kwargs):
    """Autotune over every config unless SSM_KERNELS_AUTOTUNE=0 (read at tuning time): then the first."""
    return configs[:1] if os.environ.get("SSM_KERNELS_AUTOTUNE", "1") == "0" else configs


def clear_autotune_cache() -> None:
    """Forget the autotuners' choices (e.g. before timing after a run with SSM_KERNELS_AUTOTUNE=0)."""
    for name in _GPU_CONFIGS:
        globals()[name].cache.clear()
    clear_launch_caches()


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
    triton.Config({"BM": 64, "BK": 64}, num_warps=4, num_stages=3),
    triton.Config({"BM": 32, "BK": 64}, num_warps=4, num_stages=2),
    triton.Config({"BM": 64, "BK": 128}, num_warps=4, num_stages=2),
    triton.Config({"BM": 64, "BK": 64}, num_warps=8, num_stages=3),
    triton.Config({"BM": 128, "BK": 32}, num_warps=8, num_stages=3),
]
_CFG_BWD_DCB = [
    triton.Config({}, num_warps=4, num_stages=2),
    triton.Config({}, num_warps=8, num_stages=2),
    triton.Config({}, num_warps=4, num_stages=3),
]
_CFG_BWD_DBC = [
    triton.Config({"BTM": 1}, num_warps=4, num_stages=2),
    triton.Config({"BTM": 1}, num_warps=8, num_stages=2),
    triton.Config({"BTM": 2}, num_warps=8, num_stages=2),
]
_CFG_BWD_DX = [
    triton.Config({"BM": 64, "BK": 64}, num_warps=4, num_stages=2),
    triton.Config({"BM": 64, "BK": 32}, num_warps=4, num_stages=3),
    triton.Config({"BM": 128, "BK": 64}, num_warps=8, num_stages=2),
    triton.Config({"BM": 64, "BK": 64}, num_warps=8, num_stages=3),
]
_GPU_CONFIGS = {
    "_state_scan_fwd_kernel": _CFG_STATE_SCAN_FWD,
    "_state_scan_bwd_kernel": _CFG_STATE_SCAN_BWD,
    "_chunk_scan_fwd_kernel": _CFG_CHUNK_SCAN_FWD,
    "_bwd_dcb_kernel": _CFG_BWD_DCB,
    "_bwd_dbc_kernel": _CFG_BWD_DBC,
    "_bwd_dx_kernel": _CFG_BWD_DX,
}

# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _cb_tile(
    Bm, Cm, CB, i_bcg, i_qi, i_qj, l, nc, g, n, Q, s_bb, s_bl, s_bg, s_bn, s_cb, s_cl, s_cg, s_cn,
    PREC: tl.constexpr, UP: tl.constexpr, BQ: tl.constexpr, BKN: tl.constexpr,
):  # fmt: skip
    """CB[b, c, g, i, j] = C_i . B_j inside each chunk (fp32 accumulation, stored in CB.dtype; zero beyond l): one tile."""
    i_g = i_bcg % g
    i_c = (i_bcg // g) % nc
    i_b = i_bcg // (g * nc)
    o_i = i_qi * BQ + tl.arange(0, BQ)
    o_j = i_qj * BQ + tl.arange(0, BQ)
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
    tl.store(p_cb, acc.to(CB.dtype.element_ty), mask=(o_i < Q)[:, None] & (o_j < Q)[None, :])


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
        tl.store(
            S_ALL + ((i_b * (nc + 1) + i_c) * h + i_h).to(tl.int64) * p * n + o_pn,
            b_s,
            mask=m_pn,
        )
        b_loc = _chunk_state_block(X, Bm, CS, DT, SEG, i_b, i_c, i_h, i_g, o_p, o_n, m_p, m_n, l, T, h, Q, s_xb,
                                   s_xl, s_xh, s_xp, s_bb, s_bl, s_bg, s_bn, 0, HAS_SEG, PREC, UP, BP, BN, BK)  # fmt: skip
        b_s = tl.load(CDEC + i_bh * nc + i_c) * b_s + b_loc
    tl.store(
        S_ALL + ((i_b * (nc + 1) + nc) * h + i_h).to(tl.int64) * p * n + o_pn,
        b_s,
        mask=m_pn,
    )


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
    DINIT,
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
    HAS_DINIT: tl.constexpr,
    PREC: tl.constexpr,
    UP: tl.constexpr,
    BP: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    """Adjoint state passing: DS_ALL[b, c] = G_c + CDEC[c] DS_ALL[b, c + 1], DS_ALL[b, nc] = dfinal,
    with G_c = sum_i exp(cs_i) dy_i C_i^T; DOTS[b, h, c, blk] = partial CDEC[c] <DS_ALL[c + 1], S_ALL[c]>, the
    gradient of the chunk's total log decay through the state it passes on.

    DS_ALL may be 16-bit (its readers round it to the dot dtype anyway; DOTS use the fp32 values); slot 0,
    the initial state's gradient, goes to DINIT in fp32 instead (if HAS_DINIT).
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
        tl.store(DS_ALL + o_next, b_ds.to(DS_ALL.dtype.element_ty), mask=m_pn)
        o_cur = ((i_b * (nc + 1) + i_c) * h + i_h).to(tl.int64) * p * n + o_pn
        b_sc = tl.load(S_ALL + o_cur, mask=m_pn, other=0.0)
        dec = tl.load(CDEC + i_bh * nc + i_c)
        tl.store(
            DOTS + (i_bh * nc + i_c) * NBLK + i_blk,
            dec * tl.sum(tl.sum(b_ds * b_sc, axis=1), axis=0),
        )
        b_g = _chunk_state_block(DY, Cm, CS, DT, SEG, i_b, i_c, i_h, i_g, o_p, o_n, m_p, m_n, l, T, h, Q, s_yb, s_yl,
                                 s_yh, s_yp, s_cb, s_cl, s_cg, s_cn, 1, HAS_SEG, PREC, UP, BP, BN, BK)  # fmt: skip
        b_ds = b_g + dec * b_ds
    if HAS_DINIT:
        tl.store(DINIT + i_bh.to(tl.int64) * p * n + o_pn, b_ds, mask=m_pn)


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
    # causal intra-chunk part. Column blocks left of the row block split the decay as
    # exp(cs_i - cs_i0) exp(cs_i0 - cs_j) (i0: the block's first row; both factors <= 1 when dt * A <= 0):
    # two exp vectors instead of a tile. The diagonal block takes the exact masked tile.
    i0 = i_m * BM
    cs_ref = tl.load(CS + o_cs + i0)
    p_cb0 = CB + ((i_b * nc + i_c) * g + i_g).to(tl.int64) * Q * Q
    acc_in = tl.zeros((BM, BP), dtype=tl.float32)
    for k0 in range(0, i0, BK):
        o_j = k0 + tl.arange(0, BK)
        m_j = o_j < i0
        t_j = i_c * Q + o_j
        mt_j = m_j & (t_j < l)
        b_cb = tl.load(
            p_cb0 + o_i[:, None] * Q + o_j[None, :],
            mask=m_i[:, None] & m_j[None, :],
            other=0.0,
        )
        b_csj = tl.load(CS + o_cs + o_j, mask=m_j, other=0.0)
        b_dtj = tl.load(DT + o_cs + o_j, mask=m_j, other=0.0)
        b_w = b_cb * tl.where(mt_j, tl.exp(cs_ref - b_csj) * b_dtj, 0.0)[None, :]
        if HAS_SEG:
            b_segj = tl.load(SEG + i_b * T + t_j, mask=m_j, other=-2)
            b_w = tl.where(b_segj[None, :] == b_segi[:, None], b_w, 0.0)
        p_x = X + i_b * s_xb + t_j[:, None] * s_xl + i_h * s_xh + o_p[None, :] * s_xp
        b_x = tl.load(p_x, mask=mt_j[:, None] & m_p[None, :], other=0.0)  # (BK, BP)
        acc_in += _dot(b_w.to(b_x.dtype), b_x, PREC, UP)
    acc_in = acc_in * tl.where(m_i, tl.exp(b_csi - cs_ref), 0.0)[:, None]
    hi = tl.minimum((i_m + 1) * BM, Q)
    for k0 in range(i0, hi, BK):
        o_j = k0 + tl.arange(0, BK)
        m_j = o_j < hi
        t_j = i_c * Q + o_j
        mt_j = m_j & (t_j < l)
        b_cb = tl.load(
            p_cb0 + o_i[:, None] * Q + o_j[None, :],
            mask=m_i[:, None] & m_j[None, :],
            other=0.0,
        )
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
        acc_in += _dot(b_w.to(b_x.dtype), b_x, PREC, UP)
    acc += acc_in
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


@triton.jit
def _dyx_tile(
    X,
    DY,
    i_b,
    i_h,
    t_i,
    t_j,
    mt_i,
    mt_j,
    l,
    h,
    p,
    s_xb,
    s_xl,
    s_xh,
    s_xp,
    PREC: tl.constexpr,
    UP: tl.constexpr,
    BT: tl.constexpr,
    BPK: tl.constexpr,
    NPK: tl.constexpr,
):
    """(BT, BT) fp32 tile of dy_i . x_j for one head (DY contiguous (b, l, h, p))."""
    b_dyx = tl.zeros((BT, BT), dtype=tl.float32)
    for i_pk in tl.static_range(NPK):
        o_p = i_pk * BPK + tl.arange(0, BPK)
        m_p = o_p < p
        b_dyi = tl.load(
            DY + ((i_b * l + t_i[:, None]).to(tl.int64) * h + i_h) * p + o_p[None, :],
            mask=mt_i[:, None] & m_p[None, :],
            other=0.0,
        )  # (BT, BPK)
        b_xjt = tl.load(
            X + i_b * s_xb + t_j[None, :] * s_xl + i_h * s_xh + o_p[:, None] * s_xp,
            mask=m_p[:, None] & mt_j[None, :],
            other=0.0,
        )  # (BPK, BT)
        b_dyx += _dot(b_dyi, b_xjt, PREC, UP)
    return b_dyx


# ---- backward v2: three kernels, dB/dC summed over heads through the group's dCB (no per-head n-products) ----


@triton.autotune(
    configs=_configs(_CFG_BWD_DCB, triton.Config({}, num_warps=4)),
    prune_configs_by={"early_config_prune": _prune},
    key=["Q", "p", "hg", "HAS_SEG", "BT", "BPK"],
)
@triton.jit
def _bwd_dcb_kernel(
    X,
    DY,
    DT,
    CS,
    CB,
    SEG,
    DCB,
    RS,
    TOT,
    bsz,
    l,
    T,
    nc,
    h,
    hg,
    g,
    p,
    Q,
    NT,
    s_xb,
    s_xl,
    s_xh,
    s_xp,
    HAS_SEG: tl.constexpr,
    PREC: tl.constexpr,
    UP: tl.constexpr,
    BT: tl.constexpr,
    BPK: tl.constexpr,
    NPK: tl.constexpr,
):
    """One (BT, BT) tile (rows i, columns j <= i) of the group's ``dCB`` summed over its heads.

    ``dCB[i, j] = sum_h (dy_i . x_j) exp(cs_i - cs_j) dt_j`` (causal, same segment). Per head, with
    ``M_ij = dCB_h[i, j] CB[i, j]``, the tile's share of the log-decay gradient of step ``k``'s increment,
    ``X_k = sum_{i >= k > j} M_ij`` (the pairs the increment lies between), goes to ``RS[slot, b, h, t_k]``:
    below the diagonal the reverse cumulative row sums (rows k of block i, slot j_block) and the exclusive
    cumulative column sums (columns k of block j, slot i_block), and the tile total to
    ``TOT[b, h, c, i_block, j_block]`` for the blocks strictly between; on the diagonal the 2-D crossing sums
    (slot i_block). Every (slot, block) pair is written once. Summing crossing pairs directly, instead of
    row totals minus column totals, keeps the cancellation of the large near-diagonal terms out of the
    ``dA`` / ``dt_bias`` gradients.
    """
    # 1-D grid, the tiles of one (b, c, g) adjacent (they share x and dy rows in L2)
    i_ij = tl.program_id(0) % (NT * NT)
    i_bcg = tl.program_id(0) // (NT * NT)
    i_i = i_ij // NT
    i_j = i_ij % NT
    i_g = i_bcg % g
    i_c = (i_bcg // g) % nc
    i_b = i_bcg // (g * nc)
    if i_j <= i_i:
        o_i = i_i * BT + tl.arange(0, BT)
        o_j = i_j * BT + tl.arange(0, BT)
        m_i = o_i < Q
        m_j = o_j < Q
        t_i = i_c * Q + o_i
        t_j = i_c * Q + o_j
        mt_i = m_i & (t_i < l)
        mt_j = m_j & (t_j < l)
        live = (o_j[None, :] <= o_i[:, None]) & mt_j[None, :] & mt_i[:, None]
        if HAS_SEG:
            b_segi = tl.load(SEG + i_b * T + t_i, mask=m_i, other=-1)
            b_segj = tl.load(SEG + i_b * T + t_j, mask=m_j, other=-2)
            live = live & (b_segj[None, :] == b_segi[:, None])
        o_cb = i_bcg.to(tl.int64) * Q * Q + o_i[:, None] * Q + o_j[None, :]
        m_cb = m_i[:, None] & m_j[None, :]
        b_cb = tl.load(CB + o_cb, mask=m_cb, other=0.0)  # (BT, BT) C_i . B_j
        acc = tl.zeros((BT, BT), dtype=tl.float32)
        if i_j < i_i:
            # below the diagonal: decay split as exp(cs_i - cs_i0) exp(cs_i0 - cs_j), both <= 1 for dt * A <= 0
            for i_h in range(i_g * hg, (i_g + 1) * hg):
                o_cs = (i_b * h + i_h) * T + i_c * Q
                cs_ref = tl.load(CS + o_cs + i_i * BT)
                b_csi = tl.load(CS + o_cs + o_i, mask=m_i, other=0.0)
                b_csj = tl.load(CS + o_cs + o_j, mask=m_j, other=0.0)
                b_dtj = tl.load(DT + o_cs + o_j, mask=m_j, other=0.0)
                b_dyx = _dyx_tile(X, DY, i_b, i_h, t_i, t_j, mt_i, mt_j, l, h, p, s_xb, s_xl, s_xh, s_xp,
                                  PREC, UP, BT, BPK, NPK)  # fmt: skip
                b_ri = tl.where(mt_i, tl.exp(b_csi - cs_ref), 0.0)
                b_cj = tl.where(mt_j, tl.exp(cs_ref - b_csj) * b_dtj, 0.0)
                b_w = b_dyx * b_ri[:, None] * b_cj[None, :]
                if HAS_SEG:
                    b_w = tl.where(live, b_w, 0.0)
                acc += b_w
                b_m = b_w * b_cb.to(tl.float32)
                b_row = tl.sum(b_m, axis=1)  # (BT,) over columns j
                b_col = tl.sum(b_m, axis=0)  # (BT,) over rows i
                tot = tl.sum(b_row, axis=0)
                tl.store(
                    RS + ((i_j * bsz + i_b) * h + i_h).to(tl.int64) * T + t_i,
                    tot - tl.cumsum(b_row, axis=0) + b_row,
                    mask=m_i,
                )
                tl.store(
                    RS + ((i_i * bsz + i_b) * h + i_h).to(tl.int64) * T + t_j,
                    tl.cumsum(b_col, axis=0) - b_col,
                    mask=m_j,
                )
                tl.store(TOT + (((i_b * h + i_h) * nc + i_c) * NT + i_i) * NT + i_j, tot)
        else:
            for i_h in range(i_g * hg, (i_g + 1) * hg):
                o_cs = (i_b * h + i_h) * T + i_c * Q
                b_csi = tl.load(CS + o_cs + o_i, mask=m_i, other=0.0)
                b_csj = tl.load(CS + o_cs + o_j, mask=m_j, other=0.0)
                b_dtj = tl.load(DT + o_cs + o_j, mask=m_j, other=0.0)
                b_dyx = _dyx_tile(X, DY, i_b, i_h, t_i, t_j, mt_i, mt_j, l, h, p, s_xb, s_xl, s_xh, s_xp,
                                  PREC, UP, BT, BPK, NPK)  # fmt: skip
                b_dec = tl.exp(tl.where(live, b_csi[:, None] - b_csj[None, :], float("-inf")))
                b_w = b_dyx * b_dec * b_dtj[None, :]
                acc += b_w
                b_m = b_w * b_cb.to(tl.float32)
                b_pre = tl.cumsum(b_m, axis=1) - b_m  # [i, k] = sum_{j < k} M_ij
                b_x = tl.sum(tl.where(o_i[:, None] >= o_j[None, :], b_pre, 0.0), axis=0)  # (BT,) over k
                tl.store(RS + ((i_i * bsz + i_b) * h + i_h).to(tl.int64) * T + t_j, b_x, mask=m_j)
        tl.store(DCB + o_cb, acc, mask=m_cb)


@triton.autotune(
    configs=_configs(_CFG_BWD_DBC, triton.Config({"BTM": 1}, num_warps=4)),
    prune_configs_by={"early_config_prune": _prune},
    key=["Q", "p", "n", "hg", "HAS_SEG", "BT", "BPK", "BNC"],
)
@triton.jit
def _bwd_dbc_kernel(
    X,
    DY,
    DT,
    CS,
    DCB,
    Bm,
    Cm,
    S_ALL,
    DS_ALL,
    SEG,
    DB,
    DC,
    RS,
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
    NT,
    NBN,
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
    HAS_SEG: tl.constexpr,
    PREC: tl.constexpr,
    UP: tl.constexpr,
    BT: tl.constexpr,
    BPK: tl.constexpr,
    NPK: tl.constexpr,
    BNC: tl.constexpr,
    BTM: tl.constexpr,
):
    """dB and dC for BT * BTM steps k of one chunk and group (one n block): ``dC_k = sum_{j<=k} dCB_kj B_j +
    sum_h exp(cs_k) dy_k S_c``, ``dB_k = sum_{i>=k} dCB_ik C_i + sum_h exp(cs_last - cs_k) dt_k x_k dS_{c+1}``;
    per head the read-out part of ``dC_k . C_k`` goes to ``RS[NT + n_block, b, h, t_k]``.
    """
    # rows per program: BTM dCB tiles (fewer re-reads of S and dS per head)
    BTC: tl.constexpr = BT * BTM
    NK = tl.cdiv(Q, BTC)
    i_kn = tl.program_id(0) % (NK * NBN)
    i_bcg = tl.program_id(0) // (NK * NBN)
    i_k = i_kn // NBN
    i_nb = i_kn % NBN
    i_g = i_bcg % g
    i_c = (i_bcg // g) % nc
    i_b = i_bcg // (g * nc)
    o_k = i_k * BTC + tl.arange(0, BTC)
    m_k = o_k < Q
    t_k = i_c * Q + o_k
    mt_k = m_k & (t_k < l)
    o_n = i_nb * BNC + tl.arange(0, BNC)
    m_n = o_n < n
    m_kn = mt_k[:, None] & m_n[None, :]
    base = i_bcg.to(tl.int64) * Q * Q
    acc_dc = tl.zeros((BTC, BNC), dtype=tl.float32)
    acc_db = tl.zeros((BTC, BNC), dtype=tl.float32)
    # only dCB entries with j <= i were written (lower tiles; zeros above the diagonal inside them)
    for j0 in range(0, tl.minimum(i_k * BTC + BTC, Q), BT):
        o_j = j0 + tl.arange(0, BT)
        m_j = o_j < Q
        t_j = i_c * Q + o_j
        b_bj = tl.load(
            Bm + i_b * s_bb + t_j[:, None] * s_bl + i_g * s_bg + o_n[None, :] * s_bn,
            mask=(m_j & (t_j < l))[:, None] & m_n[None, :],
            other=0.0,
        )  # (BT, BNC)
        m_d = m_k[:, None] & m_j[None, :] & (o_j[None, :] <= o_k[:, None])
        b_d = tl.load(DCB + base + o_k[:, None] * Q + o_j[None, :], mask=m_d, other=0.0)  # (BTC, BT)
        acc_dc += _dot(b_d.to(b_bj.dtype), b_bj, PREC, UP)
    for i0 in range(i_k * BTC, Q, BT):
        o_i = i0 + tl.arange(0, BT)
        m_i = o_i < Q
        t_i = i_c * Q + o_i
        b_ci = tl.load(
            Cm + i_b * s_cb + t_i[:, None] * s_cl + i_g * s_cg + o_n[None, :] * s_cn,
            mask=(m_i & (t_i < l))[:, None] & m_n[None, :],
            other=0.0,
        )  # (BT, BNC)
        m_d = m_k[:, None] & m_i[None, :] & (o_i[None, :] >= o_k[:, None])
        b_dt = tl.load(DCB + base + o_i[None, :] * Q + o_k[:, None], mask=m_d, other=0.0)  # (BTC, BT)
        acc_db += _dot(b_dt.to(b_ci.dtype), b_ci, PREC, UP)
    # carried-state read-out (dC) and chunk-state (dB) parts, per head
    if HAS_SEG:
        b_segk = tl.load(SEG + i_b * T + t_k, mask=m_k, other=-1)
        seg_last = tl.load(SEG + i_b * T + i_c * Q + Q - 1)
        seg_prev = tl.load(SEG + i_b * T + i_c * Q - 1, mask=i_c > 0, other=0)
    p_ck = Cm + i_b * s_cb + t_k[:, None] * s_cl + i_g * s_cg + o_n[None, :] * s_cn
    for i_h in range(i_g * hg, (i_g + 1) * hg):
        o_cs = (i_b * h + i_h) * T + i_c * Q
        b_csk = tl.load(CS + o_cs + o_k, mask=m_k, other=0.0)
        b_dtk = tl.load(DT + o_cs + o_k, mask=m_k, other=0.0)
        cs_last = tl.load(CS + o_cs + Q - 1)
        w_in = tl.exp(b_csk)
        w_st = tl.exp(cs_last - b_csk)
        if HAS_SEG:
            w_in = tl.where(b_segk == seg_prev, w_in, 0.0)
            w_st = tl.where(b_segk == seg_last, w_st, 0.0)
        w_st = tl.where(mt_k, w_st * b_dtk, 0.0)
        o_s = ((i_b * (nc + 1) + i_c) * h + i_h).to(tl.int64) * p * n
        o_ds = ((i_b * (nc + 1) + i_c + 1) * h + i_h).to(tl.int64) * p * n
        t_dc = tl.zeros((BTC, BNC), dtype=tl.float32)
        for i_pk in tl.static_range(NPK):
            o_p = i_pk * BPK + tl.arange(0, BPK)
            m_p = o_p < p
            m_kp = mt_k[:, None] & m_p[None, :]
            m_pn = m_p[:, None] & m_n[None, :]
            b_dyk = tl.load(
                DY + ((i_b * l + t_k[:, None]).to(tl.int64) * h + i_h) * p + o_p[None, :],
                mask=m_kp,
                other=0.0,
            )
            b_xk = tl.load(
                X + i_b * s_xb + t_k[:, None] * s_xl + i_h * s_xh + o_p[None, :] * s_xp,
                mask=m_kp,
                other=0.0,
            )
            b_s = tl.load(S_ALL + o_s + o_p[:, None] * n + o_n[None, :], mask=m_pn, other=0.0)  # (BPK, BNC)
            b_ds = tl.load(DS_ALL + o_ds + o_p[:, None] * n + o_n[None, :], mask=m_pn, other=0.0)
            t_dc += _dot(b_dyk, b_s.to(b_dyk.dtype), PREC, UP)
            # rows of x pre-scaled by their weight (one rounding for 16-bit inputs; exact for fp32)
            acc_db += _dot((b_xk * w_st[:, None]).to(b_xk.dtype), b_ds.to(b_xk.dtype), PREC, UP)
        t_dc = t_dc * w_in[:, None]
        acc_dc += t_dc
        b_ck = tl.load(p_ck, mask=m_kn, other=0.0).to(tl.float32)  # reloaded per head (cache hit): fewer registers
        tl.store(
            RS + (((NT + i_nb) * bsz + i_b) * h + i_h).to(tl.int64) * T + t_k,
            tl.sum(t_dc * b_ck, axis=1),
            mask=m_k,
        )
    o_out = ((i_b * l + t_k[:, None]).to(tl.int64) * g + i_g) * n + o_n[None, :]
    tl.store(DB + o_out, acc_db.to(DB.dtype.element_ty), mask=m_kn)
    tl.store(DC + o_out, acc_dc.to(DC.dtype.element_ty), mask=m_kn)


@triton.autotune(
    configs=_configs(_CFG_BWD_DX, triton.Config({"BM": 16, "BK": 16}, num_warps=4)),
    prune_configs_by={"early_config_prune": _prune},
    key=["Q", "p", "n", "HAS_SEG", "HAS_D", "BT"],
)
@triton.jit
def _bwd_dx_kernel(
    X,
    DY,
    DT,
    CS,
    CB,
    Bm,
    DS_ALL,
    Dp,
    SEG,
    RS,
    DX,
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
    NT,
    NRS,
    s_xb,
    s_xl,
    s_xh,
    s_xp,
    s_bb,
    s_bl,
    s_bg,
    s_bn,
    HAS_D: tl.constexpr,
    D_HAS_P: tl.constexpr,
    HAS_SEG: tl.constexpr,
    PREC: tl.constexpr,
    UP: tl.constexpr,
    BT: tl.constexpr,
    BP: tl.constexpr,
    BNK: tl.constexpr,
    NNK: tl.constexpr,
    BM: tl.constexpr,
    BK: tl.constexpr,
):
    """Per head and BM steps r of a chunk: ``dxdt_r = sum_{i>=r} (C_i . B_r) exp(cs_i - cs_r) dy_i
    + exp(cs_last - cs_r) dS_{c+1} B_r``; writes dx, ``ddt_r = x_r . dxdt_r``, dD partials and the
    state parts of the log-decay gradient (``DCS[0]``: read-out, ``DCS[1]``: chunk state; see the end).
    """
    NM = tl.cdiv(Q, BM)
    i_m = tl.program_id(0) % NM
    i_bch = tl.program_id(0) // NM
    i_h = i_bch % h
    i_c = (i_bch // h) % nc
    i_b = i_bch // (h * nc)
    i_g = i_h // hg
    o_r = i_m * BM + tl.arange(0, BM)
    m_r = o_r < Q
    t_r = i_c * Q + o_r
    mt_r = m_r & (t_r < l)
    o_p = tl.arange(0, BP)
    m_p = o_p < p
    m_rp = mt_r[:, None] & m_p[None, :]
    o_cs = (i_b * h + i_h) * T + i_c * Q
    b_csr = tl.load(CS + o_cs + o_r, mask=m_r, other=0.0)
    b_dtr = tl.load(DT + o_cs + o_r, mask=m_r, other=0.0)
    cs_last = tl.load(CS + o_cs + Q - 1)
    if HAS_SEG:
        b_segr = tl.load(SEG + i_b * T + t_r, mask=m_r, other=-1)
        seg_last = tl.load(SEG + i_b * T + i_c * Q + Q - 1)
    base_cb = ((i_b * nc + i_c) * g + i_g).to(tl.int64) * Q * Q
    # rows i beyond the block: decay split as exp(cs_i - cs_ref) exp(cs_ref - cs_r), cs_ref at the block's
    # last row (both factors <= 1 when dt * A <= 0); the diagonal block takes the exact masked tile
    r_hi = tl.minimum((i_m + 1) * BM, Q)
    cs_ref = tl.load(CS + o_cs + r_hi - 1)
    b_dxdt = tl.zeros((BM, BP), dtype=tl.float32)
    for k0 in range(r_hi, Q, BK):
        o_i = k0 + tl.arange(0, BK)
        m_i = o_i < Q
        t_i = i_c * Q + o_i
        mt_i = m_i & (t_i < l)
        b_dyi = tl.load(
            DY + ((i_b * l + t_i[:, None]).to(tl.int64) * h + i_h) * p + o_p[None, :],
            mask=mt_i[:, None] & m_p[None, :],
            other=0.0,
        )  # (BK, BP)
        b_csi = tl.load(CS + o_cs + o_i, mask=m_i, other=0.0)
        b_bc = tl.load(
            CB + base_cb + o_i[None, :] * Q + o_r[:, None],
            mask=m_r[:, None] & m_i[None, :],
            other=0.0,
        )
        b_a = b_bc * tl.where(mt_i, tl.exp(b_csi - cs_ref), 0.0)[None, :]
        if HAS_SEG:
            b_segi = tl.load(SEG + i_b * T + t_i, mask=m_i, other=-2)
            b_a = tl.where(b_segi[None, :] == b_segr[:, None], b_a, 0.0)
        b_dxdt += _dot(b_a.to(b_dyi.dtype), b_dyi, PREC, UP)
    b_dxdt = b_dxdt * tl.where(m_r, tl.exp(cs_ref - b_csr), 0.0)[:, None]
    for k0 in range(i_m * BM, r_hi, BK):
        o_i = k0 + tl.arange(0, BK)
        m_i = o_i < r_hi
        t_i = i_c * Q + o_i
        mt_i = m_i & (t_i < l)
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
        b_bc = tl.load(
            CB + base_cb + o_i[None, :] * Q + o_r[:, None],
            mask=m_r[:, None] & m_i[None, :],
            other=0.0,
        )
        b_dxdt += _dot((b_bc * b_dec).to(b_dyi.dtype), b_dyi, PREC, UP)
    # chunk-state part: L_c feeds S_{c+1}
    w_st = tl.exp(cs_last - b_csr)
    if HAS_SEG:
        w_st = tl.where(b_segr == seg_last, w_st, 0.0)
    w_st = tl.where(mt_r, w_st, 0.0)
    o_ds = ((i_b * (nc + 1) + i_c + 1) * h + i_h).to(tl.int64) * p * n
    b_st = tl.zeros((BM, BP), dtype=tl.float32)
    for i_nk in tl.static_range(NNK):
        o_n = i_nk * BNK + tl.arange(0, BNK)
        m_n = o_n < n
        b_br = tl.load(
            Bm + i_b * s_bb + t_r[:, None] * s_bl + i_g * s_bg + o_n[None, :] * s_bn,
            mask=mt_r[:, None] & m_n[None, :],
            other=0.0,
        )  # (BM, BNK)
        b_dst = tl.load(
            DS_ALL + o_ds + o_p[None, :] * n + o_n[:, None],
            mask=m_n[:, None] & m_p[None, :],
            other=0.0,
        )
        b_st += _dot(b_br, b_dst.to(b_br.dtype), PREC, UP)
    b_dxdt += b_st * w_st[:, None]
    o_dyr = ((i_b * l + t_r[:, None]).to(tl.int64) * h + i_h) * p + o_p[None, :]
    b_xr = tl.load(
        X + i_b * s_xb + t_r[:, None] * s_xl + i_h * s_xh + o_p[None, :] * s_xp,
        mask=m_rp,
        other=0.0,
    )
    b_xr32 = b_xr.to(tl.float32)
    b_ddt = tl.sum(b_xr32 * b_dxdt, axis=1)  # (BM,)
    b_dx = b_dxdt * b_dtr[:, None]
    if HAS_D:
        b_dyr = tl.load(DY + o_dyr, mask=m_rp, other=0.0).to(tl.float32)
        if D_HAS_P:
            b_d = tl.load(Dp + i_h * p + o_p, mask=m_p, other=0.0).to(tl.float32)
            b_dx += b_dyr * b_d[None, :]
        else:
            b_dx += b_dyr * tl.load(Dp + i_h).to(tl.float32)
        # dD partial over these rows into 16-row slot i_m * BM // 16; the block's other slots get zeros
        i_slot = (i_b * nc + i_c) * Q16 + i_m * (BM // 16)
        b_dd = tl.sum(b_dyr * b_xr32, axis=0)  # (BP,)
        tl.store(DDP + (i_slot * h + i_h).to(tl.int64) * p + o_p, b_dd, mask=m_p)
        for k in range(1, BM // 16):
            m_slot = (o_p * 0 + i_m * (BM // 16) + k) < Q16  # vector mask
            tl.store(
                DDP + ((i_slot + k) * h + i_h).to(tl.int64) * p + o_p,
                tl.zeros_like(b_dd),
                mask=m_p & m_slot,
            )
    tl.store(DX + o_dyr, b_dx.to(DX.dtype.element_ty), mask=m_rp)
    tl.store(DDT + o_cs + o_r, b_ddt, mask=m_r)
    # the log-decay gradient's parts that are not intra-chunk pairs (those come from _bwd_dcb_kernel):
    # DCS[0] the read-out from the incoming state (dC_r . C_r's read-out part, summed over RS's n blocks),
    # DCS[1] the chunk-state part E_r = dt_r x_r . (w_st_r dS_{c+1} B_r)
    b_rd = tl.zeros((BM,), dtype=tl.float32)
    o_rs = (i_b * h + i_h).to(tl.int64) * T + t_r
    for s in range(NT, NRS):
        b_rd += tl.load(RS + s * bsz * h * T + o_rs, mask=m_r, other=0.0)
    tl.store(DCS + o_cs + o_r, b_rd, mask=m_r)
    b_e = b_dtr * w_st * tl.sum(b_xr32 * b_st, axis=1)
    tl.store(DCS + bsz * h * T + o_cs + o_r, b_e, mask=m_r)


@triton.jit
def _softplus_fwd(v):
    """log(1 + exp(v)) as torch computes it (identity above 20), accurate for very negative v."""
    e = tl.exp(tl.minimum(v, 20.0))
    return tl.where(v > 20.0, v, tl.where(e < 1e-4, e * (1.0 - 0.5 * e), tl.log(1.0 + e)))


@triton.jit
def _dt_chunk(
    DT, BIAS, A, SEG, DT_T, CS, CDEC, i_bh, i_c, l, T, nc, h, Q, s_db, s_dl, s_dh, lo, hi,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr, HAS_SEG: tl.constexpr,
    BQ: tl.constexpr,
):  # fmt: skip
    """dt processing fused with the within-chunk cumulative log decay, for one (b, h, chunk).

    DT_T[b, h, t] = clamp(softplus(dt + bias)) (0 beyond l), CS = cumsum within the chunk of DT_T * A,
    CDEC[b, h, c] = exp(CS[last]) (0 where a segment starts inside the chunk).
    """
    i_b = i_bh // h
    i_h = i_bh % h
    o = tl.arange(0, BQ)
    t = i_c * Q + o
    m = (o < Q) & (t < l)
    v = tl.load(DT + i_b * s_db + t * s_dl + i_h * s_dh, mask=m, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v += tl.load(BIAS + i_h).to(tl.float32)
    if SOFTPLUS:
        v = _softplus_fwd(v)
    if HAS_LIMIT:
        v = tl.minimum(tl.maximum(v, lo), hi)
    v = tl.where(m, v, 0.0)
    cs = tl.cumsum(v * tl.load(A + i_h).to(tl.float32), axis=0)
    o_t = i_bh.to(tl.int64) * T + t
    tl.store(DT_T + o_t, v, mask=o < Q)
    tl.store(CS + o_t, cs, mask=o < Q)
    dec = tl.exp(tl.sum(tl.where(o == Q - 1, cs, 0.0), axis=0))
    if HAS_SEG:
        seg_end = tl.load(SEG + i_b * T + i_c * Q + Q - 1)
        seg_prev = tl.load(SEG + i_b * T + i_c * Q - 1, mask=i_c > 0, other=0)
        dec = tl.where(seg_end == seg_prev, dec, 0.0)
    tl.store(CDEC + i_bh * nc + i_c, dec)


@triton.jit
def _prep_kernel(
    DT, BIAS, A, SEG, DT_T, CS, CDEC, Bm, Cm, CB, l, T, nc, h, g, n, Q, NCB, NQ, s_db, s_dl, s_dh, lo, hi,
    s_bb, s_bl, s_bg, s_bn, s_cb, s_cl, s_cg, s_cn,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr, HAS_SEG: tl.constexpr,
    PREC: tl.constexpr, UP: tl.constexpr, BQD: tl.constexpr, BQ: tl.constexpr, BKN: tl.constexpr,
):  # fmt: skip
    """The forward's preparation in one launch: programs ``< NCB`` compute C.B tiles, the others the dt
    processing and cumulative decays of one (b, h, chunk)."""
    pid = tl.program_id(0)
    if pid < NCB:
        i_bcg = pid // (NQ * NQ)
        i_q = pid % (NQ * NQ)
        _cb_tile(
            Bm, Cm, CB, i_bcg, i_q // NQ, i_q % NQ, l, nc, g, n, Q, s_bb, s_bl, s_bg, s_bn, s_cb, s_cl, s_cg, s_cn,
            PREC, UP, BQ, BKN,
        )  # fmt: skip
    else:
        i_bhc = pid - NCB
        _dt_chunk(
            DT, BIAS, A, SEG, DT_T, CS, CDEC, i_bhc // nc, i_bhc % nc, l, T, nc, h, Q, s_db, s_dl, s_dh, lo, hi,
            HAS_BIAS, SOFTPLUS, HAS_LIMIT, HAS_SEG, BQD,
        )  # fmt: skip


@triton.jit
def _cb_kernel(
    Bm, Cm, CB, l, nc, g, n, Q, NQ, s_bb, s_bl, s_bg, s_bn, s_cb, s_cl, s_cg, s_cn,
    PREC: tl.constexpr, UP: tl.constexpr, BQ: tl.constexpr, BKN: tl.constexpr,
):  # fmt: skip
    """C.B tiles alone (the backward's fp32 copy): one program per (b, c, g, tile)."""
    pid = tl.program_id(0)
    i_q = pid % (NQ * NQ)
    _cb_tile(
        Bm, Cm, CB, pid // (NQ * NQ), i_q // NQ, i_q % NQ, l, nc, g, n, Q, s_bb, s_bl, s_bg, s_bn,
        s_cb, s_cl, s_cg, s_cn, PREC, UP, BQ, BKN,
    )  # fmt: skip


@triton.jit
def _dt_bwd_kernel(
    DT,
    BIAS,
    A,
    DT_T,
    DDT,
    XS,
    TOT,
    DCS,
    DOTS,
    DDT_RAW,
    PART,
    bsz,
    l,
    T,
    nc,
    h,
    Q,
    NT,
    NBLK,
    s_db,
    s_dl,
    s_dh,
    lo,
    hi,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_LIMIT: tl.constexpr,
    BT: tl.constexpr,
    BQ: tl.constexpr,
):
    """Backward of :func:`_dt_chunk` for one (b, h, chunk): the gradient of step k's log-decay increment
    ``dt_k A`` is the sum of every term whose decay spans it, gathered without cancellation:

    * intra-chunk pairs ``sum_{i >= k > j} M_ij``: the ``NT`` slots of ``XS`` plus the totals ``TOT`` of
      the tiles whose row and column blocks lie on either side of k's block (:func:`_bwd_dcb_kernel`);
    * the read-out of the incoming state at steps ``i >= k``: suffix sums of ``DCS[0]``;
    * the chunk state: ``DOTS`` (the passed-on state's part, ``CDEC <dS_{c+1}, S_c>``) plus the prefix sums
      of ``DCS[1]`` over steps ``j < k``.

    Adds the direct ``ddt``, chains through clamp, softplus and the bias; writes the raw ``dt`` gradient
    ``(b, l, h)`` and partial sums ``PART[0|1, b, h, c]`` for ``dA`` / ``ddt_bias``.
    """
    i_bh = tl.program_id(0)
    i_c = tl.program_id(1)
    i_b = i_bh // h
    i_h = i_bh % h
    o = tl.arange(0, BQ)
    t = i_c * Q + o
    m_q = o < Q
    m = m_q & (t < l)
    o_t = i_bh.to(tl.int64) * T + t
    b_da = tl.zeros((BQ,), dtype=tl.float32)
    for s in range(0, NT):
        b_da += tl.load(XS + s * bsz * h * T + o_t, mask=m_q, other=0.0)
    kb = o // BT
    o_tot = (i_bh * nc + i_c) * NT * NT
    for bi in range(2, NT):
        for bj in range(0, bi - 1):
            tot = tl.load(TOT + o_tot + bi * NT + bj)
            b_da += tl.where((kb > bj) & (kb < bi), tot, 0.0)
    b_rd = tl.load(DCS + o_t, mask=m_q, other=0.0)
    b_e = tl.load(DCS + bsz * h * T + o_t, mask=m_q, other=0.0)
    dots = tl.load(DOTS + (i_bh * nc + i_c) * NBLK)
    for k in range(1, NBLK):
        dots += tl.load(DOTS + (i_bh * nc + i_c) * NBLK + k)
    b_da += tl.sum(b_rd, axis=0) - tl.cumsum(b_rd, axis=0) + b_rd + dots + tl.cumsum(b_e, axis=0) - b_e
    b_dt = tl.load(DT_T + o_t, mask=m_q, other=0.0)
    a = tl.load(A + i_h).to(tl.float32)
    g = tl.load(DDT + o_t, mask=m_q, other=0.0) + a * b_da
    g = tl.where(m, g, 0.0)
    part_a = tl.sum(tl.where(m, b_dt * b_da, 0.0), axis=0)
    # chain through clamp, softplus and the bias
    if SOFTPLUS or HAS_LIMIT:
        v = tl.load(DT + i_b * s_db + t * s_dl + i_h * s_dh, mask=m, other=0.0).to(tl.float32)
        if HAS_BIAS:
            v += tl.load(BIAS + i_h).to(tl.float32)
        if HAS_LIMIT:
            if SOFTPLUS:
                sp = _softplus_fwd(v)
            else:
                sp = v
            g = tl.where((sp >= lo) & (sp <= hi), g, 0.0)
        if SOFTPLUS:
            g = tl.where(v > 20.0, g, g * tl.sigmoid(v))
    tl.store(
        DDT_RAW + (i_b * l + t).to(tl.int64) * h + i_h,
        g.to(DDT_RAW.dtype.element_ty),
        mask=m,
    )
    o_p = (i_b * h + i_h) * nc + i_c
    tl.store(PART + o_p, part_a)
    tl.store(PART + bsz * h * nc + o_p, tl.sum(g, axis=0))


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
    tl.store(
        DZ + o_c,
        (b_do * b_y * sig * (1.0 + b_z * (1.0 - sig))).to(DZ.dtype.element_ty),
        mask=m,
    )


# ----------------------------------------------------------------------------------------------
# host launchers
# ----------------------------------------------------------------------------------------------


def _prec(dtype: torch.dtype) -> str:
    """tl.dot precision: exact fp32 unless SSM_KERNELS_TF32=1 (irrelevant for 16-bit operands)."""
    if dtype == torch.float32 and os.environ.get("SSM_KERNELS_TF32", "0") != "1":
        return "ieee"
    return "tf32"


def _up(dtype: torch.dtype) -> bool:
    return _INTERPRET and dtype in (torch.bfloat16, torch.float16)


def _pow2(v: int) -> int:
    return max(16, next_pow2(v))


def _dt_limits(dt_limit) -> tuple[bool, float, float]:
    lo, hi = float(dt_limit[0]), float(dt_limit[1])
    return (lo != 0.0 or hi != float("inf")), lo, hi


_STATE_BWD_INTERPRET_BLOCKS = (
    16,
    16,
)  # (BP, BN) of _state_scan_bwd_kernel under the interpreter
_CB_INTERPRET_BLOCKS = (
    16,
    16,
)  # (rows/cols, n) blocks of the C.B tiles (_prep_kernel) under the interpreter (tests may raise them)


def _cb_dtype(dtype: torch.dtype) -> torch.dtype:
    """The forward's storage of C.B: bf16 for bf16 inputs (half the traffic of its re-reads by every head of
    a group) unless ``SSM_KERNELS_SSD_CB_FP32=1``; fp32 otherwise (fp16's range could overflow for large B, C).
    The backward uses fp32 always (:func:`_cb_fp32`)."""
    if dtype == torch.bfloat16 and os.environ.get("SSM_KERNELS_SSD_CB_FP32", "0") != "1":
        return dtype
    return torch.float32


def _prep_buffers(dt, B, Q):
    """Outputs of :func:`_prep`: ``dt_t``, ``cs`` (b, h, T) and ``cdec`` (b, h, nc) fp32, ``cb`` (b, nc, g, Q, Q)."""
    b, l, h = dt.shape
    g = B.shape[2]
    nc = max(1, cdiv(l, Q))
    dt_t = torch.empty(b, h, nc * Q, device=dt.device, dtype=torch.float32)
    cs = torch.empty_like(dt_t)
    cdec = torch.empty(b, h, nc, device=dt.device, dtype=torch.float32)
    # bf16 inputs keep C.B in bf16 (half the re-read traffic; the products are rounded to bf16 anyway)
    cb = torch.empty(b, nc, g, Q, Q, device=B.device, dtype=_cb_dtype(B.dtype))
    return dt_t, cs, cdec, cb


def _prep(dt, dt_bias, A, seg_p, B, C, Q, softplus, dt_limit, bufs):
    """One launch: processed ``dt`` (0 beyond ``l``) and within-chunk cumulative log decay, both
    ``(b, h, T)`` fp32, the chunk decays ``(b, h, nc)`` (zero where a segment starts inside the chunk) and
    the per-chunk ``C_i . B_j`` of every group, shared by its heads, ``(b, nc, g, Q, Q)`` (see :func:`_cb_dtype`).
    ``bufs``: the outputs, preallocated by :func:`_prep_buffers`."""
    b, l, h = dt.shape
    g, n = B.shape[2], B.shape[3]
    nc = max(1, cdiv(l, Q))
    T = nc * Q
    dt_t, cs, cdec, cb = bufs
    BQ, BKN = _CB_INTERPRET_BLOCKS if _INTERPRET else (64, min(64, _pow2(n)))
    NQ = cdiv(Q, BQ)
    ncb = b * nc * g * NQ * NQ
    has_limit, lo, hi = _dt_limits(dt_limit)
    fast(_prep_kernel)[(ncb + b * h * nc,)](
        dt, dt_bias if dt_bias is not None else A, A, seg_p if seg_p is not None else cs, dt_t, cs, cdec, B, C, cb,
        l, T, nc, h, g, n, Q, ncb, NQ, *dt.stride(), lo, hi if hi != float("inf") else 3.0e38,
        *B.stride(), *C.stride(),
        HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(softplus), HAS_LIMIT=has_limit, HAS_SEG=seg_p is not None,
        PREC=_prec(B.dtype), UP=_up(B.dtype), BQD=next_pow2(Q), BQ=BQ, BKN=BKN,
        num_warps=4,
    )  # fmt: skip
    return dt_t, cs, cdec, cb


def _cb_fp32(B, C, Q, nc):
    """C.B of every chunk and group in fp32, for the backward. Its pairs' products summed over a chunk in the
    log-decay gradient turn bf16's 8-bit mantissa into several times the reference's ``dA`` / ``dt_bias``
    error (Mamba2's configuration: slow decay, long chunks)."""
    b, l, g, n = B.shape
    cb = torch.empty(b, nc, g, Q, Q, device=B.device, dtype=torch.float32)
    BQ, BKN = _CB_INTERPRET_BLOCKS if _INTERPRET else (64, min(64, _pow2(n)))
    NQ = cdiv(Q, BQ)
    fast(_cb_kernel)[(b * nc * g * NQ * NQ,)](
        B, C, cb, l, nc, g, n, Q, NQ, *B.stride(), *C.stride(),
        PREC=_prec(B.dtype), UP=_up(B.dtype), BQ=BQ, BKN=BKN, num_warps=4,
    )  # fmt: skip
    return cb


def _all_states(x, B, cs, dt_t, cdec, seg_p, init, Q, hg, s_all=None) -> torch.Tensor:
    """States entering every chunk plus the final state: (b, nc + 1, h, p, n) fp32 (into ``s_all`` if given)."""
    b, l, h, p = x.shape
    n = B.shape[-1]
    T = cs.shape[-1]
    nc = T // Q
    if s_all is None:
        s_all = torch.empty(b, nc + 1, h, p, n, device=x.device, dtype=torch.float32)
    grid = lambda META: (b * h, cdiv(p, META["BP"]), cdiv(n, META["BN"]))
    fast(_state_scan_fwd_kernel)[grid](
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


def _fwd_buffers(x, B, z, Q):
    """Outputs of :func:`_fwd`: ``out``, ``y`` (the ungated output, with ``z``) and ``s_all``."""
    b, l, h, p = x.shape
    n = B.shape[3]
    out = torch.empty(b, l, h, p, device=x.device, dtype=x.dtype)
    y = torch.empty_like(out) if z is not None else None
    s_all = torch.empty(b, max(1, cdiv(l, Q)) + 1, h, p, n, device=x.device, dtype=torch.float32)
    return out, y, s_all


def _fwd(x, dt_t, cs, cdec, cb, B, C, D, z, init, seg_p, Q, bufs):
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    hg = h // g
    nc = cs.shape[-1] // Q
    out, y, s_all = bufs
    s_all = _all_states(x, B, cs, dt_t, cdec, seg_p, init, Q, hg, s_all)
    BP = min(_pow2(p), 64)
    grid = lambda META: (cdiv(Q, META["BM"]) * b * nc * h, cdiv(p, BP))
    zz = z if z is not None else x
    fast(_chunk_scan_fwd_kernel)[grid](
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


_BWD2_INTERPRET_BLOCKS = (
    16,
    16,
    16,
    16,
)  # (BT, BPK, BNC, BNK) of the v2 backward under the interpreter


def _chunk_bwd(x, dy, dt_t, cs, cb, B, C, s_all, ds_all, D, seg_p, Q):
    """Backward of the chunk scan: returns ``dx, dB, dC, ddt (b, h, T), ddp`` and the log-decay gradient's
    parts ``(rs, tot, dcs, NT, BT)`` for :func:`_dt_bwd_kernel`."""
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    hg = h // g
    T = cs.shape[-1]
    nc = T // Q
    if _INTERPRET:
        BT, BPK, BNC, BNK = _BWD2_INTERPRET_BLOCKS
    else:
        BT, BPK, BNC, BNK = (
            min(64, _pow2(Q)),
            min(64, _pow2(p)),
            min(64, _pow2(n)),
            min(64, _pow2(n)),
        )
    NT = cdiv(Q, BT)
    NBN = cdiv(n, BNC)
    NRS = NT + NBN
    prec, up = _prec(x.dtype), _up(x.dtype)
    seg = seg_p if seg_p is not None else cs
    dcb = torch.empty(b, nc, g, Q, Q, device=x.device, dtype=torch.float32)
    rs = torch.empty(NRS, b, h, T, device=x.device, dtype=torch.float32)
    tot = torch.empty(b, h, nc, NT, NT, device=x.device, dtype=torch.float32)
    fast(_bwd_dcb_kernel)[(NT * NT * b * nc * g,)](
        x, dy, dt_t, cs, cb, seg, dcb, rs, tot, b, l, T, nc, h, hg, g, p, Q, NT, *x.stride(),
        HAS_SEG=seg_p is not None, PREC=prec, UP=up, BT=BT, BPK=BPK, NPK=cdiv(p, BPK),
    )  # fmt: skip
    dB = torch.empty(b, l, g, n, device=x.device, dtype=B.dtype)
    dC = torch.empty(b, l, g, n, device=x.device, dtype=C.dtype)
    fast(_bwd_dbc_kernel)[lambda META: (cdiv(Q, BT * META["BTM"]) * NBN * b * nc * g,)](
        x, dy, dt_t, cs, dcb, B, C, s_all, ds_all, seg, dB, dC, rs, b, l, T, nc, h, hg, g, p, n, Q, NT, NBN,
        *x.stride(), *B.stride(), *C.stride(),
        HAS_SEG=seg_p is not None, PREC=prec, UP=up, BT=BT, BPK=BPK, NPK=cdiv(p, BPK), BNC=BNC,
    )  # fmt: skip
    dx = torch.empty(b, l, h, p, device=x.device, dtype=x.dtype)
    ddt = torch.empty(b, h, T, device=x.device, dtype=torch.float32)
    dcs = torch.empty(2, b, h, T, device=x.device, dtype=torch.float32)
    Q16 = cdiv(Q, 16)
    ddp = torch.empty(b, nc, Q16, h, p, device=x.device, dtype=torch.float32) if D is not None else ddt
    grid = lambda META: (cdiv(Q, META["BM"]) * b * nc * h,)
    fast(_bwd_dx_kernel)[grid](
        x, dy, dt_t, cs, cb, B, ds_all, D if D is not None else cs, seg, rs, dx, ddt, dcs, ddp,
        b, l, T, nc, h, hg, g, p, n, Q, Q16, NT, NRS, *x.stride(), *B.stride(),
        HAS_D=D is not None, D_HAS_P=D is not None and D.dim() == 2, HAS_SEG=seg_p is not None,
        PREC=prec, UP=up, BT=BT, BP=_pow2(p), BNK=BNK, NNK=cdiv(n, BNK),
    )  # fmt: skip
    return dx, dB, dC, ddt, ddp, (rs, tot, dcs, NT, BT)


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


def _save_states() -> bool:
    """``SSM_KERNELS_SSD_SAVE_STATES=1`` keeps the chunk states for the backward (more memory, no recompute)."""
    return os.environ.get("SSM_KERNELS_SSD_SAVE_STATES", "0") == "1"


def _forward(x, dt, A, B, C, D, z, dt_bias, init, seg_p, cu_seqlens, Q, softplus, dt_limit, want_varlen):
    """The forward launches: ``out``, the final state, the varlen states (empty unless asked for) and the
    intermediates the backward keeps ``(dt_t, cs, cdec, cb, y, s_all)``."""
    # every buffer first, then the three launches back to back: the GPU does not wait for host work between them
    prep_bufs = _prep_buffers(dt, B, Q)
    fwd_bufs = _fwd_buffers(x, B, z, Q)
    init = init.contiguous() if init is not None else None
    dt_t, cs, cdec, cb = _prep(dt, dt_bias, A, seg_p, B, C, Q, softplus, dt_limit, prep_bufs)
    out, y, s_all = _fwd(x, dt_t, cs, cdec, cb, B, C, D, z, init, seg_p, Q, fwd_bufs)
    final = s_all[:, -1]
    varlen = _varlen_states(cu_seqlens, x, B, dt_t, cs, seg_p, s_all, Q) if want_varlen else final.new_zeros(0)
    return out, final, varlen, (dt_t, cs, cdec, cb, y, s_all)


class _SSDChunkScanFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x,
        dt,
        A,
        B,
        C,
        D,
        z,
        dt_bias,
        init,
        seg_p,
        cu_seqlens,
        Q,
        softplus,
        dt_limit,
        want_varlen,
    ):
        out, final, varlen, (dt_t, cs, cdec, cb, y, s_all) = _forward(
            x, dt, A, B, C, D, z, dt_bias, init, seg_p, cu_seqlens, Q, softplus, dt_limit, want_varlen
        )
        keep = _save_states()
        ctx.save_for_backward(
            x,
            dt,
            A,
            B,
            C,
            D,
            z,
            y,
            dt_bias,
            init,
            seg_p,
            dt_t,
            cs,
            cdec,
            cb,
            s_all if keep else None,
        )
        ctx.Q, ctx.softplus, ctx.dt_limit = Q, softplus, dt_limit
        ctx.mark_non_differentiable(varlen)
        ctx.set_materialize_grads(False)
        return out, final, varlen

    @staticmethod
    def backward(ctx, dout, dfinal, _dvarlen):
        x, dt, A, B, C, D, z, y, dt_bias, init, seg_p, dt_t, cs, cdec, cb, s_all = ctx.saved_tensors
        Q = ctx.Q
        b, l, h, p = x.shape
        g, n = B.shape[2], B.shape[3]
        hg = h // g
        T = cs.shape[-1]
        nc = T // Q
        if s_all is None:
            s_all = _all_states(x, B, cs, dt_t, cdec, seg_p, init, Q, hg)
        if cb.dtype != torch.float32:
            cb = _cb_fp32(B, C, Q, nc)
        dout = torch.zeros(b, l, h, p, device=x.device, dtype=x.dtype) if dout is None else dout.contiguous()
        dz = None
        if z is not None:
            dy = torch.empty(b, l, h, p, device=x.device, dtype=x.dtype)
            dz = torch.empty(b, l, h, p, device=x.device, dtype=z.dtype)
            BLOCK = min(1024, next_pow2(h * p))
            fast(_gate_bwd_kernel)[(b * l, cdiv(h * p, BLOCK))](
                dout, z, y, dy, dz, l, h, p, *z.stride(), BLOCK=BLOCK, num_warps=4
            )
        else:
            dy = dout.to(x.dtype)
        # reverse state passing (adjoint of the read-out folded in)
        # dS in the 16-bit input dtype (every reader rounds it to that dtype for its dot): half the traffic
        ds_all = torch.empty(s_all.shape, device=x.device, dtype=x.dtype if x.dtype != torch.float32 else torch.float32)
        dinit = torch.empty(b, h, p, n, device=x.device, dtype=torch.float32) if init is not None else None
        # block sizes fixed on the host (not autotuned) so the partial-dot slots do not depend on the config
        BPs, BNs = _STATE_BWD_INTERPRET_BLOCKS if _INTERPRET else (min(64, _pow2(p)), min(64, _pow2(n)))
        if BPs > 16 and b * h * cdiv(p, BPs) * cdiv(n, BNs) < 512:  # a sequential loop per program:
            BPs //= 2  # more, smaller programs when the (b, h) grid alone would leave SMs idle
        nblk = cdiv(p, BPs) * cdiv(n, BNs)
        dots = torch.empty(b, h, nc, nblk, device=x.device, dtype=torch.float32)
        dfin = dfinal.contiguous() if dfinal is not None else None
        grid = (b * h, cdiv(p, BPs), cdiv(n, BNs))
        fast(_state_scan_bwd_kernel)[grid](
            dy,
            C,
            cs,
            dt_t,
            cs if seg_p is None else seg_p,
            cdec,
            ds_all if dfin is None else dfin,
            s_all,
            ds_all,
            dinit if dinit is not None else ds_all,
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
            HAS_DINIT=dinit is not None,
            PREC=_prec(x.dtype),
            UP=_up(x.dtype),
            BP=BPs,
            BN=BNs,
        )
        # chunk-scan backward
        dx, dB, dC, ddt, ddp, (rs, tot, dcs, NT, BT) = _chunk_bwd(x, dy, dt_t, cs, cb, B, C, s_all, ds_all, D, seg_p, Q)
        # log-decay and direct dt gradients -> raw dt, A and dt_bias (one launch, then one small sum)
        has_limit, lo, hi = _dt_limits(ctx.dt_limit)
        ddt_raw = torch.empty(b, l, h, device=x.device, dtype=dt.dtype)
        part = torch.empty(2, b, h, nc, device=x.device, dtype=torch.float32)
        fast(_dt_bwd_kernel)[(b * h, nc)](
            dt, dt_bias if dt_bias is not None else A, A, dt_t, ddt, rs, tot, dcs, dots, ddt_raw, part,
            b, l, T, nc, h, Q, NT, dots.shape[-1], *dt.stride(), lo, hi if hi != float("inf") else 3.0e38,
            HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(ctx.softplus), HAS_LIMIT=has_limit,
            BT=BT, BQ=next_pow2(Q), num_warps=4 if Q <= 512 else 8,
        )  # fmt: skip
        part = part.sum((1, 3))  # (2, h)
        dA = part[0].to(A.dtype)
        ddt_bias = part[1].to(dt_bias.dtype) if dt_bias is not None else None
        dD = None
        if D is not None and ctx.needs_input_grad[5]:
            dD = ddp.sum((0, 1, 2))  # (h, p)
            dD = (dD if D.dim() == 2 else dD.sum(-1)).to(D.dtype)
        dinit = dinit.to(init.dtype) if init is not None else None
        return (
            dx,
            ddt_raw,
            dA,
            dB,
            dC,
            dD,
            dz,
            ddt_bias,
            dinit,
            None,
            None,
            None,
            None,
            None,
            None,
        )


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
    nc = max(1, cdiv(l, Q))
    seg = seq_segments(seq_idx, cu_seqlens, b, l, x.device)
    seg_p = None
    if seg is not None:
        seg_p = torch.cat([seg, seg[:, -1:].expand(b, nc * Q - l)], dim=1).to(torch.int32).contiguous()
    Dc = None if D is None else D.contiguous()
    inputs = (x, dt, A, B, C, Dc, z, dt_bias, initial_states)
    if needs_autograd(*inputs):
        out, final, varlen = _SSDChunkScanFn.apply(
            *inputs, seg_p, cu_seqlens, Q, bool(dt_softplus), tuple(dt_limit), bool(return_varlen_states)
        )
    else:  # inference: no autograd node (its bookkeeping costs as much as a kernel launch here)
        out, final, varlen, _ = _forward(*inputs, seg_p, cu_seqlens, Q, bool(dt_softplus), tuple(dt_limit),
                                         bool(return_varlen_states))  # fmt: skip
    res = [out]
    if return_final_states:
        res.append(final)
    if return_varlen_states:
        res.append(varlen)
    return res[0] if len(res) == 1 else tuple(res)
