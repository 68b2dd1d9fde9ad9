"""In-memory containers handed from the data preparation code to training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["PreparedData", "SplitArrays"]


@dataclass
class SplitArrays:
    """One split. ``raw`` (optional) holds the scaled time-domain windows the baseline uses.

    Shapes: x (N, V, L, F) float32; y (N,) int64; groups (N,) int64 or None; raw (N, V, T) float32 or None.
    """

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None = None
    raw: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class PreparedData:
    """Everything a training run needs: the three splits, the graph and the task description.

    Shapes: edge_index (2, E) int64, edge_weight (E,) float32; every split's x is (N, V, L, F).
    """

    name: str
    task: str  # "binary" or "multiclass"
    num_classes: int
    class_names: list[str]
    channels: list[str]
    sfreq: float
    edge_index: torch.Tensor
    edge_weight: torch.Tensor
    train: SplitArrays
    val: SplitArrays
    test: SplitArrays
    info: dict = field(default_factory=dict)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(V, L, F) of one sample."""
        return tuple(int(s) for s in self.train.x.shape[1:])  # type: ignore[return-value]

    def split(self, name: str) -> SplitArrays:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, name)
