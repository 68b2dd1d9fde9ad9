"""TGMambaClassifier: the original LightGTMamba network (without its training loop)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from .block import TGMamba, TGMambaInferenceCache, _make_conv
from .config import TGMambaClassifierConfig
from .graph_ops import check_edges_structure, dense_adjacency, dense_to_edges, edge_value_flags, raise_flags

__all__ = ["TGMambaClassifier", "TGMambaClassifierCache"]


@dataclass
class TGMambaClassifierCache:
    """Streaming state of the classifier: the blocks' caches and the running sequence pool."""

    blocks: list[TGMambaInferenceCache]
    pooled: Tensor | None = None  # (batch, V, d_model): running sum (mean), running max, or last
    count: int = 0
    graph: Tensor | None = field(default=None)  # the input graph (batch or 1, 1, V, V)


class TGMambaClassifier(nn.Module):
    """Graph-temporal classifier: ``in_proj`` -> ``num_layers`` TGMamba blocks -> pools -> head.

    Input forms (``forward(data)`` or ``forward(x, edge_index, edge_weight, batch)``):

    * a PyG ``Data``/``Batch`` with ``x`` (batch * V, L, in_features), ``edge_index`` (PyG-batched
      node ids), optional ``edge_weight`` (or a 1-D ``edge_attr``) and optional ``batch``; every
      graph must have exactly ``num_vertices`` vertices, in order;
    * plain tensors: ``x`` (batch, V, L, in_features) with a graph shared by all samples,
      ``edge_index`` (2, E) in ``[0, V)`` and ``edge_weight`` (E,) (or no edges);
    * ``x`` (batch * V, L, in_features) with PyG-batched ``edge_index``.

    Each block receives the input graph, or with ``pass_edges`` the graph the previous block
    learned. Dropout follows every block; ``final_gconv`` applies one PyG graph convolution to
    the time-pooled vertex features (over the input graph); then vertex pooling and a linear head.

    Shapes:
        returns logits (batch, num_classes).
    """

    def __init__(self, config: TGMambaClassifierConfig, device=None, dtype=None) -> None:
        super().__init__()
        if not isinstance(config, TGMambaClassifierConfig):
            raise TypeError(f"config must be a TGMambaClassifierConfig, got {type(config).__name__}")
        self.config = config
        fk = {"device": device, "dtype": dtype}
        self.num_vertices = config.num_vertices
        self.in_proj = nn.Linear(config.in_features, config.d_model, **fk)
        self.blocks = nn.ModuleList(
            TGMamba.from_config(config.block_config(layer_idx=i), **fk) for i in range(config.num_layers)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.final_conv = _make_conv(config.conv_type, config.d_model, device, dtype) if config.final_gconv else None
        self.head = nn.Linear(config.d_model, config.num_classes, **fk)
        self.validate_inputs = True

    # ------------------------------------------------------------------ io
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` to ``directory``."""
        from ..serialization import save_module

        save_module(directory, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device=None, dtype=None) -> TGMambaClassifier:
        """Load a classifier written by :meth:`save_pretrained`."""
        from ..serialization import load_config, load_state_dict

        model = cls(load_config(directory, TGMambaClassifierConfig), device=device, dtype=dtype)
        model.load_state_dict(load_state_dict(directory, device=device or "cpu"))
        return model

    # ------------------------------------------------------------------ inputs
    def _unpack(self, x, edge_index, edge_weight, batch, step: bool = False):
        """Normalise the input forms to (x (batch * V, [L,] F), adj0 or None, batch_size)."""
        if not isinstance(x, Tensor) and hasattr(x, "x"):
            data = x
            x = data.x
            edge_index = getattr(data, "edge_index", None) if edge_index is None else edge_index
            if edge_weight is None:
                edge_weight = getattr(data, "edge_weight", None)
                ea = getattr(data, "edge_attr", None)
                if edge_weight is None and isinstance(ea, Tensor) and ea.dim() == 1:
                    edge_weight = ea
            batch = getattr(data, "batch", None) if batch is None else batch
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor or a PyG Data/Batch, got {type(x).__name__}")
        V, F_in = self.num_vertices, self.config.in_features
        plain_dim = 3 if step else 4
        if x.dim() not in (plain_dim - 1, plain_dim):
            want = "(batch * V, in_features) or (batch, V, in_features)" if step else (
                "(batch * V, L, in_features) or (batch, V, L, in_features)")  # fmt: skip
            raise ValueError(f"x must have shape {want}, got {tuple(x.shape)}")
        if x.shape[-1] != F_in:
            raise ValueError(f"x has feature size {x.shape[-1]} but the classifier has in_features={F_in}")
        if not x.is_floating_point():
            raise TypeError(f"x must be floating point, got {x.dtype}")
        flags = [("x contains NaN or inf", ~torch.isfinite(x).all())] if self.validate_inputs else []
        shared = x.dim() == plain_dim
        if shared:
            if x.shape[1] != V:
                raise ValueError(f"x has {x.shape[1]} vertices along dim 1 but num_vertices={V}")
            bsz = x.shape[0]
            x = x.reshape(bsz * V, *x.shape[2:])
        else:
            if x.shape[0] == 0 or x.shape[0] % V != 0:
                raise ValueError(
                    f"x has {x.shape[0]} rows (batch * num_vertices), not a positive multiple of num_vertices={V}"
                )
            bsz = x.shape[0] // V
            if batch is not None:
                msg = (
                    f"batch must assign exactly num_vertices={V} consecutive rows to each graph (graphs of equal size)"
                )
                want = torch.arange(bsz, device=batch.device).repeat_interleave(V)
                if batch.shape != want.shape:
                    raise ValueError(msg)
                if self.validate_inputs:
                    flags.append((msg, (batch.long() != want).any()))
        adj0 = None
        if edge_index is not None:
            check_edges_structure(edge_index, edge_weight)
            if self.validate_inputs:
                flags += edge_value_flags(edge_index, edge_weight, V if shared else bsz * V, None if shared else V)
        raise_flags(flags)
        if edge_index is not None:
            adj0 = dense_adjacency(edge_index, edge_weight, bsz, V, shared=shared, dtype=x.dtype, validate=False)
        elif edge_weight is not None:
            raise ValueError("edge_weight was given without edge_index")
        return x, adj0, bsz

    def _head(self, pooled: Tensor, adj0: Tensor | None) -> Tensor:
        """pooled (batch, V, d_model) -> logits (batch, num_classes)."""
        b, V, d = pooled.shape
        if self.final_conv is not None:
            g = pooled.new_zeros(b, V, V) if adj0 is None else adj0[:, 0].expand(b, V, V)
            ei, ew = dense_to_edges(g)
            kw = {"edge_attr": ew.unsqueeze(-1)} if self.config.conv_type == "gatv2conv" else {"edge_weight": ew}
            pooled = self.final_conv(pooled.reshape(b * V, d), ei, **kw).view(b, V, d)
        if self.config.vertex_pool_type == "mean":
            out = pooled.mean(1)
        else:
            out = pooled.amax(1)
        return self.head(out)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: Any,
        edge_index: Tensor | None = None,
        edge_weight: Tensor | None = None,
        batch: Tensor | None = None,
    ) -> Tensor:
        """Logits for a batch of graph signals (see the class docstring for the input forms).

        Shapes:
            x: (batch * V, L, F) or (batch, V, L, F) or a PyG Batch -> logits (batch, num_classes).
        """
        x, adj0, bsz = self._unpack(x, edge_index, edge_weight, batch)
        V, L = self.num_vertices, x.shape[1]
        h = self.in_proj(x)  # (bV, L, d_model)
        graph = adj0
        for block in self.blocks:
            out, learned = block(h, adj=graph, return_graph=True)
            h = self.dropout(out + h if self.config.residual else out)
            if self.config.pass_edges:
                graph = learned
        h = h.view(bsz, V, L, -1)
        if self.config.seq_pool_type == "last":
            pooled = h[:, :, -1]
        elif self.config.seq_pool_type == "mean":
            pooled = h.mean(2)
        else:
            pooled = h.amax(2)
        return self._head(pooled, adj0)

    # ------------------------------------------------------------------ streaming
    def allocate_inference_cache(self, batch_size: int, dtype=None, device=None) -> TGMambaClassifierCache:
        """Streaming state for ``batch_size`` samples (O(1) in the stream length)."""
        return TGMambaClassifierCache(
            blocks=[blk.allocate_inference_cache(batch_size, dtype=dtype, device=device) for blk in self.blocks]
        )

    @torch.no_grad()
    def step(
        self,
        x_t: Any,
        cache: TGMambaClassifierCache,
        edge_index: Tensor | None = None,
        edge_weight: Tensor | None = None,
    ) -> Tensor:
        """Feed ONE time sample; returns the logits of the stream so far.

        After t steps the logits equal ``forward`` on the first t samples (same graph each step).

        Shapes:
            x_t: (batch * V, F) or (batch, V, F) -> logits (batch, num_classes).
        """
        x_t, adj0, bsz = self._unpack(x_t, edge_index, edge_weight, None, step=True)
        h = self.in_proj(x_t)  # (bV, d_model)
        graph = adj0
        for block, bc in zip(self.blocks, cache.blocks):
            out, learned = block.step(h, bc, adj=graph, return_graph=True)
            h = out + h if self.config.residual else out
            if self.config.pass_edges:
                graph = learned
        h = h.view(bsz, self.num_vertices, -1)
        kind = self.config.seq_pool_type
        cache.count += 1
        if cache.pooled is None or kind == "last":
            cache.pooled = h.clone()
        elif kind == "mean":
            cache.pooled.add_(h)
        else:
            torch.maximum(cache.pooled, h, out=cache.pooled)
        pooled = cache.pooled / cache.count if kind == "mean" else cache.pooled
        return self._head(pooled, adj0)
