"""Backend plumbing of the selective scan that can be checked without a GPU."""

from __future__ import annotations

import pytest
import torch

from ssm_kernels.backend import BackendUnavailableError
from ssm_kernels.selective_scan import cuda as scan_cuda
from ssm_kernels.selective_scan import selective_scan_fn
from ssm_kernels.testing.selective_scan import make_scan_inputs


def test_cuda_backend_refuses_cpu_tensors():
    x = make_scan_inputs(1, 2, 3, 4, seed=0)
    ok, why = scan_cuda.cuda_usable([x["u"], x["delta"], x["A"]])
    assert not ok and "CUDA tensors" in why
    with pytest.raises(BackendUnavailableError, match="cuda"):
        selective_scan_fn(**x, backend="cuda")


def test_env_forces_reference(monkeypatch):
    monkeypatch.setenv("SSM_KERNELS_BACKEND_SELECTIVE_SCAN", "reference")
    x = make_scan_inputs(1, 2, 3, 4, seed=1)
    out = selective_scan_fn(**x)
    assert out.shape == (1, 2, 3)


def test_build_directory_names_torch_cuda_and_arch(monkeypatch, tmp_path):
    monkeypatch.setenv("SSM_KERNELS_CACHE", str(tmp_path))
    d = scan_cuda.build_directory("90")
    assert d.parent == tmp_path
    assert f"torch{torch.__version__}".replace("+", "_") in d.name and "sm90" in d.name


def test_sources_ship_with_the_package():
    names = {p.name for p in scan_cuda.sources()}
    assert "selective_scan.cpp" in names
    assert {"selective_scan_fwd_f32.cu", "selective_scan_bwd_bf16.cu"} <= names
    assert (scan_cuda.csrc_dir() / "selective_scan_kernels.cuh").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_build_command_without_gpu_explains():
    from ssm_kernels.selective_scan.build import main

    assert main([]) == 2


class _FakeCuda:
    """Just enough of a CUDA tensor for cuda_usable's checks."""

    is_cuda = True

    def __init__(self, *shape, dtype=torch.float32):
        self.shape, self.dtype = shape, dtype

    def dim(self):
        return len(self.shape)


def test_failed_build_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setattr(scan_cuda, "_EXT", None)
    monkeypatch.setattr(scan_cuda, "_ERROR", None)
    monkeypatch.setattr(scan_cuda, "_WARNED", False)

    def broken(*a, **k):
        raise RuntimeError("nvcc exploded")

    monkeypatch.setattr(scan_cuda, "load_extension", broken)
    tensors = [_FakeCuda(2, 3, 4), None, _FakeCuda(3, 16)]
    with pytest.warns(RuntimeWarning, match="nvcc exploded"):
        ok, why = scan_cuda.cuda_usable(tensors)
    assert not ok and "nvcc exploded" in why
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert scan_cuda.cuda_usable(tensors)[0] is False  # no second warning


def test_cuda_usable_rejects_unsupported_inputs_without_building(monkeypatch):
    def must_not_build(*a, **k):
        raise AssertionError("should not try to build")

    monkeypatch.setattr(scan_cuda, "load_extension", must_not_build)
    monkeypatch.setattr(scan_cuda, "_WARNED_UNSUPPORTED", True)
    assert "N <= 64" in scan_cuda.cuda_usable([_FakeCuda(2, 3, 4), None, _FakeCuda(3, 65)])[1]
    assert "float64" in scan_cuda.cuda_usable([_FakeCuda(2, 3, 4, dtype=torch.float64), None, _FakeCuda(3, 4)])[1]
