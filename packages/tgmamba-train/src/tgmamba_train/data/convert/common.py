"""Helpers shared by the converters: split assignment and writing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..splits import group_split
from ..store import DatasetWriter

__all__ = ["assign_splits", "frame_time", "write_dataset"]

log = logging.getLogger(__name__)


def frame_time(x: np.ndarray, frame: int) -> np.ndarray:
    """Fold time into (steps, frame) features. Shapes: (N, V, T) -> (N, V, T // frame, frame) (remainder cut)."""
    n = x.shape[-1] // frame
    return x[..., : n * frame].reshape(*x.shape[:-1], n, frame)


def assign_splits(
    groups: list[str],
    fixed: dict[str, str] | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    sizes: dict[str, int] | None = None,
) -> dict[str, str] | None:
    """Map each group (patient/session/record) to "train" | "val" | "test".

    ``fixed`` (e.g. TUSZ's own train/dev/eval folders) wins. Otherwise a seeded group split; returns None when
    there are fewer than 3 groups (callers then fall back to contiguous time blocks within each record).
    """
    if fixed and all(g in fixed for g in groups):
        return fixed
    uniq = sorted(set(groups))
    if len(uniq) < 3:
        return None
    arr = np.repeat(np.arange(len(uniq)), [max(1, (sizes or {}).get(g, 1)) for g in uniq])
    tr, va, te = group_split(arr, val_fraction, test_fraction, seed)
    out = {}
    for i, g in enumerate(uniq):
        m = arr == i
        out[g] = "test" if te[m].all() else ("val" if va[m].all() else "train")
    return out


def time_block_split(n: int, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Contiguous blocks within one record: first part train, then val, then test. Returns (n,) split names."""
    n_test = max(1, int(round(test_fraction * n)))
    n_val = max(1, int(round(val_fraction * n)))
    if n - n_test - n_val < 1:
        raise ValueError(f"too few samples ({n}) for a train/val/test time split")
    names = np.array(["train"] * n, dtype=object)
    names[n - n_test - n_val : n - n_test] = "val"
    names[n - n_test :] = "test"
    return names


def write_dataset(
    out_dir: str | Path,
    items: list[tuple[str, np.ndarray, np.ndarray]],
    *,
    split_of: dict[str, str] | None,
    val_fraction: float,
    test_fraction: float,
    writer_kwargs: dict,
) -> dict:
    """Write (group, x, y) items; with ``split_of`` None every record is split by contiguous time blocks."""
    w = DatasetWriter(out_dir, **writer_kwargs)
    if split_of is None:
        w.meta["source"]["split"] = "contiguous time blocks within each record (fewer than 3 groups)"
        for g, x, y in items:
            names = time_block_split(len(y), val_fraction, test_fraction)
            for s in ("train", "val", "test"):
                m = names == s
                w.add(s, x[m], y[m], g)
    else:
        w.meta["source"]["split"] = "by group (patient/session/record): no group is in two splits"
        for g, x, y in items:
            w.add(split_of[g], x, y, g)
    return w.close()
