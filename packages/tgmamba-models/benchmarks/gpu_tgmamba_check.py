"""One-shot H200 check of the TGMamba block (no pytest): run it with PYTHONPATH set, e.g.

    PYTHONPATH=packages/ssm-kernels/src:packages/tgmamba-models/src \
        python packages/tgmamba-models/benchmarks/gpu_tgmamba_check.py [--quick]

Cases (each in its own try/except, results printed as JSON lines at the end):
1. the original README example on CUDA;
2. fused (Triton graph scan) == per-step PyG reference at a small shape, outputs and all
   parameter gradients, for gcnconv/chebconv/graphconv/none (fp32 on CUDA vs fp64 on CPU);
3. finiteness at L = 2000 (forward + backward, default and TUSZ configurations);
4. timings with CUDA events of forward and forward+backward at the TUSZ shape (batch 256, V 19,
   L 10) and the raw shape (batch 16, V 19, L 2000), eager and CUDA-graphed, with peak memory,
   against the original's 35.4 ms / 14.1 s forward+backward.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import traceback

import torch

from ssm_kernels.testing.bench import cuda_event_ms

RESULTS: list[dict] = []


def case(name):
    def deco(fn):
        def run(*a, **k):
            t0 = time.time()
            try:
                out = fn(*a, **k) or {}
                RESULTS.append({"case": name, "ok": True, "wall_s": round(time.time() - t0, 2), **out})
            except Exception as e:
                RESULTS.append({"case": name, "ok": False, "error": f"{type(e).__name__}: {e}"})
                traceback.print_exc()
            torch.cuda.empty_cache()

        return run

    return deco


def peak_mb(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


@case("readme_example_cuda")
def readme_example():
    from tgmamba_models import TGMamba

    batch, length, dim = 2, 64, 32
    x = torch.randn(batch, length, dim).to("cuda")
    model = TGMamba(d_model=dim, d_state=16, d_conv=4, expand=2).to("cuda")
    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    return {"shape": list(y.shape)}


def _max_rel(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@case("fused_vs_reference_small")
def fused_vs_reference():
    from tgmamba_models import TGMamba

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from bench_tgmamba import electrode_graph

    report = {}
    for conv_type in ("gcnconv", "chebconv", "graphconv", "none"):
        torch.manual_seed(0)
        b, V, L, d = 3, 7, 33, 16
        m64 = TGMamba(d_model=d, d_state=8, num_vertices=V, conv_type=conv_type, attn_softmax_temp=0.5).double()
        with torch.no_grad():
            for layer in (m64.gconv_A, m64.gconv_C):
                if layer is not None:
                    for p in layer.parameters():
                        p.add_(0.2 * torch.randn_like(p))
        m32 = copy.deepcopy(m64).float().cuda()
        x = torch.randn(b * V, L, d, dtype=torch.float64)
        ei, ew = electrode_graph(b, V, k=3)
        gout = torch.randn_like(x)

        def grads(model, xx, eei, eew, go, path):
            xx = xx.clone().requires_grad_(True)
            y = model(xx, eei, eew, path=path)
            gs = torch.autograd.grad((y * go).sum(), [xx, *model.parameters()], allow_unused=True)
            return y, gs

        y_hi, g_hi = grads(m64, x, ei, ew.double(), gout, "reference")
        y_f, g_f = grads(m32, x.float().cuda(), ei.cuda(), ew.float().cuda(), gout.float().cuda(), "fused")
        errs = {"y": _max_rel(y_f, y_hi)}
        names = ["x"] + [n for n, _ in m64.named_parameters()]
        worst = max(
            ((n, _max_rel(a, r)) for n, a, r in zip(names, g_f, g_hi) if r is not None and a is not None),
            key=lambda t: t[1],
        )
        errs["worst_grad"] = worst
        assert errs["y"] < 1e-3 and worst[1] < 1e-2, errs
        report[conv_type] = errs
    return report


@case("finite_at_L2000")
def finite_l2000():
    from tgmamba_models import TGMamba

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from bench_tgmamba import TUSZ_BLOCK, electrode_graph

    out = {}
    for name, kw in (("default-gcnconv", {}), ("tusz-graphconv", TUSZ_BLOCK)):
        torch.manual_seed(0)
        m = TGMamba(d_model=32, d_state=16, num_vertices=19, **kw).cuda()
        x = (3 * torch.randn(4 * 19, 2000, 32, device="cuda")).requires_grad_(True)
        ei, ew = electrode_graph(4, 19, device="cuda")
        y = m(x, ei, ew)
        y.square().mean().backward()
        fin = bool(torch.isfinite(y).all()) and all(
            bool(torch.isfinite(p.grad).all()) for p in m.parameters() if p.grad is not None
        )
        assert fin, name
        out[name] = {"max_abs_y": y.abs().max().item()}
    return out


def _timings(shape_name, batch, L, graphed: bool, reference: bool):
    from tgmamba_models import CUDAGraphedForward, TGMamba

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from bench_tgmamba import BASELINE_MS, TUSZ_BLOCK, electrode_graph

    torch.manual_seed(0)
    V = 19
    block = TGMamba(d_model=32, d_state=16, num_vertices=V, **TUSZ_BLOCK).cuda()
    x = torch.randn(batch * V, L, 32, device="cuda")
    ei, ew = electrode_graph(batch, V, device="cuda")
    xg = x.clone().requires_grad_(True)
    gout = torch.randn_like(x)
    res = {}

    def fwd():
        with torch.no_grad():
            block(x, ei, ew)

    def fwdbwd():
        block.zero_grad(set_to_none=True)
        block(xg, ei, ew).backward(gout)

    iters = 5 if L > 100 else 50
    res["fwd_ms"] = cuda_event_ms(fwd, rounds=iters)
    res["fwdbwd_ms"] = cuda_event_ms(fwdbwd, rounds=iters)
    res["fwdbwd_peak_mb"] = peak_mb(fwdbwd)
    block.validate_inputs = False
    res["fwdbwd_novalidate_ms"] = cuda_event_ms(fwdbwd, rounds=iters)
    res["speedup_vs_original"] = BASELINE_MS[shape_name] / res["fwdbwd_ms"]
    if graphed:
        try:
            g = CUDAGraphedForward(block, max_graphs=1)

            def gfwdbwd():
                g(xg, ei, ew).backward(gout)

            res["graphed_fwdbwd_ms"] = cuda_event_ms(gfwdbwd, rounds=iters)
            res["graphed_speedup_vs_original"] = BASELINE_MS[shape_name] / res["graphed_fwdbwd_ms"]
        except Exception as e:  # keep the eager numbers
            res["graphed_error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
    if reference:
        try:
            block = TGMamba(d_model=32, d_state=16, num_vertices=V, **TUSZ_BLOCK).cuda()

            def rfwdbwd():
                block.zero_grad(set_to_none=True)
                block(xg, ei, ew, path="reference").backward(gout)

            res["reference_fwdbwd_ms"] = cuda_event_ms(rfwdbwd, rounds=1 if L > 100 else 5, warmup=0 if L > 100 else 1)
            res["fused_speedup_vs_reference"] = res["reference_fwdbwd_ms"] / res["fwdbwd_ms"]
        except Exception as e:
            res["reference_error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
    res["baseline_original_fwdbwd_ms"] = BASELINE_MS[shape_name]
    return res


@case("timing_tusz")
def timing_tusz(quick=False):
    return _timings("tusz", 256, 10, graphed=True, reference=True)


@case("timing_raw")
def timing_raw(quick=False):
    return _timings("raw", 16, 2000, graphed=not quick, reference=not quick)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the raw-shape reference and CUDA-graph timings")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return 1
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    readme_example()
    fused_vs_reference()
    finite_l2000()
    timing_tusz()
    timing_raw(quick=args.quick)
    for r in RESULTS:
        print(json.dumps(r, default=str), flush=True)
    return 0 if all(r["ok"] for r in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
