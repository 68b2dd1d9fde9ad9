import pytest
import torch

pytest.importorskip("triton")
from ssm_kernels.graph_scan.triton import _precision


@pytest.fixture
def restore_precision(monkeypatch):
    monkeypatch.delenv("SSM_KERNELS_GRAPH_SCAN_PRECISION", raising=False)
    monkeypatch.delenv("SSM_KERNELS_TF32", raising=False)
    prev = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(prev)


def test_fp32_follows_torch_matmul_precision(restore_precision):
    torch.set_float32_matmul_precision("highest")
    assert _precision(torch.float32) == "tf32x3"
    torch.set_float32_matmul_precision("high")
    assert _precision(torch.float32) == "tf32"
    assert _precision(torch.bfloat16) == "tf32"


def test_environment_overrides(restore_precision, monkeypatch):
    torch.set_float32_matmul_precision("high")
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_PRECISION", "ieee")
    assert _precision(torch.float32) == "ieee"
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_PRECISION", "fp8")
    with pytest.raises(ValueError, match="SSM_KERNELS_GRAPH_SCAN_PRECISION"):
        _precision(torch.float32)
