"""The Triton causal conv1d backward (streamed columns) against the reference.

Every gradient is checked with ``dy`` in either layout (contiguous, or channel-last as a transposed
(batch, L, dim) tensor), ``x`` contiguous or channel-last, awkward lengths and channel counts, and the
launch overrides (``SSM_KERNELS_CONV_BWD_*``) that force many chunks, splits and channel blocks.
``interpret`` cases run on CPU under TRITON_INTERPRET=1 (tiny shapes); ``gpu`` cases on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from ssm_kernels.backend import triton_available, triton_interpret
from ssm_kernels.testing import assert_close_to_reference, requires_cuda
from ssm_kernels.testing.causal_conv1d import make_conv1d_inputs

needs_interpret = pytest.mark.skipif(
    not (triton_available() and triton_interpret()), reason="needs TRITON_INTERPRET=1 and triton"
)
needs_triton = pytest.mark.skipif(not triton_available(), reason="needs triton")

_ENV = ("BD", "BL", "WARPS", "SPLITS")


def _grads(fn, inputs, dy, activation, **kw):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items() if v is not None and k != "seq_idx"}
    out = fn(**dict(inputs, **leaves), activation=activation, **kw)
    names = list(leaves)
    grads = torch.autograd.grad(out, [leaves[n] for n in names], dy)
    return {"out": out.detach(), **{f"d{n}": g for n, g in zip(names, grads)}}


def check_bwd(batch, dim, seqlen, width, *, x_cl=False, dy_cl=False, bias=True, init=False, seq=False,
              act="silu", dtype=torch.float32, device="cpu", seed=0):  # fmt: skip
    """Output and every gradient of the triton backend against the float64 reference, for a ``dy`` of the
    chosen layout (which reaches the kernel as it is); also checks that dx keeps x's layout."""
    from ssm_kernels import causal_conv1d_fn, causal_conv1d_ref
    from ssm_kernels.causal_conv1d import triton as ct

    inp = make_conv1d_inputs(batch, dim, seqlen, width, dtype, device, bias=bias, init=init, seq=seq,
                             channel_last=x_cl, seed=seed)  # fmt: skip
    g = torch.Generator().manual_seed(seed + 11)
    shape = (batch, seqlen, dim) if dy_cl else (batch, dim, seqlen)
    dy = torch.randn(shape, generator=g).to(device, dtype)
    dy = dy.transpose(1, 2) if dy_cl else dy
    seen = []
    real_bwd = ct._bwd

    def spy(x, weight, bias_, seq_idx, initial_states, dy_, activation):
        res = real_bwd(x, weight, bias_, seq_idx, initial_states, dy_, activation)
        seen.append((dy_.stride(), res[0].stride()))
        return res

    ct._bwd = spy
    try:
        fast = _grads(causal_conv1d_fn, inp, dy, act, backend="triton")
    finally:
        ct._bwd = real_bwd
    assert len(seen) == 1
    dy_strides, dx_strides = seen[0]
    assert dy_strides == dy.stride(), "dy reached the kernel in another layout"
    if x_cl and seqlen > 1 and dim > 1:
        assert dx_strides[1] == 1, "dx of a channel-last x should be channel-last"
    hi_inp = {k: (v.double() if v is not None and v.is_floating_point() else v) for k, v in inp.items()}
    hi = _grads(causal_conv1d_ref, hi_inp, dy.double(), act)
    lo = _grads(causal_conv1d_ref, inp, dy, act, upcast=False)
    assert set(fast) == set(hi)
    for name, value in fast.items():
        assert value.dtype == inp[name[1:] if name != "out" else "x"].dtype
        assert_close_to_reference(name, value, hi[name], lo[name])


