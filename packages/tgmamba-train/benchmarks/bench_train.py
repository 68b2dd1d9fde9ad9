"""Training-step throughput (samples/s) of the default eye-state configuration on CPU (and on CUDA if present),
with the band-power logistic-regression baseline's fit measured in the same run for scale.

Run: pytest -c pyproject.toml packages/tgmamba-train/benchmarks/bench_train.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssm_kernels.testing.bench import record, synced
from tgmamba_train.baseline import fit_bandpower_baseline
from tgmamba_train.data.eye_state import load_recording, prepare_eye_state
from tgmamba_train.module import TGMambaLightning
from tgmamba_train.settings import TrainSettings

DEVICES = ["cpu"] + (["cuda", "cuda-graphs"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def fold():
    return prepare_eye_state(load_recording(), 0, 5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [32, 64])
def test_train_step_default_config(benchmark, fold, device, batch):
    """One AdamW step; ``cuda-graphs``: the forward+backward replayed from a CUDA graph (``--cuda-graphs``)."""
    graphs = device == "cuda-graphs"
    device = "cuda" if graphs else device
    if device == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    s = TrainSettings()
    V, Lq, F = fold.sample_shape
    module = TGMambaLightning(
        model_config=s.model_config(V, F, 2),
        task="binary",
        graph={"edge_index": fold.edge_index.tolist(), "edge_weight": fold.edge_weight.tolist()},
        lr_init=s.lr_init,
        cuda_graphs=graphs,
    ).to(device)
    opt = torch.optim.AdamW(module.parameters(), lr=s.lr_init)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(fold.train), (batch,), generator=g)
    x = torch.as_tensor(fold.train.x[idx.numpy()]).to(device)
    y = torch.as_tensor(fold.train.y[idx.numpy()]).to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(module(x), y)
        loss.backward()
        opt.step()

    benchmark.pedantic(synced(step, device), rounds=5, warmup_rounds=1)
    record(
        benchmark,
        op="tgmamba_train_step",
        shape={"B": batch, "V": V, "L": Lq, "F": F},
        dtype=torch.float32,
        backend="pytorch-cudagraph" if graphs else "pytorch",
        device=device,
        items=batch,
        item_name="samples",
        d_model=s.model_dim,
    )


def test_baseline_fit(benchmark, fold):
    benchmark.pedantic(
        lambda: fit_bandpower_baseline(fold.train.raw, fold.train.y, fold.test.raw, fold.sfreq),
        rounds=3,
        warmup_rounds=1,
    )
    record(
        benchmark,
        op="bandpower_logreg_fit",
        shape={"N": len(fold.train), "V": 14, "T": 128},
        dtype="float64",
        backend="sklearn",
        device="cpu",
        items=len(fold.train),
        item_name="windows",
    )
    assert np.isfinite(fold.train.raw).all()
