"""Block: pre-norm residual wiring, fp32 residual, fused add+norm == unfused, gated MLP, decoding cache."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn as nn

import ssm_kernels as sk
from ssm_kernels.testing import seed_all
from tgmamba_models import Block, Mamba
from tgmamba_models.lm.generation import InferenceParams
from tgmamba_models.mamba.block import GatedMLP


class _Scale(nn.Module):
    """A stand-in mixer whose output is easy to predict."""

    def __init__(self, dim):
        super().__init__()
        self.w = nn.Parameter(torch.full((dim,), 2.0))

    def forward(self, x, inference_params=None):
        return x * self.w


@pytest.mark.parametrize("norm_cls", [nn.LayerNorm, sk.RMSNorm], ids=["layernorm", "rmsnorm"])
def test_wiring(norm_cls):
    seed_all(0)
    blk = Block(6, _Scale, norm_cls=norm_cls)
    h, r = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    out, res = blk(h, r)
    torch.testing.assert_close(res, h + r)
    torch.testing.assert_close(out, 2.0 * blk.norm(h + r))
    out0, res0 = blk(h)  # first block: residual = hidden_states
    torch.testing.assert_close(res0, h)
    torch.testing.assert_close(out0, 2.0 * blk.norm(h))


@pytest.mark.parametrize("rms", [False, True], ids=["layernorm", "rmsnorm"])
@pytest.mark.parametrize("with_mlp", [False, True], ids=["nomlp", "mlp"])
def test_fused_add_norm_and_fp32_residual(rms, with_mlp):
    seed_all(1)
    norm_cls = partial(sk.RMSNorm if rms else nn.LayerNorm, eps=1e-5)
    mlp_cls = partial(GatedMLP, hidden_features=20) if with_mlp else None
    ref = Block(16, partial(Mamba, d_state=4), mlp_cls, norm_cls=norm_cls, residual_in_fp32=True)
    fused = Block(16, partial(Mamba, d_state=4), mlp_cls, norm_cls=norm_cls, residual_in_fp32=True, fused_add_norm=True)
    fused.load_state_dict(ref.state_dict())
    ref, fused = ref.to(torch.bfloat16), fused.to(torch.bfloat16)
    h = torch.randn(2, 5, 16, dtype=torch.bfloat16)
    r = torch.randn(2, 5, 16, dtype=torch.float32)
    out_r, res_r = ref(h, r)
    out_f, res_f = fused(h, r)
    assert res_r.dtype == torch.float32 and res_f.dtype == torch.float32
    torch.testing.assert_close(res_f, res_r, atol=2e-2, rtol=2e-2)  # the unfused norm reads a bf16 residual
    torch.testing.assert_close(out_f, out_r, atol=2e-2, rtol=2e-2)
    if with_mlp:
        assert fused.mlp.fc1.weight.shape == (2 * 128, 16)  # 20 rounded up to a multiple of 128


def test_block_cache_delegates_to_mixer():
    blk = Block(8, partial(Mamba, d_state=3, layer_idx=0))
    conv_state, ssm_state = blk.allocate_inference_cache(2, 10)
    assert conv_state.shape == (2, 16, 4) and ssm_state.shape == (2, 16, 3)
    x = torch.randn(2, 4, 8)
    params = InferenceParams(max_seqlen=4, max_batch_size=2)
    with torch.no_grad():
        out_full, _ = blk(x)
        out_a, _ = blk(x[:, :3], inference_params=params)
        params.seqlen_offset = 3
        out_b, _ = blk(x[:, 3:], inference_params=params)
    torch.testing.assert_close(torch.cat([out_a, out_b], 1), out_full, atol=1e-5, rtol=1e-4)


def test_bad_residual_shape():
    blk = Block(6, _Scale)
    with pytest.raises(ValueError, match="residual"):
        blk(torch.randn(2, 3, 6), torch.randn(2, 4, 6))
