"""tgmamba-models tests run single-threaded: tiny CPU models and the per-step reference paths issue thousands
of small ops, for which intra-op threads only add contention (up to 100x slower on a loaded 2-core machine)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_cpu_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
