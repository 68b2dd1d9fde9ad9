"""Benchmarks of the fused norms: Triton vs the PyTorch reference, same run.

GPU (H200):
    python -m pytest -c pyproject.toml packages/ssm-kernels/benchmarks/bench_norms.py -m gpu \
        --benchmark-only --benchmark-save=norms
CPU (tiny, reference only) runs in the default suite with --benchmark-disable.

Cases ``<shape>-<variant>-<dtype>-<backend>`` for ``forward`` and ``forward_backward``:
``rms`` is ``rms_norm_fn(x, weight)``, ``rms-res-prenorm`` adds a residual (fp32 residual stream,
prenorm output), ``gated`` is ``RMSNormGated`` (norm before gate, z given).
``bytes`` is the minimal traffic: every row input read once and every row output written once
(forward+backward: additionally the saved inputs and d_out read and the gradients written).
"""

from __future__ import annotations

import pytest
import torch

from ssm_kernels.testing.bench import peak_memory, record, synced, tensor_bytes

SHAPES = {"m16384-n4096": (16384, 4096), "cpu_tiny": (64, 256)}
VARIANTS = ("rms", "rms-res-prenorm", "gated")


def _cases():
    cases = [
        pytest.param("m16384-n4096", v, be, id=f"m16384-n4096-{v}-bf16-{be}", marks=pytest.mark.gpu)
        for v in VARIANTS
        for be in ("triton", "reference")
    ]
    cases += [pytest.param("cpu_tiny", v, "reference", id=f"cpu_tiny-{v}-fp32-reference") for v in VARIANTS]
    return cases


def _setup(shape, variant, grad):
    if shape != "cpu_tiny" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    device = "cuda" if shape != "cpu_tiny" else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    m, n = SHAPES[shape]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, n, generator=g).to(device, dtype).requires_grad_(grad)
    w = torch.ones(n, device=device, dtype=dtype, requires_grad=grad)
    other = None
    if variant == "gated":
        other = torch.randn(m, n, generator=g).to(device, dtype).requires_grad_(grad)
    elif variant == "rms-res-prenorm":
        other = torch.randn(m, n, generator=g).to(device, torch.float32).requires_grad_(grad)
    return x, w, other, device, dtype


def _call(variant, backend, x, w, other):
    from ssm_kernels.norms.interface import rms_norm_fn, rms_norm_gated_fn

    if variant == "gated":
        return (rms_norm_gated_fn(x, w, None, other, 1e-5, None, True, backend=backend),)
    if variant == "rms-res-prenorm":
        return rms_norm_fn(x, w, None, residual=other, eps=1e-5, prenorm=True, backend=backend)
    return (rms_norm_fn(x, w, eps=1e-5, backend=backend),)


def _bytes(variant, x, other, backward):
    fwd = 2 * tensor_bytes(x) + (tensor_bytes(other) if other is not None else 0)
    if variant == "rms-res-prenorm":
        fwd += tensor_bytes(other)  # residual_out (fp32) written
    if not backward:
        return fwd
    # read h (or x), d_out (and d_residual_out), write dx (and d_residual / dz)
    if variant == "gated":
        return fwd + 3 * tensor_bytes(x) + 2 * tensor_bytes(other)
    if variant == "rms-res-prenorm":
        return fwd + tensor_bytes(x) + 4 * tensor_bytes(other)
    return fwd + 3 * tensor_bytes(x)


def _rounds(shape):
    return dict(rounds=3, warmup_rounds=1) if shape == "cpu_tiny" else dict(rounds=30, warmup_rounds=5)


@pytest.mark.parametrize("shape,variant,backend", _cases())
def test_norms_forward(benchmark, shape, variant, backend):
    if backend == "triton":
        pytest.importorskip("triton")
    x, w, other, device, dtype = _setup(shape, variant, grad=False)

    def call():
        with torch.no_grad():
            return _call(variant, backend, x, w, other)

    run = synced(call, device)
    peak = peak_memory(run, device)
    benchmark.pedantic(run, **_rounds(shape))
    record(benchmark, op=f"norms_{variant}_fwd", shape=dict(rows=x.shape[0], hidden=x.shape[1]), dtype=dtype,
           backend=backend, device=device, bytes_moved=_bytes(variant, x, other, False), peak_bytes=peak)  # fmt: skip


@pytest.mark.parametrize("shape,variant,backend", _cases())
def test_norms_forward_backward(benchmark, shape, variant, backend):
    if backend == "triton":
        pytest.importorskip("triton")
    x, w, other, device, dtype = _setup(shape, variant, grad=True)
    leaves = [t for t in (x, w, other) if t is not None]
    outs0 = _call(variant, "reference", x, w, other)
    grads_out = [torch.randn_like(o) for o in outs0]
    del outs0

    def call():
        outs = _call(variant, backend, x, w, other)
        return torch.autograd.grad(outs, leaves, grads_out)

    run = synced(call, device)
    peak = peak_memory(run, device)
    benchmark.pedantic(run, **_rounds(shape))
    record(benchmark, op=f"norms_{variant}_fwd_bwd", shape=dict(rows=x.shape[0], hidden=x.shape[1]), dtype=dtype,
           backend=backend, device=device, bytes_moved=_bytes(variant, x, other, True), peak_bytes=peak)  # fmt: skip
