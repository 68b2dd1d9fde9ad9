"""Benchmark conventions shared by the three packages' ``benchmarks/`` suites (pytest-benchmark).

Every case:
* is named ``test_<op>[<shape>-<dtype>-<backend>]`` through parametrisation ids;
* times a callable that synchronises the device *inside* the timed call (:func:`synced`);
* records ``extra_info`` through :func:`record`: op, shape, dtype, backend, device and derived
  figures (GB/s of the minimal traffic, TFLOP/s, items/s, peak memory);
* measures the reference (or a stated baseline) in the same run, so ratios are meaningful.

``python tools/render_bench.py`` turns the saved JSON into the README's markdown table.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

H200_COPY_GBPS = 4300.0  # measured device-to-device copy bandwidth on the lent H200 (bytes read + written)


def sync(device: torch.device | str | None = None) -> None:
    dev = torch.device(device) if device is not None else None
    if (dev is None or dev.type == "cuda") and torch.cuda.is_available():
        torch.cuda.synchronize(dev)


def synced(fn: Callable[[], Any], device: torch.device | str) -> Callable[[], Any]:
    """Wrap ``fn`` so each call waits for the device to finish (so wall time is device time)."""
    dev = torch.device(device)

    def run() -> Any:
        out = fn()
        sync(dev)
        return out

    return run


def cuda_event_ms(fn: Callable[[], Any], rounds: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` timed between two CUDA events per call, after ``warmup`` untimed calls.

    The device is idle when each call starts, so host-side launch work before the first kernel counts (as it
    does for a user calling the op once); for the GPU's own time use the profiler.
    """
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def back_to_back_us(fn: Callable[[], Any], iters: int = 20, reps: int = 5, warmup: int = 0) -> float:
    """Median over ``reps`` of the microseconds per call of ``iters`` calls of ``fn`` launched back to back between
    two CUDA events (after ``warmup`` untimed calls): the GPU's pace, host work hidden behind the queue."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / iters * 1e3)
    return statistics.median(times)


def kernel_us(fn: Callable[[], Any], reps: int = 5, width: int = 40) -> dict[str, float]:
    """GPU time per call of each kernel ``fn`` launches (torch.profiler, microseconds, names cut to ``width``)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as pr:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    out: dict[str, float] = {}
    for e in pr.key_averages():
        t = getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
        if t:  # names cut to the same prefix (cuBLAS kernels of several tile sizes) are summed
            out[e.key[:width]] = out.get(e.key[:width], 0.0) + t / reps
    return out


def host_us(fn: Callable[[], Any], reps: int = 50) -> float:
    """Host time per call of ``fn`` in microseconds: launching ``reps`` calls without waiting for the GPU (the
    device is synchronised before and after, outside the timed span)."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / reps * 1e6


def tensor_bytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def peak_memory(fn: Callable[[], Any], device: torch.device | str) -> int | None:
    """Peak CUDA memory (bytes) allocated during one call of ``fn``, above what was live before."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    sync(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev)
    fn()
    sync(dev)
    return torch.cuda.max_memory_allocated(dev) - before


def record(
    benchmark,
    *,
    op: str,
    shape: dict[str, int] | Sequence[int],
    dtype: torch.dtype | str,
    backend: str,
    device: torch.device | str,
    bytes_moved: int | None = None,
    flops: float | None = None,
    items: float | None = None,
    item_name: str = "samples",
    peak_bytes: int | None = None,
    **extra: Any,
) -> None:
    """Attach the project's standard ``extra_info`` to a pytest-benchmark case.

    Derived rates use the benchmark's median once it has run; call this *after* ``benchmark(...)``.
    """
    stats = getattr(benchmark, "stats", None)
    median = None
    if stats is not None:
        s = getattr(stats, "stats", stats)
        median = getattr(s, "median", None)
    dev = torch.device(device)
    info: dict[str, Any] = {
        "op": op,
        "shape": dict(shape) if isinstance(shape, dict) else list(shape),
        "dtype": str(dtype).replace("torch.", ""),
        "backend": backend,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
    }
    if median:
        info["median_ms"] = median * 1e3
        if bytes_moved:
            info["bytes"] = int(bytes_moved)
            info["gbps"] = bytes_moved / median / 1e9
            if dev.type == "cuda":
                info["pct_copy_bw"] = 100.0 * info["gbps"] / H200_COPY_GBPS
        if flops:
            info["tflops"] = flops / median / 1e12
        if items:
            info[f"{item_name}_per_s"] = items / median
    if peak_bytes is not None:
        info["peak_mem_mb"] = peak_bytes / 2**20
    info.update(extra)
    benchmark.extra_info.update(info)
