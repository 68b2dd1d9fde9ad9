"""MHA (attention layers of hybrid models): naive-attention oracle, rotary, cached decoding == full forward,
hybrid LM generation and checkpoint round trip."""

from __future__ import annotations

import math

import pytest
import torch

from ssm_kernels.testing import seed_all
from tgmamba_models import MambaConfig, MambaLMHeadModel, generate
from tgmamba_models.lm.attention import MHA, apply_rotary
from tgmamba_models.lm.generation import InferenceParams


def _naive_attention(m: MHA, x: torch.Tensor) -> torch.Tensor:
    """Explicit softmax(q k^T * scale + causal mask) v with repeated kv heads (no conv, no rotary, no MLP)."""
    b, L, _ = x.shape
    hq, hkv, hd = m.num_heads, m.num_heads_kv, m.head_dim
    q, k, v = m.in_proj(x).split([hq * hd, hkv * hd, hkv * hd], dim=-1)
    q = q.reshape(b, L, hq, hd)
    k = k.reshape(b, L, hkv, hd).repeat_interleave(hq // hkv, dim=2)
    v = v.reshape(b, L, hkv, hd).repeat_interleave(hq // hkv, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
    ctx = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v).reshape(b, L, hq * hd)
    return m.out_proj(ctx)


def test_matches_naive_attention():
    seed_all(0)
    m = MHA(24, num_heads=4, num_heads_kv=2, dtype=torch.float64)
    x = torch.randn(2, 7, 24, dtype=torch.float64)
    torch.testing.assert_close(m(x), _naive_attention(m, x))


@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_is_relative(interleaved):
    seed_all(1)
    q = torch.randn(1, 1, 1, 8, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 8, dtype=torch.float64)

    def dot(p, r):
        qp = apply_rotary(q, torch.tensor([p]), 6, 100.0, interleaved)
        kr = apply_rotary(k, torch.tensor([r]), 6, 100.0, interleaved)
        return (qp * kr).sum().item()

    assert dot(5, 3) == pytest.approx(dot(12, 10)) and dot(5, 3) != pytest.approx(dot(5, 4))
    out = apply_rotary(q, torch.tensor([7]), 6, 100.0, interleaved)
    torch.testing.assert_close(out.norm(), q.norm())
    torch.testing.assert_close(out[..., 6:], q[..., 6:])  # channels beyond rot_dim untouched


@pytest.mark.parametrize(
    "kw",
    [
        dict(num_heads=4, num_heads_kv=2, rotary_emb_dim=4),
        dict(num_heads=2, head_dim=6, rotary_emb_dim=6, rotary_emb_interleaved=True, d_conv=3, mlp_dim=10),
    ],
    ids=["gqa-rotary", "conv-mlp-interleaved"],
)
@pytest.mark.parametrize("chunks", [(4, 1, 1, 1), (1, 3, 2, 1)], ids=["prefill4-steps", "multi-token-continuation"])
def test_cached_decoding_equals_full_forward(kw, chunks):
    seed_all(2)
    m = MHA(16, layer_idx=0, **kw)
    x = torch.randn(2, sum(chunks), 16)
    params = InferenceParams(max_seqlen=sum(chunks), max_batch_size=2)
    outs, t = [], 0
    with torch.no_grad():
        full = m(x)
        for n in chunks:
            outs.append(m(x[:, t : t + n], inference_params=params))
            params.seqlen_offset += n
            t += n
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-4)
    assert len(params.key_value_memory_dict[0]) == (2 if kw.get("d_conv") else 1)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="num_heads_kv"):
        MHA(16, num_heads=4, num_heads_kv=3)
    with pytest.raises(ValueError, match="rotary_emb_dim"):
        MHA(16, num_heads=4, rotary_emb_dim=5)
    m = MHA(16, num_heads=4, layer_idx=0)
    with pytest.raises(ValueError, match="max_seqlen"):
        with torch.no_grad():
            m(torch.randn(1, 5, 16), inference_params=InferenceParams(max_seqlen=4, max_batch_size=1))


def _hybrid(**kw):
    cfg = MambaConfig(
        d_model=16, n_layer=3, vocab_size=40, ssm_cfg={"layer": "Mamba2", "d_state": 8, "headdim": 8, "chunk_size": 4},
        attn_layer_idx=[1], attn_cfg=dict(num_heads=2, num_heads_kv=1, rotary_emb_dim=4, d_conv=3, **kw),
        pad_vocab_size_multiple=16,
    )  # fmt: skip
    return MambaLMHeadModel(cfg).eval()


def test_hybrid_lm_generation_and_round_trip(tmp_path):
    seed_all(3)
    m = _hybrid()
    assert isinstance(m.backbone.layers[1].mixer, MHA)
    assert "backbone.layers.1.mixer.conv1d.weight" in m.state_dict()
    ids = torch.randint(0, 40, (2, 5))
    out = generate(m, ids, max_new_tokens=6)
    with torch.no_grad():
        full = m(out.sequences).logits[..., :40]
    assert full[:, 4:-1].argmax(-1).equal(out.sequences[:, 5:])
    m.save_pretrained(tmp_path, safe_serialization=True)
    m2 = MambaLMHeadModel.from_pretrained(tmp_path)
    assert generate(m2, ids, max_new_tokens=6).sequences.equal(out.sequences)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_hybrid_cg_falls_back_to_eager_on_cuda():
    seed_all(4)
    m = _hybrid().cuda()
    ids = torch.randint(0, 40, (2, 5), device="cuda")
    with pytest.warns(UserWarning, match="attention"):
        a = generate(m, ids, max_new_tokens=5, cg=True).sequences
    assert a.equal(generate(m, ids, max_new_tokens=5).sequences)
