"""The minimal SSD of the Mamba-2 paper, written from the maths (segment sums, chunks).

For one head, with log-decay ``a_t`` (``A`` here is already ``A * dt``), input ``X_t`` (already
multiplied by ``dt``) and state ``S_t`` of shape ``(p, n)``::

    S_t = exp(a_t) * S_{t-1} + X_t B_t^T          y_t = S_t C_t

The chunked form splits the sequence into blocks of ``block_len`` steps: a quadratic
(attention-like) product inside each block, one state per block, a recurrence over blocks and
the read-out of the carried state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["segsum", "ssd_minimal_discrete"]


def segsum(x: torch.Tensor) -> torch.Tensor:
    """Segment sums ``out[..., i, j] = sum_{k=j+1}^{i} x[..., k]`` for ``j <= i``, ``-inf`` above the diagonal.

    Computed from masked cumulative sums (no differences of large cumsums), so ``exp(segsum(x))``
    is the stable lower-triangular decay matrix.

    Shapes:
        x: ``(..., T)`` -> ``(..., T, T)``
    """
    T = x.size(-1)
    xx = x.unsqueeze(-1).expand(*x.shape, T)  # (..., T_i, T_j): xx[..., k, j] = x[..., k]
    below = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(-1)
    xx = xx.masked_fill(~below, 0)
    out = torch.cumsum(xx, dim=-2)  # out[..., i, j] = sum_{j < k <= i} x_k
    keep = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(0)
    return out.masked_fill(~keep, float("-inf"))


def ssd_minimal_discrete(
    X: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    block_len: int,
    initial_states: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimal chunked SSD (Mamba-2 paper, listing 1), for testing and teaching.

    Args:
        X: inputs already multiplied by ``dt``.
        A: log decays ``A * dt`` per step and head.
        B, C: input and output projections per head.
        block_len: chunk length; ``l`` need not be a multiple (the tail is zero-padded).
        initial_states: the state before step 0, or ``None`` for zeros.

    Returns:
        ``(Y, final_state)``.

    Shapes:
        X: ``(b, l, h, p)``; A: ``(b, l, h)``; B, C: ``(b, l, h, n)``;
        initial_states: ``(b, h, p, n)``; Y: ``(b, l, h, p)``; final_state: ``(b, h, p, n)``.
    """
    if X.dim() != 4:
        raise ValueError(f"X must have shape (b, l, h, p), got {tuple(X.shape)}")
    b, l, h, p = X.shape
    if A.shape != (b, l, h):
        raise ValueError(f"A must have shape ({b}, {l}, {h}), got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:3] != (b, l, h):
        raise ValueError(f"B must have shape ({b}, {l}, {h}, n), got {tuple(B.shape)}")
    n = B.shape[-1]
    if C.shape != B.shape:
        raise ValueError(f"C must have shape {tuple(B.shape)} (like B), got {tuple(C.shape)}")
    if not isinstance(block_len, int) or block_len < 1:
        raise ValueError(f"block_len must be a positive int, got {block_len!r}")
    if initial_states is not None and initial_states.shape != (b, h, p, n):
        raise ValueError(f"initial_states must have shape ({b}, {h}, {p}, {n}), got {tuple(initial_states.shape)}")

    pad = (-l) % block_len
    if pad:  # zero input and zero log-decay: the padded steps change nothing
        X = F.pad(X, (0, 0, 0, 0, 0, pad))
        A = F.pad(A, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    nc = (l + pad) // block_len
    X = X.reshape(b, nc, block_len, h, p)
    B = B.reshape(b, nc, block_len, h, n)
    C = C.reshape(b, nc, block_len, h, n)
    A = A.reshape(b, nc, block_len, h).permute(0, 3, 1, 2)  # (b, h, c, q)
    A_cumsum = torch.cumsum(A, dim=-1)

    # 1. inside each chunk: the quadratic (masked-attention) form
    Lmat = torch.exp(segsum(A))  # (b, h, c, i, j)
    Y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, B, Lmat, X)

    # 2. each chunk's own state (inputs decayed to the chunk's end)
    decay_states = torch.exp(A_cumsum[..., -1:] - A_cumsum)  # (b, h, c, q)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, decay_states, X)

    # 3. recurrence over chunks (itself a segment-sum product over chunk totals)
    if initial_states is None:
        initial_states = torch.zeros_like(states[:, :1])
    else:
        initial_states = initial_states.unsqueeze(1).to(states.dtype)
    states = torch.cat([initial_states, states], dim=1)  # (b, c+1, h, p, n)
    decay_chunk = torch.exp(segsum(F.pad(A_cumsum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final_state = new_states[:, :-1], new_states[:, -1]

    # 4. read the carried state out inside each chunk
    state_decay_out = torch.exp(A_cumsum)  # (b, h, c, q)
    Y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states, state_decay_out)

    Y = (Y_diag + Y_off).reshape(b, nc * block_len, h, p)[:, :l]
    return Y, final_state
