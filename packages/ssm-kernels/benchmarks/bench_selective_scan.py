"""Benchmarks of the Mamba-1 selective scan: our CUDA kernels vs mamba_ssm's published H200 figures.

GPU (H200):
    python -m pytest -c pyproject.toml packages/ssm-kernels/benchmarks/bench_selective_scan.py -m gpu \
        --benchmark-only --benchmark-save=selective_scan
CPU (tiny, reference only) runs in the default suite with --benchmark-disable.

Cases are ``<shape>-<dtype>-<backend>`` for ``forward`` and ``forward_backward``, all with z, D,
delta_bias and softplus (the configuration of the mamba_ssm figures in issue 6). Backend ``cuda-long``
is ``cuda`` with ``SSM_KERNELS_SCAN_LONG=1`` (the long-sequence kernels), ``cuda-lanes`` with
``SSM_KERNELS_SCAN_SHORT_ROWS=0`` (the lane-split short kernels instead of the one-thread-per-row ones),
``cuda-staged`` the lane-split ones with ``SSM_KERNELS_SCAN_SHORT_STAGE=1`` (B / C read from shared memory),
``cuda-warp`` with ``SSM_KERNELS_SCAN_STATE_FWD=0`` and ``SSM_KERNELS_SCAN_STATE_BWD=0`` (no state-lane kernels:
the warp-split long forward for inference, the general forward and backward for training; ``cuda-general`` sets
them too), ``cuda-untiled`` with ``SSM_KERNELS_SCAN_STATE_TILE=0`` (the state-lane forward without its staged
kernel), ``cuda-untiledbwd`` with ``SSM_KERNELS_SCAN_STATE_BWD_TILE=0`` (the state-lane backward without its
staged kernel), all timed beside the default kernels in the same run. mamba_ssm is not
installed on the GPU machine, so its times measured earlier on an H200 are recorded as
``baseline_ms`` (and ``speedup`` = baseline / ours) in ``extra_info``. ``bytes`` is the minimal
traffic: forward reads u, delta, z, B, C once and writes out; forward+backward additionally re-reads
them, reads d_out and writes every gradient of the (batch, ., L) tensors.
"""

from __future__ import annotations

import pytest
import torch

from ssm_kernels.testing.bench import peak_memory, record, synced, tensor_bytes
from ssm_kernels.testing.selective_scan import make_scan_inputs

SHAPES = {
    "big": dict(batch=8, dim=2048, seqlen=2048, dstate=16),
    "tusz": dict(batch=4864, dim=64, seqlen=10, dstate=16),
    "raw": dict(batch=304, dim=64, seqlen=2000, dstate=16),
    "cpu_tiny": dict(batch=2, dim=8, seqlen=16, dstate=4),
    # the CPU path at a language-model length (the reference; its cost must stay linear in seqlen)
    "cpu_long": dict(batch=1, dim=256, seqlen=2048, dstate=16),
}
SHAPE_DTYPE = {"big": "bf16", "tusz": "fp32", "raw": "fp32", "cpu_tiny": "fp32", "cpu_long": "fp32"}
CPU_SHAPES = ("cpu_tiny", "cpu_long")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# mamba_ssm's CUDA kernel on an H200 (issue 6): forward ms, forward+backward ms
BASELINE_MS = {"big": (0.590, 3.061), "tusz": (1.355, 5.01), "raw": (1.755, 8.05)}
TARGET_SPEEDUP = {"big": 1.3, "tusz": 10.0, "raw": 1.3}


def _cases():
    cases = [
        pytest.param(s, SHAPE_DTYPE[s], "cuda", id=f"{s}-{SHAPE_DTYPE[s]}-cuda", marks=pytest.mark.gpu)
        for s in ("big", "tusz", "raw")
    ]
    # beside the defaults (long forward for inference, general kernels for training), same run: the long kernels
    # in training too (SSM_KERNELS_SCAN_LONG=1) and the general kernels everywhere (SSM_KERNELS_SCAN_LONG=0)
    cases += [
        pytest.param(s, SHAPE_DTYPE[s], b, id=f"{s}-{SHAPE_DTYPE[s]}-{b}", marks=pytest.mark.gpu)
        for s in ("big", "raw")
        for b in ("cuda-long", "cuda-general")
    ]
    # without the state-lane kernels (SSM_KERNELS_SCAN_STATE_FWD=0, SSM_KERNELS_SCAN_STATE_BWD=0), where they are
    # the default
    cases += [pytest.param("big", "bf16", "cuda-warp", id="big-bf16-cuda-warp", marks=pytest.mark.gpu)]
    # the unstaged state-lane forward (SSM_KERNELS_SCAN_STATE_TILE=0), where the staged one is the default
    cases += [pytest.param("big", "bf16", "cuda-untiled", id="big-bf16-cuda-untiled", marks=pytest.mark.gpu)]
    # the unstaged state-lane backward (SSM_KERNELS_SCAN_STATE_BWD_TILE=0), where the staged one is the default
    cases += [
        pytest.param(s, SHAPE_DTYPE[s], "cuda-untiledbwd", id=f"{s}-{SHAPE_DTYPE[s]}-cuda-untiledbwd",
                     marks=pytest.mark.gpu)
        for s in ("big", "raw")
    ]  # fmt: skip
    # the lane-split short kernels (SSM_KERNELS_SCAN_SHORT_ROWS=0), plain and with B / C staged in shared memory
    # (SSM_KERNELS_SCAN_SHORT_STAGE=1)
    cases += [
        pytest.param("tusz", "fp32", b, id=f"tusz-fp32-{b}", marks=pytest.mark.gpu)
        for b in ("cuda-lanes", "cuda-staged")
    ]
    cases += [pytest.param(s, "fp32", "reference", id=f"{s}-fp32-reference") for s in CPU_SHAPES]
    return cases


