"""The selective-scan reference against the maths, gradcheck, packed sequences, state chaining, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssm_kernels import mamba_inner_fn, mamba_inner_ref, selective_scan_fn, selective_scan_ref
from ssm_kernels.testing import assert_close_to_reference
from ssm_kernels.testing.selective_scan import make_scan_inputs


def naive_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None, cu_seqlens=None
):
    """Scalar per-(b, d, n) loops written directly from the definition, in float64."""
    batch, dim, L = u.shape
    N = A.shape[1]
    u, delta, A = u.double(), delta.double(), A.double()
    B, C = B.double(), C.double()

    def coef(X, b, d, n, t):
        if X.dim() == 2:
            return X[d, n]
        if X.dim() == 3:
            return X[b, n, t]
        return X[b, d // (dim // X.shape[1]), n, t]

    starts = [0] if cu_seqlens is None else list(cu_seqlens[:-1])
    ends = [L] if cu_seqlens is None else list(cu_seqlens[1:])
    y = torch.zeros(batch, dim, L, dtype=torch.float64)
    nseq = batch if cu_seqlens is None else len(starts)
    last = torch.zeros(nseq, dim, N, dtype=torch.float64)
    for b in range(batch):
        for d in range(dim):
            for s, (t0, t1) in enumerate(zip(starts, ends)):
                seq = b if cu_seqlens is None else s
                h = [0.0] * N if initial_state is None else [float(initial_state[seq, d, n]) for n in range(N)]
                for t in range(t0, t1):
                    dt = float(delta[b, d, t]) + (float(delta_bias[d]) if delta_bias is not None else 0.0)
                    if delta_softplus:
                        dt = math.log1p(math.exp(dt))
                    acc = 0.0
                    for n in range(N):
                        h[n] = math.exp(dt * float(A[d, n])) * h[n] + dt * float(coef(B, b, d, n, t)) * float(
                            u[b, d, t]
                        )
                        acc += h[n] * float(coef(C, b, d, n, t))
                    if D is not None:
                        acc += float(D[d]) * float(u[b, d, t])
                    if z is not None:
                        zz = float(z[b, d, t])
                        acc *= zz / (1.0 + math.exp(-zz))
                    y[b, d, t] = acc
                last[seq, d] = torch.tensor(h, dtype=torch.float64)
    return y, last


CASES = [
    # id, batch, dim, L, N, bc, groups, D, z, bias, softplus, init
    ("var-all", 2, 3, 5, 4, "variable", 1, True, True, True, True, True),
    ("var-plain", 2, 3, 5, 4, "variable", 1, False, False, False, False, False),
    ("grouped", 2, 4, 6, 3, "grouped", 2, True, True, True, True, False),
    ("grouped-dimgroups", 1, 3, 4, 2, "grouped", 3, True, False, True, False, True),
    ("constant", 2, 3, 5, 4, "constant", 1, True, True, False, True, True),
    ("L1", 3, 2, 1, 5, "variable", 1, True, True, True, True, True),
]


@pytest.fixture(params=[32, 2], ids=["chunk32", "chunk2"])
def ref_chunk(request, monkeypatch):
    """Steps per chunk of the reference's readout: one chunk, or several with a partial last one (odd L, packed
    sequences whose boundaries fall inside a chunk)."""
    from ssm_kernels.selective_scan import reference

    monkeypatch.setattr(reference, "_REF_CHUNK", request.param)
    return request.param


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_reference_matches_naive_loops(case, ref_chunk):
    _, batch, dim, L, N, bc, groups, wD, wz, wb, sp, init = case
    x = make_scan_inputs(batch, dim, L, N, bc=bc, groups=groups, with_D=wD, with_z=wz, with_delta_bias=wb,
                         with_initial_state=init, dtype=torch.float64, seed=1)  # fmt: skip
    out, last = selective_scan_ref(**x, delta_softplus=sp, return_last_state=True)
    y_n, last_n = naive_scan(
        x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], sp, x["initial_state"]
    )
    torch.testing.assert_close(out, y_n, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last.double(), last_n, rtol=1e-10, atol=1e-10)


def test_reference_low_precision_dtypes_and_output_dtype():
    x = make_scan_inputs(2, 3, 6, 4, dtype=torch.bfloat16, seed=2)
    out, last = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    hi = selective_scan_ref(**{k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in x.items()},
                            delta_softplus=True)  # fmt: skip
    assert_close_to_reference("out", out, hi, floor=2e-2)


def test_reference_packed_sequences_equal_separate_runs(ref_chunk):
    cu = [0, 3, 3, 8, 12]
    x = make_scan_inputs(1, 3, 12, 4, cu_seqlens=cu, with_initial_state=True, seed=3, dtype=torch.float64)
    out, last = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    for s in range(len(cu) - 1):
        t0, t1 = cu[s], cu[s + 1]
        sl = {k: x[k][..., t0:t1] for k in ("u", "delta", "z", "B", "C")}
        ref_out, ref_last = selective_scan_ref(**sl, A=x["A"], D=x["D"], delta_bias=x["delta_bias"], delta_softplus=True,
                                               return_last_state=True, initial_state=x["initial_state"][s : s + 1])  # fmt: skip
        torch.testing.assert_close(out[..., t0:t1], ref_out, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(last[s : s + 1], ref_last, rtol=1e-12, atol=1e-12)
    # the empty sequence (s = 1) passes its initial state through
    torch.testing.assert_close(last[1], x["initial_state"][1].double())
    y_n, last_n = naive_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True,
                             x["initial_state"], cu)  # fmt: skip
    torch.testing.assert_close(out, y_n, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, last_n, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bc", ["variable", "grouped", "constant"])
def test_reference_initial_state_chaining(bc):
    x = make_scan_inputs(2, 4, 9, 3, bc=bc, groups=2, seed=4, dtype=torch.float64)
    full, last_full = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    cut = 4

    def part(sl):
        sliced = {k: x[k][..., sl] for k in ("u", "delta", "z")}
        for k in ("B", "C"):
            sliced[k] = x[k] if bc == "constant" else x[k][..., sl]
        return sliced

    rest = {k: x[k] for k in ("A", "D", "delta_bias")}
    o1, h1 = selective_scan_ref(**part(slice(0, cut)), **rest, delta_softplus=True, return_last_state=True)
    o2, h2 = selective_scan_ref(
        **part(slice(cut, None)), **rest, delta_softplus=True, return_last_state=True, initial_state=h1
    )
    torch.testing.assert_close(torch.cat([o1, o2], -1), full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h2, last_full, rtol=1e-12, atol=1e-12)


GRAD_CASES = [
    ("variable", 1, None),
    ("grouped", 2, None),
    ("constant", 1, None),
    ("variable", 1, [0, 2, 2, 5]),
]


@pytest.mark.parametrize("bc,groups,cu", GRAD_CASES, ids=["variable", "grouped", "constant", "packed"])
def test_reference_gradcheck_float64(bc, groups, cu, ref_chunk):
    batch = 2 if cu is None else 1
    L = 4 if cu is None else 5
    x = make_scan_inputs(
        batch, 2, L, 2, bc=bc, groups=groups, dtype=torch.float64, with_initial_state=True, cu_seqlens=cu, seed=5
    )
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]
    leaves = [x[k].double().requires_grad_(True) for k in names]

    def f(*args):
        kw = dict(zip(names, args))
        out, last = selective_scan_ref(**kw, delta_softplus=True, return_last_state=True, cu_seqlens=x["cu_seqlens"])
        return out, last

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_fn_on_cpu_uses_reference():
    x = make_scan_inputs(2, 3, 5, 4, seed=6, with_initial_state=True)
    a = selective_scan_fn(**x, delta_softplus=True, return_last_state=True)
    b = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def _bad(**over):
    x = make_scan_inputs(2, 4, 5, 3, seed=7)
    x.update(over)
    return x


@pytest.mark.parametrize(
    "over,match",
    [
        ({"u": torch.randn(2, 4)}, "u"),
        ({"delta": torch.randn(2, 4, 6)}, "delta"),
        ({"A": torch.randn(3, 3)}, "A"),
        ({"A": torch.randn(4, 3, dtype=torch.complex64)}, "A"),
        ({"A": torch.randn(4, 3).half()}, "A"),
        ({"B": torch.randn(2, 4, 5)}, "B"),
        ({"C": torch.randn(2, 3, 3, 5)}, "C"),
        ({"C": torch.randn(2, 3, 5, 1, 1)}, "C"),
        ({"D": torch.randn(5)}, "D"),
        ({"z": torch.randn(2, 4, 4)}, "z"),
        ({"delta_bias": torch.randn(4, 1)}, "delta_bias"),
        ({"initial_state": torch.randn(2, 4, 4)}, "initial_state"),
        ({"u": torch.randint(0, 3, (2, 4, 5))}, "u"),
        ({"cu_seqlens": torch.tensor([0, 5], dtype=torch.int32)}, "cu_seqlens"),
    ],
)
def test_reference_errors_name_the_argument(over, match):
    with pytest.raises((ValueError, TypeError), match=match):
        selective_scan_ref(**_bad(**over))


@pytest.mark.parametrize("cu", [[1, 5], [0, 3, 2, 5], [0, 4], [0.0, 5.0]])
def test_reference_bad_cu_seqlens(cu):
    x = make_scan_inputs(1, 4, 5, 3, seed=8)
    x["cu_seqlens"] = torch.tensor(cu)
    with pytest.raises((ValueError, TypeError), match="cu_seqlens"):
        selective_scan_ref(**x)


def _inner_inputs(dtype=torch.float64, with_bc=False, seed=9):
    g = torch.Generator().manual_seed(seed)
    batch, dim, L, N, W, rank, out = 2, 6, 7, 4, 4, 3, 5
    r = lambda *s, scale=0.5: (torch.randn(*s, generator=g) * scale).to(dtype)
    kw = dict(
        xz=r(batch, 2 * dim, L, scale=1.0),
        conv1d_weight=r(dim, 1, W),
        conv1d_bias=r(dim),
        x_proj_weight=r(rank + (0 if with_bc else 2 * N), dim),
        delta_proj_weight=r(dim, rank),
        out_proj_weight=r(out, dim),
        out_proj_bias=r(out),
        A=-torch.rand(dim, N, generator=g, dtype=torch.float64).to(torch.float32 if dtype != torch.float64 else dtype)
        - 0.5,
        D=r(dim),
        delta_bias=r(dim),
    )
    if with_bc:
        kw["B"], kw["C"] = r(batch, N, L, scale=1.0), r(batch, N, L, scale=1.0)
    return kw


def _manual_inner(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias, A, D,
                  delta_bias, B=None, C=None, B_proj_bias=None, C_proj_bias=None):  # fmt: skip
    """Mamba's inner block written out step by step (explicit causal conv loop)."""
    batch, two_dim, L = xz.shape
    dim = two_dim // 2
    x, z = xz[:, :dim], xz[:, dim:]
    W = conv1d_weight.shape[-1]
    w = conv1d_weight.reshape(dim, W)
    xp = F.pad(x, (W - 1, 0))
    conv = sum(w[None, :, k, None] * xp[:, :, k : k + L] for k in range(W)) + conv1d_bias[None, :, None]
    x = F.silu(conv)
    x_dbl = torch.einsum("rd,bdl->blr", x_proj_weight, x)  # (batch, L, rank + 2N)
    rank, N = delta_proj_weight.shape[1], A.shape[1]
    delta = torch.einsum("dr,blr->bdl", delta_proj_weight, x_dbl[..., :rank])
    if B is None:
        B = x_dbl[..., rank : rank + N] + (B_proj_bias if B_proj_bias is not None else 0)
        B = B.transpose(1, 2)
    if C is None:
        C = x_dbl[..., rank + N : rank + 2 * N] + (C_proj_bias if C_proj_bias is not None else 0)
        C = C.transpose(1, 2)
    y, _ = naive_scan(x, delta, A, B, C, D, z, delta_bias, True)
    return torch.einsum("od,bdl->blo", out_proj_weight, y) + out_proj_bias


