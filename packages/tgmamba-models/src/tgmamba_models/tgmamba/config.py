"""Configuration dataclasses of the TGMamba block and the TGMamba classifier."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .graph_ops import CONV_TYPES

__all__ = ["TGMambaClassifierConfig", "TGMambaConfig"]

SEQ_POOL_TYPES = ("last", "mean", "max")
VERTEX_POOL_TYPES = ("mean", "max")


def _check_common(cfg) -> None:
    if cfg.conv_type not in CONV_TYPES:
        raise ValueError(f"conv_type must be one of {CONV_TYPES}, got {cfg.conv_type!r}")
    for name in ("d_model", "d_state", "d_conv", "expand", "num_vertices"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if cfg.edge_learner_layers < 1:
        raise ValueError(f"edge_learner_layers must be >= 1, got {cfg.edge_learner_layers}")
    if not cfg.attn_softmax_temp > 0:
        raise ValueError(f"attn_softmax_temp must be > 0, got {cfg.attn_softmax_temp}")


@dataclass
class TGMambaConfig:
    """Arguments of :class:`~tgmamba_models.TGMamba` (the original's constructor, minus device/dtype).

    ``num_vertices`` defaults to 1 (each row of ``x`` is its own one-vertex graph), which makes
    the block usable on any batch, as in the original README's example. ``d_inner`` and the
    resolved ``dt_rank`` are derived in ``__post_init__``.
    """

    d_model: int = 16
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    num_vertices: int = 1
    dt_rank: int | str = "auto"
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init: str = "random"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False
    conv_type: str = "gcnconv"
    rmsnorm: bool = True
    edge_learner_layers: int = 1
    edge_learner_attention: bool = True
    edge_learner_time_varying: bool = True
    attn_time_varying: bool = False
    attn_threshold: float = 0.1
    attn_softmax_temp: float = 0.01
    init_skip_param: float = 0.25
    readout_conv: bool = True
    layer_idx: int | None = None
    d_inner: int = field(init=False)

    def __post_init__(self) -> None:
        _check_common(self)
        if self.dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {self.dt_init!r}")
        self.d_inner = int(self.expand * self.d_model)
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        if not isinstance(self.dt_rank, int) or self.dt_rank < 1:
            raise ValueError(f"dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}")


@dataclass
class TGMambaClassifierConfig:
    """Arguments of :class:`~tgmamba_models.TGMambaClassifier` (the original's LightGTMamba network).

    ``pass_edges``: each block receives the graph the previous block learned. ``final_gconv``:
    one graph convolution (``conv_type``) over the time-pooled vertex features before vertex
    pooling. ``residual``: add each block's input to its output (off in the original).
    Defaults follow the original LightGTMamba (2 blocks, last-step sequence pooling, mean vertex
    pooling, graphconv, gated RMSNorm, time-varying edge learner with attention).
    """

    num_vertices: int
    in_features: int
    num_classes: int
    d_model: int = 32
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    num_layers: int = 2
    conv_type: str = "graphconv"
    rmsnorm: bool = True
    edge_learner_layers: int = 1
    edge_learner_attention: bool = True
    edge_learner_time_varying: bool = True
    attn_time_varying: bool = False
    attn_threshold: float = 0.1
    attn_softmax_temp: float = 0.01
    init_skip_param: float = 0.25
    seq_pool_type: str = "last"
    vertex_pool_type: str = "mean"
    dropout: float = 0.0
    pass_edges: bool = False
    final_gconv: bool = False
    residual: bool = False
    readout_conv: bool = True

    def __post_init__(self) -> None:
        _check_common(self)
        for name in ("in_features", "num_classes", "num_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.seq_pool_type not in SEQ_POOL_TYPES:
            raise ValueError(f"seq_pool_type must be one of {SEQ_POOL_TYPES}, got {self.seq_pool_type!r}")
        if self.vertex_pool_type not in VERTEX_POOL_TYPES:
            raise ValueError(f"vertex_pool_type must be one of {VERTEX_POOL_TYPES}, got {self.vertex_pool_type!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def block_config(self, layer_idx: int | None = None) -> TGMambaConfig:
        """The :class:`TGMambaConfig` of each block."""
        return TGMambaConfig(
            d_model=self.d_model,
            d_state=self.d_state,
            d_conv=self.d_conv,
            expand=self.expand,
            num_vertices=self.num_vertices,
            conv_type=self.conv_type,
            rmsnorm=self.rmsnorm,
            edge_learner_layers=self.edge_learner_layers,
            edge_learner_attention=self.edge_learner_attention,
            edge_learner_time_varying=self.edge_learner_time_varying,
            attn_time_varying=self.attn_time_varying,
            attn_threshold=self.attn_threshold,
            attn_softmax_temp=self.attn_softmax_temp,
            init_skip_param=self.init_skip_param,
            readout_conv=self.readout_conv,
            layer_idx=layer_idx,
        )
