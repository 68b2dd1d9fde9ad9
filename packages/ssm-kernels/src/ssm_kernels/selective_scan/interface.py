"""Public entry points of the Mamba-1 selective scan: backend choice and the mamba_inner composition.

``selective_scan_fn`` and ``mamba_inner_fn`` take the same arguments as mamba_ssm's functions of
those names (real ``A`` only), so switching is a change of import. CUDA tensors use our JIT-compiled
CUDA kernels (:mod:`.cuda`); everything else, or a forced ``SSM_KERNELS_BACKEND=reference``, uses
:mod:`.reference`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backend import select_backend
from .reference import check_scan_inputs, mamba_inner_common, selective_scan_ref

__all__ = ["mamba_inner_fn", "selective_scan_fn"]


def _cuda_usable(tensors) -> tuple[bool, str]:
    from . import cuda as _cuda  # lazy: importing .cuda compiles nothing either

    return _cuda.cuda_usable(tensors)


def selective_scan_fn(
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
    deterministic: bool = True,
    backend: str | None = None,
):
    """Mamba-1 selective scan (mamba_ssm semantics), differentiable in every floating input.

    For every (b, d): ``dt = softplus(delta + delta_bias)`` (if ``delta_softplus``),
    ``h_t = exp(dt_t A[d]) h_{t-1} + dt_t B_t u_t``, ``y_t = <C_t, h_t> + D[d] u_t``,
    ``out = y * silu(z)`` (if ``z``); ``h_{-1} = initial_state`` (zeros if None).

    Shapes:
        u, delta, z: (batch, dim, L) float32/float16/bfloat16; A: (dim, N) float32;
        B, C: (dim, N) (time-invariant), (batch, N, L) or (batch, G, N, L) (dim % G == 0);
        D, delta_bias: (dim,); initial_state: (nseq, dim, N); cu_seqlens: (nseq + 1,) int32
        offsets of sequences packed along L (batch must be 1; the state restarts at each start).
        nseq = batch without cu_seqlens.

    Returns:
        out (batch, dim, L) in u's dtype, and with ``return_last_state`` last_state
        (nseq, dim, N) float32 (gradients flow through it).

    The CUDA backward is always deterministic (fixed-order reductions); ``deterministic`` is kept
    for API parity. ``backend`` forces ``"reference"`` or ``"cuda"`` (default: environment / auto).
    """
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    choice = select_backend("selective_scan", tensors, fast=("cuda",), cuda_usable=_cuda_usable, backend=backend)
    if choice == "cuda":
        from . import cuda as _cuda

        info = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens)
        return _cuda.selective_scan_cuda(
            info, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state, cu_seqlens
        )
    return selective_scan_ref(
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        delta_bias,
        delta_softplus,
        return_last_state,
        initial_state=initial_state,
        cu_seqlens=cu_seqlens,
        deterministic=deterministic,
    )


def _causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Causal depthwise conv + SiLU via ssm_kernels.causal_conv1d when present, else F.conv1d."""
    try:
        from ..causal_conv1d.interface import causal_conv1d_fn
    except ImportError:  # pragma: no cover - the sibling op is optional here
        causal_conv1d_fn = None
    if causal_conv1d_fn is not None:
        return causal_conv1d_fn(x, weight, bias, activation="silu")
    width = weight.shape[-1]
    out = F.conv1d(
        x,
        weight.unsqueeze(1).to(x.dtype),
        None if bias is None else bias.to(x.dtype),
        padding=width - 1,
        groups=x.shape[1],
    )
    return F.silu(out[..., : x.shape[-1]])


def mamba_inner_fn(
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
    """Mamba inner block with mamba_ssm semantics: conv1d+SiLU, x_proj, dt_proj, scan, out_proj.

    Composed from :func:`ssm_kernels.causal_conv1d.interface.causal_conv1d_fn` (or F.conv1d),
    ``F.linear`` and :func:`selective_scan_fn`; autograd provides the backward.

    Shapes:
        xz: (batch, 2*dim, L); conv1d_weight: (dim, 1, W) or (dim, W); conv1d_bias: (dim,);
        x_proj_weight: (dt_rank + 2N, dim); delta_proj_weight: (dim, dt_rank);
        out_proj_weight: (out, dim); out_proj_bias: (out,); A: (dim, N); B, C: None (projected)
        or as in :func:`selective_scan_fn`; D, delta_bias: (dim,); B/C_proj_bias and
        b/c_rms_weight: (N,); dt_rms_weight: (dim,).

    Returns:
        (batch, L, out). ``checkpoint_lvl`` is accepted for parity (activations are kept).
    """
    if checkpoint_lvl not in (0, 1):
        raise ValueError(f"checkpoint_lvl must be 0 or 1, got {checkpoint_lvl}")
    return mamba_inner_common(selective_scan_fn, _causal_conv1d_silu, xz, conv1d_weight, conv1d_bias, x_proj_weight,
                              delta_proj_weight, out_proj_weight, out_proj_bias, A, B, C, D, delta_bias, B_proj_bias,
                              C_proj_bias, delta_softplus, b_rms_weight, c_rms_weight, dt_rms_weight, b_c_dt_rms_eps)  # fmt: skip
