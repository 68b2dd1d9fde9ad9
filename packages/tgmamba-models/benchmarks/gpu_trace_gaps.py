"""Where does the GPU idle during one TGMamba block fwd+bwd? A trace, its idle gaps and who caused them.

    PYTHONPATH=packages/ssm-kernels/src:packages/tgmamba-models/src \
        python packages/tgmamba-models/benchmarks/gpu_trace_gaps.py [raw] [tusz]

For each shape: the median wall time, then one fwd+bwd under torch.profiler (with Python stacks). From the trace:
the span from the first to the last kernel, the time the GPU was busy (union of kernel intervals), the idle gaps
over 20 us summed by the Python stack that launched the kernel after each gap, and the host time of the
ssm_kernels / tgmamba_models functions. The trace is written gzipped to ``$OUT`` (default /tmp). (The chunk
sweep of run17a is ``gpu_graph_scan_env_ab.py --configs default,chunk-80,chunk-160``.)
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_tgmamba_ab import median_ms, setup

OUT = Path(os.environ.get("OUT", "/tmp"))
OURS = ("ssm_kernels", "tgmamba_models", "autograd", "einsum", "functional")


def analyse(trace_path: Path, label: str, min_gap_us: float = 20.0) -> None:
    ev = json.load(open(trace_path))["traceEvents"]
    kern = [e for e in ev if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and e.get("ph") == "X"]
    kern.sort(key=lambda e: e["ts"])
    launches = {e["args"].get("correlation"): e for e in ev if e.get("cat") == "cuda_runtime" and e.get("ph") == "X"}
    pyf = sorted((e for e in ev if e.get("cat") == "python_function" and e.get("ph") == "X"), key=lambda e: e["ts"])
    busy, gaps, cur_end = 0.0, [], kern[0]["ts"]
    for e in kern:
        if e["ts"] > cur_end + min_gap_us:
            gaps.append((e["ts"] - cur_end, e))
        busy += max(0.0, e["ts"] + e["dur"] - max(e["ts"], cur_end))
        cur_end = max(cur_end, e["ts"] + e["dur"])

    def stack_at(ts: float) -> str:
        names = [p["name"] for p in pyf if p["ts"] <= ts <= p["ts"] + p["dur"]]
        return " > ".join(n.split("/")[-1] for n in [n for n in names if any(w in n for w in OURS)][-4:])

    agg: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for g, e in gaps:
        launch = launches.get(e["args"].get("correlation"))  # '?': a driver-API launch (Triton)
        key = (stack_at(launch["ts"]) if launch else "?") + " || next=" + e["name"][:40]
        agg[key][0] += g
        agg[key][1] += 1
    span = max(e["ts"] + e["dur"] for e in kern) - kern[0]["ts"]
    summary = {
        "label": label, "span_ms": round(span / 1e3, 2), "busy_ms": round(busy / 1e3, 2),
        "idle_ms": round((span - busy) / 1e3, 2), f"gaps_over_{min_gap_us:g}us": len(gaps),
        "gap_ms_total": round(sum(g for g, _ in gaps) / 1e3, 2), "kernels": len(kern),
    }  # fmt: skip
    print(json.dumps(summary), flush=True)
    for k, (t, n) in sorted(agg.items(), key=lambda kv: -kv[1][0])[:25]:
        print(f"  {t / 1e3:8.2f} ms {n:5d}x  {k}", flush=True)
    inclusive: dict[str, float] = collections.defaultdict(float)
    for p in pyf:
        if "ssm_kernels" in p["name"] or "tgmamba_models" in p["name"]:
            inclusive[p["name"].split("site-packages/")[-1].split("src/")[-1]] += p["dur"]
    print("  host inclusive ms (our functions):", flush=True)
    for k, t in sorted(inclusive.items(), key=lambda kv: -kv[1])[:25]:
        print(f"    {t / 1e3:8.2f}  {k}", flush=True)


def trace(shape: str) -> None:
    block, _, fwdbwd, _ = setup(shape)
    block.validate_inputs = False
    for _ in range(2):
        fwdbwd()
    torch.cuda.synchronize()
    print(shape, "wall ms", round(median_ms(fwdbwd, shape), 2), flush=True)
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts, with_stack=True) as prof:
        fwdbwd()
        torch.cuda.synchronize()
    path = OUT / f"trace-{shape}.json"
    prof.export_chrome_trace(str(path))
    analyse(path, shape)
    with open(path, "rb") as f, gzip.open(str(path) + ".gz", "wb") as g:
        g.write(f.read())
    path.unlink()


if __name__ == "__main__":
    for shape in sys.argv[1:] or ["raw", "tusz"]:
        trace(shape)
