"""All settings of a training run (one dataclass; the CLI flags map onto its fields one to one)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .module import DEFAULT_MODEL

__all__ = ["RUNTIME_FIELDS", "TrainSettings"]

DATASETS = ("eye-state", "tusz", "dodh", "bcicha", "mamem", "sleep-edf", "disk")


@dataclass
class TrainSettings:
    """All settings; the defaults are the main job: blocked 5-fold CV on the embedded EEG Eye State recording,
    on CPU, with a small model (d_model 8, d_state 8, 20 epochs) sized to finish within minutes on 2 cores.

    ``ensemble`` > 1 trains that many seeds per fold and averages their test probabilities (fold-level AUROC on
    this small recording varies by about 0.1 between seeds; averaging reduces that spread, at a cost in time).
    """

    # data
    dataset: str = "eye-state"
    data_dir: str | None = None
    cv_folds: int = 5
    fold: int | None = None
    window: int = 128
    stride: int = 32
    label_policy: str = "drop"
    features: str = "bands"
    gap: int = 64
    val_fraction: float = 0.1
    graph_top_k: int = 3
    electrode_features: str = "onehot"
    # model (original flag names in comments)
    conv_type: str = "graphconv"
    seq_pool_type: str = "mean"
    vertex_pool_type: str = "mean"
    model_dim: int = 8  # d_model
    state_expansion_factor: int = 8  # d_state
    local_conv_width: int = 4  # d_conv
    expand: int = 2
    num_tgmamba_layers: int = 1
    rmsnorm: bool = True
    edge_learner_layers: int = 1
    edge_learner_attention: bool = True
    edge_learner_time_varying: bool = True
    attn_time_varying: bool = False
    attn_threshold: float = 0.1
    attn_softmax_temp: float = 0.01
    init_skip_param: float = 0.25
    dropout: float = 0.0
    # optimisation
    train_batch_size: int = 64
    val_batch_size: int = 128
    test_batch_size: int = 128
    num_workers: int = 0
    lr_init: float = 5e-3
    weight_decay: float = 5e-2
    optimizer: str = "adamw"
    scheduler: str = "cosine"
    warmup_epochs: int = 1
    num_epochs: int = 20
    patience: int = 100
    accumulate_grad_batches: int = 1
    balance_classes: bool = True
    eval_checkpoint: str = "last"
    ensemble: int = 3
    # runtime
    save_dir: str = "results"
    run_name: str | None = None
    rand_seed: int = 123
    load_model: str | None = None
    devices: str = "1"
    accelerator: str = "cpu"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    cuda_graphs: bool = False
    resume: str | None = None
    logger: str = "csv"
    threads: int | None = None
    progress: bool = True
    baseline: bool = True
    model_class: str = DEFAULT_MODEL

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.cv_folds < 1:
            raise ValueError(f"cv_folds must be >= 1, got {self.cv_folds}")
        if self.dataset == "eye-state" and self.cv_folds < 2:
            raise ValueError("eye-state needs --cv-folds >= 2 (blocked folds define its test sets)")
        if self.fold is not None and not 0 <= self.fold < self.cv_folds:
            raise ValueError(f"fold must be in [0, cv_folds={self.cv_folds}), got {self.fold}")
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {self.ensemble}")
        if self.eval_checkpoint not in ("best", "last"):
            raise ValueError(f"eval_checkpoint must be 'best' or 'last', got {self.eval_checkpoint!r}")
        if self.logger not in ("csv", "tensorboard", "wandb", "none"):
            raise ValueError(f"logger must be csv, tensorboard, wandb or none, got {self.logger!r}")
        for name in ("num_epochs", "train_batch_size", "val_batch_size", "test_batch_size", "accumulate_grad_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if not self.lr_init > 0:
            raise ValueError(f"lr_init must be > 0, got {self.lr_init}")
        if self.cuda_graphs and self.accelerator not in ("gpu", "cuda", "auto"):
            raise ValueError(f"cuda_graphs needs a GPU accelerator (gpu, cuda or auto), got {self.accelerator!r}")

    def model_config(self, num_vertices: int, in_features: int, num_classes: int) -> dict:
        """Keyword arguments of ``TGMambaClassifierConfig``."""
        return {
            "num_vertices": num_vertices,
            "in_features": in_features,
            "num_classes": num_classes,
            "d_model": self.model_dim,
            "d_state": self.state_expansion_factor,
            "d_conv": self.local_conv_width,
            "expand": self.expand,
            "num_layers": self.num_tgmamba_layers,
            "conv_type": self.conv_type,
            "rmsnorm": self.rmsnorm,
            "edge_learner_layers": self.edge_learner_layers,
            "edge_learner_attention": self.edge_learner_attention,
            "edge_learner_time_varying": self.edge_learner_time_varying,
            "attn_time_varying": self.attn_time_varying,
            "attn_threshold": self.attn_threshold,
            "attn_softmax_temp": self.attn_softmax_temp,
            "init_skip_param": self.init_skip_param,
            "seq_pool_type": self.seq_pool_type,
            "vertex_pool_type": self.vertex_pool_type,
            "dropout": self.dropout,
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainSettings:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown settings {unknown}")
        return cls(**d)


# fields that may differ when a run is resumed (hardware and logging only)
RUNTIME_FIELDS = (
    "devices",
    "accelerator",
    "strategy",
    "num_nodes",
    "num_workers",
    "progress",
    "threads",
    "resume",
    "logger",
    "cuda_graphs",
)
