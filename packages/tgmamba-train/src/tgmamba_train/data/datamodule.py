"""LightningDataModule over in-memory or memory-mapped (N, V, L, F) arrays."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .container import PreparedData, SplitArrays

__all__ = ["ArrayDataset", "EEGDataModule", "EpochSeededSampler"]


class ArrayDataset(Dataset):
    """(x, y) pairs from array-likes (numpy arrays, memmaps or :class:`~tgmamba_train.data.store.ShardedArray`).

    ``mean``/``std`` (V, F), if given, standardise each sample on the fly.
    Shapes: item x (V, L, F) float32, y () int64.
    """

    def __init__(self, x, y, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        self.x, self.y = x, np.asarray(y, dtype=np.int64)
        self.mean = None if mean is None else torch.as_tensor(np.asarray(mean, np.float32))[:, None, :]
        self.std = None if std is None else torch.as_tensor(np.asarray(std, np.float32))[:, None, :]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.array(self.x[i], dtype=np.float32))
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x, torch.tensor(self.y[i])


class EpochSeededSampler(Sampler[int]):
    """Random permutation that depends only on (seed, epoch): the order of epoch e is the same whether or not
    training was interrupted and resumed before it. Lightning calls ``set_epoch`` at the start of each epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class EEGDataModule(L.LightningDataModule):
    """Serves the train/val/test splits of a :class:`PreparedData`.

    Shapes: batches are (x (B, V, L, F) float32, y (B,) int64).
    """

    def __init__(
        self,
        data: PreparedData,
        train_batch_size: int = 32,
        val_batch_size: int = 64,
        test_batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        normalization: dict | None = None,
    ):
        super().__init__()
        self.data = data
        self.train_batch_size, self.val_batch_size, self.test_batch_size = (
            train_batch_size,
            val_batch_size,
            test_batch_size,
        )
        self.num_workers, self.seed = num_workers, seed
        self.normalization = normalization or {}

    def dataset(self, split: str) -> ArrayDataset:
        s: SplitArrays = self.data.split(split)
        return ArrayDataset(s.x, s.y, self.normalization.get("mean"), self.normalization.get("std"))

    def _loader(self, split: str, batch_size: int, train: bool) -> DataLoader:
        ds = self.dataset(split)
        sampler = EpochSeededSampler(len(ds), self.seed) if train else None
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.train_batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.val_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.test_batch_size, False)
