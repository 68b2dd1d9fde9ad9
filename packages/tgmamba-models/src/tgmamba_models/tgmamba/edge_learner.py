"""EdgeLearner: per-step dense edge weights learned from the block's input, fully vectorised."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ssm_kernels import edge_weights_fn

__all__ = ["EdgeLearner", "EdgeLearnerState"]


@dataclass
class EdgeLearnerState:
    """Streaming state: running sum of the inputs (for the causal mean) and the step count."""

    running_sum: Tensor | None  # (batch, V, d_model)
    count: int = 0


class EdgeLearner(nn.Module):
    """Learns the graph each TGMamba step uses, from the block input and the given graph.

    With ``adj0`` the given graph (zeros without edges) and ``h_t`` the block input at step t:

    1. attention graph (``use_attention``): ``q = Q h, k = K h`` per vertex,
       ``S = softmax_j(q_i . k_j / (sqrt(d_model) * attn_softmax_temp))``, symmetrised
       ``(S + S^T) / 2``, entries below ``attn_threshold`` set to 0, plus ``adj0`` as a skip:
       ``base_t = prune(sym(S_t)) + adj0``. With ``attn_time_varying`` the attention uses
       ``h_t``; otherwise the causal running mean ``mean_{s <= t} h_s`` (the original used the
       mean over the whole clip, which a stream cannot know; the running mean makes streaming
       exact and equals the original's graph at the last step). Without attention
       ``base_t = adj0``.
    2. time-varying edge MLP (``time_varying``): vertex embeddings ``g_t = MLP(h_t)``
       (``num_layers`` linear layers, SiLU between), dynamic weights
       ``dyn_t[i, j] = sigmoid(g_t[i] . g_t[j] / sqrt(d_model))`` re-weight the existing edges:
       ``adj_t = s * base_t + (1 - s) * dyn_t * [base_t > 0]`` with the learnable skip weight
       ``s`` (initialised to ``init_skip_param``, clamped to [0, 1]).
    3. self loops are removed (each graph convolution has its own rule for them).

    All steps are computed at once; step t depends only on inputs up to t (causal), so
    :meth:`step` reproduces :meth:`forward` exactly. Weights are non-negative and receive
    gradients (pruned entries have zero gradient).

    Shapes:
        forward(h (batch, V, L, d_model), adj0 (batch or 1, T0, V, V) or None) -> (batch, T, V, V)
        with T = L when attention or the edge MLP is on (or adj0 is per-step), else T = T0 (1).
    """

    def __init__(
        self,
        d_model: int,
        num_vertices: int,
        num_layers: int = 1,
        use_attention: bool = True,
        time_varying: bool = True,
        attn_time_varying: bool = False,
        attn_threshold: float = 0.1,
        attn_softmax_temp: float = 0.01,
        init_skip_param: float = 0.25,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.num_vertices = num_vertices
        self.use_attention = use_attention
        self.time_varying = time_varying
        self.attn_time_varying = attn_time_varying
        self.attn_threshold = float(attn_threshold)
        self.attn_softmax_temp = float(attn_softmax_temp)
        if use_attention:
            self.qk_proj = nn.Linear(d_model, 2 * d_model, **fk)
        if time_varying:
            layers: list[nn.Module] = []
            for i in range(num_layers):
                layers.append(nn.Linear(d_model, d_model, **fk))
                if i < num_layers - 1:
                    layers.append(nn.SiLU())
            self.edge_mlp = nn.Sequential(*layers)
            self.skip_param = nn.Parameter(torch.tensor(float(init_skip_param), **fk))

    @property
    def is_time_varying(self) -> bool:
        return self.use_attention or self.time_varying

    def _qk(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """The attention's query and key embeddings of h (..., V, d_model), in at least fp32 (also for a bf16
        module): the temperature sharpens the logits (x 17.7 at d_model 32 and the default 0.01), so bf16 products
        would move them by whole units and flip edges of the thresholded graph (under bf16 autocast the gradients of
        qk_proj were 18-21% off the fp32 run's)."""
        dt = torch.promote_types(h.dtype, torch.float32)
        bias = self.qk_proj.bias
        q, k = F.linear(h.to(dt), self.qk_proj.weight.to(dt), None if bias is None else bias.to(dt)).chunk(2, dim=-1)
        return q, k

    def _no_autocast(self, h: Tensor) -> tuple[contextlib.AbstractContextManager, Tensor]:
        """The learner runs with autocast off, in its parameters' dtype or h's, whichever is wider (fp32 under
        bf16 autocast): its products are small (V x V per step), and in bf16 the sigmoid edge weights' rounding
        moved the learnable skip weight's gradient, a sum of signed terms over every edge and step, by 19%."""
        p = next(self.parameters(), None)
        dt = h.dtype if p is None else torch.promote_types(h.dtype, p.dtype)
        return torch.autocast(h.device.type, enabled=False), h.to(dt)

    def _combine(self, h: Tensor, adj0: Tensor | None, h_attn: Tensor | None) -> Tensor:
        """h, h_attn (batch, T, V, d) time-major; adj0 broadcastable to (batch, T, V, V).

        The graph itself is :func:`ssm_kernels.edge_weights_fn` (one fused Triton kernel on CUDA, the same maths in
        PyTorch elsewhere); this module computes its embeddings."""
        b, T, V, _ = h.shape
        q = k = g = skip = None
        if self.use_attention:
            q, k = self._qk(h_attn)
        elif adj0 is None:  # no attention, no graph: no edges
            return h.new_zeros(b, T if self.time_varying else 1, V, V)
        if self.time_varying:
            g = self.edge_mlp(h)
            skip = self.skip_param.clamp(0.0, 1.0)
        if q is None and g is None:  # the given graph as it is
            return adj0.to(h.dtype).masked_fill(torch.eye(V, dtype=torch.bool, device=adj0.device), 0.0)
        scale = 1.0 / (self.d_model**0.5 * self.attn_softmax_temp)
        return edge_weights_fn(
            q, k, g, adj0, skip, attn_scale=scale, threshold=self.attn_threshold, dyn_scale=self.d_model**-0.5
        )

    def forward(self, h: Tensor, adj0: Tensor | None = None) -> Tensor:
        """Per-step dense edge weights (see the class docstring).

        Shapes:
            h: (batch, V, L, d_model); adj0: (batch or 1, 1 or L, V, V) or None
            returns (batch, T, V, V), T = L if time-varying (or adj0 per-step) else 1.
        """
        ctx, h = self._no_autocast(h)
        with ctx:
            return self._forward(h, adj0)

    def _forward(self, h: Tensor, adj0: Tensor | None) -> Tensor:
        b, V, L, _ = h.shape
        ht = h.transpose(1, 2)  # (b, L, V, d)
        if not self.is_time_varying:
            if adj0 is None:
                return h.new_zeros(b, 1, V, V)
            return self._combine(ht[:, :1], adj0, None).expand(b, -1, V, V)
        h_attn = ht
        if self.use_attention and not self.attn_time_varying:
            counts = torch.arange(1, L + 1, device=h.device, dtype=h.dtype).view(1, L, 1, 1)
            h_attn = ht.cumsum(1) / counts  # causal running mean
        out = self._combine(ht, adj0, h_attn)
        return out.expand(b, -1, V, V) if out.shape[0] != b else out

    def init_state(self, batch: int, device=None, dtype=None) -> EdgeLearnerState:
        """Fresh streaming state for ``batch`` samples."""
        need = self.use_attention and not self.attn_time_varying
        rs = torch.zeros(batch, self.num_vertices, self.d_model, device=device, dtype=dtype) if need else None
        return EdgeLearnerState(running_sum=rs, count=0)

    def step(self, h_t: Tensor, adj0: Tensor | None, state: EdgeLearnerState) -> Tensor:
        """One streaming step; updates ``state`` in place.

        Shapes:
            h_t: (batch, V, d_model); adj0: (batch or 1, 1, V, V) or None -> (batch, 1, V, V)
        """
        ctx, h_t = self._no_autocast(h_t)
        with ctx:
            return self._step(h_t, adj0, state)

    def _step(self, h_t: Tensor, adj0: Tensor | None, state: EdgeLearnerState) -> Tensor:
        b, V, _ = h_t.shape
        ht = h_t.unsqueeze(1)  # (b, 1, V, d)
        state.count += 1
        h_attn = ht
        if self.use_attention and not self.attn_time_varying:
            state.running_sum.add_(h_t.to(state.running_sum.dtype))
            h_attn = (state.running_sum / state.count).to(h_t.dtype).unsqueeze(1)
        if not self.is_time_varying and adj0 is None:
            return h_t.new_zeros(b, 1, V, V)
        out = self._combine(ht, adj0, h_attn)
        return out.expand(b, -1, V, V) if out.shape[0] != b else out

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_vertices={self.num_vertices}, attention={self.use_attention}, "
            f"time_varying={self.time_varying}, attn_time_varying={self.attn_time_varying}, "
            f"attn_threshold={self.attn_threshold}, attn_softmax_temp={self.attn_softmax_temp}"
        )
