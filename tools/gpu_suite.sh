#!/usr/bin/env bash
# Run the GPU test suite and the benchmarks on a CUDA machine WITHOUT nox or installs
# (e.g. the lent H200 image: torch, triton, torch_geometric, lightning, pytest-benchmark present).
#   bash tools/gpu_suite.sh OUTDIR [tests|bench|all] [BASELINE_GLOB]
# Writes OUTDIR/<package>-gpu-tests.log and OUTDIR/<package>-bench.json (pytest-benchmark JSON). With
# BASELINE_GLOB (e.g. 'packages/*/benchmarks/results/*-h200.json') the benchmarks are compared with those
# stored reports and fail on a median regression beyond BENCH_THRESHOLD (default 25%).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: gpu_suite.sh OUTDIR [tests|bench|all] [BASELINE_GLOB]}"; what="${2:-all}"; baseline="${3:-}"
mkdir -p "$out"
compare=()
if [[ -n "$baseline" ]]; then
  python3 tools/bench_baseline.py "$out/baseline.json" "$baseline" || exit 2
  compare=(--benchmark-compare="$out/baseline.json" --benchmark-compare-fail="median:${BENCH_THRESHOLD:-25%}")
fi
export PYTHONPATH="$PWD/packages/ssm-kernels/src:$PWD/packages/tgmamba-models/src:$PWD/packages/tgmamba-train/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
rc=0
for pkg in ssm-kernels tgmamba-models tgmamba-train; do
  if [[ "$what" == tests || "$what" == all ]]; then
    python3 -m pytest -c pyproject.toml --rootdir . "packages/$pkg/tests" -m gpu -q -p no:cacheprovider \
      2>&1 | tee "$out/$pkg-gpu-tests.log" || rc=1
  fi
  if [[ "$what" == bench || "$what" == all ]]; then
    python3 -m pytest -c pyproject.toml --rootdir . "packages/$pkg/benchmarks" --benchmark-only -q \
      -p no:cacheprovider --benchmark-json="$out/$pkg-bench.json" "${compare[@]}" 2>&1 | tail -n 60 || rc=1
  fi
done
exit $rc
