"""GPU sweep of the causal conv1d backward launch at TGMamba's two calls (H200; about a minute).

    PYTHONPATH=packages/ssm-kernels/src python packages/ssm-kernels/benchmarks/gpu_causal_conv1d_bwd_sweep.py

x is ``xc.transpose(1, 2)`` of a contiguous (batch, L, 64) float32 tensor (channel-last), dy is a
contiguous (batch, 64, L) tensor (the layout the block's backward hands over), width 4, bias, SiLU:
"long" (304, 64, 2000) and "short" (4864, 64, 10). Times ``ssm_kernels.causal_conv1d.triton._bwd``
(the kernel, its allocations and the torch reduction of the dweight / dbias partials) with CUDA events:
3 warm-up calls, then the median of 20 (L2 flushed before each). Configurations: the backward before this
change ("old", embedded below), the new default, and a grid of ``SSM_KERNELS_CONV_BWD_{BD,BL,WARPS,SPLITS}``
overrides. Each prints one JSON line with its time, effective bandwidth (x + dy read, dx written) and the
relative errors of dx / dweight / dbias against the float64 reference (``ok`` false flags a wrong config).
Extra lines: dy channel-last ("long-dycl") and x as a column chunk of in_proj's output ("short-chunk",
what the un-checkpointed short call really passes). Stops starting new configurations after 85 s.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch
import triton
import triton.language as tl

from ssm_kernels.backend import cdiv, next_pow2
from ssm_kernels.causal_conv1d import triton as ct
from ssm_kernels.causal_conv1d.reference import causal_conv1d_ref
from ssm_kernels.causal_conv1d.triton import _load_seq

ENV = ("BD", "BL", "WARPS", "SPLITS")
T_START = time.time()
BUDGET_S = 85.0
TOL = 2e-4  # fp32: the kernels accumulate in fp32 (dweight sums batch * L products per channel)


# ----------------------------------------------------------------------------------------------
# the backward before this change (tiles (BD, BL, 2W - 1) of shifted inputs; BD 32, BL 4 channel-last)
# ----------------------------------------------------------------------------------------------
@triton.jit
def _legacy_tile(
    X, INIT, SEQ, Wt, BIAS, DY, x_base, init_base, seq_base, dy_base, o_d, m_d, o_s,
    stride_xd, stride_xl, stride_id, stride_il, stride_sl, stride_wd, stride_wk, stride_dyd, stride_dyl, L,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr,
    ACT: tl.constexpr, BD: tl.constexpr, BS: tl.constexpr, BJ: tl.constexpr,
):  # fmt: skip
    """Backward of one tile of source positions ``o_s`` (may be negative: the initial state).

    Loads the ``2W - 1`` shifted input tiles once as a (BD, BS, BJ) block (shift ``j - (W - 1)``),
    recomputes the pre-activation at the ``W`` targets ``t = s + m`` that read ``s``, and returns
    ``dsrc[s] = sum_m w[W - 1 - m] * dpre[s + m]`` plus this tile's dweight (BD, BJ; column k is
    tap k) and dbias (BD,) contributions, which come from the targets ``t = s`` (m = 0).
    """
    o_j = tl.arange(0, BJ)
    m_j = o_j < 2 * WIDTH - 1
    src = o_s[:, None] + (o_j - (WIDTH - 1))[None, :]  # (BS, BJ)
    m_src = m_j[None, :] & (src >= 1 - WIDTH) & (src < L)
    b_x3 = tl.load(
        X + x_base + o_d[:, None, None] * stride_xd + src[None, :, :] * stride_xl,
        mask=m_d[:, None, None] & (m_src & (src >= 0))[None, :, :],
        other=0.0,
    ).to(tl.float32)  # (BD, BS, BJ)
    if HAS_INIT:
        b_x3 += tl.load(
            INIT + init_base + o_d[:, None, None] * stride_id + (src + WIDTH - 1)[None, :, :] * stride_il,
            mask=m_d[:, None, None] & (m_src & (src < 0))[None, :, :],
            other=0.0,
        ).to(tl.float32)
    if HAS_SEQ:
        b_seq3 = _load_seq(SEQ, seq_base, src, stride_sl, L)  # (BS, BJ)
        b_seq_s = _load_seq(SEQ, seq_base, o_s, stride_sl, L)  # (BS,)
    if HAS_BIAS:
        b_bias = tl.load(BIAS + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_dsrc = tl.zeros([BD, BS], dtype=tl.float32)
    b_dw = tl.zeros([BD, BJ], dtype=tl.float32)
    b_db = tl.zeros([BD], dtype=tl.float32)
    for m in tl.static_range(WIDTH):
        t = o_s + m
        m_t = (t >= 0) & (t < L)
        b_dpre = tl.load(
            DY + dy_base + o_d[:, None] * stride_dyd + t[None, :] * stride_dyl,
            mask=m_d[:, None] & m_t[None, :],
            other=0.0,
        ).to(tl.float32)
        if HAS_SEQ:
            b_seq_t = _load_seq(SEQ, seq_base, t, stride_sl, L)
            b_xm = tl.where((b_seq3 == b_seq_t[:, None])[None, :, :], b_x3, 0.0)
        else:
            b_xm = b_x3
        if ACT:
            # target t reads shifts j - (W - 1) = m - (W - 1) + k, i.e. tap k = j - m
            o_k = o_j - m
            b_wm = tl.load(
                Wt + o_d[:, None] * stride_wd + o_k[None, :] * stride_wk,
                mask=m_d[:, None] & ((o_k >= 0) & (o_k < WIDTH))[None, :],
                other=0.0,
            ).to(tl.float32)  # (BD, BJ)
            b_pre = tl.sum(b_xm * b_wm[:, None, :], axis=2)
            if HAS_BIAS:
                b_pre += b_bias[:, None]
            b_sig = tl.sigmoid(b_pre)
            b_dpre = b_dpre * b_sig * (1.0 + b_pre * (1.0 - b_sig))
        if m == 0:
            b_dw += tl.sum(b_dpre[:, :, None] * b_xm, axis=1)
            b_db += tl.sum(b_dpre, axis=1)
        b_wk = tl.load(Wt + o_d * stride_wd + (WIDTH - 1 - m) * stride_wk, mask=m_d, other=0.0).to(tl.float32)
        if HAS_SEQ:
            b_dpre = tl.where((b_seq_t == b_seq_s)[None, :], b_dpre, 0.0)
        b_dsrc += b_wk[:, None] * b_dpre
    return b_dsrc, b_dw, b_db


@triton.jit
def _legacy_bwd_kernel(
    X, INIT, SEQ, Wt, BIAS, DY, DX, DINIT, DW_PART, DB_PART,
    stride_xb, stride_xd, stride_xl, stride_ib, stride_id, stride_il, stride_sb, stride_sl,
    stride_wd, stride_wk, stride_dyb, stride_dyd, stride_dyl, stride_dxb, stride_dxd, stride_dxl,
    stride_dib, stride_did, stride_dil, D, L, tiles_per_program, n_splits,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr,
    ACT: tl.constexpr, BD: tl.constexpr, BL: tl.constexpr, BJ: tl.constexpr, BI: tl.constexpr,
):  # fmt: skip
    i_sp = tl.program_id(0)
    i_d = tl.program_id(1)
    i_b = tl.program_id(2).to(tl.int64)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    o_j = tl.arange(0, BJ)
    x_base = i_b * stride_xb
    init_base = i_b * stride_ib
    seq_base = i_b * stride_sb
    dy_base = i_b * stride_dyb
    b_dw = tl.zeros([BD, BJ], dtype=tl.float32)
    b_db = tl.zeros([BD], dtype=tl.float32)
    for it in range(0, tiles_per_program):
        o_s = (i_sp * tiles_per_program + it) * BL + tl.arange(0, BL)
        m_s = o_s < L
        b_dx, b_dw_t, b_db_t = _legacy_tile(
            X, INIT, SEQ, Wt, BIAS, DY, x_base, init_base, seq_base, dy_base, o_d, m_d, o_s,
            stride_xd, stride_xl, stride_id, stride_il, stride_sl, stride_wd, stride_wk, stride_dyd, stride_dyl, L,
            WIDTH, HAS_BIAS, HAS_INIT, HAS_SEQ, ACT, BD, BL, BJ,
        )  # fmt: skip
        b_dw += b_dw_t
        b_db += b_db_t
        tl.store(
            DX + i_b * stride_dxb + o_d[:, None] * stride_dxd + o_s[None, :] * stride_dxl,
            b_dx.to(DX.dtype.element_ty),
            mask=m_d[:, None] & m_s[None, :],
        )
    if HAS_INIT:
        if i_sp == 0:
            o_i = tl.arange(0, BI)  # index into initial_states; position o_i - (WIDTH - 1)
            b_dinit, b_unused_dw, b_unused_db = _legacy_tile(
                X, INIT, SEQ, Wt, BIAS, DY, x_base, init_base, seq_base, dy_base, o_d, m_d, o_i - (WIDTH - 1),
                stride_xd, stride_xl, stride_id, stride_il, stride_sl, stride_wd, stride_wk, stride_dyd, stride_dyl, L,
                WIDTH, HAS_BIAS, HAS_INIT, HAS_SEQ, ACT, BD, BI, BJ,
            )  # fmt: skip
            tl.store(
                DINIT + i_b * stride_dib + o_d[:, None] * stride_did + o_i[None, :] * stride_dil,
                b_dinit.to(DINIT.dtype.element_ty),
                mask=m_d[:, None] & (o_i < WIDTH - 1)[None, :],
            )
    o_part = (i_b * n_splits + i_sp) * D + o_d
    tl.store(DW_PART + o_part[:, None] * WIDTH + o_j[None, :], b_dw, mask=m_d[:, None] & (o_j < WIDTH)[None, :])
    if HAS_BIAS:
        tl.store(DB_PART + o_part, b_db, mask=m_d)


def _legacy_bwd(x, weight, bias, dy):
    batch, dim, seqlen = x.shape
    width = weight.shape[1]
    dx = torch.empty_like(x)
    if x.stride(1) == 1 and x.stride(2) != 1:
        bd = min(next_pow2(dim), 32)
        bl = min(next_pow2(max(seqlen, 1)), max(128 // bd, 1))
    else:
        bl = min(next_pow2(max(seqlen, 1)), 128)
        bd = min(next_pow2(dim), max(256 // bl, 1))
    n_dblocks = cdiv(dim, bd)
    n_tiles = cdiv(seqlen, bl)
    target = 8 * torch.cuda.get_device_properties(x.device).multi_processor_count
    n_splits = max(1, min(n_tiles, cdiv(target, batch * n_dblocks)))
    tiles_per_program = cdiv(n_tiles, n_splits)
    n_splits = cdiv(n_tiles, tiles_per_program)
    dw_part = torch.empty((batch * n_splits, dim, width), device=x.device, dtype=torch.float32)
    db_part = torch.empty((batch * n_splits, dim), device=x.device, dtype=torch.float32)
    s3 = lambda t: (t.stride(0), t.stride(1), t.stride(2))
    _legacy_bwd_kernel[(n_splits, n_dblocks, batch)](
        x, x, x, weight, bias, dy, dx, dx, dw_part, db_part,
        *s3(x), 0, 0, 0, 0, 0, weight.stride(0), weight.stride(1), *s3(dy), *s3(dx), 0, 0, 0,
        dim, seqlen, tiles_per_program, n_splits,
        WIDTH=width, HAS_BIAS=True, HAS_INIT=False, HAS_SEQ=False, ACT=True, BD=bd, BL=bl,
        BJ=next_pow2(2 * width - 1), BI=next_pow2(max(width - 1, 1)), num_warps=4,
    )  # fmt: skip
    return dx, None, dw_part.sum(0), db_part.sum(0)


# ----------------------------------------------------------------------------------------------
# cases, timing, checks
# ----------------------------------------------------------------------------------------------
def make_case(batch, dim, seqlen, width=4, dy_cl=False, x_chunk=False, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    if x_chunk:  # x half of in_proj's (b, L, 2D) output, transposed: channel-last, position stride 2D
        x = torch.randn(batch, seqlen, 2 * dim, device="cuda", generator=g)[..., :dim].transpose(1, 2)
    else:
        x = torch.randn(batch, seqlen, dim, device="cuda", generator=g).transpose(1, 2)
    w = torch.randn(dim, width, device="cuda", generator=g) * width**-0.5
    b = torch.randn(dim, device="cuda", generator=g)
    if dy_cl:
        dy = torch.randn(batch, seqlen, dim, device="cuda", generator=g).transpose(1, 2)
    else:
        dy = torch.randn(batch, dim, seqlen, device="cuda", generator=g)
    leaves = [t.double().requires_grad_() for t in (x, w, b)]
    out = causal_conv1d_ref(*leaves, activation="silu")
    ref = torch.autograd.grad(out, leaves, dy.double())
    del out, leaves
    return {"x": x, "w": w, "b": b, "dy": dy, "ref": ref}


def rel_err(a, r):
    a, r = a.double(), r.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - r).abs().max() / r.abs().max().clamp_min(1e-30)).item()


_FLUSH = None


def bench(fn, warmup=3, reps=20):
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = []
    for _ in range(reps):
        _FLUSH.zero_()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        events.append((s, e))
    torch.cuda.synchronize()
    times = [s.elapsed_time(e) for s, e in events]
    return statistics.median(times), min(times)


def set_env(cfg):
    for name in ENV:
        key = "SSM_KERNELS_CONV_BWD_" + name
        if cfg.get(name) is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = str(cfg[name])


def run(case_name, case, cfg, results):
    if time.time() - T_START > BUDGET_S:
        print(json.dumps({"case": case_name, "config": cfg, "skipped": "time budget"}), flush=True)
        return
    x, w, b, dy = case["x"], case["w"], case["b"], case["dy"]
    legacy = cfg.get("impl") == "old"
    set_env({} if legacy else cfg)
    try:
        if legacy:
            fn = lambda: _legacy_bwd(x, w, b, dy)
            resolved = None
        else:
            fn = lambda: ct._bwd(x, w, b, None, None, dy, "silu")
            resolved = ct._bwd_config(x, x.shape[1], x.shape[2])
        t0 = time.time()
        dx, _, dw, db = fn()
        torch.cuda.synchronize()
        first_s = time.time() - t0
        errs = {n: rel_err(a, r) for n, a, r in zip(("dx", "dweight", "dbias"), (dx, dw, db), case["ref"])}
        del dx, dw, db
        ms, ms_min = bench(fn)
    except Exception as exc:  # a config that fails to compile or launch: report and go on
        print(json.dumps({"case": case_name, "config": cfg, "error": repr(exc)[:300]}), flush=True)
        return
    finally:
        set_env({})
    n = x.numel()
    gbytes = 3 * n * x.element_size() / 1e9
    line = {
        "case": case_name, "shape": list(x.shape), "dy_stride": list(dy.stride()), "config": cfg,
        "resolved": resolved, "ms": round(ms, 4), "ms_min": round(ms_min, 4),
        "gb_per_s": round(gbytes / (ms / 1e3), 1), "first_call_s": round(first_s, 2),
        "err": {k: float(f"{v:.3g}") for k, v in errs.items()}, "ok": all(v <= TOL for v in errs.values()),
    }  # fmt: skip
    results.append(line)
    print(json.dumps(line), flush=True)


def main():
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    print(
        json.dumps({"device": torch.cuda.get_device_name(), "triton": triton.__version__, "torch": torch.__version__})
    )
    results = []
    old, default = {"impl": "old"}, {"impl": "new"}
    long_case = make_case(304, 64, 2000)
    short_case = make_case(4864, 64, 10)
    for name, case in (("long", long_case), ("short", short_case)):
        run(name, case, old, results)
        run(name, case, default, results)
    # tiles: BL positions per chunk x (BD channels, warps)
    tiles = [(bd, bl, wp) for bl in (16, 8, 32) for bd, wp in ((64, 2), (32, 1), (64, 1))]
    for bd, bl, wp in tiles:
        run("long", long_case, {"impl": "new", "BD": bd, "BL": bl, "WARPS": wp}, results)
    for splits in (4, 8, 16, 32, 63, 125):
        run("long", long_case, {"impl": "new", "BD": 64, "BL": 16, "WARPS": 2, "SPLITS": splits}, results)
    for splits in (8, 16, 32, 63):
        run("long", long_case, {"impl": "new", "BD": 32, "BL": 16, "WARPS": 1, "SPLITS": splits}, results)
    for bd, bl, wp in ((64, 16, 2), (32, 16, 1), (64, 16, 1), (64, 8, 2), (32, 8, 1)):
        run("short", short_case, {"impl": "new", "BD": bd, "BL": bl, "WARPS": wp}, results)
    del long_case, short_case
    torch.cuda.empty_cache()
    extra = {"long-dycl": make_case(304, 64, 2000, dy_cl=True), "short-chunk": make_case(4864, 64, 10, x_chunk=True)}
    for name, case in extra.items():
        run(name, case, old, results)
        run(name, case, default, results)
    best = {}
    for r in results:
        if r["ok"] and (r["case"] not in best or r["ms"] < best[r["case"]]["ms"]):
            best[r["case"]] = r
    for name, r in best.items():
        print(json.dumps({"best": name, "config": r["config"], "resolved": r["resolved"], "ms": r["ms"]}))
    bad = [r for r in results if not r["ok"]]
    print(
        json.dumps(
            {"summary": True, "configs": len(results), "wrong": len(bad), "wall_s": round(time.time() - T_START, 1)}
        )
    )


if __name__ == "__main__":
    main()