# name: (batch, dim, seqlen, width, options); options: cl = channel-last x, dycl = channel-last dy
CASES = {
    "L1-d5-cl-dycl": (2, 5, 1, 4, "bias-cl-dycl"),
    "L1-d5-init-seq": (1, 5, 1, 4, "init-seq"),
    "L3-d70-cl": (1, 70, 3, 4, "bias-cl"),
    "L3-d5-dycl-init": (2, 5, 3, 3, "bias-dycl-init"),
    "L37-d5-cl-dycl-seq": (1, 5, 37, 4, "bias-cl-dycl-seq"),
    "L37-d5-seq-init": (2, 5, 37, 4, "bias-seq-init"),
    "L37-d70-cl-init": (1, 70, 37, 2, "bias-cl-init"),
    "L130-d5-cl": (1, 5, 130, 4, "bias-cl"),
    "L130-d5-dycl-seq-init": (1, 5, 130, 3, "dycl-seq-init"),
    "L130-d70-cl-dycl-seq-init": (1, 70, 130, 4, "bias-cl-dycl-seq-init"),
}


def _opts(case, cases=None):
    batch, dim, seqlen, width, opts = (CASES if cases is None else cases)[case]
    flags = set(opts.split("-"))
    kw = dict(x_cl="cl" in flags, dy_cl="dycl" in flags, bias="bias" in flags, init="init" in flags,
              seq="seq" in flags)  # fmt: skip
    return (batch, dim, seqlen, width), kw


