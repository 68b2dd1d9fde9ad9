"""Chunked pure-PyTorch SSD (Mamba-2) scan with every option of ``mamba_chunk_scan_combined``.

Maths, per batch ``b`` and head ``h`` (group ``g = h // (nheads // ngroups)``), with
``dt_t = clamp(softplus?(dt[t] + dt_bias))`` and state ``S_t`` of shape ``(p, n)``::

    S_t = exp(dt_t * A) * S_{t-1} + dt_t * x_t B_t^T        (S_{-1} = initial_states)
    y_t = S_t C_t + D * x_t
    out_t = y_t * silu(z_t)                                   (when z is given)

``seq_idx`` resets the state (to zero) wherever ``seq_idx[t] != seq_idx[t-1]``; the initial state
reaches only the steps before the first change. ``cu_seqlens`` (batch 1) marks packed sequences;
``return_varlen_states`` returns the state after each sequence's last step.

The computation runs chunk by chunk with matrix products (the SSD decomposition), so it is the CPU
path as well as the test oracle; a Python loop runs only over chunks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import check_same_device, check_tensor
from ..backend import cdiv

__all__ = ["process_dt", "seq_segments", "ssd_chunk_scan_ref", "validate_ssd_inputs"]

_INDEX_DTYPES = (torch.int32, torch.int64)


def validate_ssd_inputs(
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
    dt_limit=(0.0, float("inf")),
    return_varlen_states=False,
) -> None:
    """Check the input contract of ``mamba_chunk_scan_combined``; errors name the argument."""
    check_tensor("x", x, shape=(None, None, None, None))
    b, l, h, p = x.shape
    device = check_same_device(
        x=x,
        dt=dt,
        A=A,
        B=B,
        C=C,
        D=D,
        z=z,
        dt_bias=dt_bias,
        initial_states=initial_states,
        seq_idx=seq_idx,
        cu_seqlens=cu_seqlens,
    )
    check_tensor("dt", dt, shape=(b, l, h))
    check_tensor("A", A, shape=(h,))
    check_tensor("B", B, shape=(b, l, None, None))
    g, n = B.shape[2], B.shape[3]
    if g < 1 or h % g != 0:
        raise ValueError(f"B has {g} groups but the number of heads ({h}) must be a multiple of it")
    check_tensor("C", C, shape=(b, l, g, n))
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if D is not None:
        check_tensor("D", D, shape=(h,) if D.dim() == 1 else (h, p))
    check_tensor("z", z, shape=(b, l, h, p), optional=True)
    check_tensor("dt_bias", dt_bias, shape=(h,), optional=True)
    check_tensor("initial_states", initial_states, shape=(b, h, p, n), optional=True)
    check_tensor("seq_idx", seq_idx, shape=(b, l), dtypes=_INDEX_DTYPES, optional=True)
    check_tensor("cu_seqlens", cu_seqlens, shape=(None,), dtypes=_INDEX_DTYPES, optional=True)
    try:
        lo, hi = (float(v) for v in dt_limit)
    except (TypeError, ValueError):
        raise ValueError(f"dt_limit must be a pair (min, max), got {dt_limit!r}") from None
    if not lo <= hi:
        raise ValueError(f"dt_limit must satisfy min <= max, got {dt_limit!r}")
    if return_varlen_states and cu_seqlens is None:
        raise ValueError("return_varlen_states=True needs cu_seqlens")
    if cu_seqlens is not None:
        if b != 1:
            raise ValueError(f"cu_seqlens needs batch size 1 (sequences packed along l), got x with batch {b}")
        cu = cu_seqlens.detach().cpu()
        if cu.numel() < 2 or cu[0].item() != 0 or cu[-1].item() != l or not bool((cu[1:] > cu[:-1]).all()):
            raise ValueError(
                f"cu_seqlens must increase strictly from 0 to l={l} (one entry per sequence + 1), got {cu.tolist()}"
            )
    del device


def process_dt(dt: torch.Tensor, dt_bias, dt_softplus: bool, dt_limit) -> torch.Tensor:
    """``dt + dt_bias``, then softplus if asked, then clamp to ``dt_limit`` (skipped for ``(0, inf)``)."""
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    lo, hi = float(dt_limit[0]), float(dt_limit[1])
    if lo != 0.0 or hi != math.inf:
        dt = dt.clamp(min=lo, max=hi)
    return dt


def seq_segments(seq_idx, cu_seqlens, b: int, l: int, device) -> torch.Tensor | None:
    """Monotone segment ids ``(b, l)`` int32: the number of changes of ``seq_idx`` up to each step.

    Without ``seq_idx``, the segments come from ``cu_seqlens`` (each packed sequence its own);
    ``None`` when neither is given.
    """
    if seq_idx is not None:
        change = (seq_idx[:, 1:] != seq_idx[:, :-1]).to(torch.int32)
        return F.pad(torch.cumsum(change, dim=1, dtype=torch.int32), (1, 0))
    if cu_seqlens is not None:
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(device=device, dtype=torch.long)
        ids = torch.repeat_interleave(torch.arange(lengths.numel(), device=device, dtype=torch.int32), lengths)
        return ids.reshape(1, l).expand(b, l)
    return None


def ssd_chunk_scan_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
    return_varlen_states: bool = False,
    *,
    compute_dtype: torch.dtype | None = None,
):
    """Chunked PyTorch SSD scan (the reference of ``mamba_chunk_scan_combined``); differentiable.

    Args:
        x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, cu_seqlens,
        dt_softplus, dt_limit, return_final_states, return_varlen_states: as in
            :func:`ssm_kernels.mamba_chunk_scan_combined` (module docstring for the maths).
        compute_dtype: dtype of the internal arithmetic; default ``float32`` for half inputs and
            the inputs' own dtype otherwise (tests pass ``bfloat16`` to measure rounding error).

    Returns:
        ``out`` in ``x``'s dtype, then ``final_states`` if asked, then ``varlen_states`` if asked
        (states in ``float32``, or ``float64`` for double inputs).

    Shapes:
        x, z, out: ``(b, l, h, p)``; dt: ``(b, l, h)``; A, dt_bias: ``(h,)``; B, C: ``(b, l, g, n)``;
        D: ``(h,)`` or ``(h, p)``; initial_states, final_states: ``(b, h, p, n)``;
        seq_idx: ``(b, l)`` int; cu_seqlens: ``(nseq + 1,)`` int; varlen_states: ``(nseq, h, p, n)``.
    """
    validate_ssd_inputs(
        x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, cu_seqlens, dt_limit, return_varlen_states
    )
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    hg = h // g
    state_dtype = torch.promote_types(x.dtype, torch.float32)
    cdt = compute_dtype or state_dtype
    Q = chunk_size
    nc = max(1, cdiv(l, Q))
    T = nc * Q
    pad = T - l

    dtp = process_dt(dt.to(cdt), None if dt_bias is None else dt_bias.to(cdt), dt_softplus, dt_limit)  # (b, l, h)
    xc, Bc, Cc, Ac = x.to(cdt), B.to(cdt), C.to(cdt), A.to(cdt)
    seg = seq_segments(seq_idx, cu_seqlens, b, l, x.device)

    # pad the tail: zero dt (no decay, no input), zero x/B/C; segments repeat the last one
    dtp_p = _pad_time(dtp, pad)
    x_p = _pad_time(xc, pad).reshape(b, nc, Q, g, hg, p)
    B_p = _pad_time(Bc, pad).reshape(b, nc, Q, g, n)
    C_p = _pad_time(Cc, pad).reshape(b, nc, Q, g, n)
    dt_c = dtp_p.reshape(b, nc, Q, g, hg)  # (b, c, q, g, hh)
    a = (dtp_p * Ac).reshape(b, nc, Q, g, hg).permute(0, 3, 4, 1, 2)  # (b, g, hh, c, q)
    cs = torch.cumsum(a, dim=-1)  # within-chunk cumulative log decay
    cs_last = cs[..., -1]  # (b, g, hh, c)

    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    seg_p = None
    if seg is not None:
        seg_p = torch.cat([seg, seg[:, -1:].expand(b, pad)], dim=1).reshape(b, nc, Q)
        seg_end = seg_p[:, :, -1]  # (b, c)
        seg_prev = torch.cat([torch.zeros_like(seg_end[:, :1]), seg_end[:, :-1]], dim=1)  # segment entering chunk c
        same = seg_p.unsqueeze(-1) == seg_p.unsqueeze(-2)  # (b, c, i, j)
        mask_ij = (causal & same).reshape(b, 1, 1, nc, Q, Q)
        m_j = (seg_p == seg_end.unsqueeze(-1)).reshape(b, 1, 1, nc, Q).to(cdt)  # reaches the chunk's end
        k_i = (seg_p == seg_prev.unsqueeze(-1)).reshape(b, 1, 1, nc, Q).to(cdt)  # sees the carried state
        keep = (seg_end == seg_prev).reshape(b, 1, 1, nc).to(cdt)  # carried state survives the chunk
    else:
        mask_ij = causal
        m_j = k_i = keep = None

    # batched-matmul layouts (b, g, hh, c, q, .); B and C broadcast over the heads of their group
    dtx = x_p * dt_c.unsqueeze(-1)  # (b, c, q, g, hh, p)
    dtx_m = dtx.permute(0, 3, 4, 1, 2, 5)  # (b, g, hh, c, q, p)
    B_m = B_p.permute(0, 3, 1, 2, 4).unsqueeze(2)  # (b, g, 1, c, q, n)
    C_m = C_p.permute(0, 3, 1, 2, 4).unsqueeze(2)  # (b, g, 1, c, q, n)

    # 1. intra-chunk quadratic form: y_i += sum_{j<=i} (C_i . B_j) exp(cs_i - cs_j) dt_j x_j
    diff = cs.unsqueeze(-1) - cs.unsqueeze(-2)  # (b, g, hh, c, i, j)
    Lmat = torch.exp(diff.masked_fill(~mask_ij, float("-inf")))
    CB = C_m @ B_m.transpose(-1, -2)  # (b, g, 1, c, i, j)
    y = (CB * Lmat) @ dtx_m  # (b, g, hh, c, i, p)

    # 2. each chunk's own end state: sum_j exp(cs_last - cs_j) dt_j x_j B_j^T
    w_state = torch.exp(cs_last.unsqueeze(-1) - cs)  # (b, g, hh, c, q)
    if m_j is not None:
        w_state = w_state * m_j
    local = (dtx_m * w_state.unsqueeze(-1)).transpose(-1, -2) @ B_m  # (b, g, hh, c, p, n)

    # 3. pass states across chunks (sequential over the few chunks)
    S = (
        torch.zeros(b, g, hg, p, n, dtype=cdt, device=x.device)
        if initial_states is None
        else initial_states.to(cdt).reshape(b, g, hg, p, n)
    )
    decay_chunk = torch.exp(cs_last)  # (b, g, hh, c)
    if keep is not None:
        decay_chunk = decay_chunk * keep
    states_in = []
    for c in range(nc):
        states_in.append(S)
        S = decay_chunk[..., c, None, None] * S + local[:, :, :, c]
    final = S
    states_in = torch.stack(states_in, dim=3)  # (b, g, hh, c, p, n)

    # 4. read the carried state out: y_i += exp(cs_i) C_i . S_in
    w_out = torch.exp(cs)  # (b, g, hh, c, q)
    if k_i is not None:
        w_out = w_out * k_i
    y = y + (C_m @ states_in.transpose(-1, -2)) * w_out.unsqueeze(-1)
    y = y.permute(0, 3, 4, 1, 2, 5)  # (b, c, q, g, hh, p)

    y = y.reshape(b, T, h, p)[:, :l]
    if D is not None:
        Dc = D.to(cdt)
        y = y + xc * (Dc[:, None] if Dc.dim() == 1 else Dc)
    out = y * F.silu(z.to(cdt)) if z is not None else y
    results = [out.to(x.dtype)]
    if return_final_states:
        results.append(final.reshape(b, h, p, n).to(state_dtype))
    if return_varlen_states:
        results.append(_varlen_states(cu_seqlens, cs, dtx, B_p, seg_p, states_in, Q).to(state_dtype))
    return results[0] if len(results) == 1 else tuple(results)


def _pad_time(t: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad dimension 1 (time) at the end; no copy when nothing is padded."""
    if pad == 0:
        return t
    return F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))


