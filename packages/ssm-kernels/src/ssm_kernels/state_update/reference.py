"""Pure-PyTorch reference for the single-step selective state update (Mamba-1 and Mamba-2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_state_update_ref"]


def selective_state_update_ref(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    state_batch_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """One step of the selective SSM; updates ``state`` in place and returns the output.

    With ``dt' = softplus(dt + dt_bias)`` (plain sum without ``dt_softplus``) and head ``h``
    reading group ``g = h // (nheads // ngroups)``::

        state[h, p, n] = state[h, p, n] * exp(dt'[h, p] * A[h, p, n]) + dt'[h, p] * B[g, n] * x[h, p]
        out[h, p]      = (sum_n state[h, p, n] * C[g, n] + D[h, p] * x[h, p]) * silu(z[h, p])

    Arithmetic is in float32 (float64 if any input is float64); the state keeps its dtype.

    Shapes (Mamba-2; Mamba-1 drops the ``nheads`` axis and uses ngroups = 1):
        state: (state_batch, nheads, headdim, dstate); x, dt, z: (batch, nheads, headdim);
        A: (nheads, headdim, dstate); B, C: (batch, ngroups, dstate); D, dt_bias: (nheads, headdim);
        state_batch_indices: (batch,) int or None (then state_batch == batch).
        Mamba-1: state (state_batch, dim, dstate); x, dt, z (batch, dim); A (dim, dstate);
        B, C (batch, dstate); D, dt_bias (dim,).
        Returns out shaped like x, in x.dtype.
    """
    mamba1 = x.dim() == 2
    if mamba1:
        state_v = state.unsqueeze(1)
        x, dt, A, B, C = x.unsqueeze(1), dt.unsqueeze(1), A.unsqueeze(0), B.unsqueeze(1), C.unsqueeze(1)
        D = D.unsqueeze(0) if D is not None else None
        z = z.unsqueeze(1) if z is not None else None
        dt_bias = dt_bias.unsqueeze(0) if dt_bias is not None else None
    else:
        state_v = state
    batch, nheads, headdim = x.shape
    ngroups = B.shape[1]
    cdt = (
        torch.float64
        if any(t is not None and t.dtype == torch.float64 for t in (state, x, dt, A, B, C))
        else torch.float32
    )
    dtc = dt.to(cdt)
    if dt_bias is not None:
        dtc = dtc + dt_bias.to(cdt)
    if dt_softplus:
        dtc = F.softplus(dtc)
    Bh = B.to(cdt).repeat_interleave(nheads // ngroups, dim=1)  # (B, H, N)
    Ch = C.to(cdt).repeat_interleave(nheads // ngroups, dim=1)  # (B, H, N)
    idx = None if state_batch_indices is None else state_batch_indices.long()
    s = (state_v if idx is None else state_v[idx]).to(cdt)  # (B, H, P, N)
    dA = torch.exp(dtc[..., None] * A.to(cdt))  # (B, H, P, N)
    s = s * dA + (dtc * x.to(cdt))[..., None] * Bh[:, :, None, :]
    out = (s * Ch[:, :, None, :]).sum(-1)  # (B, H, P)
    if D is not None:
        out = out + x.to(cdt) * D.to(cdt)
    if z is not None:
        out = out * F.silu(z.to(cdt))
    with torch.no_grad():
        if idx is None:
            state_v.copy_(s.to(state.dtype))
        else:
            state_v[idx] = s.to(state.dtype)
    out = out.to(x.dtype)
    return out.squeeze(1) if mamba1 else out
