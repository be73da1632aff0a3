#!/usr/bin/env bash
# GPU check: gpu-tier tests (kernels at LLaDA-8B shapes, engine on CUDA), every kernel benchmark,
# the offline engine at LLaDA-8B shapes (random weights) in every cache mode with Triton kernels (and a
# torch-kernel comparison), with and without CUDA graphs and against a plain-torch CUDA-graph step,
# step profiles, the kernel and engine goals judged, and a sweep of attention tiles.
# Run from the repository root:  PYTHONPATH=. bash benchmarks/gpu_check.sh
# Everything (log, junit xml, per-benchmark CSV/markdown, summary.md) goes to "${RESULTS_DIR:-benchmarks/results}".
# One failing step does not stop the others; the exit status is 1 if any step failed.
# Budget: about 8 minutes on an H200 (each step has its own timeout; steps that would start after
# GPU_CHECK_BUDGET seconds, default 500, are skipped and listed as such). When $OUT is set (the
# device tool), everything is also packed into $OUT/gpu_results.tgz, since few files come back.
set -u
T0=$(date +%s)
BUDGET="${GPU_CHECK_BUDGET:-500}"

OUT_DIR="${RESULTS_DIR:-benchmarks/results}"
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
    if [ $(( start - T0 )) -gt "$BUDGET" ]; then
        echo "=== [$name] skipped: past the ${BUDGET}s budget" | tee -a "$LOG"
        STEPS+=("| $name | skipped | 0 |")
        return
    fi
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
run_step "pytest -m gpu (engine, models)" 150 "$PY" -m pytest -m gpu tests/engine tests/models -q \
    -p no:cacheprovider --junitxml="$OUT_DIR/gpu_engine_tests.xml"
for bench in attention sampling_head rms_norm swiglu rotary moe; do
    run_step "bench_$bench" 90 "$PY" "benchmarks/kernels/bench_$bench.py"
done
# The engine at LLaDA-8B shapes (random weights, bf16): cache none/prefix/dual, batch 1/8/32, one and
# four tokens per step, judged by benchmarks/engine_goals.py. The goal rows (dual, one token per step,
# batch 1 and 32) run first. The exact mode at one token per step runs last and at batch 1 and 8
# only: a full-canvas step at batch 32 (32 x 320 positions) is ~0.25 s, about 64 s a run.
ENGINE=(benchmarks/offline.py --device cuda --llada-8b --prompt-len 64 --max-tokens 256
    --block-length 32 --repeats 1 --out "$OUT_DIR")
# The dual cache with the engine's CUDA graphs off and on, interleaved in one run.
run_step "engine LLaDA-8B: dual without/with CUDA graphs; 1 token/step" 200 "$PY" "${ENGINE[@]}" \
    --kernels triton --cache dual --cuda-graphs compare --batches 1,32,8 --tag tps1_cached
run_step "engine LLaDA-8B: none, prefix, dual; 4 tokens/step" 150 "$PY" "${ENGINE[@]}" --kernels triton \
    --cache none,prefix,dual --batches 1,8,32 --tokens-per-step 4 --tag tps4
# The engine's step against a plain-torch CUDA-graph step of the same shapes (the 1.3x goal at batch 32).
run_step "engine vs plain-torch CUDA graphs, LLaDA-8B" 150 "$PY" benchmarks/graph_baseline.py --device cuda \
    --llada-8b --batches 32,1 --out "$OUT_DIR"
run_step "engine LLaDA-8B: none; 1 token/step" 120 "$PY" "${ENGINE[@]}" --kernels triton \
    --cache none --batches 1,8 --tag tps1_exact
run_step "engine LLaDA-8B: torch kernels" 90 "$PY" "${ENGINE[@]}" --kernels torch \
    --cache none,dual --batches 1 --tag tps1
# Where a cached step's time goes: host vs kernel time, launches, syncs (torch profiler), batch 1 and 32,
# with the engine's CUDA graphs; batch 1 also without them.
for b in 1 32; do
    run_step "profile dual step, batch $b" 90 "$PY" benchmarks/profile_step.py --device cuda --llada-8b \
        --kernels triton --cache dual --batch "$b" --cuda-graphs on --out "$OUT_DIR"
done
run_step "profile dual step, batch 1, no CUDA graphs" 90 "$PY" benchmarks/profile_step.py --device cuda \
    --llada-8b --kernels triton --cache dual --batch 1 --cuda-graphs off --out "$OUT_DIR"
# Every other family's tiny release-layout checkpoint through the engine with the Triton kernels (the
# shapes the interpreter tests cover; first GPU run of the MoE, Dream, SMDM and RADD networks).
for family in llada_moe dream smdm radd; do
    run_step "engine $family (tiny, triton)" 60 "$PY" benchmarks/offline.py --family "$family" \
        --device cuda --kernels triton --cache none,dual --batches 1,8 --repeats 1 --out "$OUT_DIR" --tag gpu
done
# Other attention tiles and launch options, to choose launch_config from measurements.
run_step "bench_attention --sweep" 150 "$PY" benchmarks/kernels/bench_attention.py --sweep
# The small interpreter-tier tests, compiled for the GPU this time (cheap; extra coverage).
run_step "pytest -m interpreter (compiled)" 90 "$PY" -m pytest -m interpreter tests/kernels -q \
    -p no:cacheprovider --junitxml="$OUT_DIR/interpreter_tier_on_gpu.xml"

# Goals verdicts from the benchmark CSVs and the engine's JSON (cheap: run even past the budget).
"$PY" benchmarks/kernels/goals.py "$OUT_DIR" >>"$LOG" 2>&1 || echo "goals.py failed" | tee -a "$LOG"
"$PY" benchmarks/engine_goals.py "$OUT_DIR" >>"$LOG" 2>&1 || echo "engine_goals.py failed" | tee -a "$LOG"

{
    echo "# GPU check (kernels and engine)"
    echo
    echo "Device: $("$PY" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')" 2>/dev/null)"
    echo "Date: $(date -u +%Y-%m-%dT%H:%M:%SZ); git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo "| step | exit | seconds |"
    echo "|---|---|---|"
    printf '%s\n' "${STEPS[@]}"
    echo
    for md in "$OUT_DIR/goals.md" "$OUT_DIR/engine_goals.md" "$OUT_DIR"/bench_*.md \
        "$OUT_DIR/graph_baseline_gpu.md" "$OUT_DIR"/profile_step_*.md; do
        [ -f "$md" ] && { cat "$md"; echo; }
    done
} >"$SUMMARY"
echo "summary: $SUMMARY" | tee -a "$LOG"
if [ -n "${OUT:-}" ] && [ "$OUT_DIR" != "$OUT" ]; then
    tar czf "$OUT/gpu_results.tgz" -C "$OUT_DIR" . && cp "$SUMMARY" "$LOG" "$OUT/"
fi
exit "$failed"
