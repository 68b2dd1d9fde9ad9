"""The Triton norms against the references: outputs, residual_out and every gradient.

``interpret`` cases run on CPU under TRITON_INTERPRET=1 (tiny shapes); ``gpu`` cases on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from ssm_kernels.backend import triton_available, triton_interpret
from ssm_kernels.testing import requires_cuda
from ssm_kernels.testing.norms import check_layer_norm, check_rms_norm_gated

needs_interpret = pytest.mark.skipif(
    not (triton_available() and triton_interpret()), reason="needs TRITON_INTERPRET=1 and triton"
)
needs_triton = pytest.mark.skipif(not triton_available(), reason="needs triton")

# residual options: (residual, residual_dtype, prenorm, residual_in_fp32)
RES = {
    "plain": (False, None, False, False),
    "res": (True, None, False, False),
    "res-prenorm": (True, None, True, False),
    "prenorm-fp32": (False, None, True, True),
    "res-fp32dtype-prenorm": (True, torch.float32, True, False),
    "prenorm": (False, None, True, False),
}


@pytest.mark.interpret
@needs_interpret
@pytest.mark.parametrize("res", list(RES), ids=list(RES))
@pytest.mark.parametrize("kind", ["rms", "ln", "rms-nobias"])
@pytest.mark.parametrize("shape", [(1, 3), (3, 37), (2, 3, 16)], ids=["1x3", "3x37", "2x3x16"])
def test_layer_norm_interpret(shape, kind, res):
    residual, rdtype, prenorm, r32 = RES[res]
    check_layer_norm(
        shape, is_rms_norm=kind.startswith("rms"), bias=kind != "rms-nobias", residual=residual, residual_dtype=rdtype,
        prenorm=prenorm, residual_in_fp32=r32, seed=len(res),
    )  # fmt: skip


@pytest.mark.interpret
@needs_interpret
@pytest.mark.parametrize("norm_before_gate", [True, False], ids=["norm-gate", "gate-norm"])
@pytest.mark.parametrize("z,bias", [(True, False), (True, True), (False, False)], ids=["z", "z-bias", "noz"])
@pytest.mark.parametrize("shape,group_size", [((3, 12), None), ((2, 2, 12), 4), ((5, 15), 5), ((1, 7), 7), ((2, 6), 1)])
def test_gated_interpret(shape, group_size, z, bias, norm_before_gate):
    check_rms_norm_gated(
        shape, z=z, bias=bias, group_size=group_size, norm_before_gate=norm_before_gate, seed=shape[-1]
    )


@pytest.mark.interpret
@needs_interpret
def test_layer_norm_interpret_bf16():
    check_layer_norm((3, 24), torch.bfloat16, residual=True, prenorm=True, residual_in_fp32=False)
    check_rms_norm_gated((3, 24), torch.bfloat16, group_size=8)


GPU_RES = ["plain", "res-prenorm", "prenorm-fp32", "res-fp32dtype-prenorm"]
GPU_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
GPU_LN_CASES = [
    pytest.param(shape, kind, res, dt, id=f"{'x'.join(map(str, shape))}-{kind}-{res}-{dt}")
    for shape in [(1, 3), (7, 1000), (4, 33, 4096), (3, 8192)]
    for kind in ("rms", "ln")
    for res in GPU_RES
    for dt in ("fp32", "bf16")
] + [
    pytest.param((7, 1000), kind, "res-prenorm", "fp16", id=f"7x1000-{kind}-res-prenorm-fp16") for kind in ("rms", "ln")
]


@pytest.mark.gpu
@requires_cuda
@needs_triton
@pytest.mark.parametrize("shape,kind,res,dt", GPU_LN_CASES)
def test_layer_norm_gpu(shape, kind, res, dt):
    residual, rdtype, prenorm, r32 = RES[res]
    check_layer_norm(
        shape, GPU_DTYPES[dt], "cuda", is_rms_norm=kind == "rms", residual=residual, residual_dtype=rdtype, prenorm=prenorm,
        residual_in_fp32=r32, seed=3,
    )  # fmt: skip


@pytest.mark.gpu
@requires_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("norm_before_gate", [True, False], ids=["norm-gate", "gate-norm"])
@pytest.mark.parametrize("z,bias", [(True, False), (True, True), (False, False)], ids=["z", "z-bias", "noz"])
@pytest.mark.parametrize(
    "shape,group_size", [((5, 1000), None), ((2, 333, 2560), 320), ((4096, 1024), 128), ((3, 7), 7)], ids=str
)
def test_gated_gpu(shape, group_size, z, bias, norm_before_gate, dtype):
    check_rms_norm_gated(shape, dtype, "cuda", z=z, bias=bias, group_size=group_size, norm_before_gate=norm_before_gate)


@pytest.mark.gpu
@requires_cuda
@needs_triton
def test_gated_gpu_fp16():
    check_rms_norm_gated((33, 2560), torch.float16, "cuda", z=True, group_size=320, norm_before_gate=False)


@pytest.mark.interpret
@needs_interpret
def test_float64_goes_to_reference_and_forced_triton_refuses():
    from ssm_kernels.backend import BackendUnavailableError
    from ssm_kernels.norms.interface import rms_norm_fn
    from ssm_kernels.norms.reference import rms_norm_ref

    x, w = torch.randn(3, 5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(rms_norm_fn(x, w), rms_norm_ref(x, w), rtol=1e-12, atol=1e-12)
    with pytest.raises(BackendUnavailableError, match="float64"):
        rms_norm_fn(x, w, backend="triton")
