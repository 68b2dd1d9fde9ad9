"""Shared fixtures for tgmamba-train tests (CPU, tiny data, tiny models)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
PSG = DATA / "SC4001E0-PSG-first5min.edf"
HYPNOGRAM = DATA / "SC4001EC-Hypnogram.edf"

# the 19 TUSZ channels under TUH's (old 10-20) names, as they appear in the corpus' EDF labels
TUSZ_TUH_CHANNELS = "Fp1 Fp2 F7 F3 Fz F4 F8 T3 C3 Cz C4 T4 T5 P3 Pz P4 T6 O1 O2".split()

# flags that make a training run tiny: 2 blocked folds, 1 epoch, a very small model, few windows
TINY = (
    "--cv-folds 2 --num_epochs 1 --model_dim 4 --state_expansion_factor 2 --stride 256 --train_batch_size 64 "
    "--no-progress --threads 1 --ensemble 1"
).split()


def src_env() -> dict:
    """Environment for CLI subprocesses: the three packages' sources on PYTHONPATH."""
    root = Path(__file__).resolve().parents[2]
    paths = [str(root / p / "src") for p in ("ssm-kernels", "tgmamba-models", "tgmamba-train")]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def python():
    return sys.executable
