"""Triton kernels of the learned edge weights: one program per (batch row, step), everything on chip.

In PyTorch the op is a chain over (batch, T, V, V) tensors: two batched (V, E) @ (E, V) products that cuBLAS runs
with 32 x 32 tiles on tiny matrices, a softmax, a transpose-add, a threshold, a sigmoid and the combination, each a
kernel that reads and writes the whole graph tensor, and as many again in backward. Here a program loads its step's
embeddings (V rows, a block of features at a time), forms both (VP, VP) products with ``tl.dot`` and the whole
element-wise chain in registers, and writes the (V, V) result once. The backward recomputes the forward's tiles from
the embeddings (no (batch, T, V, V) intermediate is stored) and writes dq, dk, dg and one partial sum of the skip
weight's gradient per program. Vertices are padded to tl.dot's minimum of 16 (V <= 64), features to blocks of 16-32.
fp32 embeddings use three tf32 products (``ssm_kernels._tl_dot``'s 3xtf32, about fp32 accuracy: the attention
logits are sharpened by the temperature, so tf32 rounding would move thresholded edges), half ones tf32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._launch import fast
from .._tl_dot import dot as _dot
from ..backend import dot_precision, needs_autograd, next_pow2

__all__ = ["MAX_VERTICES", "edge_weights_triton"]

MAX_VERTICES = 64
# warps of the forward / backward programs: swept on the H200 at TGMamba's shapes (d_model 32, V 19; run31b, kernel
# time of 1 / 2 / 4 / 8 warps): forward 227 / 265 / 367 / 978 us at raw and 27 / 41 / 165 / 76 us at TUSZ, backward
# 578 / 527 / 970 / 2,091 us at raw and 72 / 64 / 82 / 170 us at TUSZ
_WARPS_FWD, _WARPS_BWD = 1, 2


@triton.jit
def _gram(a_ptr, b_ptr, s_v, s_e, E, oi, mi, BE: tl.constexpr, VP: tl.constexpr, PREC: tl.constexpr):
    """The (VP, VP) tile of sum over features of a[i, e] * b[j, e] (a and b with the same strides)."""
    acc = tl.zeros((VP, VP), dtype=tl.float32)
    for e0 in range(0, E, BE):
        oe = e0 + tl.arange(0, BE)
        me = oe < E
        a = tl.load(a_ptr + oi[:, None] * s_v + oe[None, :] * s_e, mask=mi[:, None] & me[None, :], other=0.0)
        bt = tl.load(b_ptr + oi[None, :] * s_v + oe[:, None] * s_e, mask=me[:, None] & mi[None, :], other=0.0)
        acc += _dot(a.to(tl.float32), bt.to(tl.float32), PREC)
    return acc


@triton.jit
def _attention_tile(q_ptr, k_ptr, s_v, s_e, E, oi, mi, attn_scale, threshold, BE: tl.constexpr, VP: tl.constexpr,
                    PREC: tl.constexpr):  # fmt: skip
    """(S, Ssym, pruned): the row softmax of q k^T * attn_scale (padded rows and columns 0), its symmetrisation and
    the symmetrisation with entries below the threshold set to 0."""
    logits = _gram(q_ptr, k_ptr, s_v, s_e, E, oi, mi, BE, VP, PREC)
    x = tl.where(mi[None, :], logits * attn_scale, float("-inf"))
    p = tl.exp(x - tl.max(x, 1)[:, None])
    S = tl.where(mi[:, None], p / tl.sum(p, 1)[:, None], 0.0)
    sym = 0.5 * (S + tl.trans(S))
    return S, sym, tl.where(sym >= threshold, sym, 0.0)


@triton.jit
def _base_tile(q_ptr, k_ptr, a_ptr, a_off, s_qv, s_qe, s_ai, s_aj, E, oi, mi, attn_scale, threshold,
               HAS_Q: tl.constexpr, HAS_A: tl.constexpr, BE: tl.constexpr, VP: tl.constexpr, PREC: tl.constexpr):  # fmt: skip
    """(S, sym, base) of one step: the attention's softmax and its symmetrisation (zeros without q, k) and
    ``base`` = the pruned symmetric attention plus adj0 (either one alone where the other is absent)."""
    if HAS_A:
        m2 = mi[:, None] & mi[None, :]
        base = tl.load(a_ptr + a_off + oi[:, None] * s_ai + oi[None, :] * s_aj, mask=m2, other=0.0).to(tl.float32)
    else:
        base = tl.zeros((VP, VP), dtype=tl.float32)
    S = tl.zeros((VP, VP), dtype=tl.float32)
    sym = tl.zeros((VP, VP), dtype=tl.float32)
    if HAS_Q:
        S, sym, pruned = _attention_tile(q_ptr, k_ptr, s_qv, s_qe, E, oi, mi, attn_scale, threshold, BE, VP, PREC)
        base += pruned
    return S, sym, base


@triton.jit
def _similarity(g_ptr, s_gv, s_ge, F, oi, mi, dyn_scale, BF: tl.constexpr, VP: tl.constexpr, PREC: tl.constexpr):
    """sigmoid(g g^T * dyn_scale) of one step, (VP, VP)."""
    return 1.0 / (1.0 + tl.exp(-_gram(g_ptr, g_ptr, s_gv, s_ge, F, oi, mi, BF, VP, PREC) * dyn_scale))


@triton.jit
def _edge_weights_fwd_kernel(
    q_ptr, k_ptr, g_ptr, a_ptr, w_ptr, out_ptr, T, V, E, F,
    s_qb, s_qt, s_qv, s_qe, s_gb, s_gt, s_gv, s_ge, s_ab, s_at, s_ai, s_aj,
    attn_scale, threshold, dyn_scale,
    HAS_Q: tl.constexpr, HAS_G: tl.constexpr, HAS_A: tl.constexpr, VP: tl.constexpr, BE: tl.constexpr,
    BF: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """out (batch, T, V, V) for one (batch row, step) per program (see edge_weights_fn)."""
    pid = tl.program_id(0).to(tl.int64)
    b, t = pid // T, pid % T
    oi = tl.arange(0, VP)
    mi = oi < V
    m2 = mi[:, None] & mi[None, :]
    off = b * s_qb + t * s_qt
    _, _, base = _base_tile(q_ptr + off, k_ptr + off, a_ptr, b * s_ab + t * s_at, s_qv, s_qe, s_ai, s_aj, E, oi, mi,
                            attn_scale, threshold, HAS_Q, HAS_A, BE, VP, PREC)  # fmt: skip
    out = base
    if HAS_G:
        dyn = _similarity(g_ptr + b * s_gb + t * s_gt, s_gv, s_ge, F, oi, mi, dyn_scale, BF, VP, PREC)
        w = tl.load(w_ptr).to(tl.float32)
        out = w * base + (1.0 - w) * tl.where(base > 0, dyn, 0.0)
    out = tl.where(oi[:, None] == oi[None, :], 0.0, out)
    tl.store(out_ptr + (pid * V + oi[:, None]) * V + oi[None, :], out.to(out_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _store_grad(src_ptr, dst_ptr, s_v, s_e, E, oi, mi, coef, BE: tl.constexpr, PREC: tl.constexpr):
    """dst[i, e] (contiguous rows of E) = sum_j coef[i, j] src[j, e], a block of features at a time."""
    for e0 in range(0, E, BE):
        oe = e0 + tl.arange(0, BE)
        me = oe < E
        m = mi[:, None] & me[None, :]
        src = tl.load(src_ptr + oi[:, None] * s_v + oe[None, :] * s_e, mask=m, other=0.0).to(tl.float32)
        tl.store(dst_ptr + oi[:, None] * E + oe[None, :], _dot(coef, src, PREC), mask=m)


@triton.jit
def _edge_weights_bwd_kernel(
    q_ptr, k_ptr, g_ptr, a_ptr, w_ptr, dout_ptr, dq_ptr, dk_ptr, dg_ptr, dw_ptr, T, V, E, F,
    s_qb, s_qt, s_qv, s_qe, s_gb, s_gt, s_gv, s_ge, s_ab, s_at, s_ai, s_aj,
    attn_scale, threshold, dyn_scale,
    HAS_Q: tl.constexpr, HAS_G: tl.constexpr, HAS_A: tl.constexpr, VP: tl.constexpr, BE: tl.constexpr,
    BF: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """dq, dk (batch, T, V, E), dg (batch, T, V, F) fp32 and the skip weight's gradient per program (batch * T,),
    from the recomputed forward tiles of one (batch row, step)."""
    pid = tl.program_id(0).to(tl.int64)
    b, t = pid // T, pid % T
    oi = tl.arange(0, VP)
    mi = oi < V
    m2 = mi[:, None] & mi[None, :]
    d_out = tl.load(dout_ptr + (pid * V + oi[:, None]) * V + oi[None, :], mask=m2, other=0.0).to(tl.float32)
    d_out = tl.where(oi[:, None] == oi[None, :], 0.0, d_out)
    off = b * s_qb + t * s_qt
    S, sym, base = _base_tile(q_ptr + off, k_ptr + off, a_ptr, b * s_ab + t * s_at, s_qv, s_qe, s_ai, s_aj, E, oi,
                              mi, attn_scale, threshold, HAS_Q, HAS_A, BE, VP, PREC)  # fmt: skip
    d_base = d_out
    if HAS_G:
        g_off = b * s_gb + t * s_gt
        dyn = _similarity(g_ptr + g_off, s_gv, s_ge, F, oi, mi, dyn_scale, BF, VP, PREC)
        w = tl.load(w_ptr).to(tl.float32)
        dyn_e = tl.where(base > 0, dyn, 0.0)  # dyn on the existing edges; the mask itself has no gradient
        tl.store(dw_ptr + pid, tl.sum(tl.sum(d_out * (base - dyn_e), 1), 0))
        d_base = w * d_out
        d_gg = ((1.0 - w) * dyn_scale) * d_out * dyn_e * (1.0 - dyn)
        _store_grad(g_ptr + g_off, dg_ptr + pid * V * F, s_gv, s_ge, F, oi, mi, d_gg + tl.trans(d_gg), BF, PREC)
    if HAS_Q:
        d_sym = tl.where(sym >= threshold, d_base, 0.0)
        d_s = 0.5 * (d_sym + tl.trans(d_sym))
        d_x = S * (d_s - tl.sum(d_s * S, 1)[:, None]) * attn_scale  # softmax backward, times the logits' scale
        _store_grad(k_ptr + off, dq_ptr + pid * V * E, s_qv, s_qe, E, oi, mi, d_x, BE, PREC)
        _store_grad(q_ptr + off, dk_ptr + pid * V * E, s_qv, s_qe, E, oi, mi, tl.trans(d_x), BE, PREC)


def _precision(dtype: torch.dtype) -> str:
    """fp32 embeddings: :func:`ssm_kernels.backend.dot_precision` (3xtf32 under PyTorch's default ``highest`` fp32
    matmul precision, tf32 under ``high``); bf16 / fp16 ones tf32 (exact for them). ``SSM_KERNELS_EDGE_WEIGHTS_PRECISION``
    forces one."""
    return dot_precision(dtype, "SSM_KERNELS_EDGE_WEIGHTS_PRECISION", tf32_dtypes=(torch.bfloat16, torch.float16))


def _feature_block(n: int) -> int:
    return min(32, max(16, next_pow2(n)))


class _Launch:
    """The kernels' shared arguments for one call (strides of q / k, g and adj0; sizes; constexprs)."""

    def __init__(self, q, k, g, adj0, skip, attn_scale, threshold, dyn_scale):
        emb = q if q is not None else g
        self.batch, self.T, self.V = emb.shape[:3]
        if q is not None and k.stride() != q.stride():  # one set of strides serves both
            q, k = q.contiguous(), k.contiguous()
        self.q, self.k, self.g, self.adj0, self.skip = q, k, g, adj0, skip
        dummy = emb
        self.E = q.shape[-1] if q is not None else 1
        self.F = g.shape[-1] if g is not None else 1
        s_q = q.stride() if q is not None else (0, 0, 0, 0)
        s_g = g.stride() if g is not None else (0, 0, 0, 0)
        s_a = (0, 0, 0, 0)
        if adj0 is not None:  # broadcast leading dims read with stride 0
            s_a = tuple(0 if adj0.shape[i] == 1 and i < 2 else adj0.stride(i) for i in range(4))
        self.ptrs = (q if q is not None else dummy, k if k is not None else dummy, g if g is not None else dummy,
                     adj0 if adj0 is not None else dummy, skip if skip is not None else dummy)  # fmt: skip
        self.sizes = (self.T, self.V, self.E, self.F)
        self.strides = (*s_q, *s_g, *s_a, float(attn_scale), float(threshold), float(dyn_scale))
        dts = [t.dtype for t in (q, g) if t is not None]
        prec = _precision(torch.float32 if torch.float32 in dts else dts[0])
        self.meta = dict(
            HAS_Q=q is not None, HAS_G=g is not None, HAS_A=adj0 is not None, VP=max(16, next_pow2(self.V)),
            BE=_feature_block(self.E), BF=_feature_block(self.F), PREC=prec,
        )  # fmt: skip

    def forward(self, dtype: torch.dtype) -> torch.Tensor:
        dev = self.ptrs[0].device
        out = torch.empty(self.batch, self.T, self.V, self.V, device=dev, dtype=dtype)
        grid = (self.batch * self.T,)
        fast(_edge_weights_fwd_kernel)[grid](
            *self.ptrs, out, *self.sizes, *self.strides, **self.meta, num_warps=_WARPS_FWD
        )
        return out

    def backward(self, dout: torch.Tensor):
        dev = dout.device
        n = self.batch * self.T
        f32 = dict(device=dev, dtype=torch.float32)
        has_q, has_g = self.q is not None, self.g is not None
        dq = torch.empty(self.batch, self.T, self.V, self.E, **f32) if has_q else None
        dk = torch.empty_like(dq) if has_q else None
        dg = torch.empty(self.batch, self.T, self.V, self.F, **f32) if has_g else None
        dw = torch.empty(n, **f32) if has_g else None
        d = dout.new_empty(1)  # stands in for outputs the call has none of
        fast(_edge_weights_bwd_kernel)[(n,)](
            *self.ptrs, dout.contiguous(), dq if has_q else d, dk if has_q else d, dg if has_g else d,
            dw if has_g else d, *self.sizes, *self.strides, **self.meta, num_warps=_WARPS_BWD,
        )  # fmt: skip
        return dq, dk, dg, dw


