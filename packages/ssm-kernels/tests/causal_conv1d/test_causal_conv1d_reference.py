"""The causal conv1d references on CPU: naive loops, F.conv1d, decoding consistency, gradcheck, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssm_kernels import causal_conv1d_fn, causal_conv1d_ref, causal_conv1d_update, causal_conv1d_update_ref
from ssm_kernels.backend import BackendUnavailableError, triton_interpret
from ssm_kernels.testing.causal_conv1d import make_conv1d_inputs

F64 = torch.float64


def _naive(x, w, b, seq_idx, init, activation):
    batch, dim, seqlen = x.shape
    width = w.shape[1]
    out = torch.zeros(batch, dim, seqlen, dtype=F64)
    for i in range(batch):
        for d in range(dim):
            for t in range(seqlen):
                acc = float(b[d]) if b is not None else 0.0
                for k in range(width):
                    s = t - (width - 1) + k
                    if s >= 0:
                        if seq_idx is not None and seq_idx[i, s] != seq_idx[i, t]:
                            continue
                        acc += float(w[d, k] * x[i, d, s])
                    elif init is not None and (seq_idx is None or seq_idx[i, 0] == seq_idx[i, t]):
                        acc += float(w[d, k] * init[i, d, s + width - 1])
                out[i, d, t] = acc
    return F.silu(out) if activation else out


CASES = {
    "L1-w2": (2, 3, 1, 2),
    "L1-w4": (1, 5, 1, 4),
    "L2-w4": (2, 3, 2, 4),
    "L7-w3-odd": (2, 5, 7, 3),
    "L13-w4": (1, 4, 13, 4),
    "L9-w1": (1, 3, 9, 1),
    "L11-w6": (1, 2, 11, 6),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.parametrize("opts", ["plain", "bias-init-silu", "seq-init-silu"])
def test_reference_matches_naive(case, opts):
    batch, dim, seqlen, width = CASES[case]
    inp = make_conv1d_inputs(
        batch, dim, seqlen, width, F64, bias=opts != "plain", init=opts != "plain", seq="seq" in opts, seed=seqlen
    )
    act = "silu" if "silu" in opts else None
    out, final = causal_conv1d_ref(**inp, return_final_states=True, activation=act)
    want = _naive(inp["x"], inp["weight"], inp["bias"], inp["seq_idx"], inp["initial_states"], act)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    pad = inp["initial_states"] if inp["initial_states"] is not None else torch.zeros(batch, dim, width - 1, dtype=F64)
    torch.testing.assert_close(final, torch.cat([pad, inp["x"]], -1)[..., seqlen:])


def test_reference_matches_conv1d_and_public_fn():
    inp = make_conv1d_inputs(2, 6, 17, 4, torch.float32, seed=3)
    x, w, b = inp["x"], inp["weight"], inp["bias"]
    want = F.silu(F.conv1d(x, w[:, None, :], b, padding=3, groups=6)[..., :17])
    torch.testing.assert_close(causal_conv1d_ref(x, w, b, activation="swish"), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(causal_conv1d_fn(x, w, b, activation="silu", backend="reference"), want)


def test_final_states_out_is_written():
    inp = make_conv1d_inputs(2, 3, 5, 4, F64, init=True, seed=1)
    buf = torch.full((2, 3, 3), float("nan"), dtype=F64)
    out, final = causal_conv1d_ref(**inp, return_final_states=True, final_states_out=buf)
    assert final is buf
    torch.testing.assert_close(buf, inp["x"][..., 2:])


@pytest.mark.parametrize("opts", ["bias-silu", "init-seq"])
@pytest.mark.parametrize("seqlen", [1, 2, 6])
def test_reference_gradcheck(opts, seqlen):
    inp = make_conv1d_inputs(2, 3, seqlen, 3, F64, bias="bias" in opts, init="init" in opts, seq="seq" in opts, seed=7)
    leaves = {k: v.requires_grad_() for k, v in inp.items() if v is not None and k != "seq_idx"}
    names = list(leaves)

    def fn(*args):
        kw = dict(inp, **dict(zip(names, args)))
        out, final = causal_conv1d_ref(**kw, return_final_states=True, activation="silu" if "silu" in opts else None)
        return out, final

    assert torch.autograd.gradcheck(fn, [leaves[n] for n in names])


@pytest.mark.parametrize("circular", [False, True], ids=["shift", "circular"])
@pytest.mark.parametrize("width,state_len,step", [(4, 3, 1), (4, 5, 2), (2, 1, 1), (3, 4, 3)])
def test_update_matches_full_convolution(circular, width, state_len, step):
    """Feeding a sequence step by step through the update reproduces the full causal conv."""
    if circular and step > state_len:
        pytest.skip("circular buffers need seqlen <= state_len")
    batch, dim, seqlen = 2, 3, 7
    inp = make_conv1d_inputs(batch, dim, seqlen, width, F64, seed=width + state_len)
    want = causal_conv1d_ref(inp["x"], inp["weight"], inp["bias"], activation="silu")
    state = torch.zeros(batch, dim, state_len, dtype=F64)
    outs = []
    for t0 in range(0, seqlen, step):
        xs = inp["x"][..., t0 : t0 + step]
        cache = torch.full((batch,), t0, dtype=torch.int32) if circular else None
        xs_in = xs[..., 0] if step == 1 else xs
        o = causal_conv1d_update_ref(xs_in, state, inp["weight"], inp["bias"], "silu", cache_seqlens=cache)
        outs.append(o[..., None] if step == 1 else o)
    torch.testing.assert_close(torch.cat(outs, -1), want)
    if not circular and state_len <= seqlen:
        torch.testing.assert_close(state, inp["x"][..., seqlen - state_len :])


def test_update_state_indices_touch_only_selected_rows():
    state = torch.randn(5, 3, 4, dtype=F64)
    before = state.clone()
    x, w = torch.randn(2, 3, dtype=F64), torch.randn(3, 4, dtype=F64)
    idx = torch.tensor([3, 1], dtype=torch.int32)
    out = causal_conv1d_update(x, state, w, conv_state_indices=idx, backend="reference")
    want = (torch.cat([before[[3, 1]], x[..., None]], -1)[..., 1:] * w).sum(-1)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(state[[0, 2, 4]], before[[0, 2, 4]])
    torch.testing.assert_close(state[[3, 1], :, -1], x)


BAD = {
    "x-2d": (dict(x=torch.randn(3, 4)), "x must have shape"),
    "weight-dim": (dict(weight=torch.randn(5, 4)), "weight must have shape"),
    "bias-shape": (dict(bias=torch.randn(4)), "bias must have shape"),
    "seq-dtype": (dict(seq_idx=torch.zeros(2, 6)), "seq_idx must have dtype"),
    "init-shape": (dict(initial_states=torch.randn(2, 3, 2)), "initial_states must have shape"),
    "activation": (dict(activation="relu"), "activation must be"),
    "x-int": (dict(x=torch.zeros(2, 3, 6, dtype=torch.int32)), "x must have dtype"),
    "final-out-without-flag": (dict(final_states_out=torch.zeros(2, 3, 3)), "final_states_out"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_names_argument(case):
    kwargs = dict(x=torch.randn(2, 3, 6), weight=torch.randn(3, 4))
    change, msg = BAD[case]
    kwargs.update(change)
    with pytest.raises((ValueError, TypeError), match=msg):
        causal_conv1d_fn(**kwargs)


def test_update_bad_input_names_argument():
    x, w = torch.randn(2, 3), torch.randn(3, 4)
    with pytest.raises(ValueError, match="state_len >= width - 1"):
        causal_conv1d_update(x, torch.zeros(2, 3, 2), w)
    with pytest.raises(ValueError, match="conv_state must have shape"):
        causal_conv1d_update(x, torch.zeros(3, 3, 3), w)
    with pytest.raises(ValueError, match="seqlen"):
        causal_conv1d_update(
            torch.randn(2, 3, 5), torch.zeros(2, 3, 3), w, cache_seqlens=torch.zeros(2, dtype=torch.int32)
        )
    with pytest.raises(TypeError, match="cache_seqlens must have dtype"):
        causal_conv1d_update(x, torch.zeros(2, 3, 3), w, cache_seqlens=torch.zeros(2))


@pytest.mark.skipif(triton_interpret() or torch.cuda.is_available(), reason="checks the CPU refusal of triton")
def test_forcing_triton_on_cpu_raises():
    with pytest.raises(BackendUnavailableError, match="causal_conv1d"):
        causal_conv1d_fn(torch.randn(1, 2, 3), torch.randn(2, 2), backend="triton")
