#!/usr/bin/env bash
# Final device call: every package's benchmarks as pytest-benchmark JSON (committed under
# packages/*/benchmarks/results/), then the GPU tests. Logs under OUTDIR/all.log.
#   bash tools/gpu_final.sh [OUTDIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/gpu-out}}"; mkdir -p "$out"
export PYTHONPATH="$PWD/packages/ssm-kernels/src:$PWD/packages/tgmamba-models/src:$PWD/packages/tgmamba-train/src"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TRITON_CACHE_DIR=/tmp/triton-cache
( python3 -m ssm_kernels.selective_scan.build > "$out/build.log" 2>&1; echo "build rc=$?" >> "$out/build.log" ) &
bp=$!
PY="python3 -m pytest -c pyproject.toml --rootdir . -p no:cacheprovider -q -rfE"
BJ="--benchmark-only --benchmark-columns=median,rounds --benchmark-sort=name"
step() { local name=$1 limit=$2; shift 2; local t0=$(date +%s); echo "=== $name" >> "$out/all.log"; timeout "$limit" "$@" >> "$out/all.log" 2>&1; echo "$name rc=$? $(( $(date +%s)-t0 ))s" | tee -a "$out/summary.log"; }
K=packages/ssm-kernels/benchmarks
step bench-triton 200 $PY $K/bench_graph_scan.py $K/bench_ssd.py $K/bench_norms.py $K/bench_causal_conv1d.py $K/bench_state_update.py $BJ --benchmark-json="$out/ssm-kernels-triton-h200.json"
wait $bp; cat "$out/build.log" >> "$out/all.log"; tail -1 "$out/build.log" | tee -a "$out/summary.log"
step bench-selective-scan 70 $PY $K/bench_selective_scan.py $BJ --benchmark-json="$out/ssm-kernels-selective-scan-h200.json"
step bench-models 80 $PY packages/tgmamba-models/benchmarks $BJ --benchmark-json="$out/tgmamba-models-h200.json"
T=packages/ssm-kernels/tests
step gpu-tests 170 $PY -m "gpu and not slow" $T packages/tgmamba-models/tests
grep -E "^[0-9]+ (passed|failed)|passed|failed" "$out/all.log" | grep -v "^\[" | tail -8 | tee -a "$out/summary.log"
