"""H200 check for the closing note: decoding tokens/s of random-init ~130M Mamba LMs vs Pythia-160m.

Cases (float16, prompt 100 random tokens, 100 generated tokens, greedy, median of 3 after 1 warm-up):
  * mamba-130m  (Mamba-1, d_model 768, 24 layers, vocab 50277): batch 1 and 64, CUDA graph on and off;
  * mamba2-130m (Mamba-2, same sizes):                          batch 1 and 64, CUDA graph on and off;
  * pythia-160m (transformers GPTNeoX from a config, random init, no download): batch 1 and 64.
Every case runs in its own try/except; failures are reported in the table and do not stop the rest.

    PYTHONPATH=packages/ssm-kernels/src:packages/tgmamba-models/src \\
        python packages/tgmamba-models/benchmarks/gpu_generation_check.py [--out results.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

try:
    from tgmamba_models.lm.benchmark import build_parser, run_benchmark
except ImportError:  # source checkout
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "src"))
    sys.path.insert(0, os.path.join(here, "..", "..", "ssm-kernels", "src"))
    from tgmamba_models.lm.benchmark import build_parser, run_benchmark


def _cases():
    for model in ("mamba-130m", "mamba2-130m"):
        for batch in (1, 64):
            for cg in (True, False):
                yield model, batch, cg
    for batch in (1, 64):
        yield "pythia-160m", batch, False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="write all results as JSON here")
    ap.add_argument("--quick", action="store_true", help="prompt 16, 32 tokens, 1 repeat (smoke run)")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    opts = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: this check is meant for the GPU machine", file=sys.stderr)
        return 1
    rows = []
    for model, batch, cg in _cases():
        argv_case = ["--random-init-config", model, "--batch", str(batch), "--dtype", opts.dtype, "--device", "cuda"]
        argv_case += ["--cg" if cg else "--no-cg"]
        if opts.quick:
            argv_case += ["--promptlen", "16", "--genlen", "32", "--repeats", "1"]
        args = build_parser().parse_args(argv_case)
        try:
            r = run_benchmark(args)
            r["status"] = "ok"
        except Exception as e:  # one failing case must not hide the others
            r = {"model": model, "batch": batch, "cg": cg, "status": f"{type(e).__name__}: {e}"}
            traceback.print_exc()
        finally:
            torch.cuda.empty_cache()
        r.setdefault("case", f"{model}-b{batch}-{'cg' if cg else 'eager'}")
        rows.append(r)
        print(json.dumps(r), flush=True)

    print()
    print(f"GPU: {torch.cuda.get_device_name(0)}, dtype {opts.dtype}, torch {torch.__version__}")
    print(
        "| model | params (M) | batch | CUDA graph | prompt processing (ms) | decoding (ms) | decode tokens/s | status |"
    )
    print("|---|---:|---:|:---:|---:|---:|---:|---|")
    for r in rows:
        if r["status"] == "ok":
            print(
                f"| {r['model']} | {r['params_m']:.0f} | {r['batch']} | {'yes' if r['cg'] else 'no'} | "
                f"{r['prefill_ms']:.1f} | {r['decode_ms']:.1f} | {r['decode_tokens_per_s']:.0f} | ok |"
            )
        else:
            print(f"| {r['model']} | | {r['batch']} | {'yes' if r['cg'] else 'no'} | | | | {r['status'][:80]} |")
    if opts.out:
        with open(opts.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    return 0 if all(r["status"] == "ok" for r in rows) else 2


if __name__ == "__main__":
    raise SystemExit(main())
