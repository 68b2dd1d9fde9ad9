import pytest
import torch

from ssm_kernels import backend
from ssm_kernels._checks import check_finite, check_same_device, check_tensor


def test_reference_forced(monkeypatch):
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "reference")
    assert backend.select_backend("graph_scan", [torch.zeros(2)]) == "reference"


def test_per_op_variable_wins(monkeypatch):
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "triton")
    monkeypatch.setenv("SSM_KERNELS_BACKEND_SSD", "reference")
    assert backend.requested_backend("ssd") == "reference"
    assert backend.requested_backend("graph_scan") == "triton"


def test_auto_on_cpu_is_reference(monkeypatch):
    monkeypatch.delenv("SSM_KERNELS_BACKEND", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert backend.select_backend("graph_scan", [torch.zeros(2)]) == "reference"


def test_bad_backend_name(monkeypatch):
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "fortran")
    with pytest.raises(ValueError, match="SSM_KERNELS_BACKEND"):
        backend.requested_backend("graph_scan")


def test_forced_unusable_backend_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "triton")
    with pytest.raises(backend.BackendUnavailableError, match="graph_scan"):
        backend.select_backend("graph_scan", [torch.zeros(2)])


def test_not_implemented_backend_raises(monkeypatch):
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "cuda")
    with pytest.raises(backend.BackendUnavailableError, match="not implemented"):
        backend.select_backend("graph_scan", [torch.zeros(2)], fast=("triton",))


def test_check_tensor_names_argument():
    with pytest.raises(ValueError, match=r"delta must have shape \(2, \*, 3\)"):
        check_tensor("delta", torch.zeros(2, 4, 4), shape=(2, None, 3))
    with pytest.raises(TypeError, match="A must have dtype"):
        check_tensor("A", torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="u is required"):
        check_tensor("u", None)
    check_tensor("z", None, optional=True)


def test_check_same_device_and_finite():
    assert check_same_device(a=torch.zeros(1), b=None) == torch.device("cpu")
    with pytest.raises(ValueError, match="x contains NaN"):
        check_finite("x", torch.tensor([1.0, float("nan")]))


def test_fp32_kernels_send_float64_to_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("SSM_KERNELS_BACKEND", raising=False)
    x64 = torch.zeros(2, dtype=torch.float64)
    if backend.triton_available():
        assert backend.select_backend("norms", [torch.zeros(2)], fp32_kernels=True) == "triton"
    assert backend.select_backend("norms", [x64], fp32_kernels=True) == "reference"
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "triton")
    with pytest.raises(backend.BackendUnavailableError, match="float64"):
        backend.select_backend("norms", [x64], fp32_kernels=True)


@pytest.fixture
def matmul_precision():
    prev = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(prev)


def test_dot_precision_rule(monkeypatch, matmul_precision):
    monkeypatch.delenv("SSM_KERNELS_TF32", raising=False)
    monkeypatch.delenv("OP_PRECISION", raising=False)
    torch.set_float32_matmul_precision("highest")
    assert backend.dot_precision(torch.float32, "OP_PRECISION", (torch.bfloat16,)) == "3xtf32"
    assert backend.dot_precision(torch.float16, "OP_PRECISION", (torch.bfloat16,)) == "3xtf32"
    assert backend.dot_precision(torch.float16, "OP_PRECISION", (torch.bfloat16, torch.float16)) == "tf32"
    assert backend.dot_precision(torch.bfloat16, "OP_PRECISION", (torch.bfloat16,)) == "tf32"
    monkeypatch.setenv("SSM_KERNELS_TF32", "1")
    assert backend.dot_precision(torch.float32, "OP_PRECISION", ()) == "tf32"
    monkeypatch.delenv("SSM_KERNELS_TF32")
    torch.set_float32_matmul_precision("high")
    assert backend.dot_precision(torch.float32, "OP_PRECISION", ()) == "tf32"
    monkeypatch.setenv("OP_PRECISION", "ieee")  # the op's variable wins over everything
    assert backend.dot_precision(torch.bfloat16, "OP_PRECISION", (torch.bfloat16,)) == "ieee"
    monkeypatch.setenv("OP_PRECISION", "fp8")
    with pytest.raises(ValueError, match="OP_PRECISION='fp8'"):
        backend.dot_precision(torch.float32, "OP_PRECISION", ())
