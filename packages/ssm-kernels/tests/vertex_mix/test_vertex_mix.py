"""vertex_mix_fn: the reference against a per-step loop written from the definition, gradcheck, input errors, and
the Triton path (outputs and every gradient) against the reference: under TRITON_INTERPRET=1 on tiny awkward shapes
(marker ``interpret``) and on CUDA at TGMamba's shapes (marker ``gpu``)."""

from __future__ import annotations

import pytest
import torch

from ssm_kernels import vertex_mix_fn, vertex_mix_ref
from ssm_kernels.backend import triton_available, triton_interpret
from ssm_kernels.testing import requires_cuda

needs_interpret = pytest.mark.skipif(
    not (triton_available() and triton_interpret()), reason="needs triton and TRITON_INTERPRET=1"
)


def _naive(x, mix, residual=None):
    """Per (batch row, step) dense products, in float64."""
    batch, V, C, L = x.shape
    out = torch.empty(batch, V, C, L, dtype=torch.float64)
    for b in range(batch):
        m_b = mix[min(b, mix.shape[0] - 1)].double()
        for t in range(L):
            out[b, :, :, t] = m_b[min(t, mix.shape[1] - 1)] @ x[b, :, :, t].double()
    return out if residual is None else out + residual.double()


def _inputs(batch, V, C, L, T, mix_batch=None, dtype=torch.float32, device="cpu", strided=False, seed=0):
    """x (strided: a channel slice of a wider tensor, as TGMamba's fused (2C)-channel product), mix (transposed
    storage when strided), residual."""
    g = torch.Generator().manual_seed(seed)
    if strided:
        x = torch.randn(batch, V, 2 * C, L, generator=g)[:, :, C:]
        mix = torch.rand(mix_batch or batch, T, V, V, generator=g).transpose(-1, -2)
    else:
        x = torch.randn(batch, V, C, L, generator=g)
        mix = torch.rand(mix_batch or batch, T, V, V, generator=g)
    residual = torch.randn(batch, V, C, L, generator=g)
    cast = dict(device=device, dtype=dtype)
    return x.to(**cast), mix.to(device=device), residual.to(**cast)


@pytest.mark.parametrize("T", ["1", "L"])
@pytest.mark.parametrize("mix_batch", [None, 1], ids=["per-batch", "shared"])
def test_reference_matches_naive(T, mix_batch):
    batch, V, C, L = 3, 5, 4, 7
    x, mix, r = _inputs(batch, V, C, L, 1 if T == "1" else L, mix_batch, strided=True)
    torch.testing.assert_close(vertex_mix_ref(x, mix).double(), _naive(x, mix), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vertex_mix_ref(x, mix, r).double(), _naive(x, mix, r), rtol=1e-5, atol=1e-5)


def test_reference_gradcheck():
    x, mix, r = _inputs(2, 3, 2, 4, 4, dtype=torch.float64, strided=True)
    mix = mix.double()
    args = [t.clone().requires_grad_(True) for t in (x, mix, r)]
    assert torch.autograd.gradcheck(vertex_mix_ref, args)


def test_bad_inputs_name_the_argument():
    x, mix, r = _inputs(2, 3, 4, 5, 5)
    with pytest.raises(ValueError, match="x must have shape"):
        vertex_mix_fn(x[0], mix)
    with pytest.raises(ValueError, match="mix must have shape"):
        vertex_mix_fn(x, mix[:, :3])
    with pytest.raises(ValueError, match="mix must have shape"):
        vertex_mix_fn(x, mix[..., :2])
    with pytest.raises(ValueError, match="residual must have shape"):
        vertex_mix_fn(x, mix, r[:1])
    with pytest.raises(TypeError, match="residual must have dtype"):
        vertex_mix_fn(x, mix, r.double())
    with pytest.raises(TypeError, match="mix must have dtype"):
        vertex_mix_fn(x, mix.to(torch.int64))


