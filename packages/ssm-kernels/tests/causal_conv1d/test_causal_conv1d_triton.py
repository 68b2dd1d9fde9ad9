"""The Triton causal conv1d against the reference: outputs, final states and every gradient.

``interpret`` cases run on CPU under TRITON_INTERPRET=1 (tiny shapes); ``gpu`` cases on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from ssm_kernels import causal_conv1d_update
from ssm_kernels.backend import triton_available, triton_interpret
from ssm_kernels.testing import requires_cuda
from ssm_kernels.testing.causal_conv1d import check_conv1d, check_conv1d_update, make_conv1d_inputs

needs_interpret = pytest.mark.skipif(
    not (triton_available() and triton_interpret()), reason="needs TRITON_INTERPRET=1 and triton"
)
needs_triton = pytest.mark.skipif(not triton_available(), reason="needs triton")

# batch, dim, L, width, options
SMALL = {
    "L1-w2": (2, 3, 1, 2, "bias"),
    "L1-w4-init-final": (1, 5, 1, 4, "bias-init-final"),
    "L2-w4-init-final": (2, 3, 2, 4, "init-final"),
    "L7-w3-odd": (2, 5, 7, 3, "bias"),
    "L19-w4-seq": (2, 3, 19, 4, "bias-seq"),
    "L21-w4-all": (1, 7, 21, 4, "bias-init-seq-final"),
    "L17-w2-cl": (2, 6, 17, 2, "bias-final-cl"),
    "L5-w1": (1, 3, 5, 1, "bias"),
    "L9-w6-init": (1, 2, 9, 6, "init-final"),
}


def _inputs(case, dtype, device, seed):
    batch, dim, seqlen, width, opts = case
    inp = make_conv1d_inputs(
        batch, dim, seqlen, width, dtype, device, bias="bias" in opts, init="init" in opts, seq="seq" in opts,
        channel_last="cl" in opts, seed=seed,
    )  # fmt: skip
    return inp, "final" in opts


@pytest.mark.parametrize("act", [None, "silu"], ids=["noact", "silu"])
@pytest.mark.parametrize("case", list(SMALL), ids=list(SMALL))
@pytest.mark.interpret
@needs_interpret
def test_conv1d_interpret(case, act):
    inp, final = _inputs(SMALL[case], torch.float32, "cpu", seed=len(case))
    check_conv1d(inp, act, final, seed=3)


@pytest.mark.interpret
@needs_interpret
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_conv1d_interpret_half(dtype):
    inp = make_conv1d_inputs(2, 5, 19, 4, dtype, bias=True, init=True, seq=True, seed=1)
    check_conv1d(inp, "silu", True, seed=1)
    check_conv1d_update(3, 5, 2, 4, 5, dtype, circular=True, indices=True)


@pytest.mark.parametrize("circular", [False, True], ids=["shift", "circular"])
@pytest.mark.parametrize(
    "seqlen,width,state_len,indices", [(None, 4, 3, False), (1, 4, 5, True), (3, 3, 4, False), (2, 2, 2, True)]
)
@pytest.mark.interpret
@needs_interpret
def test_update_interpret(circular, seqlen, width, state_len, indices):
    check_conv1d_update(3, 5, seqlen, width, state_len, circular=circular, indices=indices, seed=width)


BIG = {
    "b2-d257-L1-w4": (2, 257, 1, 4, "bias-init-final"),
    "b2-d130-L3-w3": (2, 130, 3, 3, "bias-init-final"),
    "b3-d200-L333-w4": (3, 200, 333, 4, "bias"),
    "b2-d96-L1000-w4-seq": (2, 96, 1000, 4, "bias-init-seq-final"),
    "b2-d300-L250-w2-cl": (2, 300, 250, 2, "bias-final-cl"),
    "b1-d64-L4099-w4": (1, 64, 4099, 4, "init-final"),
    "b4-d1024-L512-w4": (4, 1024, 512, 4, "bias"),
}


@pytest.mark.gpu
@requires_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("act", [None, "silu"], ids=["noact", "silu"])
@pytest.mark.parametrize("case", list(BIG), ids=list(BIG))
def test_conv1d_gpu(case, act, dtype):
    inp, final = _inputs(BIG[case], dtype, "cuda", seed=7)
    check_conv1d(inp, act, final, seed=5)


@pytest.mark.gpu
@requires_cuda
@needs_triton
@pytest.mark.parametrize("case", ["b2-d96-L1000-w4-seq", "b2-d300-L250-w2-cl"])
def test_conv1d_gpu_fp16(case):
    inp, final = _inputs(BIG[case], torch.float16, "cuda", seed=7)
    check_conv1d(inp, "silu", final, seed=5)


@pytest.mark.gpu
@requires_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("circular", [False, True], ids=["shift", "circular"])
@pytest.mark.parametrize("seqlen,indices", [(None, False), (1, True), (4, False)])
def test_update_gpu(dtype, circular, seqlen, indices):
    check_conv1d_update(64, 1536, seqlen, 4, 8, dtype, "cuda", circular=circular, indices=indices, seed=1)


@pytest.mark.interpret
@needs_interpret
def test_update_triton_refuses_grad():
    x = torch.randn(2, 3, requires_grad=True)
    state, w = torch.zeros(2, 3, 3), torch.randn(3, 4)
    with pytest.raises(RuntimeError, match="no backward"):
        causal_conv1d_update(x, state, w, backend="triton")
    with torch.no_grad():
        causal_conv1d_update(x, state, w, backend="triton")


@pytest.mark.interpret
@needs_interpret
def test_float64_goes_to_reference_and_forced_triton_refuses():
    from ssm_kernels import causal_conv1d_fn, causal_conv1d_ref
    from ssm_kernels.backend import BackendUnavailableError

    x, w = torch.randn(2, 3, 7, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(causal_conv1d_fn(x, w), causal_conv1d_ref(x, w), rtol=1e-12, atol=1e-12)
    with pytest.raises(BackendUnavailableError, match="float64"):
        causal_conv1d_fn(x, w, backend="triton")