def _setup(shape, dt, backend, grad, monkeypatch):
    if shape not in CPU_SHAPES and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if backend in ("cuda-long", "cuda-general"):
        monkeypatch.setenv("SSM_KERNELS_SCAN_LONG", "1" if backend == "cuda-long" else "0")
    else:
        monkeypatch.delenv("SSM_KERNELS_SCAN_LONG", raising=False)
    for var in ("SSM_KERNELS_SCAN_STATE_FWD", "SSM_KERNELS_SCAN_STATE_BWD"):
        if backend in ("cuda-warp", "cuda-general"):
            monkeypatch.setenv(var, "0")
        else:
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_TILE", "0" if backend == "cuda-untiled" else "1")
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_BWD_TILE", "0" if backend == "cuda-untiledbwd" else "1")
    monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT_STAGE", "1" if backend == "cuda-staged" else "0")
    monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT_ROWS", "0" if backend in ("cuda-lanes", "cuda-staged") else "1")
    op_backend = "cuda" if backend.startswith("cuda") else backend
    device = "cuda" if shape not in CPU_SHAPES else "cpu"
    x = make_scan_inputs(**SHAPES[shape], dtype=DTYPES[dt], device=device, requires_grad=grad, seed=0)
    from ssm_kernels.selective_scan.interface import selective_scan_fn

    def fn(**kw):
        return selective_scan_fn(**kw, delta_softplus=True, backend=op_backend)

    return x, device, fn


def _rounds(shape):
    if shape in CPU_SHAPES:
        return dict(rounds=3, warmup_rounds=1, iterations=1)
    return dict(rounds=30, warmup_rounds=5, iterations=1)


def _extra(shape, mode):
    if shape not in BASELINE_MS:
        return {}
    return {"baseline": "mamba_ssm CUDA (H200, issue 6)", "baseline_ms": BASELINE_MS[shape][mode],
            "target_speedup": TARGET_SPEEDUP[shape]}  # fmt: skip


def _speedup(benchmark, shape, mode):
    med = benchmark.extra_info.get("median_ms")
    if med and shape in BASELINE_MS:
        benchmark.extra_info["speedup"] = BASELINE_MS[shape][mode] / med


def _traffic(x):
    io = [x["u"], x["delta"], x["z"], x["B"], x["C"]]
    fwd = tensor_bytes(*io) + tensor_bytes(x["u"])
    bwd = fwd + tensor_bytes(*io) + tensor_bytes(x["u"]) + tensor_bytes(*io)
    return fwd, bwd


@pytest.mark.parametrize("shape,dt,backend", _cases())
def test_selective_scan_forward(benchmark, shape, dt, backend, monkeypatch):
    x, device, fn = _setup(shape, dt, backend, grad=False, monkeypatch=monkeypatch)

    def call():
        with torch.no_grad():
            return fn(**x)

    run = synced(call, device)
    peak = peak_memory(run, device)
    benchmark.pedantic(run, **_rounds(shape))
    fwd_bytes, _ = _traffic(x)
    record(benchmark, op="selective_scan_forward", shape=SHAPES[shape], dtype=DTYPES[dt], backend=backend,
           device=device, bytes_moved=fwd_bytes, items=SHAPES[shape]["batch"], peak_bytes=peak, **_extra(shape, 0))  # fmt: skip
    _speedup(benchmark, shape, 0)


@pytest.mark.parametrize("shape,dt,backend", _cases())
def test_selective_scan_forward_backward(benchmark, shape, dt, backend, monkeypatch):
    x, device, fn = _setup(shape, dt, backend, grad=True, monkeypatch=monkeypatch)
    leaves = [v for v in x.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    dout = torch.randn_like(x["u"])

    def call():
        out = fn(**x)
        return torch.autograd.grad(out, leaves, dout)

    run = synced(call, device)
    peak = peak_memory(run, device)
    benchmark.pedantic(run, **_rounds(shape))
    _, bwd_bytes = _traffic(x)
    record(benchmark, op="selective_scan_forward_backward", shape=SHAPES[shape], dtype=DTYPES[dt], backend=backend,
           device=device, bytes_moved=bwd_bytes, items=SHAPES[shape]["batch"], peak_bytes=peak, **_extra(shape, 1))  # fmt: skip
    _speedup(benchmark, shape, 1)
