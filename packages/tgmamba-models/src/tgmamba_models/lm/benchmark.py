"""``tgmamba-benchmark-generation``: generation latency/throughput of a Mamba LM (or a transformers LM).

Examples::

    tgmamba-benchmark-generation --model-name state-spaces/mamba-130m \\
        --prompt "My cat wrote all this CUDA code for a new language model and" --topp 0.9 --temperature 0.7 \\
        --repetition-penalty 1.2
    tgmamba-benchmark-generation --random-init-config mamba-130m --batch 64 --cg
    tgmamba-benchmark-generation --model-name ./my-mamba-folder --promptlen 100 --genlen 100
    tgmamba-benchmark-generation --model-name EleutherAI/pythia-160m --batch 64      # needs transformers

It reports the prompt processing time (the prompt's forward pass and the first new token), the decoding
time of the remaining tokens and the decoding throughput (generated tokens per second over the batch),
separately, as the median over ``--repeats`` runs after ``--warmup`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["ByteTokenizer", "RANDOM_INIT_CONFIGS", "build_parser", "main", "run_benchmark"]

# randomly initialised models of about the size of the public 130M checkpoints, and Pythia-160m (GPTNeoX's
# defaults supply the rest: rotary on 25% of the head dims, parallel residual)
RANDOM_INIT_CONFIGS: dict[str, dict[str, Any]] = {
    "mamba-130m": dict(d_model=768, n_layer=24, vocab_size=50277, ssm_cfg={}, rms_norm=True, residual_in_fp32=True,
                       fused_add_norm=True, pad_vocab_size_multiple=8),
    "mamba2-130m": dict(d_model=768, n_layer=24, vocab_size=50277, ssm_cfg={"layer": "Mamba2"}, rms_norm=True,
                        residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=16),
    "pythia-160m": dict(transformers="GPTNeoXConfig", vocab_size=50304, hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072, max_position_embeddings=2048),
}  # fmt: skip

_MAMBA_TOKENIZER = "EleutherAI/gpt-neox-20b"  # the tokenizer of the state-spaces checkpoints


class ByteTokenizer:
    """Offline fallback tokenizer: UTF-8 bytes are the token ids (0-255)."""

    eos_token_id = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tgmamba-benchmark-generation",
        description="Benchmark prompt processing and decoding speed of a Mamba (or transformers) language model.",
    )
    p.add_argument("--model-name", default="state-spaces/mamba-130m",
                   help="local model folder (config.json + weights) or Hugging Face Hub id; ids without 'mamba' "
                        "are loaded with transformers")  # fmt: skip
    p.add_argument("--prompt", default=None, help="text prompt (default: random token ids of --promptlen)")
    p.add_argument("--promptlen", type=int, default=100, help="length of the random prompt")
    p.add_argument("--genlen", type=int, default=100, help="number of tokens to generate")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--topk", type=int, default=1, help="top-k (1: greedy, 0: disabled)")
    p.add_argument("--topp", type=float, default=1.0, help="nucleus mass (1.0: disabled)")
    p.add_argument("--minp", type=float, default=0.0, help="min-p (0: disabled)")
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=["float16", "bfloat16", "float32"],
                   help="default: float16 on CUDA, float32 on CPU")  # fmt: skip
    cg = p.add_mutually_exclusive_group()
    cg.add_argument("--cg", dest="cg", action="store_true", default=None, help="CUDA-graph decoding (CUDA default)")
    cg.add_argument("--no-cg", dest="cg", action="store_false", help="eager decoding")
    p.add_argument("--random-init-config", default=None,
                   help=f"randomly initialised model instead of --model-name: one of {sorted(RANDOM_INIT_CONFIGS)} "
                        "or a path to a MambaConfig JSON file")  # fmt: skip
    p.add_argument("--tokenizer", default=None, help="tokenizer name/folder for --prompt (default: by model)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (compilation, graph capture)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    return p


# ---------------------------------------------------------------------------------------------- loading
def _is_mamba_folder(path: str) -> bool:
    cfg = os.path.join(path, "config.json")
    if not os.path.isfile(cfg):
        return False
    with open(cfg, encoding="utf-8") as f:
        d = json.load(f)
    return "d_model" in d and "n_layer" in d


def _load_model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> tuple[Any, str, str]:
    """Return (model, kind, label) with kind 'mamba' or 'transformers'."""
    from .config import MambaConfig
    from .model import MambaLMHeadModel

    if args.random_init_config is not None:
        spec = args.random_init_config
        if spec in RANDOM_INIT_CONFIGS:
            cfg = dict(RANDOM_INIT_CONFIGS[spec])
            label = f"{spec} (random init)"
        else:
            if not os.path.isfile(spec):
                raise SystemExit(f"--random-init-config: {spec!r} is neither {sorted(RANDOM_INIT_CONFIGS)} nor a file")
            with open(spec, encoding="utf-8") as f:
                cfg = json.load(f)
            label = f"{os.path.basename(spec)} (random init)"
        if "transformers" in cfg:
            import transformers

            cls = getattr(transformers, cfg.pop("transformers"))
            hf_cfg = cls(**cfg)
            torch.manual_seed(args.seed)
            model = transformers.AutoModelForCausalLM.from_config(hf_cfg).to(device=device, dtype=dtype)
            return model.eval(), "transformers", label
        torch.manual_seed(args.seed)
        model = MambaLMHeadModel(MambaConfig.from_dict(cfg), device=device, dtype=dtype)
        return model.eval(), "mamba", label
    name = args.model_name
    if (os.path.isdir(name) and _is_mamba_folder(name)) or (not os.path.isdir(name) and "mamba" in name.lower()):
        return MambaLMHeadModel.from_pretrained(name, device=device, dtype=dtype).eval(), "mamba", name
    try:
        import transformers
    except ImportError as e:
        raise SystemExit(f"{name!r} is not a Mamba model folder/id and transformers is not installed") from e
    model = transformers.AutoModelForCausalLM.from_pretrained(name, dtype=dtype).to(device)
    return model.eval(), "transformers", name


def _load_tokenizer(args: argparse.Namespace, kind: str):
    name = args.tokenizer
    if name is None:
        name = args.model_name if kind == "transformers" and args.random_init_config is None else _MAMBA_TOKENIZER
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name)
    except Exception as e:  # not installed, offline, unknown name: fall back to bytes
        print(f"[tokenizer] {name!r} unavailable ({type(e).__name__}); using the byte-level fallback", file=sys.stderr)
        return ByteTokenizer()


# ---------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_mamba(model, input_ids, args, device) -> tuple[dict[str, float], torch.Tensor]:
    from .generation import generate

    out = generate(
        model, input_ids, max_new_tokens=args.genlen, top_k=args.topk, top_p=args.topp, min_p=args.minp,
        temperature=args.temperature, repetition_penalty=args.repetition_penalty, cg=bool(args.cg), seed=args.seed,
    )  # fmt: skip
    return dict(out.timings), out.sequences


def _run_transformers(model, input_ids, args, device) -> tuple[dict[str, float], torch.Tensor]:
    greedy = args.topk == 1 or args.temperature == 0
    kw: dict[str, Any] = dict(do_sample=not greedy, repetition_penalty=args.repetition_penalty)
    if not greedy:
        kw.update(temperature=args.temperature, top_k=args.topk, top_p=args.topp)
        if args.minp > 0:
            kw["min_p"] = args.minp
    pad = getattr(model.generation_config, "pad_token_id", None)
    if pad is None:
        pad = getattr(model.generation_config, "eos_token_id", None) or 0
    kw["pad_token_id"] = pad
    attn = torch.ones_like(input_ids)

    def timed(n: int):
        _sync(device)
        t = time.perf_counter()
        with torch.no_grad():
            seq = model.generate(input_ids, attention_mask=attn, max_new_tokens=n, min_new_tokens=n, **kw)
        _sync(device)
        return time.perf_counter() - t, seq

    t_first, _ = timed(1)
    t_total, seq = timed(args.genlen)
    batch = input_ids.shape[0]
    decode_s = max(t_total - t_first, 1e-9)
    steps = args.genlen - 1
    return {
        "prefill_s": t_first,
        "decode_s": decode_s,
        "prefill_tokens": float(batch * input_ids.shape[1]),
        "decode_tokens": float(batch * steps),
        "decode_tokens_per_s": batch * steps / decode_s if steps > 0 else float("nan"),
    }, seq


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Load, warm up and time generation; return a dict of results (medians)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, args.dtype)
    if args.cg is None:
        args.cg = device.type == "cuda"
    for name in ("promptlen", "genlen", "batch", "repeats"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1")

    model, kind, label = _load_model(args, device, dtype)
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    vocab = model.config.vocab_size
    tokenizer = None
    if args.prompt is not None:
        tokenizer = _load_tokenizer(args, kind)
        ids = tokenizer.encode(args.prompt)
        input_ids = torch.tensor([ids] * args.batch, dtype=torch.long, device=device)
    else:
        gen = torch.Generator().manual_seed(args.seed)
        input_ids = torch.randint(1, min(1000, vocab), (args.batch, args.promptlen), generator=gen).to(device)

    runner = _run_mamba if kind == "mamba" else _run_transformers
    for _ in range(args.warmup):
        runner(model, input_ids, args, device)
    runs = [runner(model, input_ids, args, device) for _ in range(args.repeats)]
    timings = [r[0] for r in runs]
    sequences = runs[-1][1]
    med = {k: statistics.median(t[k] for t in timings) for k in timings[0]}
    result = {
        "model": label,
        "kind": kind,
        "params_m": n_params / 1e6,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "batch": args.batch,
        "promptlen": int(input_ids.shape[1]),
        "genlen": args.genlen,
        "cg": bool(args.cg) and kind == "mamba" and device.type == "cuda",
        "prefill_ms": med["prefill_s"] * 1e3,
        "decode_ms": med["decode_s"] * 1e3,
        "total_ms": (med["prefill_s"] + med["decode_s"]) * 1e3,
        "decode_tokens_per_s": med["decode_tokens_per_s"],
        "prefill_tokens_per_s": med["prefill_tokens"] / med["prefill_s"] if med["prefill_s"] > 0 else float("nan"),
    }
    if tokenizer is not None:
        result["completion"] = tokenizer.decode(sequences[0].tolist())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    r = run_benchmark(args)
    print(f"Model: {r['model']} ({r['kind']}, {r['params_m']:.1f}M parameters) on {r['device']}, {r['dtype']}")
    print(f"Batch: {r['batch']}, prompt length: {r['promptlen']}, generation length: {r['genlen']}, "
          f"CUDA graph: {r['cg']}")  # fmt: skip
    if "completion" in r:
        print(f"Completion (first sequence): {r['completion']!r}")
    print(f"Prompt processing: {r['prefill_ms']:.2f} ms ({r['prefill_tokens_per_s']:.0f} prompt tokens/s)")
    print(f"Decoding: {r['decode_ms']:.2f} ms ({r['decode_tokens_per_s']:.1f} tokens/s)")
    print(f"{r['model']} prompt processing + decoding time: {r['total_ms']:.0f} ms")
    if args.json:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
