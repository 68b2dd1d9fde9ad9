"""Streaming: stepping one sample at a time reproduces the full forward (block and classifier)."""

import copy

import pytest
import torch

from ssm_kernels.testing import assert_close_to_reference, seed_all
from tgmamba_models import TGMamba, TGMambaClassifier, TGMambaClassifierConfig


def _graph(batch, V):
    src = [b * V + v for b in range(batch) for v in range(V - 1)]
    dst = [b * V + v + 1 for b in range(batch) for v in range(V - 1)]
    ei = torch.tensor([src + dst, dst + src])
    return ei, torch.linspace(0.2, 1.0, ei.shape[1])


def _stream(model, x, cache, **kw):
    return torch.stack([model.step(x[:, t], cache, **kw) for t in range(x.shape[1])], 1)


@pytest.mark.parametrize(
    "conv_type,kw",
    [
        ("gcnconv", {}),
        ("chebconv", dict(attn_time_varying=True, rmsnorm=False)),
        ("graphconv", {}),
        ("graphconv", dict(edge_learner_attention=False, readout_conv=False)),
        ("none", {}),
        ("gatv2conv", {}),
    ],
    ids=["gcnconv", "chebconv-tvattn-silu", "graphconv", "graphconv-mlp-noreadout", "none", "gatv2conv"],
)
def test_block_step_reproduces_forward(conv_type, kw):
    seed_all(0)
    batch, V, L, d = 2, 4, 11, 8
    m64 = TGMamba(d_model=d, d_state=4, num_vertices=V, conv_type=conv_type, **kw).double()
    m32 = copy.deepcopy(m64).float()
    x = torch.randn(batch * V, L, d, dtype=torch.float64)
    ei, ew = _graph(batch, V)
    with torch.no_grad():
        y_hi = m64(x, ei, ew.double())
        y_lo = m32(x.float(), ei, ew)
    cache = m32.allocate_inference_cache(batch)
    y_st = _stream(m32, x.float(), cache, edge_index=ei, edge_weight=ew)
    assert_close_to_reference("y_stream", y_st, y_hi, y_lo, factor=4)
    assert cache.seqlen_offset == L
    # O(1) memory: the cache does not grow with the stream
    assert cache.ssm_state.shape == (batch, V, m32.d_inner, 4)
    assert cache.conv_state.shape == (batch * V, m32.d_inner, m32.d_conv)


def test_block_step_with_per_step_graph_and_errors():
    seed_all(1)
    batch, V, L, d = 2, 3, 5, 6
    m = TGMamba(d_model=d, d_state=4, num_vertices=V, conv_type="graphconv").double()
    x = torch.randn(batch * V, L, d, dtype=torch.float64)
    adj = torch.rand(batch, L, V, V, dtype=torch.float64) * (1 - torch.eye(V, dtype=torch.float64))
    with torch.no_grad():
        y, g = m(x, adj=adj, return_graph=True)
    cache = m.allocate_inference_cache(batch)
    outs = [m.step(x[:, t], cache, adj=adj[:, t : t + 1], return_graph=True) for t in range(L)]
    torch.testing.assert_close(torch.stack([o[0] for o in outs], 1), y, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(torch.cat([o[1] for o in outs], 1), g, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="cache was allocated"):
        m.step(torch.randn(V, d, dtype=torch.float64), cache)
    with pytest.raises(ValueError, match="feature size"):
        m.step(torch.randn(batch * V, d + 1, dtype=torch.float64), cache)
    with pytest.raises(ValueError, match="adj must have shape"):
        m.step(x[:, 0], cache, adj=adj)


@pytest.mark.parametrize("pool", ["last", "mean", "max"])
def test_classifier_step_matches_forward_on_prefix(pool):
    seed_all(2)
    V, L = 4, 7
    cfg = TGMambaClassifierConfig(
        num_vertices=V, in_features=3, num_classes=2, d_model=8, num_layers=2, pass_edges=True,
        final_gconv=True, seq_pool_type=pool, residual=pool == "max",
    )  # fmt: skip
    m = TGMambaClassifier(cfg).double().eval()
    x = torch.randn(3, V, L, 3, dtype=torch.float64)
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]])
    cache = m.allocate_inference_cache(3)
    for t in range(L):
        logits = m.step(x[:, :, t], cache, ei)
        if t in (2, L - 1):
            with torch.no_grad():
                ref = m(x[:, :, : t + 1], ei)
            torch.testing.assert_close(logits, ref, rtol=1e-6, atol=1e-8)
