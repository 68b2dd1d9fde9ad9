"""Dense (mix, W) operators against the PyG layers they stand for, and the stability bounds."""

import pytest
import torch
from torch_geometric.nn import ChebConv, GCNConv, GraphConv

from ssm_kernels.testing import assert_close_to_reference, seed_all
from tgmamba_models.tgmamba.graph_ops import (
    bound_scale,
    dense_adjacency,
    dense_to_edges,
    input_mix,
    operator_weights,
    state_adjacency,
    state_mix,
)


def _random_graph(b, V, p=0.4, symmetric=False, dtype=torch.float64):
    adj = torch.rand(b, V, V, dtype=dtype) * (torch.rand(b, V, V) < p)
    if symmetric:
        adj = 0.5 * (adj + adj.transpose(-1, -2))
    adj = adj * (1 - torch.eye(V, dtype=dtype))
    return adj


@pytest.mark.parametrize("conv_type", ["gcnconv", "chebconv", "graphconv"])
@pytest.mark.parametrize("V", [1, 3, 7])
def test_input_mix_matches_pyg_layer(conv_type, V):
    """sum_k mix_k X W_k == PyG layer on a random DIRECTED weighted graph (degree conventions)."""
    seed_all(0)
    b, F_ = 3, 5
    layer = {
        "gcnconv": GCNConv(F_, F_, bias=False),
        "chebconv": ChebConv(F_, F_, K=2, bias=False),
        "graphconv": GraphConv(F_, F_, bias=False),
    }[conv_type].double()
    adj = _random_graph(b, V)
    x = torch.randn(b, V, F_, dtype=torch.float64)
    ei, ew = dense_to_edges(adj)
    ref = layer(x.reshape(b * V, F_), ei, ew).view(b, V, F_)
    mix = input_mix(conv_type, adj.unsqueeze(1))[:, 0]  # (b, K, V, V)
    W = operator_weights(conv_type, layer, F_, x)
    out = torch.einsum("bkij,bjf,kfg->big", mix, x, W)
    assert_close_to_reference("layer", out, ref, floor=1e-12)


def test_dense_adjacency_roundtrip_and_duplicates():
    V, b = 4, 2
    ei = torch.tensor([[0, 1, 1, 5, 6, 3], [1, 0, 0, 6, 7, 3]])  # duplicate (1->0), a self loop (3->3)
    ew = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0, 9.0])
    adj = dense_adjacency(ei, ew, b, V)
    assert adj.shape == (b, 1, V, V)
    assert adj[0, 0, 1, 0] == 0.5 and adj[0, 0, 0, 1] == 3.0  # j -> i stored at [i, j]; duplicates add
    assert adj[1, 0, 2, 1] == 3.0 and adj[1, 0, 3, 2] == 4.0
    assert adj[0, 0].diagonal().abs().sum() == 0  # self loops dropped
    shared = dense_adjacency(torch.tensor([[0, 2], [1, 3]]), None, b, V, shared=True)
    assert shared.shape == (1, 1, V, V) and shared[0, 0, 1, 0] == 1 and shared[0, 0, 3, 2] == 1


@pytest.mark.parametrize(
    "ei, ew, match",
    [
        (torch.tensor([[0, 8], [1, 2]]), None, "out of range"),
        (torch.tensor([[0, -1], [1, 2]]), None, "out of range"),
        (torch.tensor([[0, 4], [1, 2]]), None, "different samples"),
        (torch.tensor([[0, 1]]), None, "shape"),
        (torch.tensor([[0.0, 1.0], [1.0, 2.0]]), None, "integer"),
        (torch.tensor([[0, 1], [1, 2]]), torch.tensor([1.0]), "edge_weight"),
        (torch.tensor([[0, 1], [1, 2]]), torch.tensor([1.0, float("nan")]), "edge_weight"),
        (torch.tensor([[0, 1], [1, 2]]), torch.tensor([1.0, -1.0]), "edge_weight"),
    ],
)
def test_dense_adjacency_rejects_bad_edges(ei, ew, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dense_adjacency(ei, ew, 2, 4)


def test_bound_scale_bounds_spectral_norm():
    seed_all(1)
    for _ in range(20):
        ws = [torch.randn(6, 6, dtype=torch.float64) * torch.rand(()) * 3 for _ in range(2)]
        scale = bound_scale(ws)
        total = sum(torch.linalg.matrix_norm(w / scale, ord=2) for w in ws)
        assert total <= 1 + 1e-12
    eye = torch.eye(5, dtype=torch.float64)
    assert bound_scale([0.5 * eye, 0.5 * eye]) == 1.0  # the lazy-diffusion init is not shrunk


def test_bound_scale_stacked_equals_per_matrix():
    """The stacked (K, n, n) form the fused path passes equals the bound written per matrix, value and gradient."""
    seed_all(2)
    w = (torch.randn(3, 7, 7, dtype=torch.float64) * 2).requires_grad_()
    by_hand = sum(torch.sqrt(m.abs().sum(0).amax() * m.abs().sum(1).amax()) for m in w.unbind(0)).clamp_min(1.0)
    got = bound_scale(w)
    torch.testing.assert_close(got, by_hand, rtol=0, atol=1e-14)
    torch.testing.assert_close(torch.autograd.grad(got, w)[0], torch.autograd.grad(by_hand, w)[0])
    torch.testing.assert_close(bound_scale(list(w.unbind(0))), got)


@pytest.mark.parametrize("conv_type", ["gcnconv", "chebconv", "graphconv"])
def test_state_operators_are_contractions(conv_type):
    """Spectral norm of every state-side vertex operator <= 1 (graphconv: any graph; others: symmetric)."""
    seed_all(2)
    adj = _random_graph(16, 6, p=0.6, symmetric=conv_type != "graphconv").unsqueeze(1)
    mix = state_mix(conv_type, adj)
    norms = torch.linalg.matrix_norm(mix, ord=2)
    assert norms.max() <= 1 + 1e-9, norms.max()
    # and the bi-normalised adjacency of a star graph (row-normalising would give sqrt(V))
    star = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    star[..., 0, 1:] = 1
    star[..., 1:, 0] = 1
    assert torch.linalg.matrix_norm(state_adjacency(star), ord=2).max() <= 1 + 1e-12


@pytest.mark.parametrize("conv_type", ["gcnconv", "chebconv", "graphconv", "none"])
def test_state_mix_implicit_identity(conv_type):
    """``implicit_identity`` drops the leading identity operator (the graph scan applies it from W's extra
    operator) and keeps the rest; gcnconv has none to drop."""
    seed_all(3)
    adj = _random_graph(3, 5, p=0.6, symmetric=True).unsqueeze(1).expand(3, 4, 5, 5)
    full = state_mix(conv_type, adj)
    compact = state_mix(conv_type, adj, implicit_identity=True)
    if conv_type == "gcnconv":
        torch.testing.assert_close(compact, full)
        return
    torch.testing.assert_close(full[:, :, 0], torch.eye(5, dtype=adj.dtype).expand(3, 4, 5, 5))
    torch.testing.assert_close(compact, full[:, :, 1:])
