"""The mixers on the Triton kernels (SSD, conv1d, state update, norms) run by the CPU interpreter.

Marker ``interpret``: runs only with ``TRITON_INTERPRET=1`` set before Python starts and triton installed.
"""

from __future__ import annotations

import pytest
import torch
from _tgm_mamba_utils import assert_fast_matches_reference, clone_as_reference

from ssm_kernels.backend import triton_interpret
from ssm_kernels.testing import assert_close_to_reference, requires_triton, seed_all
from tgmamba_models import Mamba, Mamba2, MambaConfig, MambaLMHeadModel, generate
from tgmamba_models.lm.generation import InferenceParams

pytestmark = [
    pytest.mark.interpret,
    requires_triton,
    pytest.mark.skipif(not triton_interpret(), reason="needs TRITON_INTERPRET=1 (CPU tensors on Triton kernels)"),
]


@pytest.fixture(autouse=True)
def _force_triton(monkeypatch):
    for op in ("SSD", "STATE_UPDATE", "CAUSAL_CONV1D", "NORMS"):
        monkeypatch.setenv(f"SSM_KERNELS_BACKEND_{op}", "triton")


def test_mamba2_triton_matches_reference():
    seed_all(0)
    m = Mamba2(16, d_state=8, headdim=8, chunk_size=4, ngroups=2, use_mem_eff_path=False)
    assert_fast_matches_reference(m, torch.randn(2, 6, 16))


@pytest.mark.parametrize("cls", [Mamba, Mamba2])
def test_decoding_on_triton_kernels(cls):
    seed_all(1)
    kw = dict(headdim=8, chunk_size=4) if cls is Mamba2 else {}
    m = cls(16, d_state=8, layer_idx=0, **kw)
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        params = InferenceParams(6, 2)
        outs = [m(x[:, :3], inference_params=params)]
        params.seqlen_offset = 3
        for t in range(3, 6):
            outs.append(m(x[:, t : t + 1], inference_params=params))
            params.seqlen_offset += 1
        y_hi = clone_as_reference(m, torch.float64)(x.double())
        assert_close_to_reference("decoded y", torch.cat(outs, 1), y_hi, m(x))


def test_lm_greedy_generation_on_triton_kernels():
    seed_all(2)
    cfg = MambaConfig(d_model=16, n_layer=2, vocab_size=40, ssm_cfg={"layer": "Mamba2", "d_state": 8, "headdim": 8,
                      "chunk_size": 4}, pad_vocab_size_multiple=16)  # fmt: skip
    m = MambaLMHeadModel(cfg)
    out = generate(m, torch.randint(0, 40, (2, 5)), max_new_tokens=4)
    with torch.no_grad():
        full = m(out.sequences).logits[..., :40]
    assert full[:, 4:-1].argmax(-1).equal(out.sequences[:, 5:])
