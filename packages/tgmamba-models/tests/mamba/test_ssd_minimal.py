"""ssd_minimal: chunked discrete SSD == step-by-step recurrence; continuous form == mamba_chunk_scan_combined."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssm_kernels.testing import assert_close_to_reference, seed_all
from tgmamba_models import ssd_minimal


def _inputs(b, L, h, p, n, dtype=torch.float32):
    X = torch.randn(b, L, h, p, dtype=dtype)
    dt = F.softplus(torch.randn(b, L, h, dtype=dtype) - 1)
    A = -torch.rand(h, dtype=dtype) - 0.5
    B = torch.randn(b, L, h, n, dtype=dtype)
    C = torch.randn(b, L, h, n, dtype=dtype)
    return X, dt, A, B, C


def test_exported_module():
    assert hasattr(ssd_minimal, "ssd_minimal_discrete") and hasattr(ssd_minimal, "segsum")


def test_segsum_is_the_decay_matrix():
    x = torch.randn(2, 5, dtype=torch.float64)
    S = ssd_minimal.segsum(x)
    for i in range(5):
        for j in range(5):
            want = x[:, j + 1 : i + 1].sum(-1) if j <= i else torch.full((2,), float("-inf"), dtype=x.dtype)
            torch.testing.assert_close(S[:, i, j], want)


@pytest.mark.parametrize("b,L,h,p,n,block", [(1, 1, 1, 3, 2, 4), (2, 12, 3, 4, 5, 4), (2, 10, 2, 3, 4, 3)])
def test_discrete_matches_recurrence(b, L, h, p, n, block):
    seed_all(0)
    X, dt, A, B, C = _inputs(b, L, h, p, n, torch.float64)
    Xd, Ad = ssd_minimal.discretize(X, dt, A)
    init = torch.randn(b, h, p, n, dtype=torch.float64)
    Y, final = ssd_minimal.ssd_minimal_discrete(Xd, Ad, B, C, block, initial_states=init)
    Y_r, final_r = ssd_minimal.ssd_recurrent(Xd, Ad, B, C, initial_states=init)
    torch.testing.assert_close(Y, Y_r)
    torch.testing.assert_close(final, final_r)


@pytest.mark.parametrize("L,block", [(8, 4), (9, 3)])
def test_continuous_matches_chunk_scan(L, block):
    import ssm_kernels as sk

    seed_all(1)
    X, dt, A, B, C = _inputs(2, L, 2, 4, 3)
    Y, final = ssd_minimal.ssd_minimal_continuous(X, dt, A, B, C, block)
    Y_k, final_k = sk.mamba_chunk_scan_combined(X, dt, A, B, C, block, return_final_states=True)
    Y_hi, final_hi = ssd_minimal.ssd_recurrent(*(t.double() for t in (X * dt[..., None], A * dt, B, C)))
    assert_close_to_reference("Y", Y, Y_hi, Y_k, factor=4)
    assert_close_to_reference("final", final, final_hi, final_k, factor=4)
