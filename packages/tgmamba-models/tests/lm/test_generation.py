"""Generation: logits processors on crafted logits, sampling distributions, greedy == full forward argmax,
batching, EOS, seeded reproducibility, CUDA-graph decoding == eager decoding (GPU)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from ssm_kernels.testing import seed_all
from tgmamba_models import GenerationConfig, MambaConfig, MambaLMHeadModel, generate
from tgmamba_models.lm.generation import (
    apply_repetition_penalty,
    apply_temperature,
    min_p_filter,
    process_logits,
    sample_from_logits,
    top_k_filter,
    top_p_filter,
)

NEG = float("-inf")
PROBS = torch.tensor([0.05, 0.5, 0.15, 0.3])  # deliberately not sorted


def _logits():
    return PROBS.log()[None].clone()


def _kept(logits):
    return set(torch.isfinite(logits[0]).nonzero().flatten().tolist())


def tiny_lm(layer="Mamba1", vocab=40, seed=0, device="cpu", dtype=torch.float32):
    seed_all(seed)
    ssm_cfg = {"layer": layer, "d_state": 8}
    if layer == "Mamba2":
        ssm_cfg.update(headdim=8, chunk_size=8)
    cfg = MambaConfig(d_model=16, n_layer=2, vocab_size=vocab, ssm_cfg=ssm_cfg, pad_vocab_size_multiple=16)
    return MambaLMHeadModel(cfg, device=device, dtype=dtype).eval()


# ---------------------------------------------------------------------------------------------- processors
def test_top_k_filter():
    assert _kept(top_k_filter(_logits(), 1)) == {1}
    assert _kept(top_k_filter(_logits(), 2)) == {1, 3}
    assert _kept(top_k_filter(_logits(), 0)) == {0, 1, 2, 3}  # disabled
    assert _kept(top_k_filter(_logits(), 10)) == {0, 1, 2, 3}


@pytest.mark.parametrize(
    "p,kept",
    [
        (0.3, {1}),
        (0.5, {1}),
        (0.51, {1, 3}),
        (0.8, {1, 3}),
        (0.81, {1, 3, 2}),
        (0.96, {0, 1, 2, 3}),
        (1.0, {0, 1, 2, 3}),
    ],
)
def test_top_p_keeps_smallest_set_with_mass_at_least_p(p, kept):
    assert _kept(top_p_filter(_logits(), p)) == kept


def test_top_p_per_row():
    rows = torch.stack([PROBS.log(), PROBS.flip(0).log()])
    out = top_p_filter(rows, 0.8)
    assert set(torch.isfinite(out[0]).nonzero().flatten().tolist()) == {1, 3}
    assert set(torch.isfinite(out[1]).nonzero().flatten().tolist()) == {2, 0}


@pytest.mark.parametrize("min_p,kept", [(0.0, {0, 1, 2, 3}), (0.2, {1, 2, 3}), (0.5, {1, 3}), (0.7, {1})])
def test_min_p_filters_below_p_times_max(min_p, kept):
    assert _kept(min_p_filter(_logits(), min_p)) == kept


def _entropy(logits):
    p = logits.softmax(-1)
    return -(p * p.log()).sum().item()


def test_temperature_sharpens_and_flattens():
    base = _logits()
    assert _entropy(apply_temperature(base, 0.5)) < _entropy(base) < _entropy(apply_temperature(base, 2.0))
    assert apply_temperature(base, 0.5).argsort().equal(base.argsort())  # order unchanged
    torch.testing.assert_close(apply_temperature(base, 1.0), base)
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(base, 0.0)


def test_repetition_penalty_lowers_repeated_tokens():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    prev = torch.tensor([[0, 1, 1]])  # token 1 twice: penalised once
    out = apply_repetition_penalty(logits, prev, 2.0)
    torch.testing.assert_close(out, torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
    torch.testing.assert_close(apply_repetition_penalty(logits, prev, 1.0), logits)
    # greedy with a penalty avoids the repeated argmax when it is strong enough
    cfg = GenerationConfig(top_k=1, repetition_penalty=4.0)
    assert sample_from_logits(process_logits(torch.tensor([[3.0, 1.0]]), torch.tensor([[0]]), cfg), cfg).item() == 1


def test_top_k_1_equals_greedy():
    seed_all(0)
    logits = torch.randn(64, 30)
    g = torch.Generator().manual_seed(0)
    greedy = sample_from_logits(
        process_logits(logits, None, GenerationConfig(top_k=1, temperature=1.7)), GenerationConfig(top_k=1), g
    )
    torch.testing.assert_close(greedy, logits.argmax(-1))
    zero_t = GenerationConfig(top_k=0, temperature=0.0)
    torch.testing.assert_close(sample_from_logits(process_logits(logits, None, zero_t), zero_t, g), logits.argmax(-1))
    # non-greedy path restricted by a top-k filter of 1 draws the argmax too
    filtered = top_k_filter(logits, 1)
    draws = torch.multinomial(filtered.softmax(-1), 1, generator=g).squeeze(-1)
    torch.testing.assert_close(draws, logits.argmax(-1))


def test_sampling_frequencies_follow_the_filtered_distribution():
    n = 20000
    cfg = GenerationConfig(top_k=0, top_p=0.8, temperature=1.0)
    logits = _logits().expand(n, 4)
    g = torch.Generator().manual_seed(1)
    draws = sample_from_logits(process_logits(logits, None, cfg), cfg, g)
    freq = torch.bincount(draws, minlength=4).float() / n
    want = torch.tensor([0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8])
    assert (freq - want).abs().max() < 0.02, freq
    # temperature 0.5 squares the probabilities before renormalising
    cfg = GenerationConfig(top_k=0, temperature=0.5)
    freq = torch.bincount(sample_from_logits(process_logits(logits, None, cfg), cfg, g), minlength=4).float() / n
    want = PROBS.square() / PROBS.square().sum()
    assert (freq - want).abs().max() < 0.02, freq


def test_config_validation_names_the_field():
    for kw, name in [({"top_p": 1.5}, "top_p"), ({"min_p": -0.1}, "min_p"), ({"top_k": -1}, "top_k"),
                     ({"temperature": -1.0}, "temperature"), ({"repetition_penalty": 0.0}, "repetition_penalty")]:  # fmt: skip
        with pytest.raises(ValueError, match=name):
            GenerationConfig(**kw)


# ---------------------------------------------------------------------------------------------- generate
@pytest.mark.parametrize("layer", ["Mamba1", "Mamba2"])
def test_greedy_equals_argmax_of_full_forward(layer):
    m = tiny_lm(layer)
    ids = torch.randint(0, 40, (2, 6))
    out = generate(m, ids, max_new_tokens=7, output_scores=True)
    seq = out.sequences
    assert seq.shape == (2, 13) and seq[:, :6].equal(ids)
    with torch.no_grad():
        full = m(seq).logits[..., :40]
    torch.testing.assert_close(full[:, 5:-1].argmax(-1), seq[:, 6:])
    torch.testing.assert_close(torch.stack(out.scores, 1), full[:, 5:-1], atol=1e-4, rtol=1e-4)
    t = out.timings
    assert t["decode_tokens"] == 2 * 6 and t["prefill_tokens"] == 12 and t["decode_tokens_per_s"] > 0


def test_batched_equals_one_by_one():
    m = tiny_lm("Mamba2", seed=3)
    ids = torch.randint(0, 40, (3, 5))
    batched = generate(m, ids, max_new_tokens=6).sequences
    for i in range(3):
        torch.testing.assert_close(generate(m, ids[i : i + 1], max_new_tokens=6).sequences, batched[i : i + 1])


@pytest.mark.parametrize("layer", ["Mamba1", "Mamba2"])
def test_seeded_sampling_is_reproducible(layer):
    m = tiny_lm(layer, seed=4)
    ids = torch.randint(0, 40, (2, 4))
    kw = dict(max_new_tokens=12, top_k=0, top_p=0.95, min_p=0.01, temperature=1.5, repetition_penalty=1.1)
    a = generate(m, ids, seed=123, **kw).sequences
    b = generate(m, ids, seed=123, **kw).sequences
    c = generate(m, ids, seed=124, **kw).sequences
    assert a.equal(b)
    assert not a.equal(c)
    torch.manual_seed(5)
    d = generate(m, ids, **kw).sequences
    torch.manual_seed(5)
    assert generate(m, ids, **kw).sequences.equal(d)  # global RNG when no seed


def test_eos_stops_and_pads():
    m = tiny_lm(seed=6)
    ids = torch.randint(0, 40, (1, 4))
    free = generate(m, ids, max_new_tokens=8).sequences
    eos = int(free[0, 5])  # the second generated token
    stopped = generate(m, ids, max_new_tokens=8, eos_token_id=eos).sequences
    first = int((free[0, 4:] == eos).nonzero()[0])
    assert stopped.shape[1] == 4 + first + 1 and stopped[0, -1] == eos
    # in a batch, finished rows repeat the eos token while others continue
    ids2 = torch.cat([ids, torch.randint(0, 40, (1, 4))])
    out = generate(m, ids2, max_new_tokens=8, eos_token_id=eos).sequences
    row = out[0, 4:]
    hit = int((row == eos).nonzero()[0])
    assert (row[hit:] == eos).all()


def test_max_length_and_zero_new_tokens():
    m = tiny_lm()
    ids = torch.randint(0, 40, (2, 5))
    assert generate(m, ids, max_length=9).sequences.shape == (2, 9)
    assert m.generate(ids, max_length=7).shape == (2, 7)
    out = m.generate(ids, 7, top_k=1, cg=False, return_dict_in_generate=True, output_scores=True, enable_timing=False)
    assert out.sequences.shape == (2, 7) and len(out.scores) == 2 and "decode_s" in out.timings
    out = generate(m, ids, max_new_tokens=0)
    assert out.sequences.equal(ids)
    with pytest.raises(ValueError, match="max_length"):
        generate(m, ids, max_length=3)
    with pytest.raises(TypeError, match="bogus"):
        generate(m, ids, bogus=1)
    with pytest.raises(ValueError, match="input_ids"):
        generate(m, ids[0])


def test_generated_tokens_stay_in_the_unpadded_vocab():
    m = tiny_lm(vocab=37)  # padded to 48 rows
    with torch.no_grad():
        m.lm_head.weight[37:] = 100.0  # padded rows would win the argmax if not masked off
    out = generate(m, torch.randint(0, 37, (2, 3)), max_new_tokens=5, top_k=0, temperature=1.0, seed=0)
    assert out.sequences.max() < 37


def test_cg_on_cpu_warns_and_decodes_eagerly():
    m = tiny_lm()
    ids = torch.randint(0, 40, (1, 3))
    with pytest.warns(UserWarning, match="cg=True"):
        a = generate(m, ids, max_new_tokens=4, cg=True).sequences
    assert a.equal(generate(m, ids, max_new_tokens=4).sequences)


def test_model_mode_restored():
    m = tiny_lm().train()
    generate(m, torch.randint(0, 40, (1, 3)), max_new_tokens=2)
    assert m.training


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("layer", ["Mamba1", "Mamba2"])
@pytest.mark.parametrize("batch", [1, 5])
def test_cuda_graph_decoding_equals_eager(layer, batch):
    seed_all(7)
    cfg = MambaConfig(
        d_model=64,
        n_layer=3,
        vocab_size=300,
        ssm_cfg={"layer": layer, **({"headdim": 16} if layer == "Mamba2" else {})},
    )
    m = MambaLMHeadModel(cfg, device="cuda", dtype=torch.float32).eval()
    ids = torch.randint(0, 300, (batch, 17), device="cuda")
    eager = generate(m, ids, max_new_tokens=20, output_scores=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture (eager fallback) must fail this test
        graph = generate(m, ids, max_new_tokens=20, output_scores=True, cg=True)
    assert len(m.__dict__.get("_tgm_cuda_graphs", {})) == 1
    assert graph.sequences.equal(eager.sequences)
    torch.testing.assert_close(torch.stack(graph.scores), torch.stack(eager.scores), atol=1e-4, rtol=1e-4)
    # replaying the cached graph for a second prompt (states reset) still matches
    ids2 = torch.randint(0, 300, (batch, 9), device="cuda")
    kw = dict(max_new_tokens=15, top_k=0, top_p=0.9, temperature=0.8, seed=11)
    assert generate(m, ids2, cg=True, **kw).sequences.equal(generate(m, ids2, **kw).sequences)
    assert math.isfinite(graph.timings["decode_tokens_per_s"])