@pytest.mark.parametrize("with_bc", [False, True], ids=["projected-BC", "given-BC"])
def test_mamba_inner_ref_matches_manual(with_bc):
    kw = _inner_inputs(with_bc=with_bc)
    out = mamba_inner_ref(**kw)
    ref = _manual_inner(**kw)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_mamba_inner_biases_and_rms_and_fn_on_cpu():
    kw = _inner_inputs(dtype=torch.float32)
    N, dim = kw["A"].shape[1], kw["A"].shape[0]
    g = torch.Generator().manual_seed(11)
    extra = dict(B_proj_bias=torch.randn(N, generator=g), C_proj_bias=torch.randn(N, generator=g),
                 b_rms_weight=torch.rand(N, generator=g) + 0.5, c_rms_weight=torch.rand(N, generator=g) + 0.5,
                 dt_rms_weight=torch.rand(dim, generator=g) + 0.5)  # fmt: skip
    a = mamba_inner_ref(**kw, **extra)
    b = mamba_inner_fn(**kw, **extra)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    base = mamba_inner_ref(**kw)
    assert not torch.allclose(a, base)  # the extras change the result
    # with only the proj biases, the manual block agrees
    c = mamba_inner_ref(**kw, B_proj_bias=extra["B_proj_bias"], C_proj_bias=extra["C_proj_bias"])
    ref = _manual_inner(**{k: v.double() for k, v in kw.items()}, B_proj_bias=extra["B_proj_bias"].double(),
                        C_proj_bias=extra["C_proj_bias"].double())  # fmt: skip
    torch.testing.assert_close(c.double(), ref, rtol=1e-4, atol=1e-4)


def test_mamba_inner_errors():
    kw = _inner_inputs()
    kw["x_proj_weight"] = kw["x_proj_weight"][:-1]
    with pytest.raises(ValueError, match="x_proj_weight"):
        mamba_inner_ref(**kw)
    kw = _inner_inputs()
    kw["xz"] = kw["xz"][:, :-1]
    with pytest.raises(ValueError, match="xz"):
        mamba_inner_ref(**kw)
