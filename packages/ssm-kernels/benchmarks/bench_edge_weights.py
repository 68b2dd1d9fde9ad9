"""Benchmarks of the learned edge weights (``edge_weights_fn``): Triton against the PyTorch reference, same run.

GPU (H200):
    python -m pytest -c pyproject.toml packages/ssm-kernels/benchmarks/bench_edge_weights.py -m gpu \
        --benchmark-json=edge_weights-h200.json
CPU (tiny, reference only) runs in the default suite with --benchmark-disable.

Cases ``<shape>-fp32-<backend>``: TGMamba's EdgeLearner graph at d_model 32 (attention with the default
temperature, the time-varying similarity, a given graph shared by the steps), q and k the two halves of one
projection (strided, as the learner passes them). ``bytes`` is the minimal traffic: forward reads q, k, g and adj0
and writes the (batch, T, V, V) graph; forward+backward also reads d_out, q, k and g again and writes dq, dk, dg.
"""

from __future__ import annotations

import math

import pytest
import torch

from ssm_kernels import edge_weights_fn, edge_weights_ref
from ssm_kernels.testing.bench import peak_memory, record, synced, tensor_bytes

SHAPES = {
    "raw": (16, 2000, 19, 32),  # batch, T, V, d_model: 16 raw ten-second clips at 200 Hz, 19 electrodes
    "tusz": (256, 10, 19, 32),
    "cpu_tiny": (2, 8, 5, 8),
}


def _cases():
    cases = [
        pytest.param(s, "fp32", be, id=f"{s}-fp32-{be}", marks=pytest.mark.gpu)
        for s in ("raw", "tusz")
        for be in ("triton", "reference")
    ]
    return cases + [pytest.param("cpu_tiny", "fp32", "reference", id="cpu_tiny-fp32-reference")]


def _setup(shape, grad):
    device = "cpu" if shape == "cpu_tiny" else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    batch, T, V, E = SHAPES[shape]
    gen = torch.Generator().manual_seed(0)
    qk = (0.1 * torch.randn(batch, T, V, 2 * E, generator=gen)).to(device).requires_grad_(grad)
    g = torch.randn(batch, T, V, E, generator=gen).to(device).requires_grad_(grad)
    adj0 = (torch.rand(batch, 1, V, V, generator=gen) < 0.2).float().to(device)
    skip = torch.tensor(0.25, device=device, requires_grad=grad)
    return qk, g, adj0, skip, device


def _call(backend, qk, g, adj0, skip):
    q, k = qk.chunk(2, dim=-1)
    E = q.shape[-1]
    fn = edge_weights_fn if backend == "triton" else edge_weights_ref
    return fn(q, k, g, adj0, skip, attn_scale=1 / (math.sqrt(E) * 0.01), threshold=0.1, dyn_scale=E**-0.5)


def _rounds(shape):
    return dict(rounds=3, warmup_rounds=1) if shape == "cpu_tiny" else dict(rounds=20, warmup_rounds=3)


def _record(benchmark, op, shape, qk, g, adj0, backend, device, backward, peak):
    batch, T, V, E2 = qk.shape
    emb = tensor_bytes(qk) + tensor_bytes(g)
    graph = batch * T * V * V * 4
    moved = emb + tensor_bytes(adj0) + graph + ((graph + 2 * emb) if backward else 0)
    record(benchmark, op=op, shape=dict(batch=batch, T=T, V=V, E=E2 // 2), dtype=torch.float32, backend=backend,
           device=device, bytes_moved=moved, peak_bytes=peak)  # fmt: skip


@pytest.mark.parametrize("shape,dtype_name,backend", _cases())
def test_edge_weights_forward(benchmark, shape, dtype_name, backend):
    qk, g, adj0, skip, device = _setup(shape, grad=False)
    run = synced(lambda: _call(backend, qk, g, adj0, skip), device)
    peak = peak_memory(run, device)
    benchmark.pedantic(run, **_rounds(shape))
    _record(benchmark, "edge_weights_fwd", shape, qk, g, adj0, backend, device, False, peak)


@pytest.mark.parametrize("shape,dtype_name,backend", _cases())
def test_edge_weights_forward_backward(benchmark, shape, dtype_name, backend):
    qk, g, adj0, skip, device = _setup(shape, grad=True)
    batch, T, V, _ = qk.shape
    d_out = torch.randn(batch, T, V, V, device=device)

    def call():
        return torch.autograd.grad(_call(backend, qk, g, adj0, skip), [qk, g, skip], d_out)

    run = synced(call, device)
    peak = peak_memory(run, device)
    benchmark.pedantic(run, **_rounds(shape))
    _record(benchmark, "edge_weights_fwd_bwd", shape, qk, g, adj0, backend, device, True, peak)
