"""--cuda-graphs: the settings' check on CPU, and (marker gpu) a Lightning fit with graphed training steps against
an eager fit from the same seed."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ssm_kernels.testing import requires_cuda
from tgmamba_train.module import TGMambaLightning
from tgmamba_train.settings import TrainSettings

V, T, F = 4, 6, 3


def _module(cuda_graphs: bool) -> TGMambaLightning:
    torch.manual_seed(0)
    ring = [[i, (i + 1) % V] for i in range(V)] + [[(i + 1) % V, i] for i in range(V)]
    graph = {"edge_index": torch.tensor(ring).T.tolist(), "edge_weight": [1.0] * len(ring)}
    cfg = TrainSettings(dropout=0.0).model_config(V, F, 2)
    return TGMambaLightning(model_config=cfg, task="binary", graph=graph, scheduler="none", cuda_graphs=cuda_graphs)


def test_cuda_graphs_need_a_gpu_accelerator():
    with pytest.raises(ValueError, match="cuda_graphs needs a GPU accelerator"):
        TrainSettings(cuda_graphs=True, accelerator="cpu")
    TrainSettings(cuda_graphs=True, accelerator="gpu")


def test_cuda_graphs_module_runs_eagerly_on_cpu():
    graphed, eager = _module(True), _module(False)
    x = torch.randn(3, V, T, F)
    torch.testing.assert_close(graphed(x), eager(x), rtol=0, atol=0)
    assert graphed._graphed.num_graphs == 0


def _fit(cuda_graphs: bool) -> TGMambaLightning:
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(20, V, T, F, generator=g), torch.randint(0, 2, (20,), generator=g)
    y[:2] = torch.tensor([0, 1])
    module = _module(cuda_graphs)
    train = DataLoader(TensorDataset(x, y), batch_size=8)  # batches of 8, 8 and 4: two graphs
    val = DataLoader(TensorDataset(x[:8], y[:8]), batch_size=8)
    trainer = L.Trainer(
        max_epochs=2, accelerator="gpu", devices=1, deterministic=True, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, train, val)
    return module


@pytest.mark.gpu
@requires_cuda
def test_cuda_graphs_fit_matches_eager_fit():
    graphed, eager = _fit(True), _fit(False)
    assert graphed._graphed.num_graphs == 2
    for (name, p), q in zip(graphed.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_cuda_graphs_refuse_multi_process_training():
    module = _module(True)
    module._trainer = SimpleNamespace(world_size=2)  # as under 2-process DDP
    with pytest.raises(ValueError, match="single-process training only, got world_size=2"):
        module.setup("fit")
    module._trainer = SimpleNamespace(world_size=1)
    module.setup("fit")
