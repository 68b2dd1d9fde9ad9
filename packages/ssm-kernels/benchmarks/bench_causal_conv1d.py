"""Benchmarks of the causal depthwise conv1d: Triton vs the PyTorch reference, same run.

GPU (H200):
    python -m pytest -c pyproject.toml packages/ssm-kernels/benchmarks/bench_causal_conv1d.py -m gpu \
        --benchmark-only --benchmark-save=causal_conv1d
CPU (tiny, reference only) runs in the default suite with --benchmark-disable.

Cases are ``<shape>-<dtype>-<backend>`` for ``forward`` and ``forward_backward`` (SiLU, bias).
``bytes`` is the minimal traffic: forward reads x and writes out; forward+backward additionally
reads x and d_out and writes dx (weights and bias are negligible).
"""

from __future__ import annotations

import pytest
import torch

from ssm_kernels.testing.bench import peak_memory, record, synced, tensor_bytes
from ssm_kernels.testing.causal_conv1d import make_conv1d_inputs

SHAPES = {
    "b8-d4096-L2048-w4": dict(batch=8, dim=4096, seqlen=2048, width=4),
    "cpu_tiny": dict(batch=2, dim=16, seqlen=64, width=4),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _cases():
    cases = [
        pytest.param("b8-d4096-L2048-w4", "bf16", be, id=f"b8-d4096-L2048-w4-bf16-{be}", marks=pytest.mark.gpu)
        for be in ("triton", "reference")
    ]
    cases.append(pytest.param("cpu_tiny", "fp32", "reference", id="cpu_tiny-fp32-reference"))
    return cases


def _setup(shape, dt, backend, grad):
    if shape != "cpu_tiny" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if backend == "triton":
        pytest.importorskip("triton")
    device = "cuda" if shape != "cpu_tiny" else "cpu"
    inp = make_conv1d_inputs(**SHAPES[shape], dtype=DTYPES[dt], device=device, bias=True)
    if grad:
        for k in ("x", "weight", "bias"):
            inp[k].requires_grad_()
    return inp, device


def _rounds(shape):
    return dict(rounds=3, warmup_rounds=1) if shape == "cpu_tiny" else dict(rounds=30, warmup_rounds=5)


@pytest.mark.parametrize("shape,dt,backend", _cases())
def test_causal_conv1d_forward(benchmark, shape, dt, backend):
    from ssm_kernels import causal_conv1d_fn

    inp, device = _setup(shape, dt, backend, grad=False)

    def call():
        with torch.no_grad():
            return causal_conv1d_fn(**inp, activation="silu", backend=backend)

    run = synced(call, device)
    peak = peak_memory(run, device)
    benchmark.pedantic(run, **_rounds(shape))
    record(benchmark, op="causal_conv1d_fwd", shape=SHAPES[shape], dtype=DTYPES[dt], backend=backend, device=device,
           bytes_moved=2 * tensor_bytes(inp["x"]), peak_bytes=peak)  # fmt: skip


@pytest.mark.parametrize("shape,dt,backend", _cases())
def test_causal_conv1d_forward_backward(benchmark, shape, dt, backend):
    from ssm_kernels import causal_conv1d_fn

    inp, device = _setup(shape, dt, backend, grad=True)
    dy = torch.randn_like(inp["x"])
    leaves = [inp["x"], inp["weight"], inp["bias"]]

    def call():
        out = causal_conv1d_fn(**inp, activation="silu", backend=backend)
        return torch.autograd.grad(out, leaves, dy)

    run = synced(call, device)
    peak = peak_memory(run, device)
    benchmark.pedantic(run, **_rounds(shape))
    record(benchmark, op="causal_conv1d_fwd_bwd", shape=SHAPES[shape], dtype=DTYPES[dt], backend=backend,
           device=device, bytes_moved=5 * tensor_bytes(inp["x"]), peak_bytes=peak)  # fmt: skip
