"""TGMamba: a Mamba block whose state is mixed over the vertices of a (learned, per-step) graph."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from einops import repeat
from torch import Tensor
from torch_geometric.nn import ChebConv, GATv2Conv, GCNConv, GraphConv

from ssm_kernels import (
    RMSNormGated,
    causal_conv1d_fn,
    causal_conv1d_update,
    graph_selective_scan_fn,
    vertex_mix_fn,
)

from .config import TGMambaConfig
from .edge_learner import EdgeLearner, EdgeLearnerState
from .graph_ops import (
    FUSED_CONV_TYPES,
    bound_scale,
    cheb_mix,
    check_edges_structure,
    dense_adjacency,
    dense_to_edges,
    edge_value_flags,
    gcn_mix,
    operator_weights,
    raise_flags,
    state_adjacency,
    state_mix,
)

__all__ = ["TGMamba", "TGMambaInferenceCache"]

PATHS = ("auto", "fused", "reference")


@dataclass
class TGMambaInferenceCache:
    """Streaming state of one TGMamba block: O(1) in the sequence length.

    Shapes:
        conv_state: (batch * V, d_inner, d_conv) last inputs of the causal conv;
        ssm_state: (batch, V, d_inner, d_state) float32; edge_state: the edge learner's running mean.
    """

    conv_state: Tensor
    ssm_state: Tensor
    edge_state: EdgeLearnerState | None
    seqlen_offset: int = 0


def _make_conv(conv_type: str, dim: int, device, dtype) -> nn.Module | None:
    if conv_type == "gcnconv":
        layer = GCNConv(dim, dim, bias=False)
    elif conv_type == "chebconv":
        layer = ChebConv(dim, dim, K=2, normalization="sym", bias=False)
    elif conv_type == "graphconv":
        layer = GraphConv(dim, dim, aggr="add", bias=False)
    elif conv_type == "gatv2conv":
        layer = GATv2Conv(dim, dim, heads=1, concat=False, bias=False, edge_dim=1)
    else:
        return None
    return layer.to(device=device, dtype=dtype)


def _init_lazy_diffusion(conv_type: str, layer: nn.Module | None) -> None:
    """State-side init: the operator starts as a lazy diffusion ``0.5 (I + A_norm)`` (GCN: its own norm).

    With the identity in the weights the recurrence starts as Mamba's (memory kept), plus
    neighbour mixing; PyG's random init would scramble the state at every step instead.
    """
    if layer is None:
        return
    with torch.no_grad():
        n = next(layer.parameters()).shape[-1]
        eye = torch.eye(n)
        if conv_type == "gcnconv":
            layer.lin.weight.copy_(eye)
        elif conv_type == "chebconv":
            layer.lins[0].weight.copy_(0.5 * eye)
            layer.lins[1].weight.copy_(-0.5 * eye)
        elif conv_type == "graphconv":
            layer.lin_root.weight.copy_(0.5 * eye)
            layer.lin_rel.weight.copy_(0.5 * eye)
        elif conv_type == "gatv2conv":
            layer.lin_l.weight.copy_(eye)


INPUT_CONV_CHANNELS_MIN_LEN = 64
"""From this many steps on, the input graph convolution runs on the channel-major layout (see
``TGMamba._input_conv_dense``). On the H200, the block's fwd+bwd CUDA-graphed, same run (run28d): at the raw shape
(L = 2000) channel-major 57.8 against 58.4 ms fp32 and 46.2 against 47.6 ms under bf16 autocast (six permuted
(b, L, V, D) copies, a batched product over b * L and the scan's copy of its input gone); at the TUSZ shape (L = 10)
time-major 4.47 against 4.69 ms fp32 and 3.85 against 4.07 ms bf16."""


def _input_conv_layout(L: int) -> str:
    """``TGMAMBA_INPUT_CONV_LAYOUT``: ``auto`` (default: channels from INPUT_CONV_CHANNELS_MIN_LEN steps on),
    ``channels`` or ``time``."""
    choice = os.environ.get("TGMAMBA_INPUT_CONV_LAYOUT", "auto")
    if choice == "auto":
        return "channels" if L >= INPUT_CONV_CHANNELS_MIN_LEN else "time"
    if choice not in ("channels", "time"):
        raise ValueError(f"TGMAMBA_INPUT_CONV_LAYOUT={choice!r}: expected auto, channels or time")
    return choice


class TGMamba(nn.Module):
    r"""TGMamba block: Mamba's selective scan with graph convolutions on the input, state and readout.

    Steps (x is ``(batch * V, L, d_model)``, rows ordered ``b * V + v`` as in a PyG ``Batch``):
    ``in_proj`` -> x, z; depthwise causal conv over time + SiLU; ``x_proj``/``dt_proj`` -> delta, B,
    C; the :class:`EdgeLearner` -> per-step dense edge weights ``adj`` ``(batch, T, V, V)``; the
    input-side graph conv ``gconv_B`` over channels, all steps at once; the graph selective scan
    (``ssm_kernels.graph_selective_scan_fn``) whose state update is ``gconv_A`` and readout
    ``gconv_C`` (per ``(b, d)``, mixing the ``V`` vertices' states); the D skip; gating by gated
    RMSNorm (``rmsnorm``) or SiLU; ``out_proj``.

    Graph semantics: ``adj[b, t, i, j]`` weighs vertex j's contribution to vertex i at step t;
    mixing happens between the V vertices of one sample, separately for each channel d (the
    original mixed unrelated rows). Graphs carry no self loops (given ones are dropped).

    Graph used without edges: the given graph is empty (``adj0 = 0``): with the edge learner's
    attention on, vertices are still connected by the attention graph; otherwise each vertex only
    sees itself. ``num_vertices`` defaults to 1, so by default every row of ``x`` is its own
    one-vertex graph and any batch works (the original README's example).

    Stability (raw EEG at L = 2000 stays finite): the state-side operator is a contraction in
    Frobenius norm: GraphConv's adjacency is bi-normalised (``R^-1/2 A S^-1/2``, spectral norm
    <= 1 for any non-negative A), GCN/Cheb use their own symmetric normalisations (spectral norm
    <= 1 for symmetric graphs, which the edge learner produces from symmetric inputs), and the
    state weights ``W_k`` are divided by ``max(1, sum_k sqrt(||W_k||_1 ||W_k||_inf))`` so
    ``sum_k ||W_k||_2 <= 1``; ``exp(Delta A) <= 1`` elementwise. So ``||H_t||_F <= ||H_{t-1}||_F +
    ||Delta B u||_F``: no geometric growth. The state weights start as a lazy diffusion
    ``0.5 (I + A_norm)`` (GCN: ``I``) so the recurrence starts close to Mamba's.

    Paths: ``fused`` builds ``(mix, W)`` from the PyG layers' weights and calls the graph scan
    (gcnconv, chebconv, graphconv, none); ``reference`` applies the PyG layers per time step
    (every conv type; the only path for gatv2conv). Both compute the same function.

    Shapes:
        forward(x (batch * V, L, d_model), edge_index (2, E) or None, edge_weight (E,) or None)
        -> (batch * V, L, d_model); with ``return_graph`` also ``adj`` (batch, T, V, V).
    """

    def __init__(
        self,
        d_model: int = 16,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        num_vertices: int = 1,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        conv_type: str = "gcnconv",
        rmsnorm: bool = True,
        edge_learner_layers: int = 1,
        edge_learner_attention: bool = True,
        edge_learner_time_varying: bool = True,
        attn_time_varying: bool = False,
        attn_threshold: float = 0.1,
        attn_softmax_temp: float = 0.01,
        init_skip_param: float = 0.25,
        readout_conv: bool = True,
        layer_idx: int | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        cfg = TGMambaConfig(
            d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand, num_vertices=num_vertices,
            dt_rank=dt_rank, dt_min=dt_min, dt_max=dt_max, dt_init=dt_init, dt_scale=dt_scale,
            dt_init_floor=dt_init_floor, conv_bias=conv_bias, bias=bias, conv_type=conv_type, rmsnorm=rmsnorm,
            edge_learner_layers=edge_learner_layers, edge_learner_attention=edge_learner_attention,
            edge_learner_time_varying=edge_learner_time_varying, attn_time_varying=attn_time_varying,
            attn_threshold=attn_threshold, attn_softmax_temp=attn_softmax_temp, init_skip_param=init_skip_param,
            readout_conv=readout_conv, layer_idx=layer_idx,
        )  # fmt: skip
        self.config = cfg
        fk = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner, self.dt_rank = cfg.d_inner, cfg.dt_rank
        self.num_vertices = num_vertices
        self.conv_type = conv_type
        self.rmsnorm = rmsnorm
        self.layer_idx = layer_idx
        # NaN/inf in x and edge range/weight checks (a few device syncs); set False for CUDA-graph
        # capture or tight loops (then out-of-range edges are undefined behaviour)
        self.validate_inputs = True
        # long sequences (L >= checkpoint_graph_min_len): recompute in backward, instead of storing, the graph
        # construction and input convolution (checkpoint_graph) and the gated norm's output that out_proj would
        # keep (checkpoint_norm: one (batch * V, L, d_inner) tensor, 148 MiB at batch 16, V 19, L 2000), and
        # the x half of in_proj with the causal conv (checkpoint_conv: the conv would keep all of in_proj's
        # (batch * V, L, 2 * d_inner) output alive, since z is a view of it; 148 MiB at the same shape)
        self.checkpoint_graph = True
        self.checkpoint_norm = True
        self.checkpoint_conv = True
        self.checkpoint_graph_min_len = 256
        # fused path: graphconv / chebconv / none pass their state operators without the leading identity (the
        # graph scan's implicit identity first operator: W has one operator more than mix), so the scan skips
        # that operator's vertex products; False stores the identity (same function, for A/B timing)
        self.implicit_identity = True

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **fk)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner, padding=d_conv - 1,
            bias=conv_bias, **fk,
        )  # fmt: skip
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **fk)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **fk)
        dt_init_std = self.dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                nn.init.constant_(self.dt_proj.weight, dt_init_std)
            else:
                nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(
                min=dt_init_floor
            )
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.dt_proj.bias._no_reinit = True
        A = repeat(torch.arange(1, d_state + 1, dtype=torch.float32), "n -> d n", d=self.d_inner)
        self.A_log = nn.Parameter(torch.log(A).to(device=device))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True

        self.edge_learner = None
        if conv_type != "none":
            self.edge_learner = EdgeLearner(
                d_model, num_vertices, num_layers=edge_learner_layers, use_attention=edge_learner_attention,
                time_varying=edge_learner_time_varying, attn_time_varying=attn_time_varying,
                attn_threshold=attn_threshold, attn_softmax_temp=attn_softmax_temp,
                init_skip_param=init_skip_param, **fk,
            )  # fmt: skip
        self.gconv_A = _make_conv(conv_type, d_state, device, dtype)
        self.gconv_B = _make_conv(conv_type, self.d_inner, device, dtype)
        self.gconv_C = _make_conv(conv_type, d_state, device, dtype) if readout_conv else None
        _init_lazy_diffusion(conv_type, self.gconv_A)
        _init_lazy_diffusion(conv_type, self.gconv_C)

        if rmsnorm:
            self.norm = RMSNormGated(self.d_inner, eps=1e-5, norm_before_gate=False, **fk)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **fk)

    # ------------------------------------------------------------------ construction / io
    @classmethod
    def from_config(cls, config: TGMambaConfig, device=None, dtype=None) -> TGMamba:
        kw = {k: v for k, v in asdict(config).items() if k != "d_inner"}
        return cls(**kw, device=device, dtype=dtype)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` to ``directory``."""
        from ..serialization import save_module

        save_module(directory, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device=None, dtype=None) -> TGMamba:
        """Load a block written by :meth:`save_pretrained`."""
        from ..serialization import load_config, load_state_dict

        model = cls.from_config(load_config(directory, TGMambaConfig), device=device, dtype=dtype)
        model.load_state_dict(load_state_dict(directory, device=device or "cpu"))
        return model

    # ------------------------------------------------------------------ input handling
    def _check_x(self, x: Tensor, name: str = "x", step: bool = False) -> tuple[int, int]:
        want = "(batch * num_vertices, d_model)" if step else "(batch * num_vertices, L, d_model)"
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape {want}, got {type(x).__name__}")
        if x.dim() != (2 if step else 3):
            raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
        if x.shape[-1] != self.d_model:
            raise ValueError(f"{name} has feature size {x.shape[-1]} but the block has d_model={self.d_model}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {x.dtype}")
        rows = x.shape[0]
        if rows == 0 or rows % self.num_vertices != 0:
            raise ValueError(
                f"{name} has {rows} rows (batch * num_vertices), not a positive multiple of num_vertices={self.num_vertices}"
            )
        if not step and x.shape[1] < 1:
            raise ValueError(f"{name} must have sequence length L >= 1, got shape {tuple(x.shape)}")
        return rows // self.num_vertices, (1 if step else x.shape[1])

    def _input_graph(self, edge_index, edge_weight, adj, batch: int, L: int, like: Tensor) -> Tensor | None:
        V = self.num_vertices
        if adj is not None:
            if edge_index is not None:
                raise ValueError("pass either edge_index/edge_weight or adj, not both")
            if not isinstance(adj, Tensor) or adj.dim() != 4 or adj.shape[-2:] != (V, V):
                shape = tuple(adj.shape) if isinstance(adj, Tensor) else type(adj).__name__
                raise ValueError(f"adj must have shape (batch or 1, 1 or L, {V}, {V}), got {shape}")
            if adj.shape[0] not in (1, batch) or adj.shape[1] not in (1, L):
                raise ValueError(f"adj must have shape ({batch} or 1, 1 or {L}, {V}, {V}), got {tuple(adj.shape)}")
            return adj.to(like.dtype)
        if edge_index is None:
            if edge_weight is not None:
                raise ValueError("edge_weight was given without edge_index")
            return None
        check_edges_structure(edge_index, edge_weight)
        return dense_adjacency(edge_index, edge_weight, batch, V, shared=False, dtype=like.dtype, validate=False)

    def _validate_values(self, x: Tensor, edge_index, edge_weight, batch: int, name: str = "x") -> None:
        """Value checks (NaN in x, edge ranges/samples/weights) with a single device sync."""
        if not self.validate_inputs:
            return
        flags = [(f"{name} contains NaN or inf", ~torch.isfinite(x).all())]
        if edge_index is not None:
            flags += edge_value_flags(edge_index, edge_weight, batch * self.num_vertices, self.num_vertices)
        raise_flags(flags)

    def _resolve_path(self, path: str) -> str:
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        if path == "auto":
            return "fused" if self.conv_type in FUSED_CONV_TYPES else "reference"
        if path == "fused" and self.conv_type not in FUSED_CONV_TYPES:
            raise ValueError(f"conv_type {self.conv_type!r} has no fused path (use path='reference')")
        return path

    def _learn_graph(self, x4: Tensor, adj0: Tensor | None) -> Tensor:
        """(batch, V, L, d_model) -> adj (batch, T, V, V)."""
        b, V = x4.shape[:2]
        if self.edge_learner is None:
            if adj0 is None:
                return x4.new_zeros(b, 1, V, V)
            return adj0.expand(b, -1, V, V)
        return self.edge_learner(x4, adj0)

    # ------------------------------------------------------------------ operators
    @property
    def _pdtype(self) -> torch.dtype:
        """Dtype of the scan's parameters A, D, delta_bias: float32, or float64 for a float64 block."""
        return torch.float64 if self.A_log.dtype == torch.float64 else torch.float32

    def _state_weights(self) -> tuple[Tensor, Tensor | None]:
        """W_A (bounded, see the class docstring) and W_C (K, N, N)."""
        like = self.A_log
        W_A = operator_weights(self.conv_type, self.gconv_A, self.d_state, like)
        if self.gconv_A is not None:
            W_A = W_A / bound_scale(W_A)
        W_C = None
        if self.gconv_C is not None:
            W_C = operator_weights(self.conv_type, self.gconv_C, self.d_state, like)
        return W_A, W_C

    def _input_conv_dense(self, u: Tensor, adj: Tensor) -> Tensor:
        """gconv_B on all steps at once: u (b, V, D, L), adj (b, T, V, V) -> (b, V, D, L).

        ``sum_k (mix_k @ u_t) @ W_k``, the identity operator's term without a (V, V) eye. Two layouts
        (:func:`_input_conv_layout`): ``channels`` works on u's channel-major layout without permuted copies: the
        channel products ``W_k^T u`` are one batched product with an expanded (not copied) weight, the vertex
        products ``ssm_kernels.vertex_mix_fn`` (a Triton kernel for per-step graphs on CUDA); ``time`` permutes u
        to (b, L, V, D) and uses plain GEMMs, better when rows of L steps are too short to read well.
        """
        if self.gconv_B is None:
            return u
        batch, V, D, L = u.shape
        W = operator_weights(self.conv_type, self.gconv_B, self.d_inner, u).to(u.dtype)  # (K, D, D)
        m = gcn_mix(adj) if self.conv_type == "gcnconv" else cheb_mix(adj) if self.conv_type == "chebconv" else adj
        if _input_conv_layout(L) == "time":
            ut = u.permute(0, 3, 1, 2)  # (b, L, V, D)
            m = m.to(u.dtype)
            if self.conv_type == "gcnconv":
                return (torch.matmul(m, ut) @ W[0]).permute(0, 2, 3, 1)
            return (ut @ W[0] + torch.matmul(m, ut) @ W[1]).permute(0, 2, 3, 1)
        u3 = u.reshape(batch * V, D, L)
        if self.conv_type == "gcnconv":
            p = torch.bmm(W[0].t().expand(batch * V, D, D), u3).view(batch, V, D, L)
            return vertex_mix_fn(p, m)
        # chebconv / graphconv: u W_0 + M_1 (u W_1), both channel products in one
        wt = W.transpose(1, 2).reshape(2 * D, D)  # rows: W_0^T then W_1^T
        pq = torch.bmm(wt.expand(batch * V, 2 * D, D), u3).view(batch, V, 2 * D, L)
        return vertex_mix_fn(pq[:, :, D:], m, residual=pq[:, :, :D])

    def _graph_and_state_mix(self, x4: Tensor, adj0: Tensor | None) -> tuple[Tensor, Tensor]:
        graph = self._learn_graph(x4, adj0)  # (b, T, V, V)
        return graph, state_mix(self.conv_type, graph.to(x4.dtype), implicit_identity=self.implicit_identity)

    def _scan_fused(
        self, u, delta, A, B, C, z, adj, initial_state=None, return_last_state=False, mix_A=None, u_conv=None
    ):
        u = self._input_conv_dense(u, adj) if u_conv is None else u_conv
        if mix_A is None:
            mix_A = state_mix(self.conv_type, adj.to(u.dtype), implicit_identity=self.implicit_identity)
        W_A, W_C = self._state_weights()  # one operator more than mix_A / mix_C where they start with the identity
        mix_C = mix_A if W_C is not None else None
        return u, graph_selective_scan_fn(
            u, delta, A, B, C, mix_A, W_A.to(u.dtype), mix_C, None if W_C is None else W_C.to(u.dtype),
            D=self.D.to(self._pdtype), z=z, delta_bias=self.dt_proj.bias.to(self._pdtype), delta_softplus=True,
            initial_state=initial_state, return_last_state=return_last_state,
        )  # fmt: skip

    # ---- per-step PyG reference (also the streaming path of gatv2conv)
    def _pyg(self, layer: nn.Module, x: Tensor, ei: Tensor, ew: Tensor, params: dict | None = None) -> Tensor:
        args = (x, ei)
        kwargs = {"edge_attr": ew.unsqueeze(-1)} if self.conv_type == "gatv2conv" else {"edge_weight": ew}
        if params:
            return torch.func.functional_call(layer, params, args, kwargs, strict=False)
        return layer(*args, **kwargs)

    def _ref_input_conv_step(self, u_t: Tensor, adj_t: Tensor) -> Tensor:
        """u_t (b, V, D), adj_t (b, V, V) -> (b, V, D) with the PyG layer gconv_B."""
        if self.gconv_B is None:
            return u_t
        b, V, D = u_t.shape
        ei, ew = dense_to_edges(adj_t.to(u_t.dtype))
        return self._pyg(self.gconv_B, u_t.reshape(b * V, D), ei, ew).view(b, V, D)

    def _state_params(self) -> dict[str, Tensor]:
        layer = self.gconv_A
        if self.conv_type == "gcnconv":
            names = ["lin.weight"]
        elif self.conv_type == "chebconv":
            names = ["lins.0.weight", "lins.1.weight"]
        elif self.conv_type == "graphconv":
            names = ["lin_root.weight", "lin_rel.weight"]
        elif self.conv_type == "gatv2conv":
            names = ["lin_l.weight"]
        else:
            return {}
        ws = [layer.get_parameter(n) for n in names]
        scale = bound_scale(ws)
        return {n: w / scale for n, w in zip(names, ws)}

    def _ref_state_step(self, H, u_t, dt_t, A, B_t, C_t, adj_t, params):
        """One step of the scan with the PyG layers, mixing vertices per (b, d).

        H (b, V, D, N); u_t, dt_t (b, V, D); B_t, C_t (b, V, N); adj_t (b, V, V) -> (H, y (b, V, D)).
        """
        b, V, D, N = H.shape
        if self.gconv_A is not None:
            adj_s = state_adjacency(adj_t) if self.conv_type == "graphconv" else adj_t
            ei, ew = dense_to_edges(adj_s.to(H.dtype), replicate=D)  # one graph per (b, d)
            nodes = H.permute(0, 2, 1, 3).reshape(b * D * V, N)
            P = self._pyg(self.gconv_A, nodes, ei, ew, params).view(b, D, V, N).permute(0, 2, 1, 3)
        else:
            P = H
        H = P * torch.exp(dt_t.unsqueeze(-1) * A) + (dt_t * u_t).unsqueeze(-1) * B_t.unsqueeze(2)
        if self.gconv_C is not None:
            nodes = H.permute(0, 2, 1, 3).reshape(b * D * V, N)
            G = self._pyg(self.gconv_C, nodes, ei, ew).view(b, D, V, N).permute(0, 2, 1, 3)
        else:
            G = H
        y = (G * C_t.unsqueeze(2)).sum(-1) + self.D.to(H.dtype) * u_t
        return H, y

    def _scan_reference(self, u, delta, A, B, C, z, adj, initial_state=None, return_last_state=False):
        b, V, D, L = u.shape
        T = adj.shape[1]
        cdt = torch.float64 if u.dtype == torch.float64 else torch.float32
        # per-step views from one unbind each (indexing [..., t] in the loop makes autograd zero-fill a
        # full-length gradient per step: quadratic in L)
        adj_s = adj.unbind(1) if T > 1 else [adj[:, 0]] * L
        u = torch.stack([self._ref_input_conv_step(u_t, adj_s[t]) for t, u_t in enumerate(u.unbind(-1))], -1)
        dt = F.softplus(delta.to(cdt) + self.dt_proj.bias.to(cdt)[:, None])
        H = initial_state.to(cdt) if initial_state is not None else u.new_zeros(b, V, D, self.d_state, dtype=cdt)
        params = self._state_params()
        A_c = A.to(cdt)
        steps = zip(u.to(cdt).unbind(-1), dt.unbind(-1), B.to(cdt).unbind(-1), C.to(cdt).unbind(-1), adj_s)
        ys = []
        for u_t, dt_t, B_t, C_t, adj_t in steps:
            H, y = self._ref_state_step(H, u_t, dt_t, A_c, B_t, C_t, adj_t.to(cdt), params)
            ys.append(y)
        y = torch.stack(ys, -1)
        if z is not None:
            y = y * F.silu(z.to(cdt))
        y = y.to(u.dtype)
        return u, ((y, H) if return_last_state else y)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_weight: Tensor | None = None,
        return_graph: bool = False,
        *,
        adj: Tensor | None = None,
        path: str = "auto",
    ):
        """Run the block on whole sequences.

        Args:
            x: (batch * V, L, d_model), rows ``b * V + v`` (a PyG ``Batch``'s ``x``).
            edge_index: (2, E) PyG-batched node ids in ``[0, batch * V)``; edges stay within a sample.
            edge_weight: (E,) non-negative, or None (ones).
            return_graph: also return the per-step graph the block used (to pass to the next layer).
            adj: instead of edges, a dense graph (batch or 1, 1 or L, V, V), ``adj[b, t, i, j]`` = j -> i.
            path: "auto" (fused when the conv type has it), "fused" or "reference" (per-step PyG).

        Shapes:
            returns y (batch * V, L, d_model) [, adj (batch, T, V, V) with T in {1, L}].
        """
        path = self._resolve_path(path)
        batch, L = self._check_x(x)
        V, D, N = self.num_vertices, self.d_inner, self.d_state
        if edge_index is not None:
            check_edges_structure(edge_index, edge_weight)
        self._validate_values(x, edge_index, edge_weight, batch)
        adj0 = self._input_graph(edge_index, edge_weight, adj, batch, L, x)

        if self.checkpoint_conv and torch.is_grad_enabled() and L >= self.checkpoint_graph_min_len:
            # z on its own; the x half and the conv are recomputed in backward (only x is kept)
            w_z = self.in_proj.weight[D:]
            z = F.linear(x, w_z, None if self.in_proj.bias is None else self.in_proj.bias[D:])
            xc = torch.utils.checkpoint.checkpoint(self._in_conv, x, use_reentrant=False)
        else:
            xz = self.in_proj(x)  # (bV, L, 2D)
            xc, z = xz.chunk(2, dim=-1)
            xc = self._conv(xc)
        # x_proj and dt_proj in the channel-major layout, as batched products with an expanded (not copied)
        # weight: backward keeps xc (which the scan needs anyway) and a small dt instead of a (bV * L, D)
        # transposed copy of xc, all of x_dbl and copies of B and C (-220 MB saved for backward at batch 16,
        # V 19, L 2000)
        x_dbl = torch.bmm(self.x_proj.weight.expand(xc.shape[0], -1, -1), xc)  # (bV, R + 2N, L)
        dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, N, N], dim=1)
        delta = torch.bmm(self.dt_proj.weight.expand(xc.shape[0], -1, -1), dt.contiguous())  # (bV, D, L)
        u4 = xc.reshape(batch, V, D, L)
        delta4 = delta.reshape(batch, V, D, L)
        B4 = Bm.reshape(batch, V, N, L)
        C4 = Cm.reshape(batch, V, N, L)
        z4 = None if self.rmsnorm else z.transpose(1, 2).reshape(batch, V, D, L)
        A = -torch.exp(self.A_log.to(self._pdtype))  # (D, N)

        x4 = x.view(batch, V, L, self.d_model)
        if path == "fused":
            # long sequences: recompute the cheap graph construction and input convolution in
            # backward instead of storing their (batch, L, V, V) / (batch, L, V, D) intermediates
            ckpt = self.checkpoint_graph and torch.is_grad_enabled() and L >= self.checkpoint_graph_min_len
            if ckpt:
                cp = torch.utils.checkpoint.checkpoint
                graph, mix_A = cp(self._graph_and_state_mix, x4, adj0, use_reentrant=False)
                u_conv = cp(self._input_conv_dense, u4, graph, use_reentrant=False)
            else:
                graph, mix_A = self._graph_and_state_mix(x4, adj0)
                u_conv = self._input_conv_dense(u4, graph)
            _, y = self._scan_fused(u4, delta4, A, B4, C4, z4, graph, mix_A=mix_A, u_conv=u_conv)  # (b, V, D, L)
        else:
            graph = self._learn_graph(x4, adj0)  # (b, T, V, V)
            _, y = self._scan_reference(u4, delta4, A, B4, C4, z4, graph)
        y = y.reshape(batch * V, D, L).transpose(1, 2)  # (bV, L, D)
        if not self.rmsnorm:
            out = self.out_proj(y)
        elif self.checkpoint_norm and torch.is_grad_enabled() and L >= self.checkpoint_graph_min_len:
            out = torch.utils.checkpoint.checkpoint(self._norm_out, y, z, use_reentrant=False)
        else:
            out = self._norm_out(y, z)
        return (out, graph) if return_graph else out

    def _conv(self, xc: Tensor) -> Tensor:
        """Depthwise causal conv + SiLU over time: (bV, L, D) -> (bV, D, L)."""
        return causal_conv1d_fn(xc.transpose(1, 2), self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu")

    def _in_conv(self, x: Tensor) -> Tensor:
        """The x half of in_proj, then the causal conv: (bV, L, d_model) -> (bV, D, L)."""
        D = self.d_inner
        bias = None if self.in_proj.bias is None else self.in_proj.bias[:D]
        return self._conv(F.linear(x, self.in_proj.weight[:D], bias))

    def _norm_out(self, y: Tensor, z: Tensor) -> Tensor:
        """Gated RMSNorm of the scan output, then out_proj: (bV, L, D) -> (bV, L, d_model)."""
        return self.out_proj(self.norm(y, z))

    # ------------------------------------------------------------------ streaming
    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None, dtype=None, device=None,
                                 **kwargs: Any) -> TGMambaInferenceCache:  # fmt: skip
        """Fresh streaming state for ``batch_size`` samples (``batch_size * V`` rows); O(1) in length.

        ``max_seqlen`` is accepted for interface compatibility and ignored.
        """
        device = device or self.in_proj.weight.device
        dtype = dtype or self.in_proj.weight.dtype
        V = self.num_vertices
        conv_state = torch.zeros(batch_size * V, self.d_inner, self.d_conv, device=device, dtype=dtype)
        ssm_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        ssm_state = torch.zeros(batch_size, V, self.d_inner, self.d_state, device=device, dtype=ssm_dtype)
        edge_state = self.edge_learner.init_state(batch_size, device, dtype) if self.edge_learner is not None else None
        return TGMambaInferenceCache(conv_state, ssm_state, edge_state, 0)

    def _state_ops_step(self, g: Tensor) -> list[Tensor | None]:
        """State-side vertex operators of one step (identity as None): g (b, V, V)."""
        if self.conv_type == "gcnconv":
            return [gcn_mix(g)]
        if self.conv_type == "chebconv":
            return [None, cheb_mix(g)]
        if self.conv_type == "graphconv":
            return [None, state_adjacency(g)]
        return [None]

    @staticmethod
    def _apply_ops(ops: list[Tensor | None], H: Tensor, W: Tensor) -> Tensor:
        """sum_k ops[k] @ H @ W[k] per (b, d), skipping identity operators: H (b, V, D, N)."""
        b, V, D, N = H.shape
        out = None
        for k, M in enumerate(ops):
            t = H @ W[k]
            if M is not None:
                t = torch.matmul(M, t.reshape(b, V, D * N)).view(b, V, D, N)
            out = t if out is None else out + t
        return out

    @staticmethod
    def _readout_step(ops: list[Tensor | None], H: Tensor, W_C: Tensor | None, C_t: Tensor) -> Tensor:
        """y[i, d] = sum_k sum_n (M_k H)[i, d, n] (W_C[k] C_i)[n]: the readout folded into C.

        Equal to ``(sum_k M_k H W_C[k]) . C`` but skips the (N x N) products (cheap streaming).
        H (b, V, D, N), C_t (b, V, N) -> (b, V, D).
        """
        if W_C is None:
            return (H * C_t.unsqueeze(2)).sum(-1)
        b, V, D, N = H.shape
        wc = torch.matmul(W_C.to(H.dtype).unsqueeze(1), C_t.unsqueeze(-1).unsqueeze(1))  # (b, K, V, N, 1)
        y = None
        for k, M in enumerate(ops):
            Hk = H if M is None else torch.matmul(M, H.reshape(b, V, D * N)).view(b, V, D, N)
            t = torch.matmul(Hk, wc[:, k]).squeeze(-1)  # (b, V, D)
            y = t if y is None else y + t
        return y

    @torch.no_grad()
    def step(
        self,
        x_t: Tensor,
        cache: TGMambaInferenceCache,
        edge_index: Tensor | None = None,
        edge_weight: Tensor | None = None,
        return_graph: bool = False,
        *,
        adj: Tensor | None = None,
    ):
        """Advance the stream by ONE time sample; updates ``cache`` in place (no autograd).

        Stepping through a sequence reproduces :meth:`forward` (same graph arguments each step;
        a per-step ``adj`` is passed as its slice ``(batch or 1, 1, V, V)``).

        Shapes:
            x_t: (batch * V, d_model) -> y_t (batch * V, d_model) [, adj_t (batch, 1, V, V)].
        """
        batch, _ = self._check_x(x_t, "x_t", step=True)
        V, D, N = self.num_vertices, self.d_inner, self.d_state
        if cache.ssm_state.shape[0] != batch:
            raise ValueError(f"x_t holds {batch} samples but the cache was allocated for {cache.ssm_state.shape[0]}")
        if edge_index is not None:
            check_edges_structure(edge_index, edge_weight)
        self._validate_values(x_t, edge_index, edge_weight, batch, "x_t")
        adj0 = self._input_graph(edge_index, edge_weight, adj, batch, 1, x_t)
        if adj0 is not None and adj0.shape[1] != 1:
            raise ValueError("adj passed to step() must hold one step: shape (batch or 1, 1, V, V)")
        xz = self.in_proj(x_t)
        xc, z = xz.chunk(2, dim=-1)  # (bV, D)
        xc = causal_conv1d_update(
            xc.contiguous(), cache.conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu"
        )
        dt, Bm, Cm = torch.split(self.x_proj(xc), [self.dt_rank, N, N], dim=-1)
        sdt = cache.ssm_state.dtype
        dt = F.softplus(F.linear(dt, self.dt_proj.weight).to(sdt) + self.dt_proj.bias.to(sdt))
        A = -torch.exp(self.A_log.to(sdt))
        u = xc.view(batch, V, D)
        x4 = x_t.view(batch, V, self.d_model)
        if self.edge_learner is None:
            graph = x_t.new_zeros(batch, 1, V, V) if adj0 is None else adj0.expand(batch, 1, V, V)
        else:
            graph = self.edge_learner.step(x4, adj0, cache.edge_state)  # (b, 1, V, V)
        g = graph[:, 0].to(sdt)
        dt = dt.view(batch, V, D)
        Bt, Ct = Bm.view(batch, V, N).to(sdt), Cm.view(batch, V, N).to(sdt)
        if self.conv_type in FUSED_CONV_TYPES:
            u = self._input_conv_dense(u.unsqueeze(-1), graph).squeeze(-1).to(sdt)
            ops = self._state_ops_step(g)  # per k: (b, V, V) or None (identity)
            W_A, W_C = self._state_weights()
            H = cache.ssm_state
            P = self._apply_ops(ops, H, W_A.to(sdt)) if self.conv_type != "none" else H
            decay = torch.exp_(dt.unsqueeze(-1) * A)  # (b, V, D, N); no autograd in step()
            H = torch.addcmul((dt * u).unsqueeze(-1) * Bt.unsqueeze(2), P, decay)
            y = self._readout_step(ops, H, W_C, Ct) + self.D.to(sdt) * u
        else:
            u = self._ref_input_conv_step(u, g.to(u.dtype)).to(sdt)
            H, y = self._ref_state_step(cache.ssm_state, u, dt, A, Bt, Ct, g, self._state_params())
        cache.ssm_state.copy_(H)
        cache.seqlen_offset += 1
        y = y.reshape(batch * V, D).to(x_t.dtype)
        if self.rmsnorm:
            y = self.norm(y, z)
        else:
            y = y * F.silu(z)
        out = self.out_proj(y)
        return (out, graph) if return_graph else out

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"num_vertices={self.num_vertices}, conv_type={self.conv_type!r}, rmsnorm={self.rmsnorm}"
        )
