"""The Triton selective_state_update against the reference: output and the in-place state.

``interpret`` cases run on CPU under TRITON_INTERPRET=1 (tiny shapes); ``gpu`` cases on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from ssm_kernels.backend import triton_available, triton_interpret
from ssm_kernels.testing import requires_cuda
from ssm_kernels.testing.state_update import check_state_update, make_state_update_inputs

needs_interpret = pytest.mark.skipif(
    not (triton_available() and triton_interpret()), reason="needs TRITON_INTERPRET=1 and triton"
)
needs_triton = pytest.mark.skipif(not triton_available(), reason="needs triton")

# batch, nheads (None: Mamba-1), headdim, dstate, ngroups
SMALL = {
    "m1-b1-d1-n1": (1, None, 1, 1, 1),
    "m1-b3-d7-n5": (3, None, 7, 5, 1),
    "m2-b2-h4-p3-n5-g2": (2, 4, 3, 5, 2),
    "m2-b1-h3-p5-n16-g1": (1, 3, 5, 16, 1),
    "m2-b3-h6-p2-n3-g3": (3, 6, 2, 3, 3),
}


@pytest.mark.interpret
@needs_interpret
@pytest.mark.parametrize("indices", [False, True], ids=["rows", "indices"])
@pytest.mark.parametrize("opts", ["plain", "all", "all-tied"])
@pytest.mark.parametrize("case", list(SMALL), ids=list(SMALL))
def test_state_update_interpret(case, opts, indices):
    batch, h, p, n, g = SMALL[case]
    full = opts != "plain"
    if "tied" in opts and h is None:
        pytest.skip("tied (stride-0) inputs are a Mamba-2 layout")
    inp = make_state_update_inputs(
        batch, h, p, n, g, tie_hdim="tied" in opts, D=full, z=full, dt_bias=full, indices=indices, seed=p * n
    )
    check_state_update(inp, dt_softplus=full)


@pytest.mark.interpret
@needs_interpret
def test_state_update_interpret_bf16_inputs_fp32_state():
    inp = make_state_update_inputs(2, 4, 3, 8, 2, dtype=torch.bfloat16, tie_hdim=True, seed=3)
    check_state_update(inp)


BIG = {
    "m1-b64-d4096-n16": (64, None, 4096, 16, 1, False),
    "m1-b5-d1000-n13": (5, None, 1000, 13, 1, False),
    "m2-b64-h80-p64-n128-tied": (64, 80, 64, 128, 1, True),
    "m2-b7-h24-p64-n64-g8": (7, 24, 64, 64, 8, False),
    "m2-b3-h5-p33-n17-g5-tied": (3, 5, 33, 17, 5, True),
}


@pytest.mark.gpu
@requires_cuda
@needs_triton
@pytest.mark.parametrize(
    "dtype,state_dtype",
    [(torch.float32, torch.float32), (torch.bfloat16, torch.float32), (torch.bfloat16, torch.bfloat16)],
    ids=["fp32", "bf16-state32", "bf16"],
)
@pytest.mark.parametrize("indices", [False, True], ids=["rows", "indices"])
@pytest.mark.parametrize("case", list(BIG), ids=list(BIG))
def test_state_update_gpu(case, indices, dtype, state_dtype):
    batch, h, p, n, g, tie = BIG[case]
    inp = make_state_update_inputs(
        batch, h, p, n, g, dtype, state_dtype, "cuda", tie_hdim=tie, indices=indices, seed=batch + n
    )
    check_state_update(inp, dt_softplus=True)


@pytest.mark.interpret
@needs_interpret
def test_float64_state_goes_to_reference_and_forced_triton_refuses():
    from ssm_kernels import selective_state_update
    from ssm_kernels.backend import BackendUnavailableError

    inp = make_state_update_inputs(2, 2, 3, 4, state_dtype=torch.float64, seed=1)
    with torch.no_grad():
        selective_state_update(**inp)
        with pytest.raises(BackendUnavailableError, match="float64"):
            selective_state_update(**inp, backend="triton")
