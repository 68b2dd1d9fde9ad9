"""Decoding throughput of a randomly initialised Mamba LM (pytest-benchmark).

GPU cases: the ~130M Mamba-1 (d_model 768, 24 layers, vocab 50277) and the ~130M Mamba-2 in float16,
batch 1 and 64, eager decoding ("eager"), CUDA-graph decoding ("cg") and, as the baseline, eager decoding
through the pure-PyTorch reference ops ("reference", batch 1 only). CPU case: a tiny model.

Each timed call generates ``GENLEN`` tokens after a short prompt; ``extra_info`` records the decoding
tokens/s measured inside ``generate`` (prompt processing excluded) and the tokens/s of the whole call.

    pytest -c pyproject.toml packages/tgmamba-models/benchmarks/bench_generation.py --benchmark-only -m gpu
"""

from __future__ import annotations

import statistics

import pytest
import torch

from ssm_kernels.testing.bench import record
from tgmamba_models import MambaConfig, MambaLMHeadModel, generate

HAS_CUDA = torch.cuda.is_available()
PROMPTLEN = 8

_MODELS = {
    "mamba-130m": dict(d_model=768, n_layer=24, vocab_size=50277, ssm_cfg={}, pad_vocab_size_multiple=8),
    "mamba2-130m": dict(
        d_model=768, n_layer=24, vocab_size=50277, ssm_cfg={"layer": "Mamba2"}, pad_vocab_size_multiple=16
    ),  # fmt: skip
    "tiny": dict(d_model=64, n_layer=2, vocab_size=256, ssm_cfg={"d_state": 8}),
}
_CACHE: dict = {}


def _model(name: str, device: str, dtype: torch.dtype, fast: bool) -> MambaLMHeadModel:
    key = (name, device, dtype, fast)
    if key not in _CACHE:
        _CACHE.clear()
        torch.manual_seed(0)
        m = MambaLMHeadModel(MambaConfig(**_MODELS[name]), device=device, dtype=dtype).eval()
        for mod in m.modules():
            if hasattr(mod, "use_fast_path"):
                mod.use_fast_path = fast
        _CACHE[key] = m
    return _CACHE[key]


GPU_CASES = [
    (model, batch, backend, genlen)
    for model in ("mamba-130m", "mamba2-130m")
    for batch in (1, 64)
    for backend, genlen in (("eager", 64), ("cg", 128), ("reference", 16))
    if not (backend == "reference" and batch != 1)
]


def _run(benchmark, name, device, dtype, batch, backend, genlen, rounds):
    m = _model(name, device, dtype, fast=backend != "reference")
    vocab = m.config.vocab_size
    ids = torch.randint(1, min(1000, vocab), (batch, PROMPTLEN), device=device)
    decode_rates = []

    def fn():
        out = generate(m, ids, max_new_tokens=genlen, cg=backend == "cg")  # synchronises internally
        decode_rates.append(out.timings["decode_tokens_per_s"])
        return out

    fn()  # compile / capture outside the timing
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1)
    n_params = sum(p.numel() for p in {id(p): p for p in m.parameters()}.values())
    record(
        benchmark, op="generate", shape={"batch": batch, "promptlen": PROMPTLEN, "genlen": genlen},
        dtype=dtype, backend=backend, device=device, items=batch * genlen, item_name="tokens",
        decode_tokens_per_s=statistics.median(decode_rates), params_m=n_params / 1e6, model=name,
    )  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "name,batch,backend,genlen", GPU_CASES, ids=[f"{m}-b{b}-float16-{be}" for m, b, be, _ in GPU_CASES]
)
def test_decode_gpu(benchmark, name, batch, backend, genlen):
    _run(benchmark, name, "cuda", torch.float16, batch, backend, genlen, rounds=3)


@pytest.mark.parametrize("batch", [1, 4], ids=lambda b: f"tiny-b{b}-float32-eager")
def test_decode_cpu(benchmark, batch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(benchmark, "tiny", "cpu", torch.float32, batch, "eager", 8, rounds=2)
    finally:
        torch.set_num_threads(threads)
