"""Distance-kernel electrode graphs (Tang et al., ICLR 2022, "Self-supervised graph neural networks for
improved electroencephalographic seizure analysis"): w_ij = exp(-d_ij^2 / sigma^2) on the Euclidean distances
between electrode positions, sigma = standard deviation of the off-diagonal distances, then thresholded
(top-k neighbours per vertex, and/or weights above kappa), symmetrised."""

from __future__ import annotations

import numpy as np
import torch

from .electrodes import electrode_positions

__all__ = ["distance_graph", "fully_connected_graph", "graph_for_channels"]


def _to_edges(adj: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    src, dst = np.nonzero(adj.T)  # adj[i, j]: weight with which j reaches i; edge j -> i
    edge_index = torch.from_numpy(np.stack([src, dst]).astype(np.int64))
    edge_weight = torch.from_numpy(adj[dst, src].astype(np.float32))
    return edge_index, edge_weight


def distance_graph(
    positions: np.ndarray, top_k: int | None = 3, threshold: float | None = None, self_loops: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian-kernel graph on electrode distances.

    Args:
        positions: electrode coordinates.
        top_k: keep, for every vertex, the edges to its ``top_k`` strongest neighbours (then symmetrise:
            an edge is kept if either end selected it). None keeps all.
        threshold: drop weights below this value (kappa). None keeps all.
        self_loops: add (i, i) edges with weight 1.

    Shapes:
        positions: (V, 3). Returns edge_index (2, E) int64 (row 0 source j, row 1 target i) and
        edge_weight (E,) float32 in (0, 1].
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[0] < 2:
        raise ValueError(f"positions must be (V, dims) with V >= 2, got shape {pos.shape}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    V = pos.shape[0]
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)  # (V, V)
    off = ~np.eye(V, dtype=bool)
    sigma = float(d[off].std())
    if sigma <= 0:
        raise ValueError("positions must not all coincide (distance std is zero)")
    w = np.exp(-(d**2) / sigma**2)
    np.fill_diagonal(w, 0.0)
    keep = np.ones_like(w, dtype=bool)
    if top_k is not None and top_k < V - 1:
        order = np.argsort(-w, axis=1, kind="stable")[:, :top_k]
        sel = np.zeros_like(keep)
        np.put_along_axis(sel, order, True, axis=1)
        keep = sel | sel.T
    if threshold is not None:
        keep &= w >= threshold
    adj = np.where(keep & off, w, 0.0)
    if self_loops:
        adj = adj + np.eye(V)
    return _to_edges(adj)


def fully_connected_graph(num_vertices: int, self_loops: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered pair (i != j) with weight 1 (plus self loops if asked).

    Shapes: returns edge_index (2, E) int64, edge_weight (E,) float32.
    """
    adj = np.ones((num_vertices, num_vertices)) - (0.0 if self_loops else np.eye(num_vertices))
    return _to_edges(adj)


def graph_for_channels(
    channels: list[str], top_k: int | None = 3, threshold: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance graph for named channels (electrodes or bipolar derivations); see :func:`distance_graph`."""
    return distance_graph(electrode_positions(channels), top_k=top_k, threshold=threshold)
