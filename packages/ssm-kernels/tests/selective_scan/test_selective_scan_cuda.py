"""The CUDA selective scan against the reference: outputs, last state and every gradient (H200, marker gpu)."""

from __future__ import annotations

import pytest
import torch

from ssm_kernels.testing import assert_close_to_reference, requires_cuda, seed_all
from ssm_kernels.testing.selective_scan import (
    compare_scan_to_reference,
    make_scan_inputs,
    make_short_case_inputs,
    misaligned_copy,
    run_scan_with_grads,
)

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
    _, batch, dim, L, N, bc, groups, cu, init, extras, sp = case
    return make_scan_inputs(batch, dim, L, N, bc=bc, groups=groups, cu_seqlens=cu, with_initial_state=init,
                            with_D=extras, with_z=extras, with_delta_bias=extras, dtype=dtype, bc_dtype=bc_dtype,
                            device="cuda", seed=seed, positive_delta=not sp)  # fmt: skip


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


@pytest.mark.parametrize("L", [48, 10], ids=["general", "short-rows"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_misaligned_inputs_use_the_elementwise_path(dtype, L):
    """Contiguous inputs that start 1 element past a 16-byte boundary (no vector loads possible)."""
    case = ("misaligned", 2, 64, L, 16, "variable", 1, None, True, True, True)
    x = _inputs(case, dtype, seed=13)
    for k in ("u", "delta", "z", "B", "C"):
        x[k] = misaligned_copy(x[k])
    compare_scan_to_reference(x, seed=14)


# Short-sequence kernels (L <= 16, no cu_seqlens; csrc/selective_scan_short.cuh): R = NP / 4 lanes per row.
# id, batch, dim, L, N, bc, groups, init, z/D/bias, softplus, dtype, bc_dtype, with_last
_F32, _F16, _BF16 = torch.float32, torch.float16, torch.bfloat16
SHORT = [
    ("L1-N1", 3, 7, 1, 1, "variable", 1, True, True, True, _F32, None, True),
    ("L2-N5-nonuniform", 2, 65, 2, 5, "grouped", 5, True, True, True, _F32, None, True),
    ("L10-N16-dim65", 3, 65, 10, 16, "variable", 1, True, True, True, _F32, None, True),
    ("L10-N16-block-groups", 2, 256, 10, 16, "grouped", 2, True, True, True, _F32, None, True),
    ("L10-N16-warp-groups", 2, 48, 10, 16, "grouped", 3, False, True, True, _F32, None, True),
    ("L16-N33-uniform", 2, 64, 16, 33, "grouped", 4, True, True, True, _F32, None, True),
    ("L16-N33-nonuniform", 2, 21, 16, 33, "grouped", 3, True, True, True, _F32, None, False),
    ("L16-N64", 2, 40, 16, 64, "variable", 1, True, True, True, _F32, None, True),
    ("L10-N8-constant", 2, 70, 10, 8, "constant", 1, True, True, True, _F32, None, True),
    ("L16-N16-plain", 2, 64, 16, 16, "variable", 1, False, False, False, _F32, None, False),
    ("L10-N16-bf16", 3, 65, 10, 16, "variable", 1, True, True, True, _BF16, None, True),
    ("L10-N16-bf16-fp32bc", 3, 64, 10, 16, "variable", 1, True, True, True, _BF16, _F32, True),
    ("L7-N5-fp16", 2, 33, 7, 5, "grouped", 3, True, True, True, _F16, None, True),
    ("L16-N16-fp16-fp32bc", 2, 64, 16, 16, "variable", 1, False, True, False, _F16, _F32, True),
    ("L1-N33-constant-bf16", 2, 9, 1, 33, "constant", 1, True, True, True, _BF16, None, True),
    # one thread per row (groups of whole warps, N <= 16): padded N 4 and 8, a block whose second warp is past the end
    ("L1-N4-rows", 2, 32, 1, 4, "variable", 1, True, True, True, _F32, None, True),
    ("L13-N7-rows-bf16", 3, 96, 13, 7, "grouped", 3, True, True, False, _BF16, None, True),
]


def _kernel_names(fn):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("case", SHORT, ids=[c[0] for c in SHORT])
@pytest.mark.parametrize(
    "short",
    ["1", "lanes", "0", "staged", "minb1", "minb8"],
    ids=["short", "short-lanes", "general", "short-staged", "uncapped", "capped"],
)
def test_cuda_short_sequences_match_reference(case, short, monkeypatch):
    """L <= 16: the short kernels (default: one thread per row where it applies, else the lane-split kernels;
    with SSM_KERNELS_SCAN_SHORT_ROWS=0 always the lane-split ones, also with B / C staged in shared memory
    (SSM_KERNELS_SCAN_SHORT_STAGE=1) and with both register-cap instantiations) and, with SSM_KERNELS_SCAN_SHORT=0,
    the general kernels."""
    monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT", "0" if short == "0" else "1")
    monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT_ROWS", "1" if short == "1" else "0")
    monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT_STAGE", "1" if short == "staged" else "0")
    if short.startswith("minb"):
        monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT_MINB", short[4:])
    compare_scan_to_reference(
        make_short_case_inputs(case, "cuda", seed=21), delta_softplus=case[9], with_last=case[12], seed=22
    )


def _check_inference_output(x, softplus, out, last):
    """A no-grad call's output and last state against the reference in float64 and in the inputs' dtypes."""
    from ssm_kernels.selective_scan.reference import selective_scan_ref

    hi = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in x.items()}
    out_hi, last_hi = selective_scan_ref(**hi, delta_softplus=softplus, return_last_state=True)
    out_lo, last_lo = selective_scan_ref(**x, delta_softplus=softplus, return_last_state=True)
    assert_close_to_reference("out", out, out_hi, out_lo)
    assert_close_to_reference("last_state", last, last_hi, last_lo)


# long forward design (SSM_KERNELS_SCAN_STATE_FWD 0 / 1; auto: chosen per call) x register cap of the warp design's N = 16
# instantiation (default 5 blocks per SM, SSM_KERNELS_SCAN_LONG_MINB=4) or the state design's states per lane
LONG_FWD_VARIANTS = [("warp", "default"), ("warp", "4"), ("state", "ns4"), ("state", "ns2"), ("auto", "default")]


@pytest.mark.parametrize("design,variant", LONG_FWD_VARIANTS, ids=["-".join(v) for v in LONG_FWD_VARIANTS])
@pytest.mark.parametrize("L", [300, 304])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_inference_runs_the_long_forward(dtype, L, design, variant, monkeypatch):
    """No-grad calls at L >= 128 run the long forward (SSM_KERNELS_SCAN_LONG=0: the general one); same outputs
    as the reference and as the general kernel, for each design and variant (L 304: the state design's 16-byte
    B / C loads)."""
    from ssm_kernels import selective_scan_fn

    x = make_scan_inputs(3, 40, L, 16, dtype=dtype, device="cuda", seed=31)
    for var in ("SSM_KERNELS_SCAN_LONG", "SSM_KERNELS_SCAN_LONG_MINB", "SSM_KERNELS_SCAN_STATE_FWD",
                "SSM_KERNELS_SCAN_STATE_NS"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    if design != "auto":
        monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_FWD", "1" if design == "state" else "0")
    if design == "warp" and variant != "default":
        monkeypatch.setenv("SSM_KERNELS_SCAN_LONG_MINB", variant)
    if design == "state":
        monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_NS", variant[2:])
    kernel = {"warp": "scan_fwd_long_kernel", "state": f"scan_fwd_state_kernel<16, {variant[2:]},"}.get(design)

    def run():
        with torch.no_grad():
            return selective_scan_fn(**x, delta_softplus=True, return_last_state=True, backend="cuda")

    names = " ".join(_kernel_names(run))
    assert (kernel in names) if kernel else ("scan_fwd_long_kernel" in names or "scan_fwd_state_kernel" in names), names
    out, last = run()
    _check_inference_output(x, True, out, last)
    monkeypatch.setenv("SSM_KERNELS_SCAN_LONG", "0")
    names = " ".join(_kernel_names(run))
    assert "scan_fwd_long_kernel" not in names and "scan_fwd_state_kernel" not in names, names
    assert "scan_fwd_kernel" in names, names
    out_g, last_g = run()
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(out, out_g, **tol)
    torch.testing.assert_close(last, last_g, rtol=1e-5, atol=1e-5)


def test_cuda_short_path_runs_the_short_kernels(monkeypatch):
    """TUSZ-like call: the one-thread-per-row short kernels run (and only they); SSM_KERNELS_SCAN_SHORT_ROWS=0 runs
    the lane-split short kernels, SSM_KERNELS_SCAN_SHORT=0 the general ones."""
    from ssm_kernels import selective_scan_fn

    x = make_scan_inputs(64, 64, 10, 16, device="cuda", seed=23, requires_grad=True)

    def step():
        out = selective_scan_fn(**x, delta_softplus=True, backend="cuda")
        out.backward(torch.ones_like(out))

    monkeypatch.delenv("SSM_KERNELS_SCAN_SHORT", raising=False)
    monkeypatch.delenv("SSM_KERNELS_SCAN_SHORT_ROWS", raising=False)
    names = " ".join(_kernel_names(step))
    assert "scan_fwd_rows_kernel" in names and "scan_bwd_rows_kernel" in names, names
    assert "_short_kernel" not in names and "scan_fwd_kernel" not in names and "scan_bwd_kernel" not in names, names
    monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT_ROWS", "0")
    names = " ".join(_kernel_names(step))
    assert "scan_fwd_short_kernel" in names and "scan_bwd_short_kernel" in names, names
    assert "_rows_kernel" not in names and "scan_fwd_kernel" not in names and "scan_bwd_kernel" not in names, names
    monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT", "0")
    names = " ".join(_kernel_names(step))
    assert "_short_kernel" not in names and "scan_fwd_kernel" in names and "scan_bwd_kernel" in names, names


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_short_vs_general_kernels_at_tusz_shape(dtype, monkeypatch):
    """TUSZ shape (4864 x 64 x 10, N 16, z / D / bias / softplus, variable B / C): the short kernels (one thread
    per row; lane-split, plain and with staged B / C) vs the general kernels (SSM_KERNELS_SCAN_SHORT=0): each
    against the float64 reference, and against each other."""
    from ssm_kernels import selective_scan_fn

    x = make_scan_inputs(4864, 64, 10, 16, dtype=dtype, device="cuda", seed=24)
    res = {}
    for flag in ("staged", "lanes", "1", "0"):
        monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT", "0" if flag == "0" else "1")
        monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT_ROWS", "1" if flag == "1" else "0")
        monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT_STAGE", "1" if flag == "staged" else "0")
        compare_scan_to_reference(x, with_last=True, seed=25, hi_dtype=torch.float64)
        xi = {k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
              for k, v in x.items()}  # fmt: skip
        g = torch.Generator().manual_seed(26)
        dout = torch.randn(x["u"].shape, generator=g).to("cuda", dtype)
        res[flag] = run_scan_with_grads(selective_scan_fn, xi, dout, None, delta_softplus=True, backend="cuda")
    o0, _, g0 = res["0"]
    for flag in ("1", "lanes", "staged"):
        o1, _, g1 = res[flag]
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(o1.float(), o0.float(), **tol)
        assert g1.keys() == g0.keys()
        for k in g1:
            scale = g0[k].float().abs().max().clamp_min(1e-6)
            err = (g1[k].float() - g0[k].float()).abs().max() / scale
            assert err < (1e-4 if dtype == torch.float32 else 2e-2), f"d{k}: {flag} vs general max rel err {err:.3g}"


@pytest.mark.parametrize("bc,groups,dim", [("variable", 1, 64), ("grouped", 5, 65), ("constant", 1, 65)])
def test_cuda_short_backward_is_deterministic(bc, groups, dim):
    _deterministic_runs(make_scan_inputs(4, dim, 10, 16, bc=bc, groups=groups, with_initial_state=True,
                                         device="cuda", seed=27))  # fmt: skip


def _deterministic_runs(x):
    """Two identical forward + backward runs give bit-identical outputs and gradients."""
    from ssm_kernels import selective_scan_fn

    dout = torch.randn_like(x["u"])
    dlast = torch.randn(*x["u"].shape[:2], x["A"].shape[1], device="cuda")
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


BENCH = [
    ("big", 8, 2048, 2048, 16, torch.bfloat16),
    ("tusz", 4864, 64, 10, 16, torch.float32),
    ("raw", 304, 64, 2000, 16, torch.float32),
]


@pytest.mark.parametrize("name,batch,dim,L,N,dtype", BENCH, ids=[b[0] for b in BENCH])
def test_cuda_benchmark_shapes(name, batch, dim, L, N, dtype):
    x = make_scan_inputs(batch, dim, L, N, dtype=dtype, device="cuda", seed=7)
    compare_scan_to_reference(x, with_last=True, seed=8, hi_dtype=torch.float64)


# Long-sequence kernels (SSM_KERNELS_SCAN_LONG=1, L >= 128): kernel pair, or long forward + general backward
# id, batch, dim, L, N, bc, groups, cu_seqlens, init, z/D/bias, softplus, long backward
LONG = [
    ("long-L300-dim64", 2, 64, 300, 16, "variable", 1, None, True, True, True, True),
    ("long-groups-of-13", 3, 65, 200, 16, "grouped", 5, None, True, True, True, False),
    ("long-N64-L257", 2, 64, 257, 64, "variable", 1, None, True, True, True, True),
    ("long-constant-BC", 2, 3, 257, 4, "constant", 1, None, True, True, True, True),
    ("long-N33-groups-of-32", 1, 96, 1000, 33, "grouped", 3, None, False, True, False, True),
    ("long-L128-plain", 2, 40, 128, 8, "variable", 1, None, False, False, False, True),
]


def _record_chunks(monkeypatch):
    """Record the checkpoint interval K of every backward call (128 = the long backward)."""
    from ssm_kernels.selective_scan import cuda as scan_cuda

    ext = scan_cuda.load_extension()
    seen: list[int] = []

    class Spy:
        def __getattr__(self, name):
            return getattr(ext, name)

        def bwd(self, *args):
            seen.append(int(args[12]))
            return ext.bwd(*args)

    monkeypatch.setattr(scan_cuda, "_EXT", Spy())
    return seen


@pytest.mark.parametrize("design", ["warp", "state"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("case", LONG, ids=[c[0] for c in LONG])
def test_cuda_long_kernels_match_reference(case, dtype, design, monkeypatch):
    monkeypatch.setenv("SSM_KERNELS_SCAN_LONG", "1")
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_FWD", "1" if design == "state" else "0")
    seen = _record_chunks(monkeypatch)
    compare_scan_to_reference(_inputs(case[:11], dtype, seed=12), delta_softplus=case[10], with_last=True, seed=13)
    assert len(seen) == 1 and (seen[0] == 128) == case[11], seen


@pytest.mark.parametrize("name,batch,dim,L,N,dtype", [BENCH[0], BENCH[2]], ids=["big", "raw"])
def test_cuda_long_kernels_at_benchmark_shapes(name, batch, dim, L, N, dtype, monkeypatch):
    monkeypatch.setenv("SSM_KERNELS_SCAN_LONG", "1")
    seen = _record_chunks(monkeypatch)
    x = make_scan_inputs(batch, dim, L, N, dtype=dtype, device="cuda", seed=7)
    compare_scan_to_reference(x, with_last=True, seed=8, hi_dtype=torch.float64)
    assert seen == [128]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", LONG[:5], ids=[c[0] for c in LONG[:5]])
def test_cuda_state_forward_in_training_matches_reference(case, dtype, monkeypatch):
    """Training through the state-lane forward (SSM_KERNELS_SCAN_STATE_FWD=1): its checkpoints feed the general
    backward (never the long one: K = 128 only on the long path)."""
    monkeypatch.delenv("SSM_KERNELS_SCAN_LONG", raising=False)
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_FWD", "1")
    seen = _record_chunks(monkeypatch)
    compare_scan_to_reference(_inputs(case[:11], dtype, seed=15), delta_softplus=case[10], with_last=True, seed=16)
    assert len(seen) == 1 and seen[0] != 128, seen


# the state-lane backward (SSM_KERNELS_SCAN_STATE_BWD=1, any chunk K; SSM_KERNELS_SCAN_STATE_BWD_TILE=0 keeps it
# unstaged) and its staged version (the default where it fits: variable B / C in groups of 32 channels, K <= 8)
BWD_KERNEL_CASES = [
    ("state", ("state-bwd-L300", 2, 64, 300, 16, "variable", 1, None, True, True, True)),
    ("state", ("state-bwd-N10-groups-of-32", 1, 96, 257, 10, "grouped", 3, None, True, True, False)),
    ("state", ("state-bwd-constant", 2, 40, 200, 16, "constant", 1, None, True, True, True)),
    ("tile", ("tile-bwd-L300", 2, 64, 300, 16, "variable", 1, None, True, True, True)),
    ("tile", ("tile-bwd-N10-groups-of-32", 1, 96, 257, 10, "grouped", 3, None, True, True, False)),
    ("tile", ("tile-bwd-L2000-plain", 4, 64, 2000, 16, "variable", 1, None, False, False, True)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("design,case", BWD_KERNEL_CASES, ids=[c[1][0] for c in BWD_KERNEL_CASES])
def test_cuda_state_backward_matches_reference(design, case, dtype, monkeypatch):
    """The forced state-lane backward, plain or staged: its kernel runs; outputs and every gradient."""
    monkeypatch.delenv("SSM_KERNELS_SCAN_LONG", raising=False)
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_BWD", "1")
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_BWD_TILE", "1" if design == "tile" else "0")
    from ssm_kernels import selective_scan_fn

    x = _inputs(case, dtype, seed=19)
    xg = {k: (v.detach().requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
          for k, v in x.items()}  # fmt: skip
    out = selective_scan_fn(**xg, delta_softplus=case[10], backend="cuda")
    names = " ".join(_kernel_names(lambda: out.backward(torch.ones_like(out), retain_graph=True)))
    assert f"scan_bwd_{design}_kernel" in names, names
    compare_scan_to_reference(x, delta_softplus=case[10], with_last=True, seed=20)


def test_cuda_state_forward_at_big_shape(monkeypatch):
    """The benchmark's big shape (bf16, N 16, 16,384 rows) trains through the staged state-lane forward by default;
    outputs and every gradient against the reference."""
    for var in ("SSM_KERNELS_SCAN_LONG", "SSM_KERNELS_SCAN_STATE_FWD"):
        monkeypatch.delenv(var, raising=False)
    _, batch, dim, L, N, dtype = BENCH[0]
    x = make_scan_inputs(batch, dim, L, N, dtype=dtype, device="cuda", seed=17, requires_grad=True)
    from ssm_kernels import selective_scan_fn

    names = " ".join(_kernel_names(lambda: selective_scan_fn(**x, delta_softplus=True, backend="cuda")))
    assert "scan_fwd_tile_kernel<" in names, names  # the staged kernel, 8- or 16-step chunks for the checkpoints
    compare_scan_to_reference(make_scan_inputs(batch, dim, L, N, dtype=dtype, device="cuda", seed=17), with_last=True,
                              seed=18, hi_dtype=torch.float64)  # fmt: skip


# The staged state-lane forward (scan_fwd_tile_kernel): padded N 16, variable B / C in groups of 32 channels
TILE = [
    ("tile-L300-N16", 2, 64, 300, 16, "variable", 1, None, True, True, True),  # a 12-step tail chunk
    ("tile-L131-N10-grouped", 1, 64, 131, 10, "grouped", 2, None, True, True, True),  # element loads, padded N
    ("tile-L2000-plain", 4, 96, 2000, 16, "variable", 1, None, False, False, True),  # only softplus
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("case", TILE, ids=[c[0] for c in TILE])
def test_cuda_tile_forward_matches_reference(case, dtype, monkeypatch):
    """Inference (16-step chunks) and training (checkpoints for the backward) through the staged forward: outputs, last
    state and every gradient against the reference; the inference output also against the unstaged kernel."""
    from ssm_kernels import selective_scan_fn

    for var in ("SSM_KERNELS_SCAN_LONG", "SSM_KERNELS_SCAN_STATE_TILE", "SSM_KERNELS_SCAN_STATE_NS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_FWD", "1")
    sp = case[10]
    x = _inputs(case, dtype, seed=41)

    def run():
        with torch.no_grad():
            return selective_scan_fn(**x, delta_softplus=sp, return_last_state=True, backend="cuda")

    assert "scan_fwd_tile_kernel<" in " ".join(_kernel_names(run))
    out, last = run()
    _check_inference_output(x, sp, out, last)
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_TILE", "0")
    assert "scan_fwd_tile_kernel" not in " ".join(_kernel_names(run))
    out_s, last_s = run()
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(out, out_s, **tol)
    torch.testing.assert_close(last, last_s, rtol=1e-4, atol=1e-4)
    monkeypatch.delenv("SSM_KERNELS_SCAN_STATE_TILE")
    compare_scan_to_reference(x, delta_softplus=sp, with_last=True, seed=42)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_tile_forward_misaligned_inputs(dtype, monkeypatch):
    """Rows off their vector boundary take the staged forward's element loads."""
    monkeypatch.delenv("SSM_KERNELS_SCAN_LONG", raising=False)
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_FWD", "1")
    x = _inputs(TILE[0], dtype, seed=43)
    x = {k: (misaligned_copy(v) if k in ("u", "delta", "z", "B", "C") else v) for k, v in x.items()}
    compare_scan_to_reference(x, delta_softplus=True, with_last=True, seed=44)


@pytest.mark.parametrize("bc,groups", [("variable", 1), ("grouped", 2), ("constant", 1)])
def test_cuda_long_backward_is_deterministic(bc, groups, monkeypatch):
    monkeypatch.setenv("SSM_KERNELS_SCAN_LONG", "1")
    _deterministic_runs(make_scan_inputs(4, 64, 300, 16, bc=bc, groups=groups, with_initial_state=True,
                                         device="cuda", seed=14))  # fmt: skip


# General and state-lane backward (unstaged and staged) over time segments (SSM_KERNELS_SCAN_BWD_SEGMENTS): off,
# chosen, and forced to the most.
@pytest.mark.parametrize("design", ["general", "state", "tile"])
@pytest.mark.parametrize("segments", ["1", "0", "16"], ids=["off", "auto", "16"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "case",
    [
        ("seg-L1000-grouped", 2, 96, 1000, 16, "grouped", 3, None, True, True, True),
        ("seg-L333-N33-constant", 3, 5, 333, 33, "constant", 1, None, True, True, False),
    ],
    ids=["L1000-grouped", "L333-N33-constant"],
)
def test_cuda_backward_segments_match_reference(case, dtype, segments, design, monkeypatch):
    from ssm_kernels.selective_scan import cuda as scan_cuda

    if design != "general" and case[4] > 16:
        pytest.skip("the state-lane backward takes padded N 16 only")
    monkeypatch.setenv("SSM_KERNELS_SCAN_BWD_SEGMENTS", segments)
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_BWD", "0" if design == "general" else "1")
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_BWD_TILE", "0" if design == "state" else "1")
    _, batch, dim, L, N = case[:5]
    ext = scan_cuda.load_extension()
    if design == "tile" and ext.choose_chunk(N, L, batch * dim) > 8:
        pytest.skip("the staged backward takes chunks of K <= 8")
    if design == "general":
        nseg = ext.backward_segments(N, L, batch * dim, ext.choose_chunk(N, L, batch * dim))
        assert (nseg == 1) == (segments == "1"), nseg
    x = _inputs(case, dtype, seed=15)
    xg = {k: (v.detach().requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
          for k, v in x.items()}  # fmt: skip
    from ssm_kernels import selective_scan_fn

    out = selective_scan_fn(**xg, delta_softplus=case[-1], backend="cuda")
    names = " ".join(_kernel_names(lambda: out.backward(torch.ones_like(out), retain_graph=True)))
    want = {"general": "scan_bwd_kernel", "state": "scan_bwd_state_kernel", "tile": "scan_bwd_tile_kernel"}[design]
    assert want in names, names
    assert (segments != "1") == ("scan_bwd_seg_kernel" in names), names
    compare_scan_to_reference(x, delta_softplus=case[-1], with_last=True, seed=16)


def test_cuda_benchmark_shape_segments_agree(monkeypatch):
    """Raw EEG shape: the chosen segments against none, every gradient (fp32 summation order only)."""
    from ssm_kernels.testing import max_rel_err

    x = make_scan_inputs(304, 64, 2000, 16, device="cuda", seed=17, requires_grad=True)
    leaves = {k: v for k, v in x.items() if isinstance(v, torch.Tensor) and v.requires_grad}
    dout = torch.randn_like(x["u"])
    grads = {}
    for s in ("1", "0"):
        monkeypatch.setenv("SSM_KERNELS_SCAN_BWD_SEGMENTS", s)
        out = selective_scan_fn_cuda(x)
        grads[s] = torch.autograd.grad(out, list(leaves.values()), dout)
    for k, a, b in zip(leaves, grads["0"], grads["1"]):
        assert max_rel_err(a, b) < 1e-4, (k, max_rel_err(a, b))


def selective_scan_fn_cuda(x):
    from ssm_kernels import selective_scan_fn

    return selective_scan_fn(**x, delta_softplus=True, backend="cuda")


@pytest.mark.parametrize("bc,groups", [("variable", 1), ("grouped", 5), ("constant", 1)])
def test_cuda_backward_is_deterministic(bc, groups):
    _deterministic_runs(make_scan_inputs(4, 65, 130, 16, bc=bc, groups=groups, with_initial_state=True,
                                         device="cuda", seed=9))  # fmt: skip


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
