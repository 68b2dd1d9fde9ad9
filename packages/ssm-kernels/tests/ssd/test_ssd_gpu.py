"""Triton SSD on a CUDA GPU: outputs and every gradient against the reference (marker ``gpu``)."""

from __future__ import annotations

import pytest
import torch

from ssm_kernels.backend import triton_available
from ssm_kernels.testing import assert_close_to_reference
from ssm_kernels.testing.ssd import compare_ssd_with_reference, make_inputs, ssd_tolerance

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not triton_available(), reason="needs triton"),
]


@pytest.fixture(autouse=True)
def _one_config(monkeypatch):
    """One (conservative) config per kernel: correctness does not need autotuning, and it saves compilations."""
    monkeypatch.setenv("SSM_KERNELS_AUTOTUNE", "0")


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

CASES = {
    # id: (b, l, h, p, g, n, chunk), options
    "l1": ((2, 1, 4, 8, 1, 16, 64), dict(D_shape="h")),
    "odd": ((2, 257, 6, 17, 2, 24, 64), dict(D_shape="hp")),
    "q256-seq": ((1, 600, 8, 64, 1, 128, 256), dict(D_shape="h", seq=True)),
    "q128-g4-noz": ((3, 333, 8, 32, 4, 64, 128), dict(D_shape="hp", z=False, init=False)),
    "varlen": ((1, 500, 4, 64, 1, 64, 128), dict(D_shape="h", varlen=True)),
    "limit-p80": ((2, 300, 3, 80, 1, 40, 256), dict(D_shape=None, limit=(0.01, 0.2))),
}


def _kwargs(b, l, q, opts, device):
    kw = dict(chunk_size=q, dt_softplus=True, return_final_states=True, dt_limit=opts.get("limit", (0.0, float("inf"))))
    if opts.get("seq"):
        si = torch.zeros(b, l, dtype=torch.int32, device=device)
        si[:, l // 5 :] = 1
        si[:, l // 2 :] = 2
        si[:, l // 2 + 3 :] = 5
        kw["seq_idx"] = si
    if opts.get("varlen"):
        kw["cu_seqlens"] = torch.tensor([0, 7, 100, 101, 390, l], dtype=torch.int32, device=device)
        kw["return_varlen_states"] = True
    return kw


def _check(inp, kw, dtype, hi_dtype=torch.float64):
    for name, fast, hi, lo in compare_ssd_with_reference(inp, kw, hi_dtype=hi_dtype):
        assert_close_to_reference(name, fast, hi, lo, **ssd_tolerance(name, dtype))


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_gpu_matches_reference(case, dtype):
    (b, l, h, p, g, n, q), opts = CASES[case]
    dt_ = DTYPES[dtype]
    inp = make_inputs(
        b,
        l,
        h,
        p,
        g,
        n,
        dtype=dt_,
        device="cuda",
        D_shape=opts.get("D_shape"),
        z=opts.get("z", True),
        init=opts.get("init", True),
        seed=l + h,
    )
    _check(inp, _kwargs(b, l, q, opts, "cuda"), dt_)


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_gpu_strided_inputs(dtype):
    """x, z, B, C, dt as views of one projection (as Mamba2's in_proj output is split)."""
    dt_ = DTYPES[dtype]
    b, l, h, p, g, n = 2, 300, 4, 32, 1, 64
    gen = torch.Generator(device="cuda").manual_seed(0)
    d = h * p
    proj = torch.randn(b, l, 2 * d + 2 * g * n + h, device="cuda", generator=gen).to(dt_).requires_grad_()
    z, x, Bv, Cv, dt = torch.split(proj, [d, d, g * n, g * n, h], dim=-1)
    inp = make_inputs(b, l, h, p, g, n, dtype=dt_, device="cuda", D_shape="h", seed=1, requires_grad=True)
    # views of a leaf that requires grad: the Triton path sees the projection's strides
    inp.update(x=x.view(b, l, h, p), z=z.view(b, l, h, p), B=Bv.view(b, l, g, n), C=Cv.view(b, l, g, n), dt=dt)
    assert not inp["x"].is_contiguous() and inp["x"].stride(1) == proj.shape[-1]
    _check(inp, dict(chunk_size=128, dt_softplus=True, return_final_states=True), dt_)


@pytest.mark.slow
@pytest.mark.parametrize(
    "shape", [(4, 2048, 80, 64, 1, 128), (8, 4096, 32, 64, 1, 64)], ids=["b4-l2048-h80-n128", "b8-l4096-h32-n64"]
)
def test_gpu_benchmark_shapes_bf16(shape):
    """The two benchmark shapes in bf16 against the fp32 reference on upcast inputs."""
    b, l, h, p, g, n = shape
    inp = make_inputs(b, l, h, p, g, n, dtype=torch.bfloat16, device="cuda", D_shape="h", seed=3)
    _check(
        inp, dict(chunk_size=256, dt_softplus=True, return_final_states=True), torch.bfloat16, hi_dtype=torch.float32
    )


def test_gpu_no_grad_and_forced_reference_agree():
    from ssm_kernels import mamba_chunk_scan_combined

    inp = make_inputs(2, 100, 4, 16, 2, 32, dtype=torch.float32, device="cuda", seed=4)
    with torch.no_grad():
        out = mamba_chunk_scan_combined(chunk_size=64, dt_softplus=True, **inp)
        ref = mamba_chunk_scan_combined(chunk_size=64, dt_softplus=True, backend="reference", **inp)
    assert_close_to_reference("out", out, ref.double())


@pytest.mark.parametrize("case", ["odd", "q256-seq", "q128-g4-noz"])
def test_gpu_backward_bf16_and_fp32(case):
    """Every gradient of the same inputs in bf16 and fp32."""
    (b, l, h, p, g, n, q), opts = CASES[case]
    for dt_ in (torch.bfloat16, torch.float32):
        inp = make_inputs(
            b, l, h, p, g, n, dtype=dt_, device="cuda", D_shape=opts.get("D_shape"), z=opts.get("z", True),
            init=opts.get("init", True), seed=l + 2 * h,
        )  # fmt: skip
        _check(inp, _kwargs(b, l, q, opts, "cuda"), dt_)
