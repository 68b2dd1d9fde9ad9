#!/usr/bin/env bash
# One batched device call: build the CUDA extension in the background while the Triton checks run,
# then run every kernel/model check script; each log goes to $OUT (or OUTDIR) as <name>.log.
#   bash tools/gpu_checks.sh [OUTDIR] [script-name-filter]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/gpu-out}}"; filter="${2:-}"
mkdir -p "$out"
export PYTHONPATH="$PWD/packages/ssm-kernels/src:$PWD/packages/tgmamba-models/src:$PWD/packages/tgmamba-train/src"
export PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-16}"
{ nvidia-smi -L; python3 -c "import torch, triton, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee -a "$out/summary.log"
# compile the CUDA selective scan ahead of time (CPU-bound) while the GPU runs the Triton checks
( t0=$(date +%s); python3 -m ssm_kernels.selective_scan.build --verbose > "$out/build.log" 2>&1; echo "build rc=$? in $(( $(date +%s)-t0 ))s" >> "$out/build.log" ) &
build_pid=$!
run() {  # run NAME TIMEOUT SCRIPT [ARGS...]
  local name=$1 limit=$2; shift 2
  [[ -n "$filter" && "$name" != *$filter* ]] && return 0
  [[ -f "$1" ]] || { echo "skip $name: $1 missing" | tee -a "$out/summary.log"; return 0; }
  local t0=$(date +%s)
  timeout "$limit" python3 "$@" > "$out/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $(( $(date +%s)-t0 ))s" | tee -a "$out/summary.log"
}
B=packages/ssm-kernels/benchmarks
run graph_scan 120 $B/gpu_graph_scan_check.py --quick
run ssd 100 $B/gpu_ssd_check.py
run small_ops 70 $B/gpu_small_ops_check.py --quick
wait $build_pid; tail -3 "$out/build.log" | tee -a "$out/summary.log"
run selective_scan 150 $B/gpu_selective_scan_check.py
run tgmamba 120 packages/tgmamba-models/benchmarks/gpu_tgmamba_check.py
run generation 90 packages/tgmamba-models/benchmarks/gpu_generation_check.py --quick
cat "$out/summary.log"
