"""Triton kernels of the per-step vertex mixing (T = L) on the channel-major layout.

``out[b, i, c, l] = sum_j mix[b, l, i, j] x[b, j, c, l] (+ residual[b, i, c, l])`` with x (batch, V, C, L). In
PyTorch this product wants the time-major layout (batch * L independent (V, V) @ (V, C) products): a permuted copy
of x in, one of the result out, and the same again in backward. The kernels here read and write the channel-major
tensors where they lie:

* ``_vertex_mix_kernel``: one program per (channel block, time block, batch row) loads a (TL, VP, BC) tile of x
  and the block's (TL, VP, VP) mixes and forms the output tile with one batched ``tl.dot`` (the tiles are loaded
  along contiguous time and transposed on chip). The backward's dx is the same kernel on the transposed mix
  (swapped strides).
* ``_vertex_mix_dmix_kernel``: ``dmix[b, l, i, j] = sum_c dout[b, i, c, l] x[b, j, c, l]``, one program per (time
  block, batch row), a batched dot per channel block.

Vertices and channel blocks are padded to tl.dot's minimum of 16 (masked loads give zeros). fp32 inputs use three
tf32 products (``ssm_kernels._tl_dot.dot``'s 3xtf32, about fp32 accuracy), half inputs tf32 (exact for them).
Tensors may be strided in batch, vertex and channel; time must be contiguous. A first design held the output in
registers and added one vertex column per source vertex with FMAs: 0.46 ms per call and 0.88 ms for dmix inside the
raw block on the H200 (run28b); this one took 0.29 ms per call there (run28c), dmix no longer among the block's 25
largest kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._launch import fast
from .._tl_dot import dot as _dot
from ..backend import cdiv, dot_precision, needs_autograd, next_pow2, triton_interpret

__all__ = ["vertex_mix_triton"]

# Tiles: elements of the larger operand tile per program; warps; the dmix kernel's channel block (at most). Swept at
# TGMamba's raw shape on the H200 (benchmarks/gpu_vertex_mix_tiles.py, run29a-b): 8 warps took the forward kernel from
# 377 to 323 us fp32 and 266 to 242 us bf16 (BC 32, TL 8 stay best); dmix with BC 16 and 8 warps from 414 to 305 us
# fp32 and 277 to 210 us bf16 (whole op fwd+bwd 1,658 -> 1,534 us fp32, run29d). Larger fp32 tiles need more than the
# 227 KB of shared memory (3xtf32's split operands).
_TILE = 8192
_WARPS = 8
_DMIX_BC = 16


@triton.jit
def _vertex_mix_kernel(x_ptr, m_ptr, r_ptr, out_ptr, V, C, L, s_xb, s_xv, s_xc, s_rb, s_rv, s_rc, s_mb, s_ml, s_mi,
                       s_mj, HAS_R: tl.constexpr, VP: tl.constexpr, BC: tl.constexpr, TL: tl.constexpr,
                       PREC: tl.constexpr):  # fmt: skip
    """out (batch, V, C, L) = mix @ x per step (+ residual): a (TL, VP, BC) tile per program, one batched dot."""
    i_c, i_l, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    o_l = i_l * TL + tl.arange(0, TL)
    o_v = tl.arange(0, VP)
    o_c = i_c * BC + tl.arange(0, BC)
    l3, v3, c3 = o_l[:, None, None], o_v[None, :, None], o_c[None, None, :]
    m_lv = (o_l < L)[:, None, None] & (o_v < V)[None, :, None]
    m_x = m_lv & (o_c < C)[None, None, :]
    # padded source vertices load as zeros in both operands: the dot sums the V real ones
    b_x = tl.load(x_ptr + i_b * s_xb + v3 * s_xv + c3 * s_xc + l3, mask=m_x, other=0.0).to(tl.float32)
    vj = o_v[None, None, :]
    m_m = m_lv & (o_v < V)[None, None, :]
    b_m = tl.load(m_ptr + i_b * s_mb + l3 * s_ml + v3 * s_mi + vj * s_mj, mask=m_m, other=0.0).to(tl.float32)
    acc = _dot(b_m, b_x, PREC)  # (TL, VP, BC)
    if HAS_R:
        acc += tl.load(r_ptr + i_b * s_rb + v3 * s_rv + c3 * s_rc + l3, mask=m_x, other=0.0).to(tl.float32)
    tl.store(out_ptr + ((i_b * V + v3) * C + c3) * L + l3, acc.to(out_ptr.dtype.element_ty), mask=m_x)


@triton.jit
def _vertex_mix_dmix_kernel(dy_ptr, x_ptr, dm_ptr, V, C, L, s_xb, s_xv, s_xc, VP: tl.constexpr, BC: tl.constexpr,
                            TL: tl.constexpr, PREC: tl.constexpr):  # fmt: skip
    """dmix (batch, L, V, V) float32 = sum over channels of dout (contiguous) times x (strided), per step."""
    i_l, i_b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    o_l = i_l * TL + tl.arange(0, TL)
    o_v = tl.arange(0, VP)
    l3 = o_l[:, None, None]
    m_l = (o_l < L)[:, None, None]
    m_v = o_v < V
    acc = tl.zeros((TL, VP, VP), dtype=tl.float32)
    for c0 in range(0, C, BC):
        o_c = c0 + tl.arange(0, BC)
        m_c = o_c < C
        o_dy = ((i_b * V + o_v[None, :, None]) * C + o_c[None, None, :]) * L + l3  # (TL, VP, BC)
        b_dy = tl.load(dy_ptr + o_dy, mask=m_l & m_v[None, :, None] & m_c[None, None, :], other=0.0)
        o_x = i_b * s_xb + o_c[None, :, None] * s_xc + o_v[None, None, :] * s_xv + l3  # (TL, BC, VP)
        b_x = tl.load(x_ptr + o_x, mask=m_l & m_c[None, :, None] & m_v[None, None, :], other=0.0)
        acc += _dot(b_dy.to(tl.float32), b_x.to(tl.float32), PREC)
    o_dm = ((i_b * L + l3) * V + o_v[None, :, None]) * V + o_v[None, None, :]
    tl.store(dm_ptr + o_dm, acc, mask=m_l & m_v[None, :, None] & m_v[None, None, :])


def _precision(dtype: torch.dtype) -> str:
    """bf16 / fp16 inputs: tf32, exact for them (their values are tf32 values; products accumulate in fp32). fp32
    inputs follow :func:`ssm_kernels.backend.dot_precision` (3xtf32 under PyTorch's default ``highest`` fp32 matmul
    precision, tf32 under ``high`` or ``SSM_KERNELS_TF32=1``); ``SSM_KERNELS_VERTEX_MIX_PRECISION`` forces one."""
    return dot_precision(dtype, "SSM_KERNELS_VERTEX_MIX_PRECISION", tf32_dtypes=(torch.bfloat16, torch.float16))


def _sizes(V: int, C: int, L: int) -> tuple[int, int, int]:
    """(VP, BC, TL): vertices and a channel block padded to tl.dot's minimum of 16, time filling the tile."""
    VP = max(16, next_pow2(V))
    BC = 16 if triton_interpret() else min(32, max(16, next_pow2(C)))
    if triton_interpret():  # several time blocks at the interpreter's tiny shapes
        return VP, BC, 4
    TL = max(1, min(16, next_pow2(L), _TILE // (VP * max(VP, BC))))
    return VP, BC, TL


def _strides3(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _mix(x: torch.Tensor, mix: torch.Tensor, residual: torch.Tensor | None, transpose: bool) -> torch.Tensor:
    batch, V, C, L = x.shape
    out = torch.empty(batch, V, C, L, device=x.device, dtype=x.dtype)
    s_mb, s_ml, s_mi, s_mj = mix.stride()
    if transpose:
        s_mi, s_mj = s_mj, s_mi
    VP, BC, TL = _sizes(V, C, L)
    r = residual if residual is not None else x
    grid = (cdiv(C, BC), cdiv(L, TL), batch)
    fast(_vertex_mix_kernel)[grid](
        x, mix, r, out, V, C, L, *_strides3(x), *_strides3(r), s_mb, s_ml, s_mi, s_mj,
        HAS_R=residual is not None, VP=VP, BC=BC, TL=TL, PREC=_precision(x.dtype), num_warps=_WARPS,
    )  # fmt: skip
    return out


def _dmix(dout: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    batch, V, C, L = x.shape
    dm = torch.empty(batch, L, V, V, device=x.device, dtype=torch.float32)
    VP, BC, TL = _sizes(V, C, L)
    BC = min(BC, _DMIX_BC)
    fast(_vertex_mix_dmix_kernel)[(cdiv(L, TL), batch)](
        dout, x, dm, V, C, L, *_strides3(x), VP=VP, BC=BC, TL=TL, PREC=_precision(x.dtype), num_warps=_WARPS
    )
    return dm


def _time_contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


class _VertexMix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mix, residual):
        x, residual = _time_contiguous(x), _time_contiguous(residual)
        ctx.save_for_backward(x, mix)
        ctx.set_materialize_grads(False)
        return _mix(x, mix, residual, transpose=False)

    @staticmethod
    def backward(ctx, dout):
        if dout is None:
            return None, None, None
        x, mix = ctx.saved_tensors
        dout = dout.contiguous()
        dx = _mix(dout, mix, None, transpose=True) if ctx.needs_input_grad[0] else None
        dmix = _dmix(dout, x).to(mix.dtype) if ctx.needs_input_grad[1] else None
        return dx, dmix, dout if ctx.needs_input_grad[2] else None


def vertex_mix_triton(x: torch.Tensor, mix: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """The Triton path of :func:`ssm_kernels.vertex_mix_fn` for a per-step mix (T = L), inputs checked.

    A mix shared by the batch (leading size 1) is expanded (stride 0); autograd sums its gradient over the batch.
    """
    if mix.shape[0] != x.shape[0]:
        mix = mix.expand(x.shape[0], -1, -1, -1)
    if not needs_autograd(x, mix, residual):
        return _mix(_time_contiguous(x), mix, _time_contiguous(residual), transpose=False)
    return _VertexMix.apply(x, mix, residual)
