"""Streaming inference on one CPU core: how many 19-channel 200 Hz EEG streams run in real time.

Each call of ``TGMambaClassifier.step`` consumes ONE new time sample of every stream in the
batch (batch = number of streams) and returns updated logits. Real time at 200 Hz means one step
every 5 ms, so a batch of n streams keeps up when one step takes <= 5 ms; the capacity is the
largest such n (streams are independent, so throughput is n / step time / 200).

    PYTHONPATH=packages/ssm-kernels/src:packages/tgmamba-models/src \
        python packages/tgmamba-models/benchmarks/bench_streaming.py          # sweep, prints a table
    pytest -c pyproject.toml packages/tgmamba-models/benchmarks/bench_streaming.py   # benchmark cases
"""

from __future__ import annotations

import argparse
import time

import pytest
import torch

from ssm_kernels.testing.bench import record
from tgmamba_models import TGMambaClassifier, TGMambaClassifierConfig

V, FS = 19, 200.0


def make_model(num_layers: int = 2) -> TGMambaClassifier:
    torch.manual_seed(0)
    cfg = TGMambaClassifierConfig(
        num_vertices=V, in_features=1, num_classes=2, d_model=32, d_state=16, num_layers=num_layers,
        conv_type="graphconv", attn_time_varying=True,
    )  # fmt: skip
    model = TGMambaClassifier(cfg).eval()
    model.validate_inputs = False
    for blk in model.blocks:
        blk.validate_inputs = False
    return model


def montage_graph():
    src = list(range(V - 1)) + list(range(0, V - 4))
    dst = list(range(1, V)) + list(range(4, V))
    ei = torch.tensor([src + dst, dst + src])
    return ei, torch.full((ei.shape[1],), 0.8)


def step_time_s(model, n_streams: int, steps: int = 40, warmup: int = 5) -> tuple[float, float]:
    """Median (wall, CPU) seconds of one step. CPU time (``time.thread_time``) is the work done on
    the core; it equals wall time on an idle machine and stays meaningful on a shared one."""
    cache = model.allocate_inference_cache(n_streams)
    ei, ew = montage_graph()
    xs = torch.randn(warmup + steps, n_streams, V, 1)
    wall, cpu = [], []
    with torch.inference_mode():
        for i in range(warmup + steps):
            t0, c0 = time.perf_counter(), time.thread_time()
            model.step(xs[i], cache, ei, ew)
            if i >= warmup:
                wall.append(time.perf_counter() - t0)
                cpu.append(time.thread_time() - c0)
    wall.sort()
    cpu.sort()
    return wall[len(wall) // 2], cpu[len(cpu) // 2]


@pytest.mark.parametrize("n_streams", [1, 16, 64])
def test_streaming_step_cpu_1thread(benchmark, n_streams):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = make_model()
        cache = model.allocate_inference_cache(n_streams)
        ei, ew = montage_graph()
        x = torch.randn(n_streams, V, 1)

        def fn():
            with torch.inference_mode():
                return model.step(x, cache, ei, ew)

        benchmark.pedantic(fn, rounds=20, warmup_rounds=3)
        median = benchmark.stats.stats.median if getattr(benchmark, "stats", None) else None
        extra = {"realtime_streams_at_this_batch": n_streams / (median * FS)} if median else {}
        record(
            benchmark, op="tgmamba_classifier_step", shape=dict(streams=n_streams, V=V, d_model=32, layers=2),
            dtype=torch.float32, backend="eager-1thread", device="cpu", items=n_streams, item_name="stream_steps",
            **extra,
        )  # fmt: skip
    finally:
        torch.set_num_threads(before)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--max-streams", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = make_model(args.layers)
    best_wall = best_cpu = 0
    n = 1
    print(f"{'streams':>8} {'wall_ms':>9} {'cpu_ms':>9} {'realtime_x(cpu)':>16}")
    while n <= args.max_streams:
        t_wall, t_cpu = step_time_s(model, n)
        rt = 1.0 / (t_cpu * FS)  # >1: faster than real time
        print(f"{n:>8} {t_wall * 1e3:>9.3f} {t_cpu * 1e3:>9.3f} {rt:>16.2f}")
        if t_cpu * FS <= 1.0:
            best_cpu = n
        if t_wall * FS <= 1.0:
            best_wall = n
        n *= 2
    print(
        f"one CPU core keeps up with {best_cpu} streams (by CPU time; {best_wall} by wall time) of {V} channels "
        f"at {FS:.0f} Hz ({args.layers} TGMamba layers, d_model 32, d_state 16, graphconv, time-varying attention)"
    )


if __name__ == "__main__":
    main()
