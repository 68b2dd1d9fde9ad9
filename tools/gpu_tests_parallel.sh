#!/usr/bin/env bash
# Run the whole `-m gpu` test suite on one CUDA machine in four concurrent pytest processes (Triton JIT
# compiles are CPU-bound, the GPU has room), then the small-op benchmarks. No nox, no installs.
#   bash tools/gpu_tests_parallel.sh OUTDIR [tests|bench|all]
# Writes OUTDIR/tests-*.log, OUTDIR/summary.log and OUTDIR/<name>-bench.json.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: gpu_tests_parallel.sh OUTDIR [tests|bench|all]}"; what="${2:-all}"
mkdir -p "$out"
export PYTHONPATH="$PWD/packages/ssm-kernels/src:$PWD/packages/tgmamba-models/src:$PWD/packages/tgmamba-train/src"
export PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-16}" SSM_KERNELS_AUTOTUNE="${SSM_KERNELS_AUTOTUNE:-0}"
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/triton-cache}"
K=packages/ssm-kernels/tests M=packages/tgmamba-models/tests
pt() {  # pt NAME PATHS...
  local name=$1; shift; local t0=$(date +%s)
  python3 -m pytest -c pyproject.toml --rootdir . -m gpu -q -p no:cacheprovider "$@" > "$out/tests-$name.log" 2>&1
  echo "tests-$name rc=$? $(( $(date +%s)-t0 ))s :: $(tail -n 1 "$out/tests-$name.log")" | tee -a "$out/summary.log"
}
if [[ "$what" == tests || "$what" == all ]]; then
  ( python3 -m ssm_kernels.selective_scan.build > "$out/build.log" 2>&1; echo "build rc=$?" >> "$out/summary.log"
    pt selective_scan $K/selective_scan; pt models $M ) &
  pt graph_scan $K/graph_scan &
  pt ssd $K/ssd &
  pt small_ops $K/norms $K/state_update $K/causal_conv1d &
  wait
fi
if [[ "$what" == bench || "$what" == all ]]; then
  for b in norms causal_conv1d state_update; do
    python3 -m pytest -c pyproject.toml --rootdir . packages/ssm-kernels/benchmarks/bench_$b.py --benchmark-only -q \
      -p no:cacheprovider --benchmark-json="$out/$b-bench.json" > "$out/bench-$b.log" 2>&1
    echo "bench-$b rc=$? :: $(tail -n 1 "$out/bench-$b.log")" | tee -a "$out/summary.log"
  done
fi
