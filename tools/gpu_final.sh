#!/usr/bin/env bash
# Final device call: GPU tests of every package, then every package's benchmarks as pytest-benchmark
# JSON (committed under packages/*/benchmarks/results/). Logs and JSON under OUTDIR.
#   bash tools/gpu_final.sh [OUTDIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/gpu-out}}"; mkdir -p "$out"
export PYTHONPATH="$PWD/packages/ssm-kernels/src:$PWD/packages/tgmamba-models/src:$PWD/packages/tgmamba-train/src"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TRITON_CACHE_DIR=/tmp/triton-cache SSM_KERNELS_AUTOTUNE=0
( python3 -m ssm_kernels.selective_scan.build > "$out/build.log" 2>&1; echo "build rc=$?" >> "$out/build.log" ) &
bp=$!
PY="python3 -m pytest -c pyproject.toml --rootdir . -p no:cacheprovider -q -rfE"
step() { local name=$1 limit=$2; shift 2; local t0=$(date +%s); timeout "$limit" "$@" >> "$out/$name.log" 2>&1; echo "$name rc=$? $(( $(date +%s)-t0 ))s" | tee -a "$out/summary.log"; }
K=packages/ssm-kernels
step gpu-tests 230 $PY -m "gpu and not slow" $K/tests/graph_scan $K/tests/ssd $K/tests/norms $K/tests/causal_conv1d $K/tests/state_update packages/tgmamba-models/tests
wait $bp; tail -1 "$out/build.log" | tee -a "$out/summary.log"
step gpu-tests 70 $PY -m "gpu and not slow" $K/tests/selective_scan
unset SSM_KERNELS_AUTOTUNE
BJ="--benchmark-only --benchmark-columns=median,rounds --benchmark-sort=name"
step bench-ssm-kernels 200 $PY $K/benchmarks $BJ --benchmark-json="$out/ssm-kernels-h200.json"
step bench-tgmamba-models 80 $PY packages/tgmamba-models/benchmarks $BJ --benchmark-json="$out/tgmamba-models-h200.json"
grep -E "passed|failed|error" "$out/gpu-tests.log" | tail -5 | tee -a "$out/summary.log"
