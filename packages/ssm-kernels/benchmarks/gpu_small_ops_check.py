"""GPU check of the small ops (no pytest): causal conv1d, selective_state_update and the norms.

    PYTHONPATH=packages/ssm-kernels/src python packages/ssm-kernels/benchmarks/gpu_small_ops_check.py [--quick]

1. Correctness: for awkward and benchmark-sized shapes in fp32/bf16 (fp16 for some), the Triton
   path against the float64 reference on outputs, final/updated states and every gradient, with
   the tolerance rule of ssm_kernels.testing (the reference in the inputs' own precision is the
   yardstick). Prints the max relative error per tensor, or the failure.
2. Timings (CUDA events, median of repeated calls) of Triton and reference at the benchmark
   shapes, forward and forward+backward, with GB/s of the minimal traffic and % of 4300 GB/s.
3. With ``--sweep``: timings of alternative conv tile sizes and norm warp counts.
Every case is wrapped in try/except with a traceback, so one failure does not hide the rest.
The exit status is 1 if any correctness case failed.
"""

from __future__ import annotations

import argparse
import sys
import traceback

import torch

from ssm_kernels.testing.bench import H200_COPY_GBPS, cuda_event_ms, tensor_bytes
from ssm_kernels.testing.causal_conv1d import check_conv1d, check_conv1d_update, make_conv1d_inputs
from ssm_kernels.testing.norms import check_layer_norm, check_rms_norm_gated
from ssm_kernels.testing.state_update import check_state_update, make_state_update_inputs

DEVICE = "cuda"
# benchmark shapes of the timing section (module constants so a smoke test can shrink them)
CONV_BENCH = dict(batch=8, dim=4096, seqlen=2048, width=4)
SSU_BENCH = {
    "mamba1 b64-d4096-n16": dict(batch=64, nheads=None, headdim=4096, dstate=16),
    "mamba2 b64-h80-p64-n128": dict(batch=64, nheads=80, headdim=64, dstate=128, tie_hdim=True),
}
NORM_BENCH = (16384, 4096)
FAILURES: list[str] = []


