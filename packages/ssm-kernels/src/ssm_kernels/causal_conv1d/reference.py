"""Pure-PyTorch reference for the causal depthwise conv1d and its single-step update.

Both functions follow the public ``causal_conv1d`` package's API so a user can switch imports.
They are differentiable with autograd and run on any device; arithmetic is done in float32
(float64 when any input is float64) and results are cast back to ``x``'s dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["causal_conv1d_ref", "causal_conv1d_update_ref"]


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation is None:
        return y
    if activation in ("silu", "swish"):
        return F.silu(y)
    raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")


def causal_conv1d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    return_final_states: bool = False,
    final_states_out: torch.Tensor | None = None,
    activation: str | None = None,
    *,
    upcast: bool = True,
):
    """Causal depthwise conv1d, reference implementation.

    ``out[b, d, t] = act(bias[d] + sum_k weight[d, k] * xp[b, d, t + k])`` where ``xp`` is ``x``
    padded on the left with ``width - 1`` columns of ``initial_states`` (zeros if ``None``).
    With ``seq_idx``, tap ``k`` contributes only when its input position belongs to the same
    sequence as ``t`` (``seq_idx`` equal); the initial-state columns belong to the sequence of
    position 0. ``upcast=False`` computes in ``x``'s own dtype (the low-precision yardstick of
    the tests); by default the arithmetic is float32 (float64 for float64 inputs).

    Shapes:
        x: (batch, dim, L); weight: (dim, width); bias: (dim,) or None;
        seq_idx: (batch, L) integer or None; initial_states: (batch, dim, width - 1) or None;
        returns out (batch, dim, L) in ``x.dtype`` and, if ``return_final_states``,
        final_states (batch, dim, width - 1): the last ``width - 1`` columns of ``xp``.
    """
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    batch, dim, seqlen = x.shape
    width = weight.shape[-1]
    cdt = _compute_dtype(x, weight, bias, initial_states) if upcast else x.dtype
    xc = x.to(cdt)
    if initial_states is None:
        pad = xc.new_zeros(batch, dim, width - 1)
    else:
        pad = initial_states.to(cdt)
    xp = torch.cat([pad, xc], dim=-1)  # (B, D, L + W - 1)
    w = weight.to(cdt)
    if seq_idx is not None:
        sp = torch.cat([seq_idx[:, :1].expand(batch, width - 1), seq_idx], dim=-1)  # (B, L + W - 1)
    out = xc.new_zeros(batch, dim, seqlen) if bias is None else bias.to(cdt)[None, :, None].expand(batch, dim, seqlen)
    for k in range(width):
        term = w[None, :, k, None] * xp[..., k : k + seqlen]
        if seq_idx is not None:
            same = (sp[:, k : k + seqlen] == seq_idx)[:, None, :]
            term = term * same.to(cdt)
        out = out + term
    out = _activate(out, activation).to(x.dtype)
    if not return_final_states:
        return out
    final = xp[..., seqlen:].to(x.dtype)  # (B, D, W - 1)
    if final_states_out is not None:
        final_states_out.copy_(final)
        final = final_states_out
    return out, final


def causal_conv1d_update_ref(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    cache_seqlens: torch.Tensor | None = None,
    conv_state_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """One decoding step (or a few) of the causal conv1d with a rolling state, reference.

    ``conv_state`` holds the last ``state_len >= width - 1`` inputs and is updated in place.
    Without ``cache_seqlens`` it is a shift register (oldest column first); with
    ``cache_seqlens`` it is a circular buffer whose next write position is
    ``cache_seqlens[b] % state_len``. ``conv_state_indices[b]`` picks the row of ``conv_state``
    used for batch entry ``b`` (continuous batching).

    Shapes:
        x: (batch, dim) or (batch, dim, seqlen); conv_state: (state_batch, dim, state_len);
        weight: (dim, width); bias: (dim,) or None; cache_seqlens: (batch,) int or None;
        conv_state_indices: (batch,) int or None (else state_batch == batch);
        returns out shaped like x, in ``x.dtype``.
    """
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    unsqueeze = x.dim() == 2
    if unsqueeze:
        x = x.unsqueeze(-1)
    batch, dim, seqlen = x.shape
    width = weight.shape[-1]
    state_len = conv_state.shape[-1]
    cdt = _compute_dtype(x, weight, bias)
    rows = conv_state if conv_state_indices is None else conv_state[conv_state_indices.long()]  # (B, D, S)
    if cache_seqlens is None:
        x_new = torch.cat([rows.to(cdt), x.to(cdt)], dim=-1)  # (B, D, S + seqlen)
        new_rows = x_new[..., -state_len:].to(conv_state.dtype)
    else:
        pos = cache_seqlens.long()[:, None]  # (B, 1)
        hist_idx = (torch.arange(-(width - 1), 0, device=x.device)[None] + pos) % state_len  # (B, W-1)
        hist = rows.gather(-1, hist_idx[:, None, :].expand(batch, dim, width - 1))
        x_new = torch.cat([hist.to(cdt), x.to(cdt)], dim=-1)  # (B, D, W - 1 + seqlen)
        copy_idx = (torch.arange(seqlen, device=x.device)[None] + pos) % state_len  # (B, seqlen)
        new_rows = rows.clone().scatter_(-1, copy_idx[:, None, :].expand(batch, dim, seqlen), x.to(conv_state.dtype))
    w = weight.to(cdt)
    n = x_new.shape[-1]
    out = x.new_zeros(batch, dim, seqlen, dtype=cdt)
    if bias is not None:
        out = out + bias.to(cdt)[None, :, None]
    for k in range(width):
        start = n - seqlen - (width - 1) + k
        out = out + w[None, :, k, None] * x_new[..., start : start + seqlen]
    out = _activate(out, activation).to(x.dtype)
    with torch.no_grad():
        if conv_state_indices is None:
            conv_state.copy_(new_rows)
        else:
            conv_state[conv_state_indices.long()] = new_rows
    return out.squeeze(-1) if unsqueeze else out