@pytest.mark.interpret
@needs_interpret
@pytest.mark.parametrize("act", [None, "silu"], ids=["noact", "silu"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bwd_interpret(case, act, monkeypatch):
    for name in _ENV:
        monkeypatch.delenv("SSM_KERNELS_CONV_BWD_" + name, raising=False)
    shape, kw = _opts(case)
    check_bwd(*shape, **kw, act=act, seed=len(case))


# (BD, BL, WARPS, SPLITS): several channel blocks, 1-4 positions per chunk, several chunks per program
OVERRIDES = {
    "bd4-bl2-s3": ("4", "2", "1", "3"),
    "bd8-bl4-s2": ("8", "4", "2", "2"),
    "bl1-s5": (None, "1", None, "5"),
    "bl8-s1": (None, "8", None, "1"),
}


@pytest.mark.interpret
@needs_interpret
@pytest.mark.parametrize("override", list(OVERRIDES), ids=list(OVERRIDES))
@pytest.mark.parametrize("case", ["L3-d5-dycl-init", "L37-d5-seq-init", "L37-d70-cl-init", "L130-d5-dycl-seq-init"])
def test_bwd_interpret_overrides(case, override, monkeypatch):
    for name, value in zip(_ENV, OVERRIDES[override]):
        if value is None:
            monkeypatch.delenv("SSM_KERNELS_CONV_BWD_" + name, raising=False)
        else:
            monkeypatch.setenv("SSM_KERNELS_CONV_BWD_" + name, value)
    shape, kw = _opts(case)
    check_bwd(*shape, **kw, seed=3)


@pytest.mark.interpret
@needs_interpret
@pytest.mark.parametrize("width", [1, 2, 3, 5, 8])
def test_bwd_interpret_widths(width, monkeypatch):
    monkeypatch.setenv("SSM_KERNELS_CONV_BWD_BL", "4")
    monkeypatch.setenv("SSM_KERNELS_CONV_BWD_SPLITS", "3")
    check_bwd(2, 3, 23, width, x_cl=width % 2 == 0, dy_cl=width % 2 == 1, init=width > 1, seq=True, seed=width)


@pytest.mark.interpret
@needs_interpret
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_bwd_interpret_half(dtype):
    check_bwd(2, 6, 21, 4, x_cl=True, init=True, seq=True, dtype=dtype, seed=2)
    check_bwd(1, 5, 19, 3, dy_cl=True, dtype=dtype, seed=4)


@pytest.mark.interpret
@needs_interpret
def test_bwd_strided_views():
    """x and dy as strided views that are neither layout's dense tensor (a chunk of a wider tensor)."""
    from ssm_kernels import causal_conv1d_fn, causal_conv1d_ref

    g = torch.Generator().manual_seed(5)
    xz = torch.randn(2, 13, 10, generator=g)  # (b, L, 2D) as in_proj's output
    x = xz[..., :5].transpose(1, 2)  # (b, D, L): channel-last, stride(0) != D * L
    w, b = torch.randn(5, 4, generator=g), torch.randn(5, generator=g)
    dy = torch.randn(2, 5, 26, generator=g)[..., ::2]  # position stride 2
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    out = causal_conv1d_fn(*leaves, activation="silu", backend="triton")
    got = torch.autograd.grad(out, leaves, dy)
    leaves64 = [t.double().requires_grad_() for t in (x, w, b)]
    ref = torch.autograd.grad(causal_conv1d_ref(*leaves64, activation="silu"), leaves64, dy.double())
    for name, a, r in zip(("dx", "dweight", "dbias"), got, ref):
        assert_close_to_reference(name, a, r)
    assert got[0].stride(1) == 1


@pytest.mark.interpret
@needs_interpret
@pytest.mark.parametrize("name,value", [("BD", "3"), ("BL", "0"), ("WARPS", "x"), ("SPLITS", "-1")])
def test_bwd_env_rejects_bad_values(name, value, monkeypatch):
    monkeypatch.setenv("SSM_KERNELS_CONV_BWD_" + name, value)
    with pytest.raises(ValueError, match="SSM_KERNELS_CONV_BWD_" + name):
        check_bwd(1, 3, 5, 4)


@pytest.mark.interpret  # runs in the session that installs triton (it launches nothing)
@needs_triton
def test_bwd_config_defaults(monkeypatch):
    """The default launch at TGMamba's shapes (channel-last x): 64 channels on two warps, chunks of 16."""
    from ssm_kernels.causal_conv1d.triton import _bwd_config

    for name in _ENV:
        monkeypatch.delenv("SSM_KERNELS_CONV_BWD_" + name, raising=False)
    x = torch.empty(8, 2000, 64).transpose(1, 2)
    cfg = _bwd_config(x, 64, 2000)
    assert (cfg["BD"], cfg["BL"], cfg["num_warps"], cfg["n_dblocks"]) == (64, 16, 2, 1)
    assert cfg["n_splits"] * cfg["chunks_per_program"] >= 125 > (cfg["n_splits"] - 1) * cfg["chunks_per_program"]
    cfg = _bwd_config(torch.empty(8, 10, 64).transpose(1, 2), 64, 10)
    assert (cfg["BL"], cfg["n_splits"], cfg["chunks_per_program"]) == (16, 1, 1)
    monkeypatch.setenv("SSM_KERNELS_CONV_BWD_SPLITS", "1000")
    monkeypatch.setenv("SSM_KERNELS_CONV_BWD_BL", "32")
    cfg = _bwd_config(x, 64, 2000)
    assert (cfg["BL"], cfg["n_splits"], cfg["chunks_per_program"]) == (32, 63, 1)


# TGMamba's layouts at GPU sizes: channel-last x, dy contiguous or channel-last
GPU_CASES = {
    "b3-d64-L2000-cl": (3, 64, 2000, 4, "bias-cl"),
    "b3-d64-L2000-cl-dycl": (3, 64, 2000, 4, "bias-cl-dycl"),
    "b64-d64-L10-cl": (64, 64, 10, 4, "bias-cl"),
    "b2-d200-L777-seq-init": (2, 200, 777, 3, "bias-seq-init-dycl"),
    "b2-d96-L300-cl-init": (2, 96, 300, 4, "cl-init"),
}


@pytest.mark.gpu
@requires_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", list(GPU_CASES), ids=list(GPU_CASES))
def test_bwd_gpu(case, dtype):
    sizes, kw = _opts(case, GPU_CASES)
    check_bwd(*sizes, **kw, dtype=dtype, device="cuda", seed=9)


@pytest.mark.gpu
@requires_cuda
@needs_triton
@pytest.mark.parametrize("override", list(OVERRIDES), ids=list(OVERRIDES))
def test_bwd_gpu_overrides(override, monkeypatch):
    for name, value in zip(_ENV, OVERRIDES[override]):
        if value is not None:
            monkeypatch.setenv("SSM_KERNELS_CONV_BWD_" + name, value)
    check_bwd(2, 70, 333, 4, x_cl=True, init=True, seq=True, device="cuda", seed=4)
