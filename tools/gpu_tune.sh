#!/usr/bin/env bash
# Short tuning call: profile the TGMamba block, sweep the graph-scan launch configuration.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/gpu-out}}"; mkdir -p "$out"
export PYTHONPATH="$PWD/packages/ssm-kernels/src:$PWD/packages/tgmamba-models/src" PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache
timeout 60 python3 packages/tgmamba-models/benchmarks/profile_tgmamba.py tusz > "$out/profile_tusz.log" 2>&1; echo "profile rc=$?"
timeout 200 python3 packages/ssm-kernels/benchmarks/gpu_graph_scan_check.py --sweep-only --sweep-cases tusz-fp32,raw-fp32 > "$out/sweep.log" 2>&1; echo "sweep rc=$?"
