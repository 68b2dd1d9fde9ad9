"""Mamba (Mamba-1): README example, fast vs reference path, decoding == full forward, init, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from _tgm_mamba_utils import assert_fast_matches_reference

from ssm_kernels.testing import assert_close_to_reference, seed_all
from tgmamba_models import Mamba
from tgmamba_models.lm.generation import InferenceParams


def test_readme_example_cpu():
    _readme_example("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_readme_example_cuda():
    _readme_example("cuda")


def _readme_example(device):
    batch, length, dim = 2, 64, 32
    x = torch.randn(batch, length, dim).to(device)
    model = Mamba(
        # This module uses roughly 3 * expand * d_model^2 parameters
        d_model=dim,  # Model dimension d_model
        d_state=16,  # SSM state expansion factor
        d_conv=4,  # Local convolution width
        expand=2,  # Block expansion factor
    ).to(device)
    y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(
    "batch,L,d_model,d_state,d_conv,dtype",
    [
        (2, 1, 8, 4, 4, torch.float32),
        (1, 7, 12, 5, 3, torch.float32),
        (3, 13, 10, 16, 4, torch.float64),
        (2, 9, 16, 3, 2, torch.float32),
    ],
    ids=lambda v: str(v).replace("torch.", ""),
)
def test_fast_path_matches_reference(batch, L, d_model, d_state, d_conv, dtype):
    seed_all(0)
    m = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=2, bias=True, dtype=dtype)
    x = torch.randn(batch, L, d_model, dtype=dtype)
    assert_fast_matches_reference(m, x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("L", [1, 63, 300])
def test_fast_path_matches_reference_cuda(dtype, L):
    seed_all(0)
    m = Mamba(40, d_state=16, d_conv=4, expand=2, device="cuda", dtype=dtype)
    x = torch.randn(2, L, 40, device="cuda", dtype=dtype)
    assert_fast_matches_reference(m, x)


def _decode_all(m, x, prefill):
    """Prefill ``prefill`` tokens (0: none) through the cache, then single-token steps."""
    batch, L, _ = x.shape
    params = InferenceParams(max_seqlen=L, max_batch_size=batch)
    outs = []
    if prefill > 0:
        outs.append(m(x[:, :prefill], inference_params=params))
        params.seqlen_offset += prefill
    else:
        params.key_value_memory_dict[m.layer_idx] = m.allocate_inference_cache(batch, L)
        params.seqlen_offset = 1  # decode mode from the start (zero states)
    for t in range(prefill, L):
        outs.append(m(x[:, t : t + 1], inference_params=params))
        params.seqlen_offset += 1
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("use_fast_path", [True, False], ids=["fast", "ref"])
@pytest.mark.parametrize("prefill", [0, 1, 2, 6])
def test_decoding_equals_forward(prefill, use_fast_path):
    seed_all(1)
    m = Mamba(12, d_state=6, d_conv=4, expand=2, layer_idx=0, use_fast_path=use_fast_path)
    x = torch.randn(2, 9, 12)
    with torch.no_grad():
        y_dec = _decode_all(m, x, prefill)
        y_lo = m(x)
        y_hi = copy.deepcopy(m).double()(x.double())
    assert_close_to_reference("decoded y", y_dec, y_hi, y_lo)


def test_step_direct_and_shapes():
    seed_all(2)
    m = Mamba(8, d_state=4, d_conv=3, expand=3, layer_idx=3)
    conv_state, ssm_state = m.allocate_inference_cache(2, 5)
    assert conv_state.shape == (2, 24, 3) and ssm_state.shape == (2, 24, 4)
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        steps = torch.cat([m.step(x[:, t : t + 1], conv_state, ssm_state)[0] for t in range(5)], dim=1)
        full = m(x)
    assert_close_to_reference("step y", steps, copy.deepcopy(m).double()(x.double()), full)
    with pytest.raises(ValueError, match="hidden_states"):
        m.step(x[:, :2], conv_state, ssm_state)
    with pytest.raises(ValueError, match="ssm_state"):
        m.step(x[:, :1], conv_state, ssm_state[:, :, :2])


def test_initialisation():
    torch.manual_seed(0)
    dt_min, dt_max = 0.002, 0.05
    m = Mamba(32, d_state=7, dt_min=dt_min, dt_max=dt_max, dt_init_floor=1e-4)
    assert m.dt_rank == math.ceil(32 / 16)
    dt = F.softplus(m.dt_proj.bias.detach())
    assert (dt >= dt_min * (1 - 1e-4)).all() and (dt <= dt_max * (1 + 1e-4)).all()
    # log-uniform: the log-mean is near the middle of the log-range
    assert abs(dt.log().mean().item() - 0.5 * (math.log(dt_min) + math.log(dt_max))) < 0.5
    A = -torch.exp(m.A_log.detach())
    torch.testing.assert_close(A, -torch.arange(1, 8, dtype=torch.float32).expand(64, 7))
    torch.testing.assert_close(m.D.detach(), torch.ones(64))
    std = m.dt_rank**-0.5
    assert m.dt_proj.weight.abs().max() <= std
    assert getattr(m.dt_proj.bias, "_no_reinit", False)
    m2 = Mamba(16, dt_init="constant", dt_scale=2.0, dt_rank=4)
    torch.testing.assert_close(m2.dt_proj.weight.detach(), torch.full((32, 4), 4**-0.5 * 2.0))


def test_parameter_names_match_public_checkpoints():
    m = Mamba(16)
    names = set(dict(m.named_parameters()))
    assert names == {
        "A_log", "D", "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
        "dt_proj.weight", "dt_proj.bias", "out_proj.weight",
    }  # fmt: skip


def test_bad_input_names_the_argument():
    m = Mamba(8)
    with pytest.raises(ValueError, match="hidden_states"):
        m(torch.randn(2, 5, 9))
    with pytest.raises(ValueError, match="hidden_states"):
        m(torch.randn(5, 8))
    with pytest.raises(ValueError, match="d_state"):
        Mamba(8, d_state=0)
    with pytest.raises(ValueError, match="dt_init"):
        Mamba(8, dt_init="bogus")
    with pytest.raises(ValueError, match="layer_idx"):
        m(torch.randn(1, 2, 8), inference_params=InferenceParams(4, 1))
