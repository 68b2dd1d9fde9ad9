"""Benchmarks of the graph selective scan: fused Triton vs the PyTorch reference, same run.

GPU (H200):
    python -m pytest -c pyproject.toml packages/ssm-kernels/benchmarks/bench_graph_scan.py -m gpu \
        --benchmark-only --benchmark-save=graph_scan
CPU (tiny, reference only) runs in the default suite with --benchmark-disable.

Cases are ``<shape>-<dtype>-<backend>`` for ``forward`` and ``forward_backward``. The configuration
is TGMamba-like: K = 2 operators (graphconv), one operator set per clip (T = 1), Mamba's D, z,
delta_bias and softplus. ``bytes`` is the minimal traffic: every input read once and every output
written once (forward: out; forward+backward: additionally every input re-read, d_out read and
every gradient written).
"""

from __future__ import annotations

import functools

import pytest
import torch

from ssm_kernels.testing.bench import peak_memory, record, synced, tensor_bytes
from ssm_kernels.testing.graph_scan import graph_scan_grad_names, make_graph_scan_inputs

SHAPES = {
    "tusz": dict(batch=256, V=19, D=64, N=16, L=10),
    "raw": dict(batch=16, V=19, D=64, N=16, L=2000),
    "cpu_tiny": dict(batch=2, V=5, D=4, N=4, L=8),
}
OPTS = dict(K=2, T="1", with_D=True, with_z=True, with_bias=True, softplus=True)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _fn(backend):
    if backend.startswith("triton"):
        from ssm_kernels.graph_scan.triton import graph_selective_scan_triton

        # "triton": the default (split) backward; "triton-fused": the one-kernel backward, for comparison
        return functools.partial(graph_selective_scan_triton, backward="fused" if backend == "triton-fused" else None)
    from ssm_kernels.graph_scan.reference import graph_selective_scan_ref

    return graph_selective_scan_ref


def _cases(backward=False):
    cases = []
    for shape in ("tusz", "raw"):
        for dt in DTYPES:
            for backend in ("triton", "triton-fused", "reference") if backward else ("triton", "reference"):
                cases.append(pytest.param(shape, dt, backend, id=f"{shape}-{dt}-{backend}", marks=pytest.mark.gpu))
    cases.append(pytest.param("cpu_tiny", "fp32", "reference", id="cpu_tiny-fp32-reference"))
    return cases


def _setup(shape, dt, backend, grad):
    if shape != "cpu_tiny" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if backend.startswith("triton"):
        pytest.importorskip("triton")
    device = "cuda" if shape != "cpu_tiny" else "cpu"
    inputs = make_graph_scan_inputs(**SHAPES[shape], **OPTS, dtype=DTYPES[dt], device=device, requires_grad=grad)
    names = graph_scan_grad_names(inputs)
    return inputs, names, device, _fn(backend)


def _rounds(shape, backend):
    if shape == "raw" and backend == "reference":
        return dict(rounds=2, warmup_rounds=1, iterations=1)
    if shape == "cpu_tiny":
        return dict(rounds=3, warmup_rounds=1, iterations=1)
    return dict(rounds=30, warmup_rounds=5, iterations=1)


@pytest.mark.parametrize("shape,dt,backend", _cases())
def test_graph_scan_forward(benchmark, shape, dt, backend):
    inputs, names, device, fn = _setup(shape, dt, backend, grad=False)

    def call():
        with torch.no_grad():
            return fn(**inputs)

    run = synced(call, device)
    peak = peak_memory(run, device)
    out = benchmark.pedantic(run, **_rounds(shape, backend))
    moved = tensor_bytes(*(inputs[n] for n in names)) + tensor_bytes(out)
    record(benchmark, op="graph_selective_scan.forward", shape=SHAPES[shape], dtype=DTYPES[dt], backend=backend,
           device=device, bytes_moved=moved, peak_bytes=peak, items=SHAPES[shape]["batch"], item_name="clips",
           config=str(OPTS))  # fmt: skip


@pytest.mark.parametrize("shape,dt,backend", _cases(backward=True))
def test_graph_scan_forward_backward(benchmark, shape, dt, backend):
    inputs, names, device, fn = _setup(shape, dt, backend, grad=True)
    leaves = [inputs[n] for n in names]
    d_out = torch.randn_like(inputs["u"])

    def call():
        out = fn(**inputs)
        return torch.autograd.grad(out, leaves, d_out)

    run = synced(call, device)
    peak = peak_memory(run, device)
    grads = benchmark.pedantic(run, **_rounds(shape, backend))
    # forward (inputs + out) + backward (inputs again + d_out + all gradients)
    moved = 2 * tensor_bytes(*leaves) + 2 * tensor_bytes(d_out) + tensor_bytes(*grads)
    record(benchmark, op="graph_selective_scan.forward_backward", shape=SHAPES[shape], dtype=DTYPES[dt],
           backend=backend, device=device, bytes_moved=moved, peak_bytes=peak, items=SHAPES[shape]["batch"],
           item_name="clips", config=str(OPTS))  # fmt: skip
