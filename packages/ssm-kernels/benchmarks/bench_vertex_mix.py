"""Benchmarks of the vertex mixing (``vertex_mix_fn``): Triton against the PyTorch reference, same run.

GPU (H200):
    python -m pytest -c pyproject.toml packages/ssm-kernels/benchmarks/bench_vertex_mix.py -m gpu \
        --benchmark-json=vertex_mix-h200.json
CPU (tiny, reference only) runs in the default suite with --benchmark-disable.

Cases ``<shape>-<dtype>-<backend>``: TGMamba's input-side graph convolution, ``vertex_mix_fn(P, M, residual=Q)``
with P and Q the two channel halves of one (batch, V, 2C, L) product (strided, as the block passes them) and a
per-step mix (T = L). ``bytes`` is the minimal traffic: forward reads x, residual and mix and writes out; forward+
backward also reads d_out, x and mix again and writes dx and dmix (d_residual is d_out itself).
"""

from __future__ import annotations

import pytest
import torch

from ssm_kernels import vertex_mix_fn, vertex_mix_ref
from ssm_kernels.testing.bench import peak_memory, record, synced, tensor_bytes

SHAPES = {
    "raw": (16, 19, 64, 2000),  # TGMamba raw EEG: batch 16, 19 electrodes, d_inner 64, 10 s at 200 Hz
    "tusz": (256, 19, 64, 10),
    "cpu_tiny": (2, 5, 8, 16),
}


def _cases():
    cases = [
        pytest.param(s, dt, be, id=f"{s}-{dt}-{be}", marks=pytest.mark.gpu)
        for s in ("raw", "tusz")
        for dt in ("fp32", "bf16")
        for be in ("triton", "reference")
    ]
    return cases + [pytest.param("cpu_tiny", "fp32", "reference", id="cpu_tiny-fp32-reference")]


def _setup(shape, dtype_name, grad):
    device = "cpu" if shape == "cpu_tiny" else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    batch, V, C, L = SHAPES[shape]
    g = torch.Generator().manual_seed(0)
    pq = torch.randn(batch, V, 2 * C, L, generator=g).to(device, dtype).requires_grad_(grad)
    mix = torch.rand(batch, L, V, V, generator=g).to(device).requires_grad_(grad)
    return pq, mix, device, dtype


def _call(backend, pq, mix):
    C = pq.shape[2] // 2
    fn = vertex_mix_fn if backend == "triton" else vertex_mix_ref
    return fn(pq[:, :, C:], mix, residual=pq[:, :, :C])


def _bytes(pq, mix, backward):
    half = tensor_bytes(pq) // 2
    fwd = 3 * half + tensor_bytes(mix)
    return fwd + (4 * half + 2 * tensor_bytes(mix) if backward else 0)


def _rounds(shape):
    return dict(rounds=3, warmup_rounds=1) if shape == "cpu_tiny" else dict(rounds=20, warmup_rounds=3)


def _record(benchmark, op, shape, pq, mix, dtype, backend, device, backward, peak):
    batch, V, C2, L = pq.shape
    record(benchmark, op=op, shape=dict(batch=batch, V=V, C=C2 // 2, L=L), dtype=dtype, backend=backend,
           device=device, bytes_moved=_bytes(pq, mix, backward), peak_bytes=peak)  # fmt: skip


@pytest.mark.parametrize("shape,dtype_name,backend", _cases())
def test_vertex_mix_forward(benchmark, shape, dtype_name, backend):
    pq, mix, device, dtype = _setup(shape, dtype_name, grad=False)
    run = synced(lambda: _call(backend, pq, mix), device)
    peak = peak_memory(run, device)
    benchmark.pedantic(run, **_rounds(shape))
    _record(benchmark, "vertex_mix_fwd", shape, pq, mix, dtype, backend, device, False, peak)


@pytest.mark.parametrize("shape,dtype_name,backend", _cases())
def test_vertex_mix_forward_backward(benchmark, shape, dtype_name, backend):
    pq, mix, device, dtype = _setup(shape, dtype_name, grad=True)
    g = torch.randn(pq[:, :, : pq.shape[2] // 2].shape, device=device, dtype=dtype)

    def call():
        return torch.autograd.grad(_call(backend, pq, mix), [pq, mix], g)

    run = synced(call, device)
    peak = peak_memory(run, device)
    benchmark.pedantic(run, **_rounds(shape))
    _record(benchmark, "vertex_mix_fwd_bwd", shape, pq, mix, dtype, backend, device, True, peak)
