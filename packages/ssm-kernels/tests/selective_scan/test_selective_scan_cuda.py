"""The CUDA selective scan against the reference: outputs, last state and every gradient (H200, marker gpu)."""

from __future__ import annotations

import pytest
import torch

from ssm_kernels.testing import requires_cuda, seed_all
from ssm_kernels.testing.selective_scan import compare_scan_to_reference, make_scan_inputs, run_scan_with_grads

pytestmark = [pytest.mark.gpu, requires_cuda]

# id, batch, dim, L, N, bc, groups, cu_seqlens, init, z/D/bias, softplus
AWKWARD = [
    ("L1", 2, 3, 1, 4, "variable", 1, None, True, True, True),
    ("dim65-L7", 2, 65, 7, 16, "variable", 1, None, False, True, True),
    ("grouped-nonuniform", 3, 65, 100, 16, "grouped", 5, None, True, True, True),
    ("grouped-uniform", 2, 96, 100, 16, "grouped", 3, None, False, True, True),
    ("grouped-per-channel", 2, 5, 40, 8, "grouped", 5, None, True, True, True),
    ("N64-L257", 2, 64, 257, 64, "variable", 1, None, True, True, True),
    ("N32", 2, 40, 70, 32, "variable", 1, None, False, True, True),
    ("N5-padded", 2, 33, 50, 5, "variable", 1, None, True, True, True),
    ("constant-BC", 2, 3, 257, 4, "constant", 1, None, True, True, True),
    ("constant-BC-N16", 3, 70, 45, 16, "constant", 1, None, False, True, False),
    ("plain", 2, 32, 33, 8, "variable", 1, None, False, False, False),
    ("packed", 1, 65, 100, 16, "variable", 1, [0, 1, 1, 40, 99, 100], True, True, True),
    ("packed-aligned", 1, 64, 97, 16, "variable", 1, [0, 33, 64, 97], True, True, True),
    ("packed-empty-ends", 1, 32, 20, 4, "grouped", 2, [0, 0, 20, 20], True, True, True),
]


def _inputs(case, dtype, bc_dtype=None, seed=0):
    _, batch, dim, L, N, bc, groups, cu, init, extras, _sp = case
    return make_scan_inputs(batch, dim, L, N, bc=bc, groups=groups, cu_seqlens=cu, with_initial_state=init,
                            with_D=extras, with_z=extras, with_delta_bias=extras, dtype=dtype, bc_dtype=bc_dtype,
                            device="cuda", seed=seed)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("case", AWKWARD, ids=[c[0] for c in AWKWARD])
