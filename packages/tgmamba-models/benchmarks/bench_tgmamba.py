"""Benchmarks of the TGMamba block (fused vs per-step PyG reference) and the classifier training step.

Shapes: the original's TUSZ template (batch 256, V 19, L 10, d_model 32, d_state 16, graphconv,
time-varying edge learner with attention) and raw 200 Hz clips (batch 16, V 19, L 2000).
Baselines (original research code, H200): 35.4 ms forward+backward at the TUSZ shape, 14.1 s at
the raw shape; targets >= 100x and >= 300x, <= 2 GB at the raw shape.

Run on the H200:
    pytest -c pyproject.toml packages/tgmamba-models/benchmarks/bench_tgmamba.py -m gpu \
        --benchmark-json=packages/tgmamba-models/benchmarks/results/tgmamba-h200.json
CPU (tiny shapes only): same command with -m "not gpu".
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from ssm_kernels.testing import requires_cuda, seed_all
from ssm_kernels.testing.bench import peak_memory, record, synced
from tgmamba_models import TGMamba, TGMambaClassifier, TGMambaClassifierConfig
from tgmamba_models.cuda_graphs import CUDAGraphedForward

BASELINE_MS = {"tusz": 35.4, "raw": 14100.0}  # original block, forward+backward, H200
SHAPES = {
    "tusz": dict(batch=256, V=19, L=10, d_model=32, d_state=16),
    "raw": dict(batch=16, V=19, L=2000, d_model=32, d_state=16),
    "cpu-tiny": dict(batch=2, V=4, L=16, d_model=8, d_state=4),
    # one raw ten-second 200 Hz clip of 19 electrodes on a CPU (a laptop's training step)
    "cpu-raw": dict(batch=1, V=19, L=2000, d_model=32, d_state=16),
}
TUSZ_BLOCK = dict(
    conv_type="graphconv", edge_learner_attention=True, edge_learner_time_varying=True, attn_time_varying=True
)


def electrode_graph(batch: int, V: int, k: int = 4, device="cpu"):
    """A PyG-batched symmetric k-nearest-neighbour graph on V points of a circle (a montage stand-in)."""
    ang = torch.arange(V) * (2 * torch.pi / V)
    pos = torch.stack([ang.cos(), ang.sin()], 1)
    dist = torch.cdist(pos, pos) + torch.eye(V) * 1e9
    nbr = dist.topk(k, largest=False).indices  # (V, k)
    src = nbr.reshape(-1)
    dst = torch.arange(V).repeat_interleave(k)
    ei = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1).unique(dim=1)
    w = torch.exp(-dist[ei[0], ei[1]])
    off = (torch.arange(batch) * V).repeat_interleave(ei.shape[1])
    ei_b = ei.repeat(1, batch) + off
    return ei_b.to(device), w.repeat(batch).to(device)


def _setup(shape: str, device: str, dtype=torch.float32):
    seed_all(0)
    s = SHAPES[shape]
    block = TGMamba(d_model=s["d_model"], d_state=s["d_state"], num_vertices=s["V"], **TUSZ_BLOCK)
    block = block.to(device=device, dtype=dtype)
    x = torch.randn(s["batch"] * s["V"], s["L"], s["d_model"], device=device, dtype=dtype)
    ei, ew = electrode_graph(s["batch"], s["V"], device=device)
    return s, block, x, ei, ew.to(dtype)


def _fwd_fn(block, x, ei, ew, path):
    def fn():
        with torch.no_grad():
            return block(x, ei, ew, path=path)

    return fn


def _fwdbwd_fn(block, x, ei, ew, path):
    xg = x.detach().clone().requires_grad_(True)
    gout = torch.randn_like(x)

    def fn():
        block.zero_grad(set_to_none=True)
        y = block(xg, ei, ew, path=path)
        y.backward(gout)
        return y

    return fn


def _bf16_autocast(enabled: bool = True):
    """bf16 mixed precision (Lightning's "bf16-mixed"): fp32 weights, bf16 compute."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled)


@contextlib.contextmanager
def _tf32():
    """torch.set_float32_matmul_precision("high"): tf32 mixing products in the scan (and tf32 cuBLAS)."""
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(prev)


def _within(fn, ctx):
    """``fn`` run inside a fresh ``ctx()`` each call."""

    def wrapped():
        with ctx():
            return fn()

    return wrapped


def _graphed_fwdbwd_fn(block, x, ei, ew, autocast: bool = False):
    """Forward+backward replayed from a CUDA graph (``CUDAGraphedForward``, captured here, outside the timed calls);
    ``autocast``: captured and replayed in bf16 autocast."""
    graphed = CUDAGraphedForward(block, max_graphs=1)
    xg = x.detach().clone().requires_grad_(True)
    gout = torch.randn_like(x)

    def fn():
        with _bf16_autocast(enabled=autocast):
            y = graphed(xg, ei, ew)
        y.backward(gout)
        return y

    fn()
    return fn


def _record(benchmark, fn, *, shape, mode, backend, device, s, dtype=torch.float32, baseline=None):
    rounds = 1 if (backend == "reference" and device == "cuda" and shape == "raw") else (3 if shape == "raw" else 20)
    warmup = 0 if rounds == 1 else 2
    if device == "cpu":
        rounds, warmup = 3, 1
    benchmark.pedantic(synced(fn, device), rounds=rounds, warmup_rounds=warmup)
    # (a CUDA graph's memory is its private pool, allocated at capture: a peak measured around a replay is not it)
    unmeasured = (backend == "reference" and shape == "raw") or "cudagraph" in backend
    peak = None if unmeasured else peak_memory(fn, device)
    extra = {}
    median = benchmark.stats.stats.median if getattr(benchmark, "stats", None) else None
    if baseline and median:
        extra["baseline_ms"] = baseline
        extra["speedup_vs_original"] = baseline / (median * 1e3)
    record(
        benchmark, op=f"tgmamba_block_{mode}", shape=s, dtype=dtype, backend=backend, device=device,
        items=s["batch"], item_name="samples", peak_bytes=peak, **extra,
    )  # fmt: skip


GPU_CASES = [
    ("tusz", "fwd", "fused"),
    ("tusz", "fwdbwd", "fused"),
    ("tusz", "fwdbwd", "fused-cudagraph"),
    ("tusz", "fwdbwd", "fused-tf32"),
    ("tusz", "fwdbwd", "fused-cudagraph-tf32"),
    ("tusz", "fwdbwd", "fused-autocast"),
    ("tusz", "fwdbwd", "fused-cudagraph-autocast"),
    ("tusz", "fwd", "reference"),
    ("tusz", "fwdbwd", "reference"),
    ("raw", "fwd", "fused"),
    ("raw", "fwdbwd", "fused"),
    ("raw", "fwdbwd", "fused-cudagraph"),
    ("raw", "fwdbwd", "fused-tf32"),
    ("raw", "fwdbwd", "fused-cudagraph-tf32"),
    ("raw", "fwdbwd", "fused-autocast"),
    ("raw", "fwdbwd", "fused-cudagraph-autocast"),
    ("raw", "fwdbwd", "reference"),
]


def _case_id(shape: str, mode: str, backend: str) -> str:
    return f"{shape}-{mode}-{'bf16' if backend.endswith('autocast') else 'fp32'}-{backend}"


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("shape,mode,backend", GPU_CASES, ids=[_case_id(*c) for c in GPU_CASES])
def test_tgmamba_block_gpu(benchmark, shape, mode, backend):
    s, block, x, ei, ew = _setup(shape, "cuda")
    if backend.startswith("fused-cudagraph"):
        # tf32: captured under "high" precision too, so the graph holds the tf32 kernels
        with _tf32() if backend.endswith("-tf32") else contextlib.nullcontext():
            fn = _graphed_fwdbwd_fn(block, x, ei, ew, autocast=backend.endswith("autocast"))
    else:
        path = "reference" if backend == "reference" else "fused"
        fn = (_fwd_fn if mode == "fwd" else _fwdbwd_fn)(block, x, ei, ew, path)
    if backend.endswith("-tf32"):
        fn = _within(fn, _tf32)
    if backend == "fused-autocast":
        fn = _within(fn, _bf16_autocast)
    dtype = torch.float32 if not backend.endswith("autocast") else torch.bfloat16

    baseline = BASELINE_MS[shape] if mode == "fwdbwd" else None
    _record(benchmark, fn, shape=shape, mode=mode, backend=backend, device="cuda", s=s, dtype=dtype, baseline=baseline)


@pytest.mark.parametrize("mode,backend", [(m, b) for m in ("fwd", "fwdbwd") for b in ("fused", "reference")])
def test_tgmamba_block_cpu(benchmark, mode, backend):
    torch.set_num_threads(1)  # tiny per-step ops: threads only add contention
    s, block, x, ei, ew = _setup("cpu-tiny", "cpu")
    fn = (_fwd_fn if mode == "fwd" else _fwdbwd_fn)(block, x, ei, ew, backend)
    _record(benchmark, fn, shape="cpu-tiny", mode=mode, backend=backend, device="cpu", s=s)


def test_tgmamba_block_cpu_raw(benchmark):
    """Forward+backward of one raw clip (L = 2000) on 2 CPU threads: the CPU path (reference graph scan)."""
    torch.set_num_threads(2)
    s, block, x, ei, ew = _setup("cpu-raw", "cpu")
    _record(benchmark, _fwdbwd_fn(block, x, ei, ew, "fused"), shape="cpu-raw", mode="fwdbwd", backend="fused",
            device="cpu", s=s)  # fmt: skip


def _train_step_fn(device, batch, V, L, in_features, d_model, num_layers, graphed=False):
    """One AdamW training step of the classifier; ``graphed``: its forward+backward replayed from a CUDA graph
    (``CUDAGraphedForward``, the train CLI's ``--cuda-graphs``)."""
    seed_all(0)
    cfg = TGMambaClassifierConfig(
        num_vertices=V, in_features=in_features, num_classes=2, d_model=d_model, num_layers=num_layers,
        conv_type="graphconv", attn_time_varying=True,
    )  # fmt: skip
    model = TGMambaClassifier(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch * V, L, in_features, device=device)
    y = torch.randint(0, 2, (batch,), device=device)
    ei, ew = electrode_graph(batch, V, device=device)
    call = CUDAGraphedForward(model) if graphed else model

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(call(x, ei, ew), y)
        loss.backward()
        opt.step()
        return loss

    return step


TRAIN_CASES = [
    ("tusz", 256, 19, 10, 100, 32, 2, "fused"),
    ("tusz", 256, 19, 10, 100, 32, 2, "fused-cudagraph"),
    ("raw", 16, 19, 2000, 1, 32, 2, "fused"),
    ("raw", 16, 19, 2000, 1, 32, 2, "fused-cudagraph"),
]


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("case", TRAIN_CASES, ids=[f"{c[0]}-fp32-{c[-1]}" for c in TRAIN_CASES])
def test_tgmamba_classifier_train_step_gpu(benchmark, case):
    name, batch, V, L, F_in, d_model, layers, backend = case
    graphed = backend.endswith("cudagraph")
    fn = _train_step_fn("cuda", batch, V, L, F_in, d_model, layers, graphed=graphed)
    benchmark.pedantic(synced(fn, "cuda"), rounds=3 if name == "raw" else 20, warmup_rounds=2)
    shape = dict(batch=batch, V=V, L=L, in_features=F_in, d_model=d_model, num_layers=layers)
    # a graph's memory is its private pool, allocated at capture (see _record)
    peak = None if graphed else peak_memory(fn, "cuda")
    record(
        benchmark, op="tgmamba_classifier_train_step", shape=shape, dtype=torch.float32, backend=backend,
        device="cuda", items=batch, item_name="samples", peak_bytes=peak,
    )  # fmt: skip


def test_tgmamba_classifier_train_step_cpu(benchmark):
    torch.set_num_threads(1)
    shape = dict(batch=4, V=5, L=12, in_features=3, d_model=8, num_layers=1)
    fn = _train_step_fn("cpu", shape["batch"], shape["V"], shape["L"], shape["in_features"], shape["d_model"], 1)
    benchmark.pedantic(fn, rounds=3, warmup_rounds=1)
    record(
        benchmark, op="tgmamba_classifier_train_step", shape=shape, dtype=torch.float32, backend="fused",
        device="cpu", items=shape["batch"], item_name="samples",
    )  # fmt: skip
