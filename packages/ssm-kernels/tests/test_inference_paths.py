"""Inference calls (no input needs a gradient, or ``torch.no_grad``) skip the ops' autograd Functions and
launch the forward directly. They must give exactly what the autograd path gives (same kernels, same
launches), including the extra outputs (prenorm residual, final states). Triton kernels on CPU tensors:
marker ``interpret`` (TRITON_INTERPRET=1)."""

from __future__ import annotations

import pytest
import torch

from ssm_kernels.backend import needs_autograd, triton_available, triton_interpret

needs_interpret = pytest.mark.skipif(
    not (triton_available() and triton_interpret()), reason="needs TRITON_INTERPRET=1 and triton"
)


def test_needs_autograd():
    a, b = torch.zeros(2), torch.zeros(2, requires_grad=True)
    assert not needs_autograd(a, None)
    assert needs_autograd(a, None, b)
    with torch.no_grad():
        assert not needs_autograd(a, b)


def _both(fn, *tensors):
    """fn() on grad-requiring copies of ``tensors`` (autograd Function) and under no_grad (direct launch)."""
    with_grad = fn(*[None if t is None else t.clone().requires_grad_(t.is_floating_point()) for t in tensors])
    with torch.no_grad():
        direct = fn(*tensors)
    return with_grad, direct


def _assert_same(a, b):
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x.detach(), y), (x - y).abs().max()


@needs_interpret
@pytest.mark.interpret
@pytest.mark.parametrize("prenorm", [False, True])
def test_layer_norm_inference_path(prenorm):
    from ssm_kernels import layer_norm_fn

    g = torch.Generator().manual_seed(0)
    x, res = torch.randn(5, 24, generator=g), torch.randn(5, 24, generator=g)
    w, b = torch.rand(24, generator=g) + 0.5, torch.randn(24, generator=g)

    def fn(x, res, w, b):
        return layer_norm_fn(x, w, b, residual=res, prenorm=prenorm, backend="triton")

    _assert_same(*_both(fn, x, res, w, b))


@needs_interpret
@pytest.mark.interpret
def test_gated_rms_norm_inference_path():
    from ssm_kernels.norms.interface import rms_norm_gated_fn

    g = torch.Generator().manual_seed(1)
    x, z = torch.randn(6, 32, generator=g), torch.randn(6, 32, generator=g)
    w = torch.rand(32, generator=g) + 0.5

    def fn(x, z, w):
        return rms_norm_gated_fn(x, w, None, z=z, group_size=16, norm_before_gate=False, backend="triton")

    _assert_same(*_both(fn, x, z, w))


@needs_interpret
@pytest.mark.interpret
def test_causal_conv1d_inference_path():
    from ssm_kernels import causal_conv1d_fn

    g = torch.Generator().manual_seed(2)
    x, w, b = torch.randn(2, 8, 19, generator=g), torch.randn(8, 4, generator=g), torch.randn(8, generator=g)
    init = torch.randn(2, 8, 3, generator=g)

    def fn(x, w, b, init):
        return causal_conv1d_fn(x, w, b, initial_states=init, return_final_states=True, activation="silu",
                                backend="triton")  # fmt: skip

    _assert_same(*_both(fn, x, w, b, init))


@needs_interpret
@pytest.mark.interpret
def test_ssd_inference_path():
    from ssm_kernels import mamba_chunk_scan_combined
    from ssm_kernels.testing.ssd import make_inputs

    inp = make_inputs(1, 40, 2, 16, 1, 16, dtype=torch.float32, seed=3)
    names = list(inp)

    def fn(*ts):
        kw = dict(zip(names, ts))
        return mamba_chunk_scan_combined(chunk_size=16, dt_softplus=True, return_final_states=True, backend="triton",
                                         **kw)  # fmt: skip

    _assert_same(*_both(fn, *inp.values()))