def _varlen_states(cu_seqlens, cs, dtx, B_p, seg_p, states_in, Q):
    """States after each packed sequence's last step (batch 1), from the chunk quantities."""
    ends = cu_seqlens[1:].to(device=cs.device, dtype=torch.long) - 1  # (s,)
    c_idx, r_idx = ends // Q, ends % Q
    cs0 = cs[0][:, :, c_idx]  # (g, hh, s, q)
    cs_end = cs0.gather(-1, r_idx.view(1, 1, -1, 1).expand(*cs0.shape[:3], 1))  # (g, hh, s, 1)
    seg_c = seg_p[0, c_idx]  # (s, q)
    seg_e = seg_c.gather(-1, r_idx.view(-1, 1))  # (s, 1)
    pos = torch.arange(Q, device=cs.device)
    live = (pos.view(1, -1) <= r_idx.view(-1, 1)) & (seg_c == seg_e)  # (s, q)
    diff = torch.where(live, cs_end - cs0, torch.full_like(cs0, float("-inf")))
    w = torch.exp(diff)  # (g, hh, s, q)
    local = torch.einsum("sjgn,ghsj,sjghp->sghpn", B_p[0, c_idx], w, dtx[0, c_idx])  # (s, g, hh, p, n)
    seg_prev_all = torch.cat([torch.zeros_like(seg_p[0, :1, -1]), seg_p[0, :-1, -1]])  # (c,)
    carried = (seg_prev_all[c_idx] == seg_e[:, 0]).to(cs.dtype)  # (s,)
    w_in = torch.exp(cs_end[..., 0]) * carried  # (g, hh, s)
    S = local + torch.einsum("ghs,ghspn->sghpn", w_in, states_in[0][:, :, c_idx])
    s = S.shape[0]
    return S.reshape(s, -1, S.shape[-2], S.shape[-1])
