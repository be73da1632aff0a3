#!/usr/bin/env bash
# GPU check for the kernels: gpu-tier tests at LLaDA-8B shapes, then every kernel benchmark.
# Run from the repository root:  PYTHONPATH=. bash benchmarks/gpu_check.sh
# Everything (log, junit xml, per-benchmark CSV/markdown, summary.md) goes to "${OUT:-benchmarks/results}".
# One failing step does not stop the others; the exit status is 1 if any step failed.
# Budget: about 6 minutes on an H200 (each step has its own timeout).
set -u

OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
SUMMARY="$OUT_DIR/summary.md"
export PYTHONPATH="${PYTHONPATH:-.}"
export BENCH_OUT="$OUT_DIR"
PY="${PYTHON:-python}"
: >"$LOG"
STEPS=()
failed=0

run_step() {  # run_step NAME TIMEOUT_S CMD...
    local name="$1" limit="$2"
    shift 2
    local start rc
    start=$(date +%s)
    echo "=== [$name] $* (timeout ${limit}s)" | tee -a "$LOG"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    local secs=$(( $(date +%s) - start ))
    echo "=== [$name] exit $rc after ${secs}s" | tee -a "$LOG"
    if [ "$rc" -ne 0 ]; then failed=1; fi
    STEPS+=("| $name | $rc | $secs |")
}

{
    echo "gpu_check started $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(pwd), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi unavailable"
    "$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" 2>&1
} | tee -a "$LOG"

# TRITON_INTERPRET must be unset so that the kernels compile for the GPU.
unset TRITON_INTERPRET

run_step "pytest -m gpu" 180 "$PY" -m pytest -m gpu tests/kernels -q -p no:cacheprovider \
    --junitxml="$OUT_DIR/gpu_tests.xml"
for bench in benchmarks/kernels/bench_*.py; do
    run_step "$(basename "$bench" .py)" 90 "$PY" "$bench"
done
# The small interpreter-tier tests, compiled for the GPU this time (cheap; extra coverage).
run_step "pytest -m interpreter (compiled)" 90 "$PY" -m pytest -m interpreter tests/kernels -q \
    -p no:cacheprovider --junitxml="$OUT_DIR/interpreter_tier_on_gpu.xml"

{
    echo "# Kernel GPU check"
    echo
    echo "Device: $("$PY" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')" 2>/dev/null)"
    echo "Date: $(date -u +%Y-%m-%dT%H:%M:%SZ); git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo "| step | exit | seconds |"
    echo "|---|---|---|"
    printf '%s\n' "${STEPS[@]}"
    echo
    for md in "$OUT_DIR"/bench_*.md; do
        [ -f "$md" ] && { cat "$md"; echo; }
    done
} >"$SUMMARY"
echo "summary: $SUMMARY" | tee -a "$LOG"
exit "$failed"