def _check_against_reference(x, mix, r, use_residual, rtol, atol):
    """The dispatched op (Triton under TRITON_INTERPRET=1 / on CUDA) against the float64 reference: output and the
    gradients of x, mix and residual."""
    args = [t.detach().clone().requires_grad_(True) for t in (x, mix, r)]
    ref = [t.detach().double().requires_grad_(True) for t in (x, mix, r)]
    out = vertex_mix_fn(args[0], args[1], args[2] if use_residual else None)
    want = vertex_mix_ref(ref[0], ref[1], ref[2] if use_residual else None)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert type(out.grad_fn).__name__ == "_VertexMixBackward", "the Triton path did not run"
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    out.backward(g)
    want.backward(g.double())
    torch.testing.assert_close(out.double(), want, rtol=rtol, atol=atol, msg="out")
    names = ["x", "mix", "residual"] if use_residual else ["x", "mix"]
    for n, a, b in zip(names, args, ref):
        assert a.grad is not None, f"d{n} is missing"
        assert a.grad.dtype == a.dtype, f"d{n} dtype"
        scale = b.grad.abs().max().item()
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=rtol, atol=atol * max(1.0, scale), msg=f"d{n}")


INTERP_CASES = [
    # id, (batch, V, C, L), mix_batch, strided
    ("V3-C3-L7", (2, 3, 3, 7), None, False),
    ("V5-shared-mix", (3, 5, 5, 9), 1, False),
    ("V6-strided", (2, 6, 3, 6), None, True),
    ("V2-C1-L2", (1, 2, 1, 2), None, False),
]


@pytest.mark.interpret
@needs_interpret
@pytest.mark.parametrize("use_residual", [True, False], ids=["residual", "plain"])
@pytest.mark.parametrize("shape,mix_batch,strided", [c[1:] for c in INTERP_CASES], ids=[c[0] for c in INTERP_CASES])
def test_triton_interpret(shape, mix_batch, strided, use_residual):
    batch, V, C, L = shape
    x, mix, r = _inputs(batch, V, C, L, L, mix_batch, strided=strided, seed=V)
    _check_against_reference(x, mix, r, use_residual, rtol=1e-5, atol=1e-5)


@pytest.mark.interpret
@needs_interpret
def test_triton_interpret_bf16_and_no_grad():
    x, mix, r = _inputs(2, 5, 4, 6, 6, dtype=torch.bfloat16, seed=3)
    _check_against_reference(x, mix, r, True, rtol=2e-2, atol=2e-2)
    with torch.no_grad():  # the inference call skips autograd's Function
        out = vertex_mix_fn(x.float(), mix, r.float())
    torch.testing.assert_close(out.double(), _naive(x.float(), mix, r.float()), rtol=1e-5, atol=1e-5)


@pytest.mark.interpret
@needs_interpret
def test_triton_precision_follows_the_shared_rule(monkeypatch):
    """Half inputs tf32 (exact for them), fp32 as the graph scan's rule; the op's own variable forces one."""
    from ssm_kernels.vertex_mix.triton import _precision

    monkeypatch.delenv("SSM_KERNELS_TF32", raising=False)
    monkeypatch.delenv("SSM_KERNELS_VERTEX_MIX_PRECISION", raising=False)
    prev = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert [_precision(d) for d in (torch.float32, torch.float16, torch.bfloat16)] == ["3xtf32", "tf32", "tf32"]
        monkeypatch.setenv("SSM_KERNELS_TF32", "1")
        assert _precision(torch.float32) == "tf32"
        monkeypatch.setenv("SSM_KERNELS_VERTEX_MIX_PRECISION", "ieee")
        assert _precision(torch.float32) == "ieee"
        x, mix, r = _inputs(2, 5, 4, 6, 6, seed=4)  # the forced precision runs
        _check_against_reference(x, mix, r, True, rtol=1e-5, atol=1e-5)
    finally:
        torch.set_float32_matmul_precision(prev)


GPU_CASES = [
    # id, (batch, V, C, L), mix_batch, strided
    ("raw-like", (2, 19, 64, 2000), None, True),
    ("tusz-like", (64, 19, 64, 10), None, False),
    ("V64-shared", (2, 64, 24, 333), 1, False),
    ("V8-L1k", (3, 8, 100, 1000), None, True),
]


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape,mix_batch,strided", [c[1:] for c in GPU_CASES], ids=[c[0] for c in GPU_CASES])
def test_triton_gpu(shape, mix_batch, strided, dtype):
    batch, V, C, L = shape
    x, mix, r = _inputs(batch, V, C, L, L, mix_batch, dtype=dtype, device="cuda", strided=strided, seed=V)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    _check_against_reference(x, mix, r, True, rtol=tol, atol=tol)
