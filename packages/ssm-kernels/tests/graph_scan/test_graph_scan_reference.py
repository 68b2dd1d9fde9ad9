"""The graph-scan reference against the maths, against Mamba's selective scan, gradcheck, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssm_kernels import graph_selective_scan_fn, graph_selective_scan_ref
from ssm_kernels.testing import assert_close_to_reference
from ssm_kernels.testing.graph_scan import graph_scan_grad_names, make_graph_scan_inputs


def naive_graph_scan(u, delta, A, B, C, mix_A, W_A, mix_C=None, W_C=None, D=None, z=None,
                     delta_bias=None, delta_softplus=False, initial_state=None):  # fmt: skip
    """Per-(b, d) loops written directly from DESIGN.md, in float64."""
    u, delta, A, B, C = (x.double() for x in (u, delta, A, B, C))
    mix_A, W_A = mix_A.double(), W_A.double()
    batch, V, Dm, L = u.shape
    N = A.shape[1]
    y = torch.zeros(batch, V, Dm, L, dtype=torch.float64)
    last = torch.zeros(batch, V, Dm, N, dtype=torch.float64)
    for b in range(batch):
        for d in range(Dm):
            H = torch.zeros(V, N, dtype=torch.float64)
            if initial_state is not None:
                H = initial_state[b, :, d, :].double().clone()
            for t in range(L):
                dl = delta[b, :, d, t] + (delta_bias[d].double() if delta_bias is not None else 0.0)
                if delta_softplus:
                    dl = torch.log1p(torch.exp(dl))
                ma = mix_A[b, t if mix_A.shape[1] > 1 else 0]
                P = sum(ma[k] @ H @ W_A[k] for k in range(ma.shape[0]))
                H = P * torch.exp(dl[:, None] * A[d][None, :]) + (dl * u[b, :, d, t])[:, None] * B[b, :, :, t]
                G = H
                if mix_C is not None:
                    mc = mix_C[b, t if mix_C.shape[1] > 1 else 0].double()
                    G = sum(mc[k] @ H @ W_C[k].double() for k in range(mc.shape[0]))
                yt = (G * C[b, :, :, t]).sum(-1)
                if D is not None:
                    yt = yt + D[d].double() * u[b, :, d, t]
                if z is not None:
                    zz = z[b, :, d, t].double()
                    yt = yt * zz * torch.sigmoid(zz)
                y[b, :, d, t] = yt
            last[b, :, d, :] = H
    return y, last


def mamba_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Mamba-1 selective scan: u, delta, z (b, d, l); A (d, n); B, C (b, n, l)."""
    dt = delta + (delta_bias[:, None] if delta_bias is not None else 0.0)
    if delta_softplus:
        dt = F.softplus(dt)
    x = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        x = torch.exp(dt[:, :, t, None] * A) * x + dt[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((x * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D[:, None] * u
    return y * F.silu(z) if z is not None else y


FULL = {"with_D": True, "with_z": True, "with_bias": True, "softplus": True, "with_initial_state": True}
CASES = {
    "plain-K1-T1": dict(K=1, T="1"),
    "full-K2-TL-mixC": dict(K=2, T="L", mix_C=True, **FULL),
    "full-K3-T1-mixC_TL": dict(K=3, T="1", mix_C=True, K_C=2, T_C="L", **FULL),
    "L1-V5-N7": dict(V=5, N=7, L=1, K=2, T="L", mix_C=True, with_z=True),
}


@pytest.fixture(params=[64, 4, 1], ids=["chunk64", "chunk4", "chunk1"])
def ref_chunk(request, monkeypatch):
    """The reference's steps per chunk: one chunk, several with a partial last one (L 6 or 7), one step each."""
    from ssm_kernels.graph_scan import reference

    monkeypatch.setattr(reference, "_REF_CHUNK", request.param)
    return request.param


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_reference_matches_naive_loops(case, ref_chunk):
    opts = {"V": 3, "N": 4, "L": 6, **CASES[case]}
    kw = make_graph_scan_inputs(batch=2, D=3, dtype=torch.float64, seed=1, **opts)
    out, last = graph_selective_scan_ref(**kw, return_last_state=True)
    y_naive, last_naive = naive_graph_scan(**kw)
    torch.testing.assert_close(out, y_naive, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, last_naive, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_dtypes_and_last_state(dtype):
    kw = make_graph_scan_inputs(batch=2, V=3, D=4, N=4, L=5, K=2, T="L", mix_C=True, dtype=dtype, **FULL)
    out, last = graph_selective_scan_ref(**kw, return_last_state=True)
    assert out.dtype == dtype and out.shape == (2, 3, 4, 5)
    assert last.dtype == torch.float32 and last.shape == (2, 3, 4, 4)
    kw64 = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    y64, last64 = naive_graph_scan(**kw64)
    assert_close_to_reference("out", out, y64, floor=1e-5 if dtype == torch.float32 else 2e-2)
    assert_close_to_reference("last_state", last, last64, floor=1e-5 if dtype == torch.float32 else 2e-2)


@pytest.mark.parametrize("opts", [{}, {"with_D": True, "with_z": True, "with_bias": True, "softplus": True}],
                         ids=["plain", "D-z-bias-softplus"])  # fmt: skip
def test_identity_graph_is_mamba_selective_scan(opts):
    batch, V, Dm, N, L = 2, 3, 5, 4, 7
    kw = make_graph_scan_inputs(batch=batch, V=V, D=Dm, N=N, L=L, K=1, T="1", dtype=torch.float64, seed=3, **opts)
    kw["mix_A"] = torch.eye(V, dtype=torch.float64).expand(batch, 1, 1, V, V)
    kw["W_A"] = torch.eye(N, dtype=torch.float64)[None]
    out = graph_selective_scan_ref(**kw)
    flat = lambda x: x.reshape(batch * V, *x.shape[2:])
    ref = mamba_selective_scan(
        flat(kw["u"]), flat(kw["delta"]), kw["A"], flat(kw["B"]), flat(kw["C"]), kw.get("D"),
        flat(kw["z"]) if "z" in kw else None, kw.get("delta_bias"), kw["delta_softplus"],
    )  # fmt: skip
    torch.testing.assert_close(flat(out), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("K,K_C", [(2, 3), (1, 2)], ids=["K2-KC3", "K1-KC2"])
def test_implicit_identity_first_operator(K, K_C, ref_chunk):
    """W with one operator more than mix: the first acts with the identity vertex operator. Equals the call with
    the identity stored, and the per-(b, d) loop written from the maths; K 1 leaves mix_A with no operator."""
    kw = make_graph_scan_inputs(batch=2, V=3, D=3, N=4, L=6, K=K, T="L", mix_C=True, K_C=K_C, T_C="1",
                                dtype=torch.float64, seed=9, identity_first=True, **FULL)  # fmt: skip
    assert kw["mix_A"].shape[2] == K - 1 and kw["W_A"].shape[0] == K
    stored = dict(kw)
    for name in ("mix_A", "mix_C"):
        m = kw[name]
        eye = torch.eye(3, dtype=m.dtype).expand(m.shape[0], m.shape[1], 1, 3, 3)
        stored[name] = torch.cat([eye, m], dim=2)
    out, last = graph_selective_scan_ref(**kw, return_last_state=True)
    out_s, last_s = graph_selective_scan_ref(**stored, return_last_state=True)
    torch.testing.assert_close(out, out_s, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, last_s, rtol=1e-12, atol=1e-12)
    y_naive, last_naive = naive_graph_scan(**stored)
    torch.testing.assert_close(out, y_naive, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, last_naive, rtol=1e-10, atol=1e-10)


def test_implicit_identity_gradcheck_float64(ref_chunk):
    kw = make_graph_scan_inputs(batch=2, V=3, D=2, N=3, L=5, K=2, T="L", mix_C=True, K_C=2, T_C="1",
                                dtype=torch.float64, seed=6, requires_grad=True, identity_first=True, **FULL)  # fmt: skip
    names = graph_scan_grad_names(kw)

    def fn(*xs):
        return graph_selective_scan_ref(**{**kw, **dict(zip(names, xs))}, return_last_state=True)

    assert torch.autograd.gradcheck(fn, tuple(kw[n] for n in names), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("TA,TC", [("L", "1"), ("1", "L")])
def test_reference_gradcheck_float64(TA, TC, ref_chunk):
    kw = make_graph_scan_inputs(batch=2, V=3, D=2, N=3, L=5, K=2, T=TA, mix_C=True, K_C=2, T_C=TC,
                                dtype=torch.float64, seed=5, requires_grad=True, **FULL)  # fmt: skip
    names = graph_scan_grad_names(kw)
    assert len(names) == 13

    def fn(*xs):
        out, last = graph_selective_scan_ref(**{**kw, **dict(zip(names, xs))}, return_last_state=True)
        return out, last

    assert torch.autograd.gradcheck(fn, tuple(kw[n] for n in names), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_fn_on_cpu_uses_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # (under the interpreter, auto would pick Triton)
    monkeypatch.delenv("SSM_KERNELS_BACKEND", raising=False)
    monkeypatch.delenv("SSM_KERNELS_BACKEND_GRAPH_SCAN", raising=False)
    kw = make_graph_scan_inputs(batch=1, V=3, D=2, N=4, L=3, K=1)
    torch.testing.assert_close(graph_selective_scan_fn(**kw), graph_selective_scan_ref(**kw), rtol=0, atol=0)


def _bad(name, fn):
    kw = make_graph_scan_inputs(batch=2, V=3, D=4, N=5, L=6, K=2, T="1", mix_C=True, with_D=True, with_z=True,
                                with_bias=True, with_initial_state=True)  # fmt: skip
    fn(kw)
    return kw


BAD = {
    "u-3d": (lambda kw: kw.update(u=kw["u"][0]), "u must have shape"),
    "delta-shape": (lambda kw: kw.update(delta=kw["delta"][..., :-1]), "delta must have shape"),
    "A-shape": (lambda kw: kw.update(A=kw["A"][:-1]), "A must have shape"),
    "A-dtype": (lambda kw: kw.update(A=kw["A"].half()), "A must have dtype"),
    "B-shape": (lambda kw: kw.update(B=kw["B"][:, :, :-1]), "B must have shape"),
    "C-shape": (lambda kw: kw.update(C=kw["C"][:1]), "C must have shape"),
    "C-int": (lambda kw: kw.update(C=kw["C"].long()), "C must have dtype"),
    "mix_A-T": (lambda kw: kw.update(mix_A=kw["mix_A"].expand(2, 3, 2, 3, 3)), "mix_A must have T = 1 or T = L"),
    "mix_A-V": (lambda kw: kw.update(mix_A=kw["mix_A"][..., :2]), "mix_A must have shape"),
    "W_A-K": (lambda kw: kw.update(W_A=kw["W_A"][:1]), "W_A has K = 1 .* mix_A has K = 2"),
    "W_A-K+2": (lambda kw: kw.update(W_A=torch.cat([kw["W_A"]] * 2)), "W_A has K = 4 .* mix_A has K = 2"),
    "W_A-N": (lambda kw: kw.update(W_A=kw["W_A"][:, :2]), "W_A must have shape"),
    "W_A-none": (lambda kw: kw.update(W_A=None), "W_A is required"),
    "mix_C-alone": (lambda kw: kw.update(W_C=None), "mix_C was given without W_C"),
    "W_C-alone": (lambda kw: kw.update(mix_C=None), "W_C was given without mix_C"),
    "W_C-K": (lambda kw: kw.update(W_C=kw["W_C"][:1]), "W_C has K = 1"),
    "D-shape": (lambda kw: kw.update(D=kw["D"][:2]), "D must have shape"),
    "z-shape": (lambda kw: kw.update(z=kw["z"][..., :2]), "z must have shape"),
    "delta_bias-shape": (lambda kw: kw.update(delta_bias=kw["delta_bias"][None]), "delta_bias must have shape"),
    "initial_state-shape": (
        lambda kw: kw.update(initial_state=kw["initial_state"][..., :2]),
        "initial_state must have shape",
    ),  # fmt: skip
    "device": (lambda kw: kw.update(D=kw["D"].to("meta")), "one device"),
}


@pytest.mark.parametrize("fn", [graph_selective_scan_ref, graph_selective_scan_fn], ids=["ref", "fn"])
@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_inputs_name_the_argument(case, fn):
    mutate, match = BAD[case]
    kw = _bad(case, mutate)
    with pytest.raises((ValueError, TypeError), match=match):
        fn(**kw)
