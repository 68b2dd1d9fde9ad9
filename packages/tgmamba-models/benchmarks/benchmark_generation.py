"""Generation benchmark script (the original README's ``benchmark_generation_mamba_simple.py`` flags).

Same as the console script ``tgmamba-benchmark-generation``; see ``--help``. Examples::

    python benchmarks/benchmark_generation.py --model-name "state-spaces/mamba-130m" \\
        --prompt "My cat wrote all this CUDA code for a new language model and" --topp 0.9 --temperature 0.7 \\
        --repetition-penalty 1.2
    python benchmarks/benchmark_generation.py --random-init-config mamba-130m --batch 64
    python benchmarks/benchmark_generation.py --model-name "EleutherAI/pythia-160m" --batch 64
"""

from __future__ import annotations

import os
import sys

try:
    from tgmamba_models.lm.benchmark import main
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    from tgmamba_models.lm.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
