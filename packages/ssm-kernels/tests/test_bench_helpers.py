"""The benchmark helpers' bookkeeping (no GPU: torch.profiler is replaced by a stand-in)."""

from __future__ import annotations

import types

import torch

from ssm_kernels.testing import bench


class _FakeProfile:
    """Stands in for ``torch.profiler.profile``: key_averages() returns the given (key, device us) rows."""

    rows: list[tuple[str, float]] = []

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def key_averages(self):
        return [types.SimpleNamespace(key=k, self_device_time_total=t) for k, t in self.rows]


def test_kernel_us_sums_names_cut_to_the_same_prefix(monkeypatch):
    """cuBLAS kernels of several tile sizes share their first 40 characters: their times add up (run17 found the
    helper keeping only the last one, which made the TGMamba block's GPU time 55 instead of 74 ms at raw)."""
    gemm = "sm80_xmma_gemm_f32f32_f32f32_f32_nt_n_tilesize"
    _FakeProfile.rows = [(gemm + "32x32x8_stage3", 300.0), (gemm + "32x64x8_stage3", 100.0), ("_my_kernel", 50.0),
                         ("aten::mm", 0.0)]  # fmt: skip
    monkeypatch.setattr(torch.profiler, "profile", _FakeProfile)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    per = bench.kernel_us(lambda: None, reps=2, width=40)
    assert per == {gemm[:40]: 200.0, "_my_kernel": 25.0}
    assert sum(per.values()) == (300.0 + 100.0 + 50.0) / 2