def _adj0_grad(dout: torch.Tensor, adj0: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    """d out / d adj0 = skip (1 without g) times dout off the diagonal, summed over adj0's broadcast dims."""
    V = adj0.shape[-1]
    d = dout.float().masked_fill(torch.eye(V, dtype=torch.bool, device=dout.device), 0.0)
    if skip is not None:
        d = d * skip.float()
    dims = [i for i in range(2) if adj0.shape[i] == 1 and d.shape[i] != 1]
    return (d.sum(dims, keepdim=True) if dims else d).to(adj0.dtype)


class _EdgeWeights(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, g, adj0, skip, attn_scale, threshold, dyn_scale, dtype):
        ctx.consts = (attn_scale, threshold, dyn_scale)
        ctx.save_for_backward(q, k, g, adj0, skip)
        ctx.set_materialize_grads(False)
        return _Launch(q, k, g, adj0, skip, *ctx.consts).forward(dtype)

    @staticmethod
    def backward(ctx, dout):
        if dout is None:
            return (None,) * 9
        q, k, g, adj0, skip = ctx.saved_tensors
        dq, dk, dg, dw = _Launch(q, k, g, adj0, skip, *ctx.consts).backward(dout)
        need = ctx.needs_input_grad
        dq = dq.to(q.dtype) if need[0] else None
        dk = dk.to(k.dtype) if need[1] else None
        dg = dg.to(g.dtype) if need[2] else None
        da = _adj0_grad(dout, adj0, skip if g is not None else None) if need[3] else None
        dskip = dw.sum().to(skip.dtype) if need[4] else None
        return dq, dk, dg, da, dskip, None, None, None, None


def edge_weights_triton(q, k, g, adj0, skip, attn_scale: float, threshold: float, dyn_scale: float,
                        dtype: torch.dtype) -> torch.Tensor:  # fmt: skip
    """The Triton path of :func:`ssm_kernels.edge_weights_fn` (inputs checked, V <= MAX_VERTICES)."""
    if not needs_autograd(q, k, g, adj0, skip):
        return _Launch(q, k, g, adj0, skip, attn_scale, threshold, dyn_scale).forward(dtype)
    return _EdgeWeights.apply(q, k, g, adj0, skip, attn_scale, threshold, dyn_scale, dtype)
