"""EdgeLearner: shapes, semantics (symmetric, pruned, skip), causality, streaming, gradients."""

import pytest
import torch

from ssm_kernels.testing import seed_all
from tgmamba_models import EdgeLearner

MODES = {
    "attn-mean-mlp": dict(use_attention=True, attn_time_varying=False, time_varying=True),
    "attn-tv-mlp": dict(use_attention=True, attn_time_varying=True, time_varying=True),
    "attn-tv": dict(use_attention=True, attn_time_varying=True, time_varying=False),
    "mlp": dict(use_attention=False, time_varying=True),
    "static": dict(use_attention=False, time_varying=False),
}


def _adj0(b, V, gen):
    a = torch.rand(b, 1, V, V, generator=gen, dtype=torch.float64) * (torch.rand(b, 1, V, V, generator=gen) < 0.5)
    a = 0.5 * (a + a.transpose(-1, -2))
    return a * (1 - torch.eye(V, dtype=torch.float64))


@pytest.mark.parametrize("mode", list(MODES))
def test_shapes_symmetry_and_no_self_loops(mode):
    seed_all(0)
    gen = torch.Generator().manual_seed(0)
    b, V, L, d = 2, 5, 7, 8
    el = EdgeLearner(d, V, num_layers=2, attn_softmax_temp=0.5, **MODES[mode]).double()
    h = torch.randn(b, V, L, d, dtype=torch.float64)
    adj0 = _adj0(b, V, gen)
    out = el(h, adj0)
    T = 1 if mode == "static" else L
    assert out.shape == (b, T, V, V)
    assert (out >= 0).all()
    assert out.diagonal(dim1=-2, dim2=-1).abs().max() == 0
    torch.testing.assert_close(out, out.transpose(-1, -2))
    if mode == "static":
        torch.testing.assert_close(out, adj0)
    if mode == "mlp":  # re-weights only existing edges
        assert ((out > 0) <= (adj0 > 0)).all()
    assert el(h, None).shape[1] == T


def test_attention_threshold_and_skip():
    """Attention is a temperature softmax over sources, symmetrised and pruned, plus adj0."""
    seed_all(1)
    b, V, L, d = 1, 4, 3, 4
    el = EdgeLearner(d, V, use_attention=True, attn_time_varying=True, time_varying=False,
                     attn_threshold=0.3, attn_softmax_temp=1.0).double()  # fmt: skip
    h = torch.randn(b, V, L, d, dtype=torch.float64)
    adj0 = torch.zeros(b, 1, V, V, dtype=torch.float64)
    adj0[0, 0, 0, 1] = adj0[0, 0, 1, 0] = 2.0
    out = el(h, adj0)
    q, k = el.qk_proj(h.transpose(1, 2)).chunk(2, -1)
    s = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, -1)
    s = 0.5 * (s + s.transpose(-1, -2))
    want = torch.where(s >= 0.3, s, 0) + adj0
    want = want * (1 - torch.eye(V, dtype=torch.float64))
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("mode", ["attn-mean-mlp", "attn-tv-mlp", "mlp"])
def test_causal_and_streaming_exact(mode):
    seed_all(2)
    gen = torch.Generator().manual_seed(2)
    b, V, L, d = 2, 3, 6, 4
    el = EdgeLearner(d, V, attn_softmax_temp=0.3, **MODES[mode]).double()
    h = torch.randn(b, V, L, d, dtype=torch.float64)
    adj0 = _adj0(b, V, gen)
    out = el(h, adj0)
    h2 = h.clone()
    h2[:, :, 4:] += 1.0  # change the future
    out2 = el(h2, adj0)
    torch.testing.assert_close(out[:, :4], out2[:, :4], rtol=0, atol=0)
    state = el.init_state(b, dtype=torch.float64)
    steps = torch.cat([el.step(h[:, :, t], adj0, state) for t in range(L)], 1)
    torch.testing.assert_close(steps, out, rtol=1e-12, atol=1e-12)


def test_parameters_receive_gradients():
    seed_all(3)
    gen = torch.Generator().manual_seed(3)
    b, V, L, d = 2, 4, 5, 6
    el = EdgeLearner(d, V, num_layers=2, attn_softmax_temp=1.0, attn_threshold=0.0).double()
    h = torch.randn(b, V, L, d, dtype=torch.float64)
    out = el(h, _adj0(b, V, gen) + 0.5 * (1 - torch.eye(V, dtype=torch.float64)))
    (out * torch.randn_like(out)).sum().backward()
    for name, p in el.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    assert el.skip_param.item() == pytest.approx(0.25)
