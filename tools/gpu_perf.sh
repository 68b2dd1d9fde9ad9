#!/usr/bin/env bash
# Device call for performance work: graph-scan benchmarks, the TGMamba block check, then the CUDA
# selective scan (built in the background meanwhile) and SSD checks. Logs and JSON under OUTDIR.
#   bash tools/gpu_perf.sh [OUTDIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/gpu-out}}"; mkdir -p "$out"
export PYTHONPATH="$PWD/packages/ssm-kernels/src:$PWD/packages/tgmamba-models/src:$PWD/packages/tgmamba-train/src"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TRITON_CACHE_DIR=/tmp/triton-cache
( t0=$(date +%s); python3 -m ssm_kernels.selective_scan.build > "$out/build.log" 2>&1; echo "build rc=$? $(( $(date +%s)-t0 ))s" >> "$out/build.log" ) &
bp=$!
step() { local name=$1 limit=$2; shift 2; local t0=$(date +%s); timeout "$limit" "$@" > "$out/$name.log" 2>&1; echo "$name rc=$? $(( $(date +%s)-t0 ))s" | tee -a "$out/summary.log"; }
step graph_scan_bench 150 python3 -m pytest -c pyproject.toml --rootdir . packages/ssm-kernels/benchmarks/bench_graph_scan.py \
  --benchmark-only -q -p no:cacheprovider --benchmark-json="$out/graph_scan_bench.json" --benchmark-columns=median,rounds
step tgmamba 170 python3 packages/tgmamba-models/benchmarks/gpu_tgmamba_check.py
wait $bp; tail -1 "$out/build.log" | tee -a "$out/summary.log"
step selective_scan 120 python3 packages/ssm-kernels/benchmarks/gpu_selective_scan_check.py --quick
step ssd 100 python3 packages/ssm-kernels/benchmarks/gpu_ssd_check.py
