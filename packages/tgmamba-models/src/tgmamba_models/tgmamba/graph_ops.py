"""Dense per-step graphs and the (mix, W) operators of TGMamba's graph convolutions.

TGMamba keeps every graph as a dense, per-step weighted adjacency ``adj`` of shape
``(batch, T, V, V)`` (``T`` is 1 for a graph shared by all steps, else ``L``), with
``adj[b, t, i, j]`` the weight of the edge ``j -> i`` (PyG's source ``j``, target ``i``).
Graphs carry no self loops: every convolution has its own rule for a vertex's own state.

A PyG layer computes ``x @ lin.weight.T``, so the fused path uses ``W = lin.weight.T`` and a
stack of vertex operators ``mix`` (``(batch, T, K, V, V)``), with
``out[i] = sum_k sum_j mix[k, i, j] * x[j] @ W[k]`` (see ``/shared/DESIGN.md``):

* ``gcnconv``: ``K = 1``, ``mix = D^-1/2 (A + I) D^-1/2`` with in-degrees (at the target, self
  loop weight 1): PyG's ``gcn_norm``.
* ``chebconv`` (``K = 2``, ``normalization="sym"``, ``lambda_max = 2``):
  ``mix = [I, -D^-1/2 A D^-1/2]`` with PyG's ``get_laplacian`` degrees (at the source).
* ``graphconv`` (``aggr="add"``): ``mix = [I, A]``, ``W = [lin_root, lin_rel]``.
* ``none``: ``mix = I``, ``W = I``.

State-side stabilisation (see :func:`state_adjacency` and :func:`bound_scale`): for the
recurrence the adjacency fed to ``graphconv`` is bi-normalised, ``R^-1/2 A S^-1/2`` with
``R`` the in-degrees and ``S`` the out-degrees, whose spectral norm is at most 1 for any
non-negative ``A`` (Schur test); GCN's and Chebyshev's operators have spectral norm at most 1
for symmetric non-negative ``A``. The weights are divided by ``max(1, sum_k s_k)`` with
``s_k = sqrt(||W_k||_1 ||W_k||_inf) >= ||W_k||_2``. Together ``||sum_k mix_k H W_k||_F <=
||H||_F``, and since ``exp(Delta * A) <= 1`` the state can grow at most linearly, never
geometrically.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "CONV_TYPES",
    "FUSED_CONV_TYPES",
    "bound_scale",
    "cheb_mix",
    "check_edges",
    "check_edges_structure",
    "edge_value_flags",
    "raise_flags",
    "dense_adjacency",
    "dense_to_edges",
    "gcn_mix",
    "input_mix",
    "operator_weights",
    "state_adjacency",
    "state_mix",
]

CONV_TYPES = ("gcnconv", "chebconv", "graphconv", "gatv2conv", "none")
FUSED_CONV_TYPES = ("gcnconv", "chebconv", "graphconv", "none")


def check_edges_structure(edge_index: Tensor, edge_weight: Tensor | None, name: str = "edge_index") -> None:
    """Shape and dtype checks of PyG edges (no device sync); errors name the argument."""
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (2, E), got {type(edge_index).__name__}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"{name} must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.is_floating_point() or edge_index.is_complex() or edge_index.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer vertex ids, got {edge_index.dtype}")
    if edge_weight is not None:
        if not isinstance(edge_weight, Tensor) or edge_weight.dim() != 1 or edge_weight.shape[0] != edge_index.shape[1]:
            shape = tuple(edge_weight.shape) if isinstance(edge_weight, Tensor) else type(edge_weight).__name__
            raise ValueError(f"edge_weight must have shape (E,) = ({edge_index.shape[1]},), got {shape}")
        if not edge_weight.is_floating_point():
            raise TypeError(f"edge_weight must be floating point, got {edge_weight.dtype}")


def edge_value_flags(
    edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int, num_vertices: int | None = None,
    name: str = "edge_index",
) -> list[tuple[str, Tensor]]:  # fmt: skip
    """Device-side flags (0-d bool tensors, True = problem) for the values of PyG edges.

    ``num_vertices``: also flag edges between different samples of a PyG-batched graph. Evaluate
    them with :func:`raise_flags`, batched with other checks, so validation costs one sync.
    """
    flags: list[tuple[str, Tensor]] = []
    if edge_index.numel():
        flags.append((f"{name} has vertex ids outside [0, {num_nodes}) (out of range)", edge_index.min() < 0))
        flags.append((f"{name} has vertex ids outside [0, {num_nodes}) (out of range)", edge_index.max() >= num_nodes))
        if num_vertices is not None:
            same = torch.div(edge_index[0], num_vertices, rounding_mode="floor") != torch.div(
                edge_index[1], num_vertices, rounding_mode="floor"
            )
            flags.append(
                (
                    f"{name} connects vertices of different samples (num_vertices={num_vertices}); "
                    "edges must stay within a sample",
                    same.any(),
                )
            )
    if edge_weight is not None and edge_weight.numel():
        flags.append(("edge_weight contains NaN or inf", ~torch.isfinite(edge_weight).all()))
        flags.append(
            ("edge_weight must be non-negative (normalised graph operators need non-negative weights)",
             (edge_weight < 0).any())
        )  # fmt: skip
    return flags


def raise_flags(flags: list[tuple[str, Tensor]]) -> None:
    """Evaluate device-side check flags with ONE host sync; raise ValueError with the first message.

    Under CUDA graph capture the sync is not allowed (torch would fail with an unrelated-looking copy error), so
    that raises a RuntimeError naming the switch instead.
    """
    if not flags:
        return
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            "input value checks (NaN, edge ranges) need a host sync, which CUDA graph capture does not allow: set "
            "validate_inputs = False on the TGMamba block / classifier before capturing"
        )
    values = torch.stack([f.reshape(()).to(torch.bool) for _, f in flags]).tolist()
    for (msg, _), bad in zip(flags, values):
        if bad:
            raise ValueError(msg)


def check_edges(edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int, num_vertices: int | None = None,
                name: str = "edge_index") -> None:  # fmt: skip
    """Raise an error naming ``edge_index``/``edge_weight`` if they break the contract (one sync)."""
    check_edges_structure(edge_index, edge_weight, name)
    raise_flags(edge_value_flags(edge_index, edge_weight, num_nodes, num_vertices, name))


def dense_adjacency(
    edge_index: Tensor,
    edge_weight: Tensor | None,
    batch: int,
    num_vertices: int,
    shared: bool = False,
    dtype: torch.dtype = torch.float32,
    validate: bool = True,
) -> Tensor:
    """Dense adjacency ``(batch or 1, 1, V, V)`` from PyG edges; duplicates add, self loops are dropped.

    Args:
        edge_index: (2, E) source/target ids. With ``shared=False`` ids are PyG-batched node ids in
            ``[0, batch * V)`` (vertex v of sample b is ``b * V + v``) and edges must stay inside one
            sample; with ``shared=True`` ids lie in ``[0, V)`` and the graph is shared by all samples.
        edge_weight: (E,) non-negative weights, or None (all ones).
        validate: check ids, weights and sample membership (device syncs); without it bad edges
            are undefined behaviour (for CUDA-graph capture).

    Shapes:
        returns ``(batch, 1, V, V)`` (``(1, 1, V, V)`` when shared), ``adj[b, 0, i, j]`` = weight j -> i.
    """
    V = num_vertices
    n = V if shared else batch * V
    if validate:
        check_edges(edge_index, edge_weight, n, None if shared else V)
    src, dst = edge_index[0].long(), edge_index[1].long()
    w = edge_weight.to(dtype) if edge_weight is not None else torch.ones(src.shape[0], dtype=dtype, device=src.device)
    nb = 1 if shared else batch
    if shared:
        gs = torch.zeros_like(src)
    else:
        gs = torch.div(src, V, rounding_mode="floor")
        src, dst = src - gs * V, dst - gs * V
    adj = torch.zeros(nb, V, V, dtype=dtype, device=w.device)
    adj = adj.index_put((gs, dst, src), w, accumulate=True)
    # drop self loops without boolean indexing (no host sync: CUDA-graph capturable)
    return adj.masked_fill(torch.eye(V, dtype=torch.bool, device=w.device), 0.0).unsqueeze(1)


def dense_to_edges(adj: Tensor, replicate: int = 1) -> tuple[Tensor, Tensor]:
    """Sparse PyG edges of the dense graphs ``adj`` (batch, V, V) (non-zero off-diagonal entries).

    Node ``v`` of graph ``g`` is ``g * V + v``. With ``replicate = R`` every graph is repeated R
    times consecutively (graph ``b`` becomes graphs ``b * R .. b * R + R - 1``), for mixing
    vertices separately per (sample, channel). Weights keep the autograd graph of ``adj``.

    Shapes:
        adj: (batch, V, V) -> edge_index (2, E * R) int64, edge_weight (E * R,).
    """
    nb, V, _ = adj.shape
    eye = torch.eye(V, dtype=torch.bool, device=adj.device)
    b, i, j = torch.nonzero((adj != 0) & ~eye, as_tuple=True)
    w = adj[b, i, j]
    if replicate > 1:
        r = torch.arange(replicate, device=adj.device)
        g = (b[:, None] * replicate + r[None, :]).reshape(-1)
        i = i[:, None].expand(-1, replicate).reshape(-1)
        j = j[:, None].expand(-1, replicate).reshape(-1)
        w = w[:, None].expand(-1, replicate).reshape(-1)
    else:
        g = b
    edge_index = torch.stack([g * V + j, g * V + i])
    return edge_index, w


def _inv_sqrt(deg: Tensor) -> Tensor:
    """``deg^-1/2`` where ``deg > 0``, else 0 (``rsqrt(inf) = 0``; one kernel fewer than selecting zeros)."""
    return torch.where(deg > 0, deg.clamp_min(torch.finfo(deg.dtype).tiny), float("inf")).rsqrt()


def gcn_mix(adj: Tensor) -> Tensor:
    """PyG ``gcn_norm`` as a dense operator: ``D^-1/2 (A + I) D^-1/2``, in-degrees + 1.

    Shapes:
        adj: (..., V, V) -> (..., V, V)
    """
    V = adj.shape[-1]
    eye = torch.eye(V, dtype=adj.dtype, device=adj.device)
    a = adj + eye
    dis = _inv_sqrt(a.sum(-1))  # in-degree of target i (row sum), self loop included
    return dis[..., :, None] * a * dis[..., None, :]


def cheb_mix(adj: Tensor) -> Tensor:
    """Chebyshev's second operator with ``lambda_max = 2``: ``-S^-1/2 A S^-1/2``, S at the source.

    PyG's ``get_laplacian(normalization="sym")`` sums weights at ``edge_index[0]`` (the source).

    Shapes:
        adj: (..., V, V) -> (..., V, V)
    """
    dis = _inv_sqrt(adj.sum(-2))  # deg[j] = sum_i adj[i, j]: weight leaving j
    return -(dis[..., :, None] * adj * dis[..., None, :])


def state_adjacency(adj: Tensor) -> Tensor:
    """Bi-normalised adjacency ``R^-1/2 A S^-1/2`` (R: in-degrees, S: out-degrees).

    Its spectral norm is at most 1 for every non-negative ``A`` (Schur test), so GraphConv's
    neighbour term cannot amplify the state. Used by the state-side ``graphconv`` operators.

    Shapes:
        adj: (..., V, V) -> (..., V, V)
    """
    r = _inv_sqrt(adj.sum(-1))
    s = _inv_sqrt(adj.sum(-2))
    return r[..., :, None] * adj * s[..., None, :]


def _operators(conv_type: str, adj: Tensor, state: bool) -> list[Tensor | None]:
    """Each operator of a convolution type, None for the identity (state: graphconv's bounded adjacency)."""
    if conv_type == "gcnconv":
        return [gcn_mix(adj)]
    if conv_type == "chebconv":
        return [None, cheb_mix(adj)]
    if conv_type == "graphconv":
        return [None, state_adjacency(adj) if state else adj]
    if conv_type == "none":
        return [None]
    raise ValueError(f"conv_type {conv_type!r} has no dense operator (fused types: {FUSED_CONV_TYPES})")


def _stack(ops: list[Tensor | None], like: Tensor) -> Tensor:
    """(batch, T, K, V, V) from K operators (None: the identity) shaped like ``like`` (batch, T, V, V)."""
    if not ops:
        return like.new_zeros(*like.shape[:2], 0, *like.shape[2:])
    eye = torch.eye(like.shape[-1], dtype=like.dtype, device=like.device).expand(like.shape)
    return torch.stack([eye if o is None else o for o in ops], dim=2)


def input_mix(conv_type: str, adj: Tensor) -> Tensor:
    """Vertex operators of the input-side convolution (PyG semantics, no stabilisation).

    Shapes:
        adj: (batch, T, V, V) -> mix (batch, T, K, V, V)
    """
    return _stack(_operators(conv_type, adj, state=False), adj)


def state_mix(conv_type: str, adj: Tensor, implicit_identity: bool = False) -> Tensor:
    """Vertex operators of the state-side convolutions (spectral norm <= 1 for symmetric graphs).

    Same as :func:`input_mix` except that ``graphconv`` uses :func:`state_adjacency`. ``implicit_identity``
    leaves out the identity operator that graphconv, chebconv and none start with; the graph scan then applies the
    first W without vertex mixing (W has one operator more than mix), which skips its vertex products.

    Shapes:
        adj: (batch, T, V, V) -> mix (batch, T, K, V, V), K one less with ``implicit_identity`` (gcnconv: K 1)
    """
    ops = _operators(conv_type, adj, state=True)
    if implicit_identity and ops[0] is None:
        ops = ops[1:]
    return _stack(ops, adj)


def operator_weights(conv_type: str, layer: torch.nn.Module | None, n: int, like: Tensor) -> Tensor:
    """``W`` (K, n, n) of a PyG layer: ``lin.weight.T`` per operator (identity for ``none``)."""
    if conv_type == "gcnconv":
        return layer.lin.weight.t().unsqueeze(0)
    if conv_type == "chebconv":
        return torch.stack([layer.lins[0].weight.t(), layer.lins[1].weight.t()])
    if conv_type == "graphconv":
        return torch.stack([layer.lin_root.weight.t(), layer.lin_rel.weight.t()])
    if conv_type == "none":
        return torch.eye(n, dtype=like.dtype, device=like.device).unsqueeze(0)
    raise ValueError(f"conv_type {conv_type!r} has no dense operator (fused types: {FUSED_CONV_TYPES})")


def bound_scale(weights: Tensor | list[Tensor]) -> Tensor:
    """``max(1, sum_k sqrt(||W_k||_1 ||W_k||_inf))``: dividing by it makes ``sum_k ||W_k||_2 <= 1``.

    ``weights``: the K matrices stacked (K, n, n), or a list of them. Differentiable (a sub-gradient at the kinks);
    ``||W||_2 <= sqrt(||W||_1 ||W||_inf)`` holds for every matrix, and the bound is exact for scaled identities and
    permutations. The same nine ops for any K (the fused path's host work: one launch each on a GPU).
    """
    a = (weights if isinstance(weights, Tensor) else torch.stack(list(weights))).abs()
    # per operator: max column sum (||W||_1) times max row sum (||W||_inf)
    return torch.sqrt(a.sum(-2).amax(-1) * a.sum(-1).amax(-1)).sum().clamp_min(1.0)
