"""The chunked PyTorch SSD reference against a per-step oracle and the minimal SSD, in float64 on CPU."""

from __future__ import annotations

import pytest
import torch

from ssm_kernels import mamba_chunk_scan_combined, ssd_chunk_scan_ref, ssd_minimal_discrete
from ssm_kernels.ssd.reference import process_dt
from ssm_kernels.testing.ssd import make_inputs, ssd_sequential

F64 = torch.float64


def _close(a, b, tol=1e-9):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item() / max(b.abs().max().item(), 1e-30)
    assert err < tol, f"relative error {err:.3e}"


CASES = [
    # b, l, h, p, g, n, chunk, D_shape
    (1, 1, 1, 1, 1, 1, 4, "h"),
    (2, 37, 4, 3, 2, 5, 8, "hp"),
    (1, 16, 3, 4, 1, 6, 16, None),
    (2, 29, 6, 5, 3, 4, 7, "h"),
    (1, 40, 2, 8, 2, 8, 64, "hp"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}-l{}-h{}-p{}-g{}-n{}-q{}-D{}".format(*c))
@pytest.mark.parametrize("options", ["plain", "all"])
def test_reference_matches_sequential(case, options):
    b, l, h, p, g, n, q, D_shape = case
    full = options == "all"
    inp = make_inputs(b, l, h, p, g, n, D_shape=D_shape if full else None, z=full, dt_bias=full, init=full, seed=l + h)
    limit = (0.02, 0.5) if full else (0.0, float("inf"))
    if not full:
        inp["dt"] = inp["dt"].abs() * 0.2  # already positive: no softplus
    out, final = ssd_chunk_scan_ref(chunk_size=q, dt_softplus=full, dt_limit=limit, return_final_states=True, **inp)
    ref_out, ref_final, _ = ssd_sequential(dt_softplus=full, dt_limit=limit, **inp)
    _close(out, ref_out)
    _close(final, ref_final)


@pytest.mark.parametrize("l,block", [(32, 8), (30, 8), (5, 16), (1, 1)])
def test_reference_matches_minimal(l, block):
    b, h, p, g, n = 2, 4, 3, 2, 5
    inp = make_inputs(b, l, h, p, g, n, D_shape=None, z=False, dt_bias=True, init=True, seed=l)
    out, final = ssd_chunk_scan_ref(chunk_size=block, dt_softplus=True, return_final_states=True, **inp)
    dtp = process_dt(inp["dt"], inp["dt_bias"], True, (0.0, float("inf")))
    rep = h // g
    Y, fin = ssd_minimal_discrete(
        inp["x"] * dtp[..., None],
        inp["A"] * dtp,
        inp["B"].repeat_interleave(rep, 2),
        inp["C"].repeat_interleave(rep, 2),
        block,
        initial_states=inp["initial_states"],
    )
    _close(out, Y)
    _close(final, fin)


def test_minimal_matches_sequential():
    b, l, h, p, n = 1, 19, 3, 2, 4
    inp = make_inputs(b, l, h, p, h, n, D_shape=None, z=False, dt_bias=False, init=True, seed=3)
    dtp = inp["dt"].abs() * 0.3
    Y, fin = ssd_minimal_discrete(
        inp["x"] * dtp[..., None], inp["A"] * dtp, inp["B"], inp["C"], 4, inp["initial_states"]
    )
    ref, ref_fin, _ = ssd_sequential(inp["x"], dtp, inp["A"], inp["B"], inp["C"], initial_states=inp["initial_states"])
    _close(Y, ref)
    _close(fin, ref_fin)


@pytest.mark.parametrize("q", [4, 6, 32])
def test_seq_idx_matches_sequential(q):
    b, l, h, p, g, n = 2, 23, 2, 3, 1, 4
    inp = make_inputs(b, l, h, p, g, n, D_shape="h", z=True, dt_bias=True, init=True, seed=q)
    seq_idx = torch.tensor([[0] * 5 + [1] * 9 + [2] * 1 + [3] * 8, [0] * 12 + [4] * 11], dtype=torch.int32)
    out, final = ssd_chunk_scan_ref(chunk_size=q, seq_idx=seq_idx, dt_softplus=True, return_final_states=True, **inp)
    ref, ref_final, _ = ssd_sequential(seq_idx=seq_idx, dt_softplus=True, **inp)
    _close(out, ref)
    _close(final, ref_final)


@pytest.mark.parametrize("q", [4, 8, 64])
def test_cu_seqlens_equals_separate_sequences(q):
    lengths = [5, 1, 11, 8]
    h, p, g, n = 4, 3, 2, 5
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    l = sum(lengths)
    inp = make_inputs(1, l, h, p, g, n, D_shape="hp", z=True, dt_bias=True, init=True, seed=q)
    out, final, varlen = ssd_chunk_scan_ref(
        chunk_size=q, cu_seqlens=cu, dt_softplus=True, return_final_states=True, return_varlen_states=True, **inp
    )
    # the same with explicit seq_idx
    seq_idx = torch.repeat_interleave(torch.arange(len(lengths), dtype=torch.int32), torch.tensor(lengths)).view(1, l)
    out2 = ssd_chunk_scan_ref(chunk_size=q, seq_idx=seq_idx, cu_seqlens=cu, dt_softplus=True, **inp)
    _close(out2, out, 1e-12)
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        part = {k: v for k, v in inp.items() if k not in ("x", "dt", "B", "C", "z", "initial_states")}
        sl = slice(s, e)
        o, f = ssd_chunk_scan_ref(
            inp["x"][:, sl],
            inp["dt"][:, sl],
            B=inp["B"][:, sl],
            C=inp["C"][:, sl],
            z=inp["z"][:, sl],
            chunk_size=q,
            initial_states=inp["initial_states"] if i == 0 else None,
            dt_softplus=True,
            return_final_states=True,
            **part,
        )
        _close(out[:, sl], o)
        _close(varlen[i : i + 1], f)
    _close(final, varlen[-1:])
    ref, _, ref_varlen = ssd_sequential(cu_seqlens=cu, dt_softplus=True, **inp)
    _close(out, ref)
    _close(varlen, ref_varlen)


def test_initial_state_chaining():
    b, l, h, p, g, n = 2, 30, 4, 3, 2, 5
    inp = make_inputs(b, l, h, p, g, n, D_shape="h", z=True, dt_bias=True, init=True, seed=11)
    out, final = ssd_chunk_scan_ref(chunk_size=8, dt_softplus=True, return_final_states=True, **inp)
    cut = 13
    first = {k: (v[:, :cut] if k in ("x", "dt", "B", "C", "z") else v) for k, v in inp.items()}
    o1, f1 = ssd_chunk_scan_ref(chunk_size=8, dt_softplus=True, return_final_states=True, **first)
    second = {k: (v[:, cut:] if k in ("x", "dt", "B", "C", "z") else v) for k, v in inp.items()}
    second["initial_states"] = f1
    o2, f2 = ssd_chunk_scan_ref(chunk_size=8, dt_softplus=True, return_final_states=True, **second)
    _close(torch.cat([o1, o2], 1), out)
    _close(f2, final)


def test_gradcheck_reference():
    b, l, h, p, g, n = 1, 7, 2, 2, 1, 3
    inp = make_inputs(b, l, h, p, g, n, D_shape="hp", z=True, dt_bias=True, init=True, seed=5, requires_grad=True)
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, 1, 1]], dtype=torch.int32)
    names = list(inp)

    def f(*args):
        kw = dict(zip(names, args))
        out, fin = ssd_chunk_scan_ref(
            chunk_size=3, seq_idx=seq_idx, dt_softplus=True, dt_limit=(0.05, 0.5), return_final_states=True, **kw
        )
        return out, fin

    assert torch.autograd.gradcheck(f, tuple(inp[k] for k in names), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_reference_half_precision_dtypes():
    inp = make_inputs(1, 20, 2, 4, 1, 8, dtype=torch.bfloat16, seed=2)
    out, final = ssd_chunk_scan_ref(chunk_size=8, dt_softplus=True, return_final_states=True, **inp)
    assert out.dtype == torch.bfloat16 and final.dtype == torch.float32
    hi = {k: (v.double() if v is not None else None) for k, v in inp.items()}
    ref, ref_final = ssd_chunk_scan_ref(chunk_size=8, dt_softplus=True, return_final_states=True, **hi)
    _close(out.double(), ref, 1e-2)
    _close(final.double(), ref_final, 1e-5)


def test_public_function_reference_backend(monkeypatch):
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "reference")
    inp = make_inputs(2, 11, 2, 3, 1, 4, seed=8)
    out = mamba_chunk_scan_combined(chunk_size=4, dt_softplus=True, **inp)
    ref = ssd_chunk_scan_ref(chunk_size=4, dt_softplus=True, **inp)
    _close(out, ref, 1e-12)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(x=torch.zeros(2, 5, 2)), "x must have shape"),
        (dict(dt=torch.zeros(2, 5, 3)), "dt must have shape"),
        (dict(A=torch.zeros(3)), "A must have shape"),
        (dict(B=torch.zeros(2, 5, 3, 4), C=torch.zeros(2, 5, 3, 4)), "groups"),
        (dict(C=torch.zeros(2, 5, 1, 3)), "C must have shape"),
        (dict(D=torch.zeros(2, 4)), "D must have shape"),
        (dict(z=torch.zeros(2, 5, 2, 2)), "z must have shape"),
        (dict(dt_bias=torch.zeros(1)), "dt_bias must have shape"),
        (dict(initial_states=torch.zeros(2, 2, 3, 3)), "initial_states must have shape"),
        (dict(seq_idx=torch.zeros(2, 5)), "seq_idx must have dtype"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(dt_limit=(1.0, 0.5)), "dt_limit"),
        (dict(return_varlen_states=True), "cu_seqlens"),
        (dict(cu_seqlens=torch.tensor([0, 5], dtype=torch.int32)), "batch size 1"),
        (dict(x=torch.zeros(2, 5, 2, 3, dtype=torch.int32)), "x must have dtype"),
    ],
)
@pytest.mark.parametrize("fn", [ssd_chunk_scan_ref, mamba_chunk_scan_combined], ids=["ref", "public"])
def test_bad_inputs_raise(change, match, fn):
    kw = dict(
        x=torch.zeros(2, 5, 2, 3),
        dt=torch.zeros(2, 5, 2),
        A=torch.zeros(2),
        B=torch.zeros(2, 5, 1, 4),
        C=torch.zeros(2, 5, 1, 4),
        chunk_size=4,
    )
    kw.update(change)
    with pytest.raises((ValueError, TypeError), match=match):
        fn(**kw)


def test_bad_cu_seqlens_raise():
    kw = dict(
        x=torch.zeros(1, 5, 2, 3),
        dt=torch.zeros(1, 5, 2),
        A=torch.zeros(2),
        B=torch.zeros(1, 5, 1, 4),
        C=torch.zeros(1, 5, 1, 4),
    )
    with pytest.raises(ValueError, match="cu_seqlens"):
        ssd_chunk_scan_ref(chunk_size=4, cu_seqlens=torch.tensor([0, 3, 3, 5]), **kw)
    with pytest.raises(ValueError, match="cu_seqlens"):
        ssd_chunk_scan_ref(chunk_size=4, cu_seqlens=torch.tensor([0, 4]), **kw)
    with pytest.raises(ValueError, match="minimal|block_len"):
        ssd_minimal_discrete(
            torch.zeros(1, 4, 1, 2), torch.zeros(1, 4, 1), torch.zeros(1, 4, 1, 3), torch.zeros(1, 4, 1, 3), 0
        )
