import pytest
import torch

pytest.importorskip("triton")
from ssm_kernels.graph_scan.triton import _precision

# Needs only an importable triton, which CI installs for the interpreter session (nox -s interpret); the marker
# runs these there (the plain test session has no triton, so they would be skipped everywhere else).
pytestmark = pytest.mark.interpret


@pytest.fixture
def restore_precision(monkeypatch):
    monkeypatch.delenv("SSM_KERNELS_GRAPH_SCAN_PRECISION", raising=False)
    monkeypatch.delenv("SSM_KERNELS_TF32", raising=False)
    prev = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(prev)


def test_fp32_follows_torch_matmul_precision(restore_precision):
    torch.set_float32_matmul_precision("highest")
    assert _precision(torch.float32) == "3xtf32"
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


def test_warps_heuristic_keeps_eight_warps_for_the_three_product_backward(monkeypatch):
    """4 warps only where measured faster (the tf32 and 3xtf32 forwards, the tf32 fused backward); the split adjoint
    keeps 8 at every precision."""
    from ssm_kernels.graph_scan import triton as gst

    monkeypatch.setattr(gst, "_sm_count", lambda index: 132)
    for name in ("SSM_KERNELS_GRAPH_SCAN_WARPS_FWD", "SSM_KERNELS_GRAPH_SCAN_WARPS_BWD"):
        monkeypatch.delenv(name, raising=False)
    cuda = torch.device("cuda", 0)
    many = 4 * 132
    assert gst._num_warps(32, 8, 16, False, many, cuda, "tf32") == 4
    assert gst._num_warps(32, 8, 16, False, many, cuda, "tf32", adjoint=True) == 8  # run18d: the tf32 adjoint too
    assert gst._num_warps(32, 8, 16, False, many, cuda, "3xtf32") == 4
    assert gst._num_warps(32, 8, 16, False, many, cuda, "3xtf32", adjoint=True) == 8
    assert gst._num_warps(32, 8, 16, False, many, cuda, "ieee", adjoint=True) == 8
    assert gst._num_warps(32, 8, 16, False, many, cuda, "tf32x3") == 8
    assert gst._num_warps(32, 8, 16, False, many - 1, cuda, "tf32") == 8  # few programs: 8
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_WARPS_BWD", "2")  # the adjoint follows the backward's override
    assert gst._num_warps(32, 8, 16, False, many, cuda, "3xtf32", adjoint=True) == 2
    assert gst._num_warps(32, 8, 16, False, many, cuda, "3xtf32") == 4
