import importlib.util
import os

import pytest

import ssm_kernels


def test_version():
    assert ssm_kernels.__version__ == "0.1.0"


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ssm_kernels.nope  # noqa: B018


def test_public_names_resolve():
    """Every advertised public name resolves to a callable (import is lazy but must work)."""
    for name in ssm_kernels.__all__:
        if name == "__version__":
            continue
        assert callable(getattr(ssm_kernels, name)), name


@pytest.mark.skipif(os.environ.get("SSM_KERNELS_EXPECT_MINIMAL") != "1", reason="only in the minimal nox venv")
def test_minimal_environment():
    """In its own nox session ssm-kernels runs with torch + einops only."""
    for mod in ("triton", "torch_geometric", "lightning"):
        assert importlib.util.find_spec(mod) is None, f"{mod} must not be installed in the ssm-kernels test venv"
