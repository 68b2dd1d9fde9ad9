"""Pure-PyTorch reference of the Mamba-1 selective scan (the CPU path and the test oracle).

For every batch row ``b`` and channel ``d`` (state size ``N``, time ``t``)::

    dt_t  = softplus(delta[b, d, t] + delta_bias[d])        (plain sum without softplus)
    h_t   = exp(dt_t * A[d]) * h_{t-1} + dt_t * B_t * u[b, d, t]        h_t in R^N
    y_t   = <C_t, h_t> + D[d] * u[b, d, t]
    out_t = y_t * silu(z[b, d, t])                           (when z is given)

``h_{-1}`` is ``initial_state[b, d]`` (zeros when omitted). With ``cu_seqlens`` the single
batch row holds several sequences packed along time; the state restarts from
``initial_state[s]`` (or zeros) at the first step of each sequence ``s``.

Same semantics and shapes as ``mamba_ssm.ops.selective_scan_interface.selective_scan_ref`` for
real ``A`` (complex ``A`` is not supported), plus the keyword-only extras ``initial_state`` and
``cu_seqlens``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._checks import check_same_device, check_tensor

__all__ = ["ScanInputs", "check_scan_inputs", "mamba_inner_ref", "selective_scan_ref"]

_REAL = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_A_DTYPES = (torch.float32, torch.float64)
_INDEX = (torch.int32, torch.int64)


@dataclass
class ScanInputs:
    """Sizes derived from validated inputs (shared by the reference and the fast path)."""

    batch: int
    dim: int
    seqlen: int
    dstate: int
    nseq: int  # sequences: ``batch``, or ``len(cu_seqlens) - 1`` when packed
    b_groups: int  # 0 = time-invariant (dim, N); else groups G of a (batch, G, N, L) view
    c_groups: int


def _check_bc(name: str, t: torch.Tensor, batch: int, dim: int, dstate: int, seqlen: int) -> int:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_complex():
        raise TypeError(f"{name}: complex B/C are not supported")
    if t.dim() == 2:
        check_tensor(name, t, shape=(dim, dstate), dtypes=_REAL)
        return 0
    if t.dim() == 3:
        check_tensor(name, t, shape=(batch, dstate, seqlen), dtypes=_REAL)
        return 1
    if t.dim() == 4:
        check_tensor(name, t, shape=(batch, None, dstate, seqlen), dtypes=_REAL)
        groups = t.shape[1]
        if groups < 1 or dim % groups != 0:
            raise ValueError(f"{name} has {groups} groups (dim 1) but dim={dim} is not a multiple of it")
        return groups
    raise ValueError(
        f"{name} must have shape (dim, N)=({dim}, {dstate}), (batch, N, L)=({batch}, {dstate}, {seqlen}) "
        f"or (batch, G, N, L), got {tuple(t.shape)}"
    )


def check_scan_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    check_values: bool = True,
) -> ScanInputs:
    """Validate the selective-scan contract; every error names the offending argument.

    ``check_values`` also validates the contents of ``cu_seqlens`` (starts at 0, non-decreasing,
    ends at L); for CUDA tensors this costs one device synchronisation.
    """
    check_tensor("u", u, shape=(None, None, None), dtypes=_REAL)
    batch, dim, seqlen = u.shape
    check_tensor("delta", delta, shape=(batch, dim, seqlen), dtypes=_REAL)
    if isinstance(A, torch.Tensor) and A.is_complex():
        raise TypeError("A: complex A is not supported (real A of shape (dim, N) only)")
    check_tensor("A", A, shape=(dim, None), dtypes=_A_DTYPES)
    dstate = A.shape[1]
    if dstate < 1:
        raise ValueError("A must have at least one state (shape (dim, N) with N >= 1)")
    b_groups = _check_bc("B", B, batch, dim, dstate, seqlen)
    c_groups = _check_bc("C", C, batch, dim, dstate, seqlen)
    check_tensor("D", D, shape=(dim,), dtypes=_REAL, optional=True)
    check_tensor("z", z, shape=(batch, dim, seqlen), dtypes=_REAL, optional=True)
    check_tensor("delta_bias", delta_bias, shape=(dim,), dtypes=_REAL, optional=True)
    nseq = batch
    if cu_seqlens is not None:
        check_tensor("cu_seqlens", cu_seqlens, shape=(None,), dtypes=_INDEX)
        if cu_seqlens.numel() < 2:
            raise ValueError("cu_seqlens must hold at least two offsets (nseq + 1,)")
        if batch != 1:
            raise ValueError(f"cu_seqlens needs u with batch 1 (sequences packed along L), got batch {batch}")
        nseq = cu_seqlens.numel() - 1
        if check_values:
            cu = cu_seqlens.detach().to("cpu", torch.int64)
            if cu[0].item() != 0 or cu[-1].item() != seqlen or bool((cu[1:] < cu[:-1]).any()):
                raise ValueError(
                    f"cu_seqlens must start at 0, be non-decreasing and end at L={seqlen}, got {cu.tolist()}"
                )
    check_tensor("initial_state", initial_state, shape=(nseq, dim, dstate), dtypes=_REAL, optional=True)
    check_same_device(
        u=u,
        delta=delta,
        A=A,
        B=B,
        C=C,
        D=D,
        z=z,
        delta_bias=delta_bias,
        initial_state=initial_state,
        cu_seqlens=cu_seqlens,
    )
    return ScanInputs(batch, dim, seqlen, dstate, nseq, b_groups, c_groups)


def _expand_bc(t: torch.Tensor, groups: int, batch: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """Return B or C as (batch, dim or 1, N, L) (variable; 1 broadcasts) or (dim, N) (time-invariant)."""
    t = t.to(dtype)
    if groups == 0:
        return t
    if t.dim() == 3:
        return t.unsqueeze(1)  # (batch, 1, N, L)
    if groups == 1:
        return t
    return t.repeat_interleave(dim // groups, dim=1)  # (batch, dim, N, L)


# steps per chunk of the reference's readout (one batched product per chunk after the recurrence's steps): batch 1,
# dim 256, L 2048, N 16 on 2 CPU threads, fwd+bwd 0.30 s against 0.36 s with the readout per step (six interleaved
# rounds; 0.24 against 0.28 s with constant B / C)
_REF_CHUNK = 32


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    deterministic: bool = False,
):
    """Selective scan in plain PyTorch: float32 state (float64 if any input is float64).

    Differentiable in every floating input (autograd through the time loop).

    Shapes:
        u, delta, z: (batch, dim, L); A: (dim, N) real; B, C: (dim, N), (batch, N, L) or
        (batch, G, N, L) with dim % G == 0 (channel d uses group d // (dim // G));
        D, delta_bias: (dim,); initial_state: (nseq, dim, N) with nseq = batch, or
        ``len(cu_seqlens) - 1`` when ``cu_seqlens`` (int32/int64 offsets, batch must be 1) is given.

    Returns:
        out (batch, dim, L) in u's dtype; with ``return_last_state`` also last_state
        (nseq, dim, N) in float32 (float64 for float64 inputs). ``deterministic`` is accepted for
        signature parity (the reference is always deterministic).
    """
    info = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens)
    batch, dim, seqlen, dstate = info.batch, info.dim, info.seqlen, info.dstate
    dtype_in = u.dtype
    inputs = [u, delta, A, B, C, D, z, delta_bias, initial_state]
    wdtype = torch.float64 if any(t is not None and t.dtype == torch.float64 for t in inputs) else torch.float32

    uf = u.to(wdtype)
    dt = delta.to(wdtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(wdtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Af = A.to(wdtype)
    Bf = _expand_bc(B, info.b_groups, batch, dim, wdtype)
    Cf = _expand_bc(C, info.c_groups, batch, dim, wdtype)

    deltaA = torch.exp(dt.unsqueeze(-1) * Af[:, None, :])  # (batch, dim, L, N)
    if info.b_groups == 0:
        deltaB_u = (dt * uf).unsqueeze(-1) * Bf[:, None, :]  # (batch, dim, L, N)
    else:
        deltaB_u = (dt * uf).unsqueeze(-1) * Bf.transpose(-1, -2)  # (batch, dim, L, N)
    Ct = Cf if info.c_groups == 0 else Cf.transpose(-1, -2)  # (dim, N) or (batch, dim, L, N)

    def start_state(s: int) -> torch.Tensor:  # (dim, N) or (batch, dim, N)
        if initial_state is None:
            return uf.new_zeros((dim, dstate) if cu_seqlens is not None else (batch, dim, dstate))
        return initial_state[s].to(wdtype) if cu_seqlens is not None else initial_state.to(wdtype)

    if cu_seqlens is None:
        starts, ends = [0], [seqlen]
    else:
        offsets = cu_seqlens.detach().to("cpu", torch.int64).tolist()
        starts, ends = offsets[:-1], offsets[1:]

    # per-step views from one unbind each: indexing [:, :, t] inside the loop would make autograd build a
    # zero-filled (batch, dim, L, N) gradient per step (quadratic in L: 98 s instead of 1.6 s for fwd+bwd at
    # batch 2, dim 256, L 2048 on 2 CPU threads); unbind's backward stacks the L step gradients once
    dA_steps = deltaA.unbind(2)
    dBu_steps = deltaB_u.unbind(2)
    C_steps = Ct.unbind(2) if info.c_groups != 0 else None
    ys: list[torch.Tensor] = []
    last_states: list[torch.Tensor] = []
    # only the recurrence runs per step; the readout of a chunk of steps is one batched product after it
    for s, (t0, t1) in enumerate(zip(starts, ends)):
        h = start_state(s)
        if cu_seqlens is not None:
            h = h.unsqueeze(0)  # (1, dim, N)
        for c0 in range(t0, t1, _REF_CHUNK):
            c1 = min(c0 + _REF_CHUNK, t1)
            hs = []
            for t in range(c0, c1):
                h = dA_steps[t] * h + dBu_steps[t]  # (batch, dim, N)
                hs.append(h)
            H = torch.stack(hs, 2)  # (batch, dim, T, N)
            Cc = Ct[:, None] if C_steps is None else torch.stack(C_steps[c0:c1], 2)
            ys.append((H * Cc).sum(-1))  # (batch, dim, T)
        last_states.append(h)
    y = torch.cat(ys, dim=2) if ys else uf.new_zeros(batch, dim, 0)  # (batch, dim, L)
    out = y if D is None else y + uf * D.to(wdtype)[:, None]
    if z is not None:
        out = out * F.silu(z.to(wdtype))
    out = out.to(dtype_in)
    if not return_last_state:
        return out
    last_state = torch.cat(last_states, dim=0)  # (nseq, dim, N)
    return out, last_state


# --------------------------------------------------------------------------------------------
# mamba_inner (conv1d -> x_proj -> dt_proj -> selective scan -> out_proj), reference version
# --------------------------------------------------------------------------------------------


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMS norm over the last dim, computed in float32, returned in x's dtype."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return y.to(x.dtype)


def _causal_conv1d_silu_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal conv1d + SiLU. x: (batch, dim, L); weight: (dim, W); bias: (dim,)."""
    width = weight.shape[-1]
    out = F.conv1d(
        x,
        weight.unsqueeze(1).to(x.dtype),
        None if bias is None else bias.to(x.dtype),
        padding=width - 1,
        groups=x.shape[1],
    )
    return F.silu(out[..., : x.shape[-1]])


def check_inner_inputs(xz, conv1d_weight, x_proj_weight, delta_proj_weight, out_proj_weight, A, B, C) -> None:
    """Validate the shapes of mamba_inner's weights (errors name the argument)."""
    check_tensor("xz", xz, shape=(None, None, None), dtypes=_REAL)
    if xz.shape[1] % 2 != 0:
        raise ValueError(f"xz must have an even channel count (x and z stacked), got {xz.shape[1]}")
    dim = xz.shape[1] // 2
    if conv1d_weight.dim() == 3:
        check_tensor("conv1d_weight", conv1d_weight, shape=(dim, 1, None), dtypes=_REAL)
    else:
        check_tensor("conv1d_weight", conv1d_weight, shape=(dim, None), dtypes=_REAL)
    check_tensor("x_proj_weight", x_proj_weight, shape=(None, dim), dtypes=_REAL)
    check_tensor("delta_proj_weight", delta_proj_weight, shape=(dim, None), dtypes=_REAL)
    check_tensor("out_proj_weight", out_proj_weight, shape=(None, dim), dtypes=_REAL)
    check_tensor("A", A, shape=(dim, None), dtypes=_A_DTYPES)
    dstate = A.shape[1]
    rank = delta_proj_weight.shape[1]
    need = rank + (dstate if B is None else 0) + (dstate if C is None else 0)
    if x_proj_weight.shape[0] != need:
        raise ValueError(
            f"x_proj_weight must have {need} rows (dt_rank {rank} + N {dstate} per projected B/C), got {x_proj_weight.shape[0]}"
        )


def mamba_inner_common(
    scan,
    conv,
    xz,
    conv1d_weight,
    conv1d_bias,
    x_proj_weight,
    delta_proj_weight,
    out_proj_weight,
    out_proj_bias,
    A,
    B=None,
    C=None,
    D=None,
    delta_bias=None,
    B_proj_bias=None,
    C_proj_bias=None,
    delta_softplus=True,
    b_rms_weight=None,
    c_rms_weight=None,
    dt_rms_weight=None,
    b_c_dt_rms_eps=1e-6,
):
    """mamba_inner as a composition of ``conv`` (causal conv + SiLU) and ``scan`` (selective scan)."""
    check_inner_inputs(xz, conv1d_weight, x_proj_weight, delta_proj_weight, out_proj_weight, A, B, C)
    L = xz.shape[-1]
    rank = delta_proj_weight.shape[1]
    dstate = A.shape[-1]
    x, z = xz.chunk(2, dim=1)  # (batch, dim, L) each
    weight = conv1d_weight.reshape(conv1d_weight.shape[0], -1)  # (dim, W)
    x = conv(x, weight, conv1d_bias)  # (batch, dim, L)
    x_dbl = F.linear(x.transpose(1, 2).reshape(-1, x.shape[1]), x_proj_weight)  # (batch*L, rank + 2N)
    delta = (delta_proj_weight @ x_dbl[:, :rank].t()).reshape(-1, xz.shape[0], L).transpose(0, 1)  # (batch, dim, L)
    if B is None:
        B = x_dbl[:, rank : rank + dstate]  # (batch*L, N)
        if B_proj_bias is not None:
            B = B + B_proj_bias.to(B.dtype)
        if b_rms_weight is not None:
            B = _rms_norm(B, b_rms_weight, b_c_dt_rms_eps)
        B = B.reshape(xz.shape[0], L, dstate).transpose(1, 2).unsqueeze(1)  # (batch, 1, N, L)
    if C is None:
        C = x_dbl[:, x_dbl.shape[1] - dstate :]  # (batch*L, N)
        if C_proj_bias is not None:
            C = C + C_proj_bias.to(C.dtype)
        if c_rms_weight is not None:
            C = _rms_norm(C, c_rms_weight, b_c_dt_rms_eps)
        C = C.reshape(xz.shape[0], L, dstate).transpose(1, 2).unsqueeze(1)  # (batch, 1, N, L)
    if dt_rms_weight is not None:
        delta = _rms_norm(delta.transpose(1, 2), dt_rms_weight, b_c_dt_rms_eps).transpose(1, 2)
    y = scan(x, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)  # (batch, dim, L)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)  # (batch, L, out)


def mamba_inner_ref(
    xz,
    conv1d_weight,
    conv1d_bias,
    x_proj_weight,
    delta_proj_weight,
    out_proj_weight,
    out_proj_bias,
    A,
    B=None,
    C=None,
    D=None,
    delta_bias=None,
    B_proj_bias=None,
    C_proj_bias=None,
    delta_softplus=True,
    checkpoint_lvl=1,
    b_rms_weight=None,
    c_rms_weight=None,
    dt_rms_weight=None,
    b_c_dt_rms_eps=1e-6,
):
    """Reference Mamba inner block (mamba_ssm semantics) built from reference pieces.

    Shapes:
        xz: (batch, 2*dim, L) (x and z stacked); conv1d_weight: (dim, 1, W) or (dim, W);
        conv1d_bias: (dim,); x_proj_weight: (dt_rank + 2N, dim) (fewer rows when B/C are given);
        delta_proj_weight: (dim, dt_rank); out_proj_weight: (out, dim); out_proj_bias: (out,);
        A: (dim, N); B, C: None (projected from x) or as in :func:`selective_scan_ref`;
        D, delta_bias: (dim,); B/C_proj_bias, b/c_rms_weight: (N,); dt_rms_weight: (dim,).

    Returns:
        (batch, L, out). ``checkpoint_lvl`` is accepted for signature parity.
    """
    if checkpoint_lvl not in (0, 1):
        raise ValueError(f"checkpoint_lvl must be 0 or 1, got {checkpoint_lvl}")
    return mamba_inner_common(selective_scan_ref, _causal_conv1d_silu_ref, xz, conv1d_weight, conv1d_bias,
                              x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias, A, B, C, D,
                              delta_bias, B_proj_bias, C_proj_bias, delta_softplus, b_rms_weight, c_rms_weight,
                              dt_rms_weight, b_c_dt_rms_eps)  # fmt: skip
