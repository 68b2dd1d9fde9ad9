"""TGMamba tests run single-threaded: the per-step reference paths issue thousands of tiny ops,
for which intra-op threads only add contention (100x slower on a loaded 2-core machine)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
