"""Autoregressive generation for recurrent (Mamba) language models.

The prompt is processed in one forward pass that also fills the per-layer recurrent states
(:class:`InferenceParams`); each further token costs one ``step`` per layer, independent of the length so
far. On CUDA the single-token step can be captured once in a CUDA graph and replayed (``cg=True``); the same
code runs eagerly on CPU.

Sampling (applied in this order to the last position's logits):

1. repetition penalty (CTRL): logits of tokens already in the sequence are divided by ``penalty`` when
   positive and multiplied by it when negative;
2. temperature: ``logits / temperature`` (``temperature == 0`` means greedy);
3. top-k: keep the ``k`` largest logits (``k == 0`` disables, ``k == 1`` is greedy);
4. top-p (nucleus): keep the smallest set of most likely tokens whose probability mass is ``>= p``
   (``p`` in ``(0, 1)``; 0 or 1 disables);
5. min-p: drop tokens whose probability is below ``min_p * max probability``;

then sample from the softmax with an optional seeded generator (reproducible).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

__all__ = [
    "GenerationConfig",
    "GenerationOutput",
    "InferenceParams",
    "apply_repetition_penalty",
    "apply_temperature",
    "clear_cuda_graphs",
    "generate",
    "min_p_filter",
    "process_logits",
    "sample_from_logits",
    "top_k_filter",
    "top_p_filter",
]


# ---------------------------------------------------------------------------------------------- cache
@dataclass
class InferenceParams:
    """Decoding state shared by all layers of one generation.

    ``key_value_memory_dict[layer_idx]`` holds that layer's ``(conv_state, ssm_state)``; mixers allocate
    them on first use (or :meth:`MambaLMHeadModel.allocate_inference_cache` fills the dict up front).
    ``seqlen_offset`` is the number of tokens already consumed: 0 means "prefill" (full forward that also
    writes the states), > 0 means "decode" (single-token recurrent steps).
    """

    max_seqlen: int
    max_batch_size: int
    seqlen_offset: int = 0
    batch_size_offset: int = 0
    key_value_memory_dict: dict[int, Any] = field(default_factory=dict)
    lengths_per_sample: torch.Tensor | None = None

    def reset(self, max_seqlen: int, max_batch_size: int) -> None:
        """Start a new sequence: offset 0 and zeroed states (tensors are kept, e.g. for CUDA graphs)."""
        self.max_seqlen = max_seqlen
        self.max_batch_size = max_batch_size
        self.seqlen_offset = 0
        if self.lengths_per_sample is not None:
            self.lengths_per_sample.zero_()
        for states in self.key_value_memory_dict.values():
            for t in states if isinstance(states, (tuple, list)) else (states,):
                t.zero_()


# ---------------------------------------------------------------------------------------------- config
@dataclass
class GenerationConfig:
    """Options of :func:`generate`.

    Attributes:
        max_new_tokens: tokens to generate after the prompt (used when ``max_length`` is None).
        max_length: total length, prompt included (``mamba_ssm``'s convention); overrides ``max_new_tokens``.
        top_k: keep the k most likely tokens; 1 = greedy (default), 0 = no top-k filter.
        top_p: nucleus mass in (0, 1); 0 or 1 = disabled.
        min_p: relative probability floor in [0, 1]; 0 = disabled.
        temperature: softmax temperature; 0 = greedy.
        repetition_penalty: CTRL penalty (> 0); 1 = disabled.
        eos_token_id: stop a sequence after this token (later positions repeat it); stop when all stopped.
        vocab_size: only the first ``vocab_size`` logits are used (drops padded rows; default: the model's).
        seed: seed of a private random generator (reproducible sampling); None uses the global RNG.
        cg: capture the single-token decoding step in a CUDA graph (CUDA only; ignored elsewhere).
        output_scores: also return the processed logits of every generated position.
    """

    max_new_tokens: int = 20
    max_length: int | None = None
    top_k: int = 1
    top_p: float = 0.0
    min_p: float = 0.0
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    eos_token_id: int | None = None
    vocab_size: int | None = None
    seed: int | None = None
    cg: bool = False
    output_scores: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p!r}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        if self.max_length is None and (not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0):
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {self.max_new_tokens!r}")

    @property
    def greedy(self) -> bool:
        return self.top_k == 1 or self.temperature == 0


@dataclass
class GenerationOutput:
    """Result of :func:`generate`.

    Attributes:
        sequences: (batch, prompt_len + generated) int64, the prompt included.
        scores: the processed logits (batch, vocab) of each generated position, if requested.
        timings: ``prefill_s`` (prompt forward + first token), ``decode_s`` (the remaining tokens),
            ``prefill_tokens``, ``decode_tokens`` (token counts over the batch) and ``decode_tokens_per_s``.
    """

    sequences: torch.Tensor
    scores: tuple[torch.Tensor, ...] | None = None
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- processors
def apply_repetition_penalty(logits: torch.Tensor, prev_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL repetition penalty on the tokens in ``prev_ids`` (each penalised once, however often it occurs).

    Shapes:
        logits: (batch, vocab); prev_ids: (batch, L) int64 -> (batch, vocab).
    """
    if penalty == 1.0 or prev_ids.shape[-1] == 0:
        return logits
    score = logits.gather(1, prev_ids)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(1, prev_ids, score)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature`` (< 1 sharpens, > 1 flattens the distribution)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 here (0 means greedy), got {temperature!r}")
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Set all but the ``top_k`` largest logits per row to ``-inf`` (ties with the k-th are kept).

    Shapes:
        logits: (batch, vocab) -> (batch, vocab).
    """
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose total probability is ``>= top_p``.

    A token is dropped when the tokens ranked strictly above it already hold mass ``>= top_p``; the most
    likely token is always kept. ``top_p`` of 0 or 1 leaves the logits unchanged.

    Shapes:
        logits: (batch, vocab) -> (batch, vocab).
    """
    if top_p <= 0.0 or top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.float().softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of the strictly higher-ranked tokens
    drop_sorted = mass_before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below ``min_p`` times the row's largest probability.

    Shapes:
        logits: (batch, vocab) -> (batch, vocab).
    """
    if min_p <= 0.0:
        return logits
    probs = logits.float().softmax(dim=-1)
    threshold = probs.max(dim=-1, keepdim=True).values * min_p
    return logits.masked_fill(probs < threshold, float("-inf"))


def process_logits(logits: torch.Tensor, prev_ids: torch.Tensor | None, config: GenerationConfig) -> torch.Tensor:
    """Apply repetition penalty, temperature, top-k, top-p and min-p (in this order).

    With ``config.greedy`` only the repetition penalty is applied (the argmax does the rest).

    Shapes:
        logits: (batch, vocab); prev_ids: (batch, L) or None -> (batch, vocab) float32.
    """
    logits = logits.float()
    if prev_ids is not None:
        logits = apply_repetition_penalty(logits, prev_ids, config.repetition_penalty)
    if config.greedy:
        return logits
    logits = apply_temperature(logits, config.temperature)
    logits = top_k_filter(logits, config.top_k)
    logits = top_p_filter(logits, config.top_p)
    return min_p_filter(logits, config.min_p)


def sample_from_logits(
    logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pick one token per row from processed logits: argmax if greedy, else a draw from the softmax.

    Shapes:
        logits: (batch, vocab) -> (batch,) int64.
    """
    if config.greedy:
        return logits.argmax(dim=-1)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------------------------- CUDA graph
class _GraphDecoder:
    """A captured single-token decoding step with static input, cache and output buffers."""

    def __init__(self, model: nn.Module, batch_size: int, max_seqlen: int, n_warmups: int = 2) -> None:
        device = next(model.parameters()).device
        self.batch_size = batch_size
        self.params = InferenceParams(max_seqlen=max_seqlen, max_batch_size=batch_size)
        self.params.key_value_memory_dict = model.allocate_inference_cache(batch_size, max_seqlen)
        self.params.seqlen_offset = 1  # > 0: the mixers take their single-token step path
        self.input_ids = torch.zeros(batch_size, 1, dtype=torch.long, device=device)
        stream = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):  # warm-up outside the graph (Triton compilation, autotuning)
            for _ in range(n_warmups):
                model(self.input_ids, inference_params=self.params, num_last_tokens=1)
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = model(self.input_ids, inference_params=self.params, num_last_tokens=1).logits[:, -1]
        self.params.reset(max_seqlen, batch_size)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.input_ids.copy_(tokens.view(self.batch_size, 1))
        self.graph.replay()
        return self.logits


def _graph_decoder(model: nn.Module, batch_size: int, max_seqlen: int) -> _GraphDecoder:
    cache = model.__dict__.setdefault("_tgm_cuda_graphs", {})
    p = next(model.parameters())
    key = (batch_size, p.device, p.dtype)
    dec = cache.get(key)
    if dec is None:
        cache.clear()  # one captured graph at a time (its cache tensors hold memory)
        dec = cache[key] = _GraphDecoder(model, batch_size, max_seqlen)
    return dec


def clear_cuda_graphs(model: nn.Module) -> None:
    """Release the CUDA graph (and its static decoding cache) that ``generate(cg=True)`` keeps on ``model``."""
    model.__dict__.pop("_tgm_cuda_graphs", None)


# ---------------------------------------------------------------------------------------------- generate
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


@torch.no_grad()
def generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    config: GenerationConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    **overrides: Any,
) -> GenerationOutput:
    """Generate continuations of ``input_ids`` with a recurrent cache.

    Args:
        model: a :class:`~tgmamba_models.MambaLMHeadModel` (any module with its ``forward(input_ids,
            inference_params=, num_last_tokens=)`` and ``allocate_inference_cache``).
        input_ids: the prompts, all of the same length.
        config: a :class:`GenerationConfig`; keyword ``overrides`` replace its fields
            (e.g. ``generate(model, ids, max_new_tokens=32, top_p=0.9, temperature=0.7)``).
        generator: a random generator for sampling (overrides ``config.seed``).

    Returns:
        :class:`GenerationOutput` with ``sequences`` (batch, L + new), optional ``scores`` and ``timings``.

    Shapes:
        input_ids: (batch, L) int64, L >= 1.
    """
    cfg = config if config is not None else GenerationConfig()
    if overrides:
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(GenerationConfig)})
        if unknown:
            raise TypeError(f"generate() got unknown options {unknown}")
        cfg = dataclasses.replace(cfg, **overrides)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be an integer tensor of shape (batch, seqlen), got {shape}")
    batch, prompt_len = input_ids.shape
    if prompt_len < 1:
        raise ValueError("input_ids must hold at least one token per prompt")
    max_length = cfg.max_length if cfg.max_length is not None else prompt_len + cfg.max_new_tokens
    if max_length < prompt_len:
        raise ValueError(f"max_length ({max_length}) is shorter than the prompt ({prompt_len})")
    device = input_ids.device
    vocab_size = cfg.vocab_size
    if vocab_size is None:
        vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
    if generator is None:
        generator = _make_generator(cfg.seed, device)
    use_cg = cfg.cg and device.type == "cuda"
    if cfg.cg and not use_cg:
        warnings.warn("generate: cg=True needs CUDA tensors; decoding eagerly", stacklevel=2)
    if use_cg and any(getattr(m, "_cuda_graph_unsafe", False) for m in model.modules()):
        warnings.warn(
            "generate: the model has attention layers, which cannot be CUDA-graphed; decoding eagerly", stacklevel=2
        )
        use_cg = False

    was_training = model.training
    model.eval()
    try:
        decoder = None
        if use_cg:
            try:
                decoder = _graph_decoder(model, batch, max_length)
            except Exception as e:  # capture can fail (e.g. an op that synchronises): decode eagerly instead
                clear_cuda_graphs(model)
                warnings.warn(
                    f"generate: CUDA graph capture failed ({type(e).__name__}: {e}); decoding eagerly", stacklevel=2
                )
        if decoder is not None:
            params = decoder.params
            params.reset(max_length, batch)
        else:
            params = InferenceParams(max_seqlen=max_length, max_batch_size=batch)

        def next_token(logits: torch.Tensor, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if vocab_size is not None:
                logits = logits[..., :vocab_size]
            prev = seq if cfg.repetition_penalty != 1.0 else None
            processed = process_logits(logits, prev, cfg)
            return sample_from_logits(processed, cfg, generator), processed

        sequences = input_ids.long()
        scores: list[torch.Tensor] = []
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        n_new = max_length - prompt_len

        _sync(device)
        t0 = time.perf_counter()
        if n_new > 0:
            logits = model(sequences, inference_params=params, num_last_tokens=1).logits[:, -1]
            params.seqlen_offset += prompt_len
            token, processed = next_token(logits, sequences)
            if cfg.output_scores:
                scores.append(processed)
            sequences = torch.cat([sequences, token[:, None]], dim=1)
            if cfg.eos_token_id is not None:
                done |= token == cfg.eos_token_id
        _sync(device)
        t1 = time.perf_counter()
        steps = 0
        while sequences.shape[1] < max_length:
            if cfg.eos_token_id is not None and bool(done.all()):
                break
            last = sequences[:, -1]
            if decoder is not None:
                logits = decoder.step(last)
            else:
                logits = model(last[:, None], inference_params=params, num_last_tokens=1).logits[:, -1]
            params.seqlen_offset += 1
            token, processed = next_token(logits, sequences)
            if cfg.eos_token_id is not None:
                token = torch.where(done, torch.full_like(token, cfg.eos_token_id), token)
                done |= token == cfg.eos_token_id
            if cfg.output_scores:
                scores.append(processed.clone())
            sequences = torch.cat([sequences, token[:, None]], dim=1)
            steps += 1
        _sync(device)
        t2 = time.perf_counter()
    finally:
        model.train(was_training)

    timings = {
        "prefill_s": t1 - t0,
        "decode_s": t2 - t1,
        "prefill_tokens": float(batch * prompt_len),
        "decode_tokens": float(batch * steps),
        "decode_tokens_per_s": batch * steps / (t2 - t1) if steps and t2 > t1 else float("nan"),
    }
    return GenerationOutput(sequences=sequences, scores=tuple(scores) if cfg.output_scores else None, timings=timings)
