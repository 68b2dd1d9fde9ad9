"""Triton kernels for the fused norms (forward and backward).

Layout: every input is viewed as ``(M, N)`` rows (last dim contiguous). Forward kernels handle
one row (or one group of a row) per program with ``BLOCK = next_power_of_2(N)`` and masks.
Backward kernels give each program a contiguous run of rows, accumulate ``dweight``/``dbias``
partials in float32 registers and write one partial row per program; the partials are summed
with torch (deterministic). Statistics and all arithmetic are float32.

With a residual, ``h = x + residual`` is rounded to the residual stream's dtype before it is
normalised (as it is stored for the backward and returned by ``prenorm``), so the output is
exactly ``norm(residual_out)`` and the backward is consistent with the forward.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .._launch import fast
from ..backend import needs_autograd, next_pow2

__all__ = ["layer_norm_triton", "rms_norm_gated_triton"]

MAX_FUSED_SIZE = 65536


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def _norm_fwd_kernel(
    X,  # (M, N)
    RES,  # (M, N) or dummy
    W,  # (N,)
    B,  # (N,) or dummy
    Y,  # (M, N)
    RES_OUT,  # (M, N) or dummy
    MEAN,  # (M,) fp32 or dummy
    RSTD,  # (M,) fp32
    stride_x,
    stride_res,
    stride_y,
    stride_ro,
    N,
    eps,
    IS_RMS: tl.constexpr,
    HAS_RES: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    STORE_RES_OUT: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    i_m = tl.program_id(0).to(tl.int64)
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    b_x = tl.load(X + i_m * stride_x + o_n, mask=m_n, other=0.0).to(tl.float32)
    if HAS_RES:
        b_x += tl.load(RES + i_m * stride_res + o_n, mask=m_n, other=0.0).to(tl.float32)
    if STORE_RES_OUT:
        # normalise exactly the stored residual stream (rounded to its dtype): the backward
        # recomputes from it, so forward and backward see the same input
        b_x = b_x.to(RES_OUT.dtype.element_ty)
        tl.store(RES_OUT + i_m * stride_ro + o_n, b_x, mask=m_n)
        b_x = b_x.to(tl.float32)
    if IS_RMS:
        b_xc = b_x
    else:
        b_mean = tl.sum(b_x, axis=0) / N
        tl.store(MEAN + i_m, b_mean)
        b_xc = tl.where(m_n, b_x - b_mean, 0.0)
    b_var = tl.sum(b_xc * b_xc, axis=0) / N
    b_rstd = 1.0 / tl.sqrt(b_var + eps)
    tl.store(RSTD + i_m, b_rstd)
    b_w = tl.load(W + o_n, mask=m_n, other=0.0).to(tl.float32)
    b_y = b_xc * b_rstd * b_w
    if HAS_BIAS:
        b_y += tl.load(B + o_n, mask=m_n, other=0.0).to(tl.float32)
    tl.store(Y + i_m * stride_y + o_n, b_y.to(Y.dtype.element_ty), mask=m_n)


@triton.jit
def _norm_bwd_kernel(
    H,  # (M, N) the normalised input x + residual (as stored)
    W,  # (N,)
    DY,  # (M, N)
    DRES_OUT,  # (M, N) gradient of residual_out, or dummy
    DX,  # (M, N)
    DRES,  # (M, N) gradient of residual, or dummy
    DW_PART,  # (P, N) fp32
    DB_PART,  # (P, N) fp32 or dummy
    MEAN,
    RSTD,
    stride_h,
    stride_dy,
    stride_dro,
    stride_dx,
    stride_dres,
    M,
    N,
    rows_per_program,
    IS_RMS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_DRES_OUT: tl.constexpr,
    STORE_DRES: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    i_p = tl.program_id(0)
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    b_w = tl.load(W + o_n, mask=m_n, other=0.0).to(tl.float32)
    b_dw = tl.zeros([BLOCK_N], dtype=tl.float32)
    b_db = tl.zeros([BLOCK_N], dtype=tl.float32)
    row_start = i_p.to(tl.int64) * rows_per_program
    n_rows = tl.minimum(row_start + rows_per_program, M) - row_start
    for i_r in range(0, n_rows):
        i_m64 = row_start + i_r
        b_h = tl.load(H + i_m64 * stride_h + o_n, mask=m_n, other=0.0).to(tl.float32)
        b_rstd = tl.load(RSTD + i_m64)
        if IS_RMS:
            b_xhat = b_h * b_rstd
        else:
            b_mean = tl.load(MEAN + i_m64)
            b_xhat = tl.where(m_n, (b_h - b_mean) * b_rstd, 0.0)
        b_dy = tl.load(DY + i_m64 * stride_dy + o_n, mask=m_n, other=0.0).to(tl.float32)
        b_dw += b_dy * b_xhat
        if HAS_BIAS:
            b_db += b_dy
        b_wdy = b_w * b_dy
        c1 = tl.sum(b_xhat * b_wdy, axis=0) / N
        if IS_RMS:
            b_dx = (b_wdy - b_xhat * c1) * b_rstd
        else:
            c2 = tl.sum(b_wdy, axis=0) / N
            b_dx = (b_wdy - (b_xhat * c1 + c2)) * b_rstd
        if HAS_DRES_OUT:
            b_dx += tl.load(DRES_OUT + i_m64 * stride_dro + o_n, mask=m_n, other=0.0).to(tl.float32)
        tl.store(DX + i_m64 * stride_dx + o_n, b_dx.to(DX.dtype.element_ty), mask=m_n)
        if STORE_DRES:
            tl.store(DRES + i_m64 * stride_dres + o_n, b_dx.to(DRES.dtype.element_ty), mask=m_n)
    tl.store(DW_PART + i_p * N + o_n, b_dw, mask=m_n)
    if HAS_BIAS:
        tl.store(DB_PART + i_p * N + o_n, b_db, mask=m_n)


@triton.jit
def _gated_fwd_kernel(
    X,  # (M, N)
    Z,  # (M, N) or dummy
    W,
    B,
    Y,
    RSTD,  # (M, NG) fp32
    stride_x,
    stride_z,
    stride_y,
    N,
    G,  # group size
    NG,  # number of groups
    eps,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    NORM_BEFORE_GATE: tl.constexpr,
    BLOCK_G: tl.constexpr,
):
    i_m = tl.program_id(0).to(tl.int64)
    i_g = tl.program_id(1)
    o_g = tl.arange(0, BLOCK_G)
    m_g = o_g < G
    o_n = i_g * G + o_g
    b_x = tl.load(X + i_m * stride_x + o_n, mask=m_g, other=0.0).to(tl.float32)
    if HAS_Z:
        b_z = tl.load(Z + i_m * stride_z + o_n, mask=m_g, other=0.0).to(tl.float32)
        b_silu = b_z * tl.sigmoid(b_z)
        if not NORM_BEFORE_GATE:
            b_x = b_x * b_silu
    b_var = tl.sum(b_x * b_x, axis=0) / G
    b_rstd = 1.0 / tl.sqrt(b_var + eps)
    tl.store(RSTD + i_m * NG + i_g, b_rstd)
    b_w = tl.load(W + o_n, mask=m_g, other=0.0).to(tl.float32)
    b_y = b_x * b_rstd * b_w
    if HAS_BIAS:
        b_y += tl.load(B + o_n, mask=m_g, other=0.0).to(tl.float32)
    if HAS_Z:
        if NORM_BEFORE_GATE:
            b_y = b_y * b_silu
    tl.store(Y + i_m * stride_y + o_n, b_y.to(Y.dtype.element_ty), mask=m_g)


@triton.jit
def _gated_bwd_kernel(
    X,
    Z,
    W,
    B,
    DY,
    DX,
    DZ,
    DW_PART,  # (P, N) fp32
    DB_PART,
    RSTD,  # (M, NG)
    stride_x,
    stride_z,
    stride_dy,
    stride_dx,
    stride_dz,
    M,
    N,
    G,
    NG,
    rows_per_program,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    NORM_BEFORE_GATE: tl.constexpr,
    BLOCK_G: tl.constexpr,
):
    i_p = tl.program_id(0)
    i_g = tl.program_id(1)
    o_g = tl.arange(0, BLOCK_G)
    m_g = o_g < G
    o_n = i_g * G + o_g
    b_w = tl.load(W + o_n, mask=m_g, other=0.0).to(tl.float32)
    if HAS_BIAS:
        b_b = tl.load(B + o_n, mask=m_g, other=0.0).to(tl.float32)
    b_dw = tl.zeros([BLOCK_G], dtype=tl.float32)
    b_db = tl.zeros([BLOCK_G], dtype=tl.float32)
    row_start = i_p.to(tl.int64) * rows_per_program
    n_rows = tl.minimum(row_start + rows_per_program, M) - row_start
    for i_r in range(0, n_rows):
        i_m64 = row_start + i_r
        b_x = tl.load(X + i_m64 * stride_x + o_n, mask=m_g, other=0.0).to(tl.float32)
        b_dy = tl.load(DY + i_m64 * stride_dy + o_n, mask=m_g, other=0.0).to(tl.float32)
        b_rstd = tl.load(RSTD + i_m64 * NG + i_g)
        if HAS_Z:
            b_z = tl.load(Z + i_m64 * stride_z + o_n, mask=m_g, other=0.0).to(tl.float32)
            b_sig = tl.sigmoid(b_z)
            b_silu = b_z * b_sig
            b_dsilu = b_sig * (1.0 + b_z * (1.0 - b_sig))
            if NORM_BEFORE_GATE:
                b_xhat = b_x * b_rstd
                b_y0 = b_xhat * b_w
                if HAS_BIAS:
                    b_y0 += b_b
                b_dz = b_dy * b_y0 * b_dsilu
                b_dy = b_dy * b_silu
            else:
                b_xg = b_x * b_silu
                b_xhat = b_xg * b_rstd
        else:
            b_xhat = b_x * b_rstd
        b_dw += b_dy * b_xhat
        if HAS_BIAS:
            b_db += b_dy
        b_wdy = b_w * b_dy
        c1 = tl.sum(b_xhat * b_wdy, axis=0) / G
        b_dxn = (b_wdy - b_xhat * c1) * b_rstd  # gradient w.r.t. the normalised input
        if HAS_Z:
            if NORM_BEFORE_GATE:
                b_dx = b_dxn
            else:
                b_dx = b_dxn * b_silu
                b_dz = b_dxn * b_x * b_dsilu
            tl.store(DZ + i_m64 * stride_dz + o_n, b_dz.to(DZ.dtype.element_ty), mask=m_g)
        else:
            b_dx = b_dxn
        tl.store(DX + i_m64 * stride_dx + o_n, b_dx.to(DX.dtype.element_ty), mask=m_g)
    tl.store(DW_PART + i_p * N + o_n, b_dw, mask=m_g)
    if HAS_BIAS:
        tl.store(DB_PART + i_p * N + o_n, b_db, mask=m_g)


# ----------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------
def _rows(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
    if t is None:
        return None
    t2 = t.reshape(-1, n)
    if t2.stride(-1) != 1:
        t2 = t2.contiguous()
    return t2


def _block(n: int, element_size: int) -> int:
    block = next_pow2(n)
    if block * element_size > MAX_FUSED_SIZE * 4:
        raise ValueError(f"feature dim {n} is too large for the fused Triton norm (max {MAX_FUSED_SIZE} features)")
    return block


def _num_warps(block: int, backward: bool = False) -> int:
    # ~8 elements per thread; the backward keeps more live values, so it may use up to 16 warps
    # (sm_90 register use at N = 4096: forward 8 warps 64 regs, backward 16 warps 63-90 regs)
    return min(max(block // 256, 1), 16 if backward else 8)


def _num_row_programs(m: int, device: torch.device) -> int:
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(m, sms * 4))
    return max(1, min(m, 4))


def _norm_fwd(x, weight, bias, residual, eps, residual_dtype, is_rms):
    m, n = x.shape
    y = torch.empty_like(x)
    store_res = residual is not None or residual_dtype != x.dtype
    res_out = torch.empty((m, n), device=x.device, dtype=residual_dtype) if store_res else None
    rstd = torch.empty(m, device=x.device, dtype=torch.float32)
    mean = None if is_rms else torch.empty(m, device=x.device, dtype=torch.float32)
    block = _block(n, x.element_size())
    if m > 0:
        fast(_norm_fwd_kernel)[(m,)](
            x,
            residual if residual is not None else x,
            weight,
            bias if bias is not None else weight,
            y,
            res_out if res_out is not None else y,
            mean if mean is not None else rstd,
            rstd,
            x.stride(0),
            residual.stride(0) if residual is not None else 0,
            y.stride(0),
            res_out.stride(0) if res_out is not None else 0,
            n,
            eps,
            IS_RMS=is_rms,
            HAS_RES=residual is not None,
            HAS_BIAS=bias is not None,
            STORE_RES_OUT=store_res,
            BLOCK_N=block,
            num_warps=_num_warps(block),
        )
    return y, res_out, mean, rstd


def _norm_bwd(h, weight, bias, mean, rstd, dy, dres_out, x_dtype, res_dtype, is_rms):
    m, n = h.shape
    dx = torch.empty((m, n), device=h.device, dtype=x_dtype)
    dres = torch.empty((m, n), device=h.device, dtype=res_dtype) if res_dtype is not None else None
    p = _num_row_programs(m, h.device)
    rows_per_program = math.ceil(m / p) if m else 0
    dw_part = torch.zeros((p, n), device=h.device, dtype=torch.float32)
    db_part = torch.zeros((p, n), device=h.device, dtype=torch.float32) if bias is not None else None
    block = _block(n, h.element_size())
    if m > 0:
        fast(_norm_bwd_kernel)[(p,)](
            h,
            weight,
            dy,
            dres_out if dres_out is not None else dy,
            dx,
            dres if dres is not None else dx,
            dw_part,
            db_part if db_part is not None else dw_part,
            mean if mean is not None else rstd,
            rstd,
            h.stride(0),
            dy.stride(0),
            dres_out.stride(0) if dres_out is not None else 0,
            dx.stride(0),
            dres.stride(0) if dres is not None else 0,
            m,
            n,
            rows_per_program,
            IS_RMS=is_rms,
            HAS_BIAS=bias is not None,
            HAS_DRES_OUT=dres_out is not None,
            STORE_DRES=dres is not None,
            BLOCK_N=block,
            num_warps=_num_warps(block, backward=True),
        )
    dw = dw_part.sum(0).to(weight.dtype)
    db = db_part.sum(0).to(bias.dtype) if bias is not None else None
    return dx, dres, dw, db


def _gated_fwd(x, z, weight, bias, eps, group_size, norm_before_gate):
    m, n = x.shape
    ng = n // group_size
    y = torch.empty_like(x)
    rstd = torch.empty((m, ng), device=x.device, dtype=torch.float32)
    block = _block(group_size, x.element_size())
    if m > 0:
        fast(_gated_fwd_kernel)[(m, ng)](
            x,
            z if z is not None else x,
            weight,
            bias if bias is not None else weight,
            y,
            rstd,
            x.stride(0),
            z.stride(0) if z is not None else 0,
            y.stride(0),
            n,
            group_size,
            ng,
            eps,
            HAS_Z=z is not None,
            HAS_BIAS=bias is not None,
            NORM_BEFORE_GATE=norm_before_gate,
            BLOCK_G=block,
            num_warps=_num_warps(block),
        )
    return y, rstd


def _gated_bwd(x, z, weight, bias, rstd, dy, group_size, norm_before_gate):
    m, n = x.shape
    ng = n // group_size
    dx = torch.empty_like(x)
    dz = torch.empty_like(z) if z is not None else None
    p = _num_row_programs(m, x.device)
    rows_per_program = math.ceil(m / p) if m else 0
    dw_part = torch.zeros((p, n), device=x.device, dtype=torch.float32)
    db_part = torch.zeros((p, n), device=x.device, dtype=torch.float32) if bias is not None else None
    block = _block(group_size, x.element_size())
    if m > 0:
        fast(_gated_bwd_kernel)[(p, ng)](
            x,
            z if z is not None else x,
            weight,
            bias if bias is not None else weight,
            dy,
            dx,
            dz if dz is not None else dx,
            dw_part,
            db_part if db_part is not None else dw_part,
            rstd,
            x.stride(0),
            z.stride(0) if z is not None else 0,
            dy.stride(0),
            dx.stride(0),
            dz.stride(0) if dz is not None else 0,
            m,
            n,
            group_size,
            ng,
            rows_per_program,
            HAS_Z=z is not None,
            HAS_BIAS=bias is not None,
            NORM_BEFORE_GATE=norm_before_gate,
            BLOCK_G=block,
            num_warps=_num_warps(block, backward=True),
        )
    dw = dw_part.sum(0).to(weight.dtype)
    db = db_part.sum(0).to(bias.dtype) if bias is not None else None
    return dx, dz, dw, db


# ----------------------------------------------------------------------------------------------
# autograd
# ----------------------------------------------------------------------------------------------
def _layer_norm_forward(x, weight, bias, residual, eps, residual_in_fp32, is_rms):
    """(y shaped like x, then what the backward keeps: h = x + residual as rows, weight, bias, mean, rstd)."""
    n = x.shape[-1]
    x2 = _rows(x, n)
    res2 = _rows(residual, n)
    if residual is not None:
        residual_dtype = residual.dtype
    else:
        residual_dtype = torch.float32 if residual_in_fp32 else x.dtype
    w = weight.contiguous()
    b = bias.contiguous() if bias is not None else None
    y, res_out, mean, rstd = _norm_fwd(x2, w, b, res2, eps, residual_dtype, is_rms)
    h = res_out if res_out is not None else x2
    return y.reshape(x.shape), (h, w, b, mean, rstd)


class _LayerNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, eps, prenorm, residual_in_fp32, is_rms):
        y, saved = _layer_norm_forward(x, weight, bias, residual, eps, residual_in_fp32, is_rms)
        ctx.save_for_backward(*saved)
        ctx.meta = (x.shape, x.dtype, residual.dtype if residual is not None else None, is_rms, prenorm)
        return (y, saved[0].reshape(x.shape)) if prenorm else y

    @staticmethod
    def backward(ctx, dy, *rest):
        h, w, b, mean, rstd = ctx.saved_tensors
        shape, x_dtype, res_dtype, is_rms, prenorm = ctx.meta
        n = shape[-1]
        dy2 = _rows(dy, n)
        dres_out = _rows(rest[0], n) if prenorm and rest and rest[0] is not None else None
        need_dres = res_dtype is not None and ctx.needs_input_grad[3]
        dx, dres, dw, db = _norm_bwd(
            h, w, b, mean, rstd, dy2, dres_out, x_dtype, res_dtype if need_dres else None, is_rms
        )
        return (
            dx.reshape(shape),  # x
            dw,  # weight
            db,  # bias
            dres.reshape(shape) if dres is not None else None,  # residual
            None,  # eps
            None,  # prenorm
            None,  # residual_in_fp32
            None,  # is_rms
        )


def _gated_forward(x, weight, bias, z, eps, group_size, norm_before_gate):
    """(y shaped like x, then what the backward keeps: x and z as rows, weight, bias, rstd)."""
    n = x.shape[-1]
    g = n if group_size is None else group_size
    x2 = _rows(x, n)
    z2 = _rows(z, n)
    w = weight.contiguous()
    b = bias.contiguous() if bias is not None else None
    y, rstd = _gated_fwd(x2, z2, w, b, eps, g, norm_before_gate)
    return y.reshape(x.shape), (x2, z2, w, b, rstd)


class _GatedRMSNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, z, eps, group_size, norm_before_gate):
        y, saved = _gated_forward(x, weight, bias, z, eps, group_size, norm_before_gate)
        ctx.save_for_backward(*saved)
        ctx.meta = (x.shape, x.shape[-1] if group_size is None else group_size, norm_before_gate)
        return y

    @staticmethod
    def backward(ctx, dy):
        x2, z2, w, b, rstd = ctx.saved_tensors
        shape, g, norm_before_gate = ctx.meta
        dx, dz, dw, db = _gated_bwd(x2, z2, w, b, rstd, _rows(dy, shape[-1]), g, norm_before_gate)
        return (
            dx.reshape(shape),  # x
            dw,  # weight
            db,  # bias
            dz.reshape(shape) if dz is not None else None,  # z
            None,  # eps
            None,  # group_size
            None,  # norm_before_gate
        )


def layer_norm_triton(x, weight, bias, residual, eps, prenorm, residual_in_fp32, is_rms_norm):
    """Triton fused (residual +) LayerNorm/RMSNorm; see :func:`ssm_kernels.norms.interface.layer_norm_fn`."""
    if needs_autograd(x, weight, bias, residual):
        return _LayerNormFn.apply(x, weight, bias, residual, eps, prenorm, residual_in_fp32, is_rms_norm)
    y, saved = _layer_norm_forward(x, weight, bias, residual, eps, residual_in_fp32, is_rms_norm)  # inference
    return (y, saved[0].reshape(x.shape)) if prenorm else y


def rms_norm_gated_triton(x, weight, bias, z, eps, group_size, norm_before_gate):
    """Triton gated RMSNorm; see :func:`ssm_kernels.norms.interface.rms_norm_gated_fn`."""
    if needs_autograd(x, weight, bias, z):
        return _GatedRMSNormFn.apply(x, weight, bias, z, eps, group_size, norm_before_gate)
    return _gated_forward(x, weight, bias, z, eps, group_size, norm_before_gate)[0]  # inference: no autograd node
