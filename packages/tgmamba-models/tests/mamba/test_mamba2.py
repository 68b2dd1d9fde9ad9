"""Mamba2 and Mamba2Simple: README example, fast vs reference path, decoding == full forward, init, errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _tgm_mamba_utils import assert_fast_matches_reference

from ssm_kernels.testing import assert_close_to_reference, seed_all
from tgmamba_models import Mamba2, Mamba2Simple
from tgmamba_models.lm.generation import InferenceParams

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _readme_example(device):
    batch, length, dim = 2, 64, 32
    x = torch.randn(batch, length, dim).to(device)
    model = Mamba2(
        # This module uses roughly 3 * expand * d_model^2 parameters
        d_model=dim,  # Model dimension d_model
        d_state=64,  # SSM state expansion factor, typically 64 or 128
        d_conv=4,  # Local convolution width
        expand=2,  # Block expansion factor
    ).to(device)
    y = model(x)
    assert y.shape == x.shape
    assert model.nheads == 1  # d_inner 64, headdim 64
    assert torch.isfinite(y).all()


def test_readme_example_cpu():
    _readme_example("cpu")


@pytest.mark.gpu
@requires_cuda
def test_readme_example_cuda():
    _readme_example("cuda")


# (kwargs, batch, L): awkward sizes, groups, per-channel D, no rmsnorm (gate inside the scan), an MLP
# branch (d_ssm < d_inner), dt_limit, norm before gate, chunk sizes that do not divide L
CASES = [
    (dict(d_model=16, d_state=8, headdim=8, chunk_size=4), 2, 1),
    (dict(d_model=16, d_state=8, headdim=8, chunk_size=4, ngroups=2), 1, 11),
    (dict(d_model=12, d_state=5, headdim=6, chunk_size=5, D_has_hdim=True, rmsnorm=False), 2, 9),
    (dict(d_model=16, d_state=4, headdim=8, chunk_size=3, d_ssm=16, norm_before_gate=True), 2, 7),
    (dict(d_model=8, d_state=6, headdim=4, chunk_size=8, dt_limit=(0.01, 0.05), conv_init=0.5, bias=True), 3, 10),
]
CASE_IDS = ["L1", "groups2", "Dhdim-nonorm", "mlp-branch", "dtlimit-bias"]


@pytest.mark.parametrize("kwargs,batch,L", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_fast_path_matches_reference(kwargs, batch, L, dtype):
    seed_all(0)
    m = Mamba2(**kwargs, use_mem_eff_path=False, dtype=dtype)
    assert_fast_matches_reference(m, torch.randn(batch, L, kwargs["d_model"], dtype=dtype))


def test_mem_eff_path_same_values_and_grads():
    seed_all(3)
    m = Mamba2(16, d_state=8, headdim=8, chunk_size=4, use_mem_eff_path=True)
    m2 = copy.deepcopy(m)
    m2.use_mem_eff_path = False
    x = torch.randn(2, 6, 16)
    y1, y2 = m(x), m2(x)
    torch.testing.assert_close(y1, y2)
    y1.square().sum().backward()
    y2.square().sum().backward()
    for (n, p1), p2 in zip(m.named_parameters(), m2.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, msg=n)


def _decode_all(m, x, prefill):
    batch, L, _ = x.shape
    params = InferenceParams(max_seqlen=L, max_batch_size=batch)
    outs = []
    if prefill > 0:
        outs.append(m(x[:, :prefill], inference_params=params))
        params.seqlen_offset += prefill
    else:
        params.key_value_memory_dict[m.layer_idx] = m.allocate_inference_cache(batch, L)
        params.seqlen_offset = 1
    for t in range(prefill, L):
        outs.append(m(x[:, t : t + 1], inference_params=params))
        params.seqlen_offset += 1
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("kwargs,batch,L", CASES[1:], ids=CASE_IDS[1:])
@pytest.mark.parametrize("prefill", [0, 2, 6])
def test_decoding_equals_forward(kwargs, batch, L, prefill):
    seed_all(1)
    m = Mamba2(**kwargs, layer_idx=0)
    x = torch.randn(batch, L, kwargs["d_model"])
    with torch.no_grad():
        y_dec = _decode_all(m, x, min(prefill, L - 1))
        y_lo = m(x)
        y_hi = copy.deepcopy(m).double()(x.double())
    assert_close_to_reference("decoded y", y_dec, y_hi, y_lo)


def test_decoding_reference_path():
    seed_all(4)
    m = Mamba2(16, d_state=8, headdim=8, chunk_size=4, ngroups=2, layer_idx=0, use_fast_path=False)
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        y_dec = _decode_all(m, x, 3)
        y_hi = copy.deepcopy(m).double()(x.double())
        assert_close_to_reference("decoded y (ref)", y_dec, y_hi, m(x))


def test_flat_input_with_seqlen():
    seed_all(5)
    m = Mamba2(16, d_state=8, headdim=8, chunk_size=4)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(m(x.reshape(10, 16), seqlen=5), m(x).reshape(10, 16))
    with pytest.raises(ValueError, match="seqlen"):
        m(x.reshape(10, 16))


def test_initialisation():
    torch.manual_seed(0)
    m = Mamba2(64, d_state=16, headdim=8, A_init_range=(2, 4), dt_min=0.01, dt_max=0.02)
    assert m.nheads == 16 and m.conv_dim == 128 + 2 * 16
    A = torch.exp(m.A_log.detach())
    assert (A >= 2).all() and (A <= 4).all()
    dt = F.softplus(m.dt_bias.detach())
    assert (dt >= 0.01 * (1 - 1e-4)).all() and (dt <= 0.02 * (1 + 1e-4)).all()
    assert m.D.shape == (16,) and Mamba2(64, d_state=16, headdim=8, D_has_hdim=True).D.shape == (128,)
    names = set(dict(m.named_parameters()))
    assert names == {"in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D", "norm.weight",
                     "out_proj.weight"}  # fmt: skip
    assert m.in_proj.weight.shape == (2 * 128 + 2 * 16 + 16, 64)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(16, headdim=7)
    with pytest.raises(ValueError, match="ngroups"):
        Mamba2(16, headdim=8, ngroups=3)
    with pytest.raises(ValueError, match="d_ssm"):
        Mamba2(16, headdim=8, d_ssm=40)
    m = Mamba2(16, d_state=8, headdim=8)
    with pytest.raises(ValueError, match="'u'|u must"):
        m(torch.randn(2, 3, 15))
    with pytest.raises(ValueError, match="conv_state"):
        m.step(torch.randn(2, 1, 16), torch.zeros(2, 3, 4), torch.zeros(2, 4, 8, 8))


# ---------------------------------------------------------------------------------------------- Mamba2Simple
@pytest.mark.parametrize(
    "kwargs,batch,L",
    [
        (dict(d_model=16, d_state=8, headdim=8, chunk_size=4), 2, 1),
        (dict(d_model=12, d_state=5, headdim=6, chunk_size=5, ngroups=2, learnable_init_states=True), 2, 9),
        (dict(d_model=8, d_state=4, headdim=4, chunk_size=3, dt_limit=(0.001, 0.05)), 1, 7),
    ],
    ids=["L1", "groups-initstates", "dtlimit"],
)
def test_mamba2_simple_fast_matches_reference(kwargs, batch, L):
    seed_all(0)
    m = Mamba2Simple(**kwargs, use_mem_eff_path=False)
    if kwargs.get("learnable_init_states"):
        with torch.no_grad():
            m.init_states.normal_()
    assert_fast_matches_reference(m, torch.randn(batch, L, kwargs["d_model"]))


def test_mamba2_simple_default_shape():
    m = Mamba2Simple(d_model=64, d_state=16)
    assert m.nheads == 1
    x = torch.randn(2, 10, 64)
    assert m(x).shape == x.shape


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize(
    "L,dtype",
    [
        pytest.param(1, torch.float32, id="1-fp32"),
        pytest.param(1, torch.bfloat16, id="1-bf16"),
        pytest.param(77, torch.float32, id="77-fp32"),
        pytest.param(77, torch.bfloat16, id="77-bf16"),
        pytest.param(300, torch.float32, id="300-fp32"),
        pytest.param(300, torch.bfloat16, id="300-bf16"),
    ],
)
def test_fast_path_matches_reference_cuda(L, dtype):
    seed_all(0)
    m = Mamba2(64, d_state=32, headdim=16, ngroups=2, chunk_size=64, device="cuda", dtype=dtype)
    assert_fast_matches_reference(m, torch.randn(2, L, 64, device="cuda", dtype=dtype))
    ms = Mamba2Simple(64, d_state=32, headdim=32, chunk_size=64, device="cuda", dtype=dtype)
    assert_fast_matches_reference(ms, torch.randn(2, L, 64, device="cuda", dtype=dtype))


@pytest.mark.gpu
@requires_cuda
def test_decoding_equals_forward_cuda():
    seed_all(1)
    m = Mamba2(64, d_state=32, headdim=16, ngroups=2, chunk_size=16, layer_idx=0, device="cuda")
    x = torch.randn(3, 40, 64, device="cuda")
    with torch.no_grad():
        y_dec = _decode_all(m, x, 17)
        y_hi = copy.deepcopy(m).double()(x.double())
        assert_close_to_reference("decoded y cuda", y_dec, y_hi, m(x))