def case(name, fn):
    try:
        errs = fn()
        worst = max(errs.values()) if errs else 0.0
        detail = " ".join(f"{k}={v:.2e}" for k, v in errs.items())
        print(f"  OK   {name:60s} max {worst:.2e} | {detail}", flush=True)
    except Exception as exc:
        FAILURES.append(name)
        print(f"  FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
        traceback.print_exc()


def timing(name, fn, nbytes, reps=30):
    try:
        ms = cuda_event_ms(fn, rounds=reps, warmup=5)
        gbps = nbytes / (ms * 1e-3) / 1e9
        print(
            f"  {name:64s} {ms:9.4f} ms  {gbps:8.1f} GB/s  {100 * gbps / H200_COPY_GBPS:5.1f}% of copy bw", flush=True
        )
        return ms
    except Exception as exc:
        print(f"  TIMING FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
        traceback.print_exc()
        return None


# ------------------------------------------------------------------------------------------------
def correctness_conv(quick):
    print("causal_conv1d_fn: Triton vs float64 reference (out, final_states, dx, dweight, dbias, dinit)")
    shapes = [(2, 257, 1, 4, "bias-init-final"), (2, 130, 3, 3, "bias-init-final"), (3, 200, 333, 4, "bias"),
              (2, 96, 1000, 4, "bias-init-seq-final"), (2, 300, 250, 2, "bias-final-cl"), (1, 64, 4099, 4, "init-final")]  # fmt: skip
    if not quick:
        shapes.append((8, 4096, 2048, 4, "bias"))
    dtypes = [torch.float32, torch.bfloat16] + ([] if quick else [torch.float16])
    for batch, dim, seqlen, width, opts in shapes:
        for dtype in dtypes:
            for act in ("silu", None):
                name = f"conv b{batch}-d{dim}-L{seqlen}-w{width}-{opts}-{str(dtype)[6:]}-{act}"

                def run(batch=batch, dim=dim, seqlen=seqlen, width=width, opts=opts, dtype=dtype, act=act):
                    inp = make_conv1d_inputs(batch, dim, seqlen, width, dtype, DEVICE, bias="bias" in opts,
                                             init="init" in opts, seq="seq" in opts, channel_last="cl" in opts, seed=3)  # fmt: skip
                    return check_conv1d(inp, act, "final" in opts, seed=4)

                case(name, run)
    print("causal_conv1d_update: Triton vs reference (out, conv_state)")
    for seqlen in (None, 1, 4):
        for circular in (False, True):
            for indices in (False, True):
                for dtype in (torch.float32, torch.bfloat16):
                    name = f"update b64-d1536-s{seqlen}-state8-{'circ' if circular else 'shift'}-idx{int(indices)}-{str(dtype)[6:]}"
                    case(name, lambda s=seqlen, c=circular, i=indices, d=dtype: check_conv1d_update(
                        64, 1536, s, 4, 8, d, DEVICE, circular=c, indices=i, seed=2))  # fmt: skip


def correctness_state_update(quick):
    print("selective_state_update: Triton vs float64 reference (out, state)")
    shapes = {
        "m1-b64-d4096-n16": (64, None, 4096, 16, 1, False),
        "m1-b5-d1000-n13": (5, None, 1000, 13, 1, False),
        "m2-b64-h80-p64-n128-tied": (64, 80, 64, 128, 1, True),
        "m2-b7-h24-p64-n64-g8": (7, 24, 64, 64, 8, False),
        "m2-b3-h5-p33-n17-g5-tied": (3, 5, 33, 17, 5, True),
    }
    for label, (b, h, p, n, g, tie) in shapes.items():
        for dtype, sdt in (
            (torch.float32, torch.float32),
            (torch.bfloat16, torch.float32),
            (torch.bfloat16, torch.bfloat16),
        ):
            for indices in (False, True):
                name = f"ssu {label}-{str(dtype)[6:]}-state{str(sdt)[6:]}-idx{int(indices)}"
                case(name, lambda b=b, h=h, p=p, n=n, g=g, tie=tie, d=dtype, s=sdt, i=indices: check_state_update(
                    make_state_update_inputs(b, h, p, n, g, d, s, DEVICE, tie_hdim=tie, indices=i, seed=5)))  # fmt: skip


def correctness_norms(quick):
    print("rms_norm_fn / layer_norm_fn: Triton vs float64 reference (out, residual_out, dx, dweight, dbias, dresidual)")
    shapes = [(1, 3), (7, 1000), (4, 33, 4096), (3, 8192)] + ([] if quick else [(16384, 4096)])
    variants = {
        "plain": dict(),
        "res": dict(residual=True),
        "res-prenorm": dict(residual=True, prenorm=True),
        "prenorm-fp32": dict(prenorm=True, residual_in_fp32=True),
        "res32-prenorm": dict(residual=True, residual_dtype=torch.float32, prenorm=True),
    }
    for shape in shapes:
        for kind in ("rms", "ln"):
            for vname, kw in variants.items():
                for dtype in (torch.float32, torch.bfloat16):
                    name = f"{kind} {'x'.join(map(str, shape))}-{vname}-{str(dtype)[6:]}"
                    case(name, lambda s=shape, k=kind, kw=kw, d=dtype: check_layer_norm(
                        s, d, DEVICE, is_rms_norm=k == "rms", **kw, seed=1))  # fmt: skip
    print("RMSNormGated: Triton vs float64 reference (out, dx, dweight, dbias, dz)")
    gshapes = [((5, 1000), None), ((2, 333, 2560), 320), ((4096, 1024), 128), ((3, 7), 7)]
    if not quick:
        gshapes.append(((16384, 4096), None))
    for shape, gs in gshapes:
        for nbg in (True, False):
            for z, bias in ((True, False), (True, True), (False, False)):
                for dtype in (torch.float32, torch.bfloat16):
                    name = (
                        f"gated {'x'.join(map(str, shape))}-g{gs}-nbg{int(nbg)}-z{int(z)}-b{int(bias)}-{str(dtype)[6:]}"
                    )
                    case(name, lambda s=shape, g=gs, n=nbg, z=z, b=bias, d=dtype: check_rms_norm_gated(
                        s, d, DEVICE, z=z, bias=b, group_size=g, norm_before_gate=n, seed=2))  # fmt: skip


# ------------------------------------------------------------------------------------------------
def timings_conv():
    from ssm_kernels import causal_conv1d_fn

    print(f"causal_conv1d_fn {CONV_BENCH} bf16 (silu, bias)")
    inp = make_conv1d_inputs(**CONV_BENCH, dtype=torch.bfloat16, device=DEVICE, bias=True)
    leaves = [inp[k].requires_grad_() for k in ("x", "weight", "bias")]
    dy = torch.randn_like(inp["x"])
    xb = tensor_bytes(inp["x"])
    for be in ("triton", "reference"):
        with torch.no_grad():
            timing(f"fwd     {be}", lambda be=be: causal_conv1d_fn(**inp, activation="silu", backend=be), 2 * xb)
        timing(f"fwd+bwd {be}", lambda be=be: torch.autograd.grad(
            causal_conv1d_fn(**inp, activation="silu", backend=be), leaves, dy), 5 * xb)  # fmt: skip
    # channel-last input, same shape
    x_cl = inp["x"].detach().transpose(1, 2).contiguous().transpose(1, 2)
    with torch.no_grad():
        timing("fwd     triton channel-last", lambda: causal_conv1d_fn(
            x_cl, inp["weight"], inp["bias"], activation="silu", backend="triton"), 2 * xb)  # fmt: skip


def timings_state_update():
    from ssm_kernels import selective_state_update

    for label, kw in SSU_BENCH.items():
        print(f"selective_state_update {label} (bf16 inputs, fp32 state, D, z, dt_bias, softplus)")
        inp = make_state_update_inputs(**kw, dtype=torch.bfloat16, state_dtype=torch.float32, device=DEVICE)
        small = sum(t.untyped_storage().nbytes() for t in (inp["dt"], inp["A"], inp["D"], inp["dt_bias"]))
        nbytes = (
            2 * tensor_bytes(inp["state"])
            + 2 * tensor_bytes(inp["x"])
            + tensor_bytes(inp["z"], inp["B"], inp["C"])
            + small
        )
        for be in ("triton", "reference"):
            with torch.no_grad():
                timing(f"step    {be}", lambda be=be, inp=inp: selective_state_update(**inp, dt_softplus=True, backend=be),
                       nbytes, reps=100)  # fmt: skip


def timings_norms():
    from ssm_kernels.norms.interface import rms_norm_fn, rms_norm_gated_fn

    m, n = NORM_BENCH
    print(f"norms rows {m} hidden {n} bf16")
    x = torch.randn(m, n, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    z = torch.randn(m, n, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    r = torch.randn(m, n, device=DEVICE, dtype=torch.float32, requires_grad=True)
    w = torch.ones(n, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn_like(x)
    dr = torch.randn_like(r)
    xb, rb = tensor_bytes(x), tensor_bytes(r)
    for be in ("triton", "reference"):
        with torch.no_grad():
            timing(
                f"rms_norm_fn fwd                 {be}", lambda be=be: rms_norm_fn(x, w, eps=1e-5, backend=be), 2 * xb
            )
            timing(f"rms_norm_fn res+prenorm fwd     {be}", lambda be=be: rms_norm_fn(
                x, w, residual=r, prenorm=True, eps=1e-5, backend=be), 2 * xb + 2 * rb)  # fmt: skip
            timing(f"RMSNormGated fwd                {be}", lambda be=be: rms_norm_gated_fn(
                x, w, None, z, 1e-5, None, True, backend=be), 3 * xb)  # fmt: skip
        timing(f"rms_norm_fn fwd+bwd             {be}", lambda be=be: torch.autograd.grad(
            rms_norm_fn(x, w, eps=1e-5, backend=be), [x, w], dy), 5 * xb)  # fmt: skip
        timing(f"rms_norm_fn res+prenorm fwd+bwd {be}", lambda be=be: torch.autograd.grad(
            rms_norm_fn(x, w, residual=r, prenorm=True, eps=1e-5, backend=be), [x, w, r], [dy, dr]),
            3 * xb + 6 * rb)  # fmt: skip
        timing(f"RMSNormGated fwd+bwd            {be}", lambda be=be: torch.autograd.grad(
            rms_norm_gated_fn(x, w, None, z, 1e-5, None, True, backend=be), [x, w, z], dy), 8 * xb)  # fmt: skip


def sweep():
    """Time alternative tile sizes / warp counts (monkeypatched launch heuristics) at the benchmark shapes."""
    from ssm_kernels import causal_conv1d_fn
    from ssm_kernels.causal_conv1d import triton as ct
    from ssm_kernels.norms import triton as nt
    from ssm_kernels.norms.interface import rms_norm_fn, rms_norm_gated_fn

    print("sweep: causal_conv1d tiles (BD, BL) at", CONV_BENCH)
    inp = make_conv1d_inputs(**CONV_BENCH, dtype=torch.bfloat16, device=DEVICE, bias=True)
    leaves = [inp[k].requires_grad_() for k in ("x", "weight", "bias")]
    dy = torch.randn_like(inp["x"])
    xb = tensor_bytes(inp["x"])
    default_tiles = ct._tiles
    try:
        for fwd_tile in ((8, 256), (16, 128), (4, 256), (16, 64), (32, 64), (2, 512)):
            ct._tiles = lambda x, d, l, backward, t=fwd_tile: default_tiles(x, d, l, True) if backward else t
            with torch.no_grad():
                timing(
                    f"fwd tile {fwd_tile}", lambda: causal_conv1d_fn(**inp, activation="silu", backend="triton"), 2 * xb
                )
        for bwd_tile in ((2, 128), (4, 64), (1, 256), (2, 64), (4, 128), (1, 128)):
            ct._tiles = lambda x, d, l, backward, t=bwd_tile: t if backward else default_tiles(x, d, l, False)
            timing(f"fwd+bwd bwd tile {bwd_tile}", lambda: torch.autograd.grad(
                causal_conv1d_fn(**inp, activation="silu", backend="triton"), leaves, dy), 5 * xb)  # fmt: skip
    finally:
        ct._tiles = default_tiles
    m, n = NORM_BENCH
    print(f"sweep: norm warps (forward, backward) rows {m} hidden {n} bf16")
    x = torch.randn(m, n, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    z = torch.randn(m, n, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    w = torch.ones(n, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    dyn = torch.randn_like(x)
    xb = tensor_bytes(x)
    default_warps = nt._num_warps
    try:
        for wf, wb in ((4, 8), (8, 16), (16, 16), (8, 32), (16, 32)):
            nt._num_warps = lambda block, backward=False, wf=wf, wb=wb: wb if backward else wf
            with torch.no_grad():
                timing(f"rms fwd warps {wf}", lambda: rms_norm_fn(x, w, eps=1e-5, backend="triton"), 2 * xb)
            timing(f"rms fwd+bwd warps {wf}/{wb}", lambda: torch.autograd.grad(
                rms_norm_fn(x, w, eps=1e-5, backend="triton"), [x, w], dyn), 5 * xb)  # fmt: skip
            timing(f"gated fwd+bwd warps {wf}/{wb}", lambda: torch.autograd.grad(
                rms_norm_gated_fn(x, w, None, z, 1e-5, None, True, backend="triton"), [x, w, z], dyn), 8 * xb)  # fmt: skip
    finally:
        nt._num_warps = default_warps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the largest correctness shapes and fp16")
    parser.add_argument("--no-timings", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="also time alternative tile sizes and warp counts")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    import triton

    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}")
    for section in (correctness_conv, correctness_state_update, correctness_norms):
        try:
            section(args.quick)
        except Exception:
            FAILURES.append(section.__name__)
            traceback.print_exc()
    if not args.no_timings:
        for section in (timings_conv, timings_state_update, timings_norms):
            try:
                section()
            except Exception:
                traceback.print_exc()
    if args.sweep:
        try:
            sweep()
        except Exception:
            traceback.print_exc()
    print(f"\n{len(FAILURES)} correctness failure(s)" + (": " + ", ".join(FAILURES) if FAILURES else ""))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
