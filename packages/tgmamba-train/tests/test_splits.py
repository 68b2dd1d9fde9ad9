import numpy as np
import pytest

from tgmamba_train.data.splits import assign_windows, blocked_fold, group_split


def _mask(n, regions):
    m = np.zeros(n, bool)
    for s, e in regions:
        m[s:e] = True
    return m


@pytest.mark.parametrize("n,k,bpf,gap", [(14980, 5, 2, 64), (1000, 3, 1, 0), (997, 4, 2, 13)])
def test_blocked_folds_partition_and_gaps(n, k, bpf, gap):
    covered = np.zeros(n, int)
    for fold in range(k):
        f = blocked_fold(n, k, fold, val_fraction=0.1, gap=gap, blocks_per_fold=bpf)
        assert len(f.test) == bpf
        te, va, tr = _mask(n, f.test), _mask(n, f.val), _mask(n, f.train)
        covered += te
        assert not (te & va).any() and not (te & tr).any() and not (va & tr).any()
        # gap: no training sample within `gap` samples of a test or validation sample
        near = np.convolve((te | va).astype(int), np.ones(2 * gap + 1, int), mode="same") > 0 if gap else te | va
        assert not (near & tr).any()
        # contiguous blocks: each test region is one interval of consecutive samples
        for s, e in f.test:
            assert te[s:e].all() and (s == 0 or not te[s - 1] or (s, e) != f.test[0])
    assert (covered == 1).all()  # every sample is tested exactly once


def test_windows_never_mix_regions():
    n, win, stride = 5000, 128, 16
    starts = np.arange(0, n - win + 1, stride)
    f = blocked_fold(n, 5, 2, val_fraction=0.1, gap=32, blocks_per_fold=2)
    sets = {name: assign_windows(starts, win, getattr(f, name)) for name in ("train", "val", "test")}
    assert not (sets["train"] & sets["test"]).any() and not (sets["val"] & sets["test"]).any()
    test_samples = np.zeros(n, bool)
    for s in starts[sets["test"]]:
        test_samples[s : s + win] = True
    for s in starts[sets["train"]]:
        assert not test_samples[max(0, s - 32) : s + win + 32].any()


def test_blocked_fold_bad_args():
    with pytest.raises(ValueError, match="num_folds"):
        blocked_fold(100, 1, 0)
    with pytest.raises(ValueError, match="fold"):
        blocked_fold(100, 3, 3)
    with pytest.raises(ValueError, match="gap"):
        blocked_fold(100, 3, 0, gap=-1)


def test_group_split_disjoint(rng):
    groups = rng.integers(0, 12, size=500)
    tr, va, te = group_split(groups, 0.2, 0.2, seed=1)
    assert (tr.astype(int) + va + te == 1).all()
    for a, b in ((tr, va), (tr, te), (va, te)):
        assert not set(groups[a]) & set(groups[b])
    assert va.any() and te.any()
    with pytest.raises(ValueError, match="at least 3 groups"):
        group_split(np.zeros(10, int), 0.2, 0.2, 0)
