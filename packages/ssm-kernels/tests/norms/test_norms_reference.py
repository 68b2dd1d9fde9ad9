"""The norm references on CPU: closed forms, group/gate semantics, dtype rules, gradcheck, modules, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssm_kernels import (
    LayerNorm,
    RMSNorm,
    RMSNormGated,
    layer_norm_fn,
    layer_norm_ref,
    rms_norm_fn,
    rms_norm_gated_ref,
    rms_norm_ref,
)

F64 = torch.float64


def _rows(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64)


def test_rms_and_layer_norm_closed_forms():
    x, r, w, b = _rows(3, 2, 11), _rows(3, 2, 11, seed=1), _rows(11, seed=2), _rows(11, seed=3)
    h = x + r
    rms = h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5) * w + b
    torch.testing.assert_close(rms_norm_ref(x, w, b, r, eps=1e-5), rms)
    ln = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5) * w + b
    torch.testing.assert_close(layer_norm_ref(x, w, b, r, eps=1e-5), ln)
    torch.testing.assert_close(layer_norm_fn(x, w, b, r, eps=1e-5, backend="reference"), ln)
    torch.testing.assert_close(rms_norm_fn(x, w, None, r, eps=1e-5, backend="reference"), rms - b)


@pytest.mark.parametrize("residual", [None, torch.float32, torch.bfloat16], ids=["nores", "res-fp32", "res-bf16"])
@pytest.mark.parametrize("residual_in_fp32", [False, True])
def test_prenorm_residual_dtype_rule(residual, residual_in_fp32):
    x = _rows(4, 8).to(torch.bfloat16)
    w = torch.ones(8, dtype=torch.bfloat16)
    r = _rows(4, 8, seed=1).to(residual) if residual is not None else None
    out, res_out = rms_norm_fn(x, w, residual=r, prenorm=True, residual_in_fp32=residual_in_fp32, backend="reference")
    want = residual if residual is not None else (torch.float32 if residual_in_fp32 else torch.bfloat16)
    assert out.dtype == torch.bfloat16 and res_out.dtype == want
    h = x.float() + (r.float() if r is not None else 0)
    torch.testing.assert_close(res_out.float(), h.to(want).float())


@pytest.mark.parametrize("group_size", [None, 1, 3, 12])
@pytest.mark.parametrize("norm_before_gate", [True, False])
def test_gated_matches_manual(group_size, norm_before_gate):
    x, z, w = _rows(5, 12), _rows(5, 12, seed=1), _rows(12, seed=2)
    g = 12 if group_size is None else group_size
    xin = x if norm_before_gate else x * F.silu(z)
    xg = xin.reshape(5, 12 // g, g)
    y = (xg / torch.sqrt(xg.pow(2).mean(-1, keepdim=True) + 1e-6)).reshape(5, 12) * w
    if norm_before_gate:
        y = y * F.silu(z)
    torch.testing.assert_close(rms_norm_gated_ref(x, w, None, z, 1e-6, group_size, norm_before_gate), y)


def test_gated_without_z_is_rms_norm():
    x, w = _rows(3, 9), _rows(9, seed=1)
    torch.testing.assert_close(rms_norm_gated_ref(x, w, None, None, 1e-6), rms_norm_ref(x, w, eps=1e-6))


@pytest.mark.parametrize("is_rms", [True, False], ids=["rms", "ln"])
def test_reference_gradcheck_fused(is_rms):
    x, r, w, b = (_rows(*s, seed=i).requires_grad_() for i, s in enumerate([(3, 5), (3, 5), (5,), (5,)]))
    ref = rms_norm_ref if is_rms else layer_norm_ref

    def fn(x, r, w, b):
        return ref(x, w, b, r, eps=1e-3, prenorm=True)

    assert torch.autograd.gradcheck(fn, (x, r, w, b))


@pytest.mark.parametrize("norm_before_gate", [True, False])
def test_reference_gradcheck_gated(norm_before_gate):
    x, z, w, b = (_rows(*s, seed=i).requires_grad_() for i, s in enumerate([(3, 6), (3, 6), (6,), (6,)]))

    def fn(x, z, w, b):
        return rms_norm_gated_ref(x, w, b, z, 1e-3, 3, norm_before_gate)

    assert torch.autograd.gradcheck(fn, (x, z, w, b))


def test_modules_match_functions():
    x, r, z = _rows(2, 3, 16), _rows(2, 3, 16, seed=1), _rows(2, 3, 16, seed=2)
    torch.manual_seed(0)
    rms, ln, gated = (
        RMSNorm(16, eps=1e-5, dtype=F64),
        LayerNorm(16, eps=1e-5, dtype=F64),
        RMSNormGated(16, 1e-5, 4, dtype=F64),
    )
    for m in (rms, ln, gated):
        with torch.no_grad():
            m.weight.normal_()
    with torch.no_grad():
        ln.bias.normal_()
    out, res = rms(x, r, prenorm=True)
    torch.testing.assert_close(out, rms_norm_ref(x, rms.weight, None, r, eps=1e-5))
    torch.testing.assert_close(res, x + r)
    torch.testing.assert_close(ln(x), F.layer_norm(x, (16,), ln.weight, ln.bias, 1e-5))
    torch.testing.assert_close(gated(x, z), rms_norm_gated_ref(x, gated.weight, None, z, 1e-5, 4, True))
    assert "group_size=4" in repr(gated)
    assert [n for n, _ in ln.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in rms.named_parameters()] == ["weight"]


def test_unsupported_extras_raise():
    x, w = torch.randn(2, 4), torch.ones(4)
    for kw, name in [({"x1": x}, "x1"), ({"weight1": w}, "weight1"), ({"rowscale": torch.ones(2)}, "rowscale"),
                     ({"dropout_p": 0.1}, "dropout_p"), ({"return_dropout_mask": True}, "return_dropout_mask")]:  # fmt: skip
        with pytest.raises(NotImplementedError, match=name):
            rms_norm_fn(x, w, **kw)
    with pytest.raises(NotImplementedError, match="dropout_p"):
        RMSNorm(4, dropout_p=0.1)


def test_bad_input_names_argument():
    x, w = torch.randn(2, 4), torch.ones(4)
    with pytest.raises(ValueError, match="weight must have shape"):
        rms_norm_fn(x, torch.ones(5))
    with pytest.raises(ValueError, match="bias must have shape"):
        layer_norm_fn(x, w, torch.zeros(3))
    with pytest.raises(ValueError, match="residual must have shape"):
        rms_norm_fn(x, w, residual=torch.randn(2, 5))
    with pytest.raises(TypeError, match="x must have dtype"):
        rms_norm_fn(x.int(), w)
    with pytest.raises(ValueError, match="group_size"):
        RMSNormGated(6, group_size=4)
    with pytest.raises(ValueError, match="z must have shape"):
        RMSNormGated(4)(x, torch.randn(3, 4))