def test_cuda_matches_reference(case, dtype):
    seed_all(0)
    compare_scan_to_reference(_inputs(case, dtype, seed=1), delta_softplus=case[-1], with_last=True, seed=2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_cuda_low_precision_inputs_with_fp32_BC(dtype):
    case = ("mixed", 2, 64, 70, 16, "variable", 1, None, True, True, True)
    compare_scan_to_reference(_inputs(case, dtype, bc_dtype=torch.float32, seed=3), seed=4)


def test_cuda_without_last_state():
    case = ("nolast", 2, 64, 70, 16, "variable", 1, None, True, True, True)
    compare_scan_to_reference(_inputs(case, torch.float32, seed=5), with_last=False, seed=6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_misaligned_inputs_use_the_elementwise_path(dtype):
    """Contiguous inputs that start 1 element past a 16-byte boundary (no vector loads possible)."""
    case = ("misaligned", 2, 64, 48, 16, "variable", 1, None, True, True, True)
    x = _inputs(case, dtype, seed=13)
    for k in ("u", "delta", "z", "B", "C"):
        t = x[k]
        buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
        view = buf[1:].view(t.shape)
        view.copy_(t)
        assert view.is_contiguous() and view.data_ptr() % 16 != 0
        x[k] = view
    compare_scan_to_reference(x, seed=14)


@pytest.mark.parametrize("case", [AWKWARD[1], AWKWARD[2], AWKWARD[11]], ids=lambda c: c[0])
def test_cuda_v1_kernels_still_match_reference(case, monkeypatch):
    """The first-version kernels stay selectable (SSM_KERNELS_SCAN_IMPL=v1) and correct."""
    monkeypatch.setenv("SSM_KERNELS_SCAN_IMPL", "v1")
    compare_scan_to_reference(_inputs(case, torch.float32, seed=15), delta_softplus=case[-1], seed=16)


BENCH = [
    ("big", 8, 2048, 2048, 16, torch.bfloat16),
    ("tusz", 4864, 64, 10, 16, torch.float32),
    ("raw", 304, 64, 2000, 16, torch.float32),
]


@pytest.mark.parametrize("name,batch,dim,L,N,dtype", BENCH, ids=[b[0] for b in BENCH])
def test_cuda_benchmark_shapes(name, batch, dim, L, N, dtype):
    x = make_scan_inputs(batch, dim, L, N, dtype=dtype, device="cuda", seed=7)
    compare_scan_to_reference(x, with_last=True, seed=8, hi_dtype=torch.float64)


@pytest.mark.parametrize("bc,groups", [("variable", 1), ("grouped", 5), ("constant", 1)])
def test_cuda_backward_is_deterministic(bc, groups):
    x = make_scan_inputs(4, 65, 130, 16, bc=bc, groups=groups, with_initial_state=True, device="cuda", seed=9)
    dout = torch.randn_like(x["u"])
    dlast = torch.randn(4, 65, 16, device="cuda")
    from ssm_kernels import selective_scan_fn

    runs = []
    for _ in range(2):
        xi = {k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
              for k, v in x.items()}  # fmt: skip
        runs.append(
            run_scan_with_grads(
                selective_scan_fn, xi, dout, dlast, delta_softplus=True, backend="cuda", deterministic=True
            )
        )
    (o1, l1, g1), (o2, l2, g2) = runs
    assert torch.equal(o1, o2) and torch.equal(l1, l2)
    assert g1.keys() == g2.keys() and len(g1) == 9
    for k in g1:
        assert torch.equal(g1[k], g2[k]), f"d{k} differs between two identical backward runs"


def test_auto_backend_uses_cuda_and_matches_forced():
    from ssm_kernels import selective_scan_fn
    from ssm_kernels.selective_scan import cuda as scan_cuda

    ok, why = scan_cuda.cuda_usable([torch.zeros(1, 1, 1, device="cuda"), None, torch.zeros(1, 4, device="cuda")])
    assert ok, why
    x = make_scan_inputs(2, 64, 33, 16, device="cuda", seed=10)
    a = selective_scan_fn(**x, delta_softplus=True)
    b = selective_scan_fn(**x, delta_softplus=True, backend="cuda")
    assert torch.equal(a, b)


def test_cuda_rejects_bad_input_with_argument_name():
    from ssm_kernels import selective_scan_fn

    x = make_scan_inputs(2, 64, 33, 16, device="cuda", seed=11)
    x["z"] = x["z"][:, :, :-1]
    with pytest.raises(ValueError, match="z"):
        selective_scan_fn(**x, backend="cuda")


def test_mamba_inner_fn_cuda_matches_reference():
    from ssm_kernels import mamba_inner_fn, mamba_inner_ref

    g = torch.Generator().manual_seed(12)
    batch, dim, L, N, W, rank, out = 2, 64, 50, 16, 4, 4, 32
    r = lambda *s, scale=0.3: (torch.randn(*s, generator=g) * scale).cuda().requires_grad_(True)
    kw = dict(xz=r(batch, 2 * dim, L, scale=1.0), conv1d_weight=r(dim, 1, W), conv1d_bias=r(dim),
              x_proj_weight=r(rank + 2 * N, dim), delta_proj_weight=r(dim, rank), out_proj_weight=r(out, dim),
              out_proj_bias=r(out), A=(-torch.rand(dim, N, generator=g) - 0.5).cuda().requires_grad_(True), D=r(dim),
              delta_bias=r(dim))  # fmt: skip
    y = mamba_inner_fn(**kw)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, list(kw.values()), gy)
    y_ref = mamba_inner_ref(**kw)
    grads_ref = torch.autograd.grad(y_ref, list(kw.values()), gy)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for name, a, b in zip(kw, grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-3, msg=lambda m, n=name: f"{n}: {m}")
