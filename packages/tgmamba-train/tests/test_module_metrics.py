"""Validation metrics of the Lightning module."""

from __future__ import annotations

import math

import pytest
import torch

from tgmamba_train.module import TGMambaLightning
from tgmamba_train.settings import TrainSettings

V, L, F = 4, 5, 3


def _module() -> TGMambaLightning:
    torch.manual_seed(0)
    ring = [[i, (i + 1) % V] for i in range(V)] + [[(i + 1) % V, i] for i in range(V)]
    graph = {"edge_index": torch.tensor(ring).T.tolist(), "edge_weight": [1.0] * len(ring)}
    return TGMambaLightning(model_config=TrainSettings().model_config(V, F, 2), task="binary", graph=graph)


def _validate(module: TGMambaLightning, labels: list[list[int]]) -> dict:
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, value)  # outside a Trainer
    module.eval()
    with torch.no_grad():
        for i, y in enumerate(labels):
            x = torch.randn(len(y), V, L, F)
            module.validation_step((x, torch.tensor(y)), i)
        module.on_validation_epoch_end()
    return logged


def test_val_auroc_nan_for_a_single_class_validation_set():
    """torchmetrics reports AUROC 0.0 when the targets hold one class: the module logs NaN instead."""
    logged = _validate(_module(), [[1, 1, 1], [1, 1]])
    assert math.isnan(float(logged["val_auroc"]))


@pytest.mark.parametrize("labels", [[[0, 1, 1], [0, 0]], [[0, 0, 0], [1, 1]]], ids=["mixed", "classes-in-batches"])
def test_val_auroc_over_the_epoch_and_reset(labels):
    """AUROC over every batch of the epoch (one class per batch still counts as two classes), then reset."""
    m = _module()
    logged = _validate(m, labels)
    value = float(logged["val_auroc"])
    assert 0.0 <= value <= 1.0
    assert m.val_count.update_count == 0 and m.val_auroc.update_count == 0  # reset for the next epoch
    again = _validate(m, labels)  # same model, same labels, fresh inputs: a valid AUROC again
    assert 0.0 <= float(again["val_auroc"]) <= 1.0
