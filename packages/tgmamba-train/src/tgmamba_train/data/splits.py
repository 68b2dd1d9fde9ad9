"""Honest splits: contiguous time blocks for one continuous recording, whole groups (patients/sessions)
for corpora with several subjects. Never random windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BlockedFold", "assign_windows", "blocked_fold", "group_split"]


@dataclass(frozen=True)
class BlockedFold:
    """Sample intervals [start, end) of one blocked fold. ``gap`` samples separate every region."""

    fold: int
    num_folds: int
    test: tuple[tuple[int, int], ...]
    val: tuple[tuple[int, int], ...]
    train: tuple[tuple[int, int], ...]
    gap: int


def _subtract(intervals: list[tuple[int, int]], cut: tuple[int, int]) -> list[tuple[int, int]]:
    out = []
    for s, e in intervals:
        if cut[1] <= s or cut[0] >= e:
            out.append((s, e))
            continue
        if s < cut[0]:
            out.append((s, cut[0]))
        if cut[1] < e:
            out.append((cut[1], e))
    return out


def blocked_fold(
    n_samples: int,
    num_folds: int,
    fold: int,
    val_fraction: float = 0.1,
    gap: int = 0,
    blocks_per_fold: int = 1,
) -> BlockedFold:
    """Regions of fold ``fold`` of a blocked K-fold split of a recording of ``n_samples`` samples.

    The recording is cut into ``num_folds * blocks_per_fold`` contiguous blocks of (nearly) equal length;
    fold k tests blocks k, k + K, k + 2K, ... (``blocks_per_fold`` contiguous blocks from different parts of
    the recording, which balances classes when the state drifts over time; with 1 it is plain blocked K-fold).
    The validation region is a contiguous stretch of ``val_fraction * n_samples`` samples that starts ``gap``
    samples after the first test block. Training uses everything else minus ``gap`` samples around every test
    and validation region, so no window contains samples of two regions and neighbouring, strongly
    correlated samples are kept apart.
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
    if blocks_per_fold < 1:
        raise ValueError(f"blocks_per_fold must be >= 1, got {blocks_per_fold}")
    if not 0.0 <= val_fraction < 1.0 - 1.0 / num_folds:
        raise ValueError(f"val_fraction must be in [0, {1 - 1 / num_folds:.2f}), got {val_fraction}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    n_blocks = num_folds * blocks_per_fold
    bounds = np.linspace(0, n_samples, n_blocks + 1).round().astype(int)
    test = tuple((int(bounds[b]), int(bounds[b + 1])) for b in range(fold, n_blocks, num_folds))
    val_len = int(round(val_fraction * n_samples))
    val_regions: tuple[tuple[int, int], ...] = ()
    if val_len > 0:
        vs = test[0][1] + gap
        if vs + val_len > n_samples:  # the first test block ends the recording: take the stretch before it
            vs = test[0][0] - gap - val_len
        val = (vs, vs + val_len)
        for s, e in test:
            if val[0] < e + gap and s - gap < val[1]:
                raise ValueError(f"validation stretch {val} overlaps test block {(s, e)}: lower val_fraction or gap")
        val_regions = (val,)
    train = [(0, n_samples)]
    for s, e in test + val_regions:
        train = _subtract(train, (s - gap, e + gap))
    train = [(s, e) for s, e in train if e > s]
    return BlockedFold(fold, num_folds, test, val_regions, tuple(train), gap)


def assign_windows(starts: np.ndarray, length: int, regions: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Mask of the windows [start, start + length) that lie entirely inside one of ``regions``.

    Shapes: starts (N,) int; returns (N,) bool.
    """
    starts = np.asarray(starts)
    inside = np.zeros(starts.shape, dtype=bool)
    for s, e in regions:
        inside |= (starts >= s) & (starts + length <= e)
    return inside


def group_split(
    groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split by whole groups (patients or sessions): every group lands in exactly one of train/val/test.

    Groups are shuffled with ``seed`` and assigned greedily until each split holds about its fraction of the
    samples. Needs at least 3 groups.

    Shapes: groups (N,) int; returns three (N,) bool masks (train, val, test).
    """
    groups = np.asarray(groups)
    uniq, counts = np.unique(groups, return_counts=True)
    if len(uniq) < 3:
        raise ValueError(f"a group split needs at least 3 groups (patients/sessions), found {len(uniq)}")
    order = np.random.default_rng(seed).permutation(len(uniq))
    total = counts.sum()
    test_g, val_g = [], []
    acc = 0
    k = 0
    while k < len(order) - 2 and acc < test_fraction * total:
        test_g.append(uniq[order[k]])
        acc += counts[order[k]]
        k += 1
    acc = 0
    while k < len(order) - 1 and acc < val_fraction * total:
        val_g.append(uniq[order[k]])
        acc += counts[order[k]]
        k += 1
    test = np.isin(groups, test_g)
    val = np.isin(groups, val_g)
    return ~(test | val), val, test
