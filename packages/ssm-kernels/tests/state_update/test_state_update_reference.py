"""The selective_state_update reference on CPU: explicit loops, Mamba-1 == Mamba-2 with one head,
agreement with a sequential scan, state_batch_indices, inference-only contract and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from ssm_kernels import selective_state_update, selective_state_update_ref
from ssm_kernels.testing.state_update import make_state_update_inputs

F64 = torch.float64


def _loops(state, x, dt, A, B, C, D, z, dt_bias, softplus):
    batch, h, p = x.shape
    n = state.shape[-1]
    g = B.shape[1]
    new = state.clone()
    out = torch.zeros(batch, h, p, dtype=F64)
    for b in range(batch):
        for i in range(h):
            gi = i // (h // g)
            for j in range(p):
                d = float(dt[b, i, j]) + (float(dt_bias[i, j]) if dt_bias is not None else 0.0)
                if softplus:
                    d = math.log1p(math.exp(d))
                acc = 0.0
                for k in range(n):
                    s = float(state[b, i, j, k]) * math.exp(d * float(A[i, j, k])) + d * float(B[b, gi, k] * x[b, i, j])
                    new[b, i, j, k] = s
                    acc += s * float(C[b, gi, k])
                if D is not None:
                    acc += float(D[i, j] * x[b, i, j])
                if z is not None:
                    zz = float(z[b, i, j])
                    acc *= zz / (1 + math.exp(-zz))
                out[b, i, j] = acc
    return out, new


def _f64(inp):
    return {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in inp.items()}


@pytest.mark.parametrize("tie", [False, True], ids=["full", "tied"])
@pytest.mark.parametrize("opts", [False, True], ids=["plain", "D-z-bias-softplus"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 4, 3, 5, 2), (3, 3, 2, 4, 3)], ids=str)
def test_reference_matches_loops(shape, opts, tie):
    batch, h, p, n, g = shape
    inp = _f64(make_state_update_inputs(batch, h, p, n, g, tie_hdim=tie, D=opts, z=opts, dt_bias=opts, seed=p + n))
    want_out, want_state = _loops(**{k: v for k, v in inp.items() if k != "state_batch_indices"}, softplus=opts)
    state = inp["state"]
    out = selective_state_update_ref(**inp, dt_softplus=opts)
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(state, want_state)


def test_mamba1_equals_mamba2_with_one_head():
    inp = _f64(make_state_update_inputs(3, None, 6, 4, seed=2))
    m2 = {
        "state": inp["state"].clone().unsqueeze(1),
        "x": inp["x"].unsqueeze(1),
        "dt": inp["dt"].unsqueeze(1),
        "A": inp["A"].unsqueeze(0),
        "B": inp["B"].unsqueeze(1),
        "C": inp["C"].unsqueeze(1),
        "D": inp["D"].unsqueeze(0),
        "z": inp["z"].unsqueeze(1),
        "dt_bias": inp["dt_bias"].unsqueeze(0),
    }
    out1 = selective_state_update_ref(**inp, dt_softplus=True)
    out2 = selective_state_update_ref(**m2, dt_softplus=True)
    torch.testing.assert_close(out1, out2.squeeze(1))
    torch.testing.assert_close(inp["state"], m2["state"].squeeze(1))


def test_steps_reproduce_a_sequential_scan():
    """L steps of the update equal the recurrence h_t = exp(dt A) h_{t-1} + dt B x, y = C h + D x."""
    torch.manual_seed(0)
    batch, dim, n, steps = 2, 3, 4, 5
    A = -torch.rand(dim, n, dtype=F64) - 0.1
    state = torch.zeros(batch, dim, n, dtype=F64)
    h = torch.zeros(batch, dim, n, dtype=F64)
    for _ in range(steps):
        x, dt = torch.randn(batch, dim, dtype=F64), torch.rand(batch, dim, dtype=F64)
        B, C = torch.randn(batch, n, dtype=F64), torch.randn(batch, n, dtype=F64)
        out = selective_state_update_ref(state, x, dt, A, B, C)
        h = torch.exp(dt[..., None] * A) * h + (dt * x)[..., None] * B[:, None, :]
        torch.testing.assert_close(out, (h * C[:, None, :]).sum(-1))
    torch.testing.assert_close(state, h)


def test_state_batch_indices_touch_only_selected_rows():
    inp = _f64(make_state_update_inputs(3, 2, 3, 4, 1, indices=True, seed=4))
    idx = inp["state_batch_indices"].long()
    before = inp["state"].clone()
    gathered = dict(inp, state=before[idx].clone(), state_batch_indices=None)
    out = selective_state_update_ref(**inp, dt_softplus=True)
    want = selective_state_update_ref(**gathered, dt_softplus=True)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(inp["state"][idx], gathered["state"])
    untouched = [i for i in range(before.shape[0]) if i not in idx.tolist()]
    torch.testing.assert_close(inp["state"][untouched], before[untouched])


def test_state_keeps_its_dtype():
    inp = make_state_update_inputs(2, 2, 3, 4, dtype=torch.bfloat16, state_dtype=torch.float32, seed=1)
    out = selective_state_update(**inp, dt_softplus=True, backend="reference")
    assert out.dtype == torch.bfloat16 and inp["state"].dtype == torch.float32


def test_inference_only_contract():
    inp = make_state_update_inputs(2, 2, 3, 4, seed=1)
    inp["x"].requires_grad_()
    with pytest.raises(RuntimeError, match="inference op without backward"):
        selective_state_update(**inp)
    with torch.no_grad():
        selective_state_update(**inp)


BAD = {
    "x-4d": (dict(x=torch.randn(2, 2, 3, 1)), ValueError, "x must have shape"),
    "state-shape": (dict(state=torch.randn(2, 2, 4, 4)), ValueError, "state must have shape"),
    "A-shape": (dict(A=torch.randn(2, 3)), ValueError, "A must have shape"),
    "groups": (dict(B=torch.randn(2, 3, 4), C=torch.randn(2, 3, 4)), ValueError, "ngroups"),
    "C-shape": (dict(C=torch.randn(2, 1, 5)), ValueError, "C must have shape"),
    "D-shape": (dict(D=torch.randn(2)), ValueError, "D must have shape"),
    "dt-dtype": (dict(dt=torch.zeros(2, 2, 3, dtype=torch.int64)), TypeError, "dt must have dtype"),
    "indices-dtype": (dict(state_batch_indices=torch.zeros(2)), TypeError, "state_batch_indices must have dtype"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_names_argument(case):
    inp = make_state_update_inputs(2, 2, 3, 4, seed=0)
    change, exc, msg = BAD[case]
    inp.update(change)
    with pytest.raises(exc, match=msg):
        selective_state_update(**inp)


def test_mamba1_bad_input_names_argument():
    inp = make_state_update_inputs(2, None, 5, 4, seed=0)
    inp["B"] = torch.randn(2, 1, 4)
    with pytest.raises(ValueError, match="B must have shape"):
        selective_state_update(**inp)
