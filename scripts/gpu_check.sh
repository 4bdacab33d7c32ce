#!/usr/bin/env bash
# The GPU check (docs/gpu_check.md), in two device calls of at most 5 minutes each, in
# priority order, so a session that gets only the first still brings figures back:
#   bash scripts/gpu_check.sh 1 [OUTDIR] [--llama cpu|cuda|none] [--rehearse]
#   bash scripts/gpu_check.sh 2 [OUTDIR] [--rehearse]
# OUTDIR defaults to $OUT (the device machine's folder that comes back). Each step logs to
# OUTDIR/callN/NN-name.log; OUTDIR/callN/summary.txt has one line per step (rc, seconds,
# its share; 124 = cut at its share, said so), the pytest result lines, and the pipeline
# runs' stage lines. A failed step does not stop the next.
#   call 1: versions; llama (portable CPU llama.cpp, for export and the GGUF eval);
#           r1 (the R1 rehearsal through Unsloth: SFT, 1 DPO step, 1 GRPO step of 2 replies,
#           merge, export, eval); smollm2 (the embedded SmolLM2 pipeline through Unsloth)
#   call 2: versions; sigterm (SIGTERM + resume); qlora (PEFT QLoRA, one PEFT DPO step);
#           bench (bench/gpu_scale.py --sizes 14b --steps 4)
# Every step runs under `timeout` until the end of its cumulative share of the budget
# (time an earlier step leaves unused rolls on); a step with under 5 s left is not started
# and the summary says so. --rehearse (a CPU, CUDA_VISIBLE_DEVICES=): builds nothing, runs
# the same pytest selections for real (the gpu tests skip, a missing llama.cpp fails),
# checks the bench's flags and the llama.cpp configure line, with 4x the shares.
# Environment: PYTHON (python3), GPU_CHECK_BUDGET_S (290), GPU_CHECK_SHARES (name=s,...),
# GPU_CHECK_BENCH_STEPS (4).
set -uo pipefail  # not -e: a failed step is recorded and the next one runs

usage() { echo "usage: bash scripts/gpu_check.sh 1|2 [OUTDIR] [--llama cpu|cuda|none] [--rehearse]" >&2; exit 2; }
[ $# -ge 1 ] || usage
CALL=$1; shift
case $CALL in 1|2) ;; *) echo "gpu_check: the first argument is the call, 1 or 2, not '$CALL'" >&2; exit 2 ;; esac
DIR=${OUT:-}
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then DIR=$1; shift; fi
[ -n "$DIR" ] || { echo "gpu_check: no OUTDIR given and \$OUT is not set" >&2; exit 2; }
LLAMA=cpu; REHEARSE=0
while [ $# -gt 0 ]; do
  case $1 in
    --llama) LLAMA=${2:-}; shift $(($# > 1 ? 2 : 1)) ;;
    --rehearse) REHEARSE=1; shift ;;
    *) usage ;;
  esac
done
case $LLAMA in cpu|cuda|none) ;; *) echo "gpu_check: --llama must be cpu, cuda or none, not '$LLAMA'" >&2; exit 2 ;; esac
[ -f scripts/gpu_check.sh ] || { echo "gpu_check: run it from the project root" >&2; exit 2; }

export PYTHON=${PYTHON:-python3} REHEARSE LLAMA
# FINTUNE_GPU_CHECK: tests/conftest.py fails, not skips, a selected test without llama.cpp
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 FINTUNE_GPU_CHECK=1
# what .gpu/a/stage.sh and .gpu/b/finish_project.sh unpacked (wheels for the GPU machine's
# Python: a rehearsal keeps its own)
[ -d /tmp/site ] && [ "$REHEARSE" = 0 ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
[ -d /tmp/r1-tokenizer ] && export FINTUNE_R1_TOKENIZER_DIR=${FINTUNE_R1_TOKENIZER_DIR:-/tmp/r1-tokenizer}
command -v nvcc > /dev/null 2>&1 || { [ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH; }
export BENCH_ARGS="--sizes 14b --backends unsloth,peft --steps ${GPU_CHECK_BENCH_STEPS:-4}"
BUDGET=${GPU_CHECK_BUDGET_S:-290}

# the tests of each pytest step, by node id (a renamed test fails the rehearsal)
G=tests/test_gpu.py
export TESTS_r1="$G::test_r1_rehearsal_through_unsloth_with_dpo_and_grpo_completes_every_stage
$G::test_r1_rehearsal_grpo_step_ran_through_unsloth
$G::test_r1_rehearsal_merge_checks_its_logits_and_export_keeps_the_r1_tokenizer
$G::test_r1_rehearsal_eval_ran_the_profiles_models_on_the_gpu"
export TESTS_smollm2="$G::test_unsloth_pipeline_completes_every_stage
$G::test_merge_after_unsloth_training_checks_its_logits
$G::test_eval_ran_hf_models_on_cuda_and_three_ggufs_exist"
export TESTS_sigterm="$G::test_sigterm_on_the_gpu_saves_and_resume_finishes"
export TESTS_qlora="$G::test_peft_qlora_backend_trains_a_few_steps_on_the_gpu
$G::test_one_dpo_step_on_the_gpu"

# steps and their shares (seconds; docs/gpu_check.md has the estimates behind them)
if [ "$CALL" = 1 ]; then
  STEPS=(versions llama r1 smollm2); declare -A SHARE=([versions]=15 [llama]=70 [r1]=125 [smollm2]=80)
else
  STEPS=(versions sigterm qlora bench)
  declare -A SHARE=([versions]=10 [sigterm]=95 [qlora]=55 [bench]=130)
fi
shares=${GPU_CHECK_SHARES:-}
for kv in ${shares//,/ }; do
  name=${kv%%=*}
  [[ "$kv" =~ ^[a-z0-9]+=[0-9]+$ ]] && [ -n "${SHARE[$name]+x}" ] \
    || { echo "gpu_check: GPU_CHECK_SHARES: bad entry '$kv' for call $CALL (${STEPS[*]})" >&2; exit 2; }
  SHARE[$name]=${kv#*=}
done
# a rehearsal checks commands, not time, on a CPU of a few shared cores: 4x the time
if [ "$REHEARSE" = 1 ]; then
  BUDGET=$((BUDGET * 4)); for k in "${!SHARE[@]}"; do SHARE[$k]=$((SHARE[$k] * 4)); done
fi
mkdir -p "$DIR/call$CALL/runs"
OUTDIR=$(cd "$DIR/call$CALL" && pwd)
export FINTUNE_GPU_LOG_DIR=$OUTDIR/runs  # tests/test_gpu.py keeps its pipeline runs' logs here
SUMMARY=$OUTDIR/summary.txt
: > "$SUMMARY"

has_flags() {  # has_flags SCRIPT ARGS...: SCRIPT --help lists every --flag in ARGS
  local help
  help=$("$PYTHON" "$1" --help) || { echo "rehearse: $1 --help failed"; return 1; }
  shift
  for a in "$@"; do
    [[ "$a" == --* ]] || continue
    grep -q -- "${a%%=*}" <<< "$help" || { echo "rehearse: ${a%%=*} is not a flag of this script"; return 1; }
    echo "rehearse: ${a%%=*} accepted"
  done
}

step_versions() {
  local rc=0
  if [ "$REHEARSE" = 1 ] && ! command -v nvidia-smi > /dev/null; then
    echo "rehearse: nvidia-smi not on this machine"
  else
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv || rc=$?
  fi
  "$PYTHON" - <<'PY' || rc=$?
import importlib.metadata as md, platform, sys
print("python", platform.python_version(), sys.executable)
# versions from the metadata: importing unsloth here would start CUDA in this process
for name in ("torch", "transformers", "trl", "peft", "unsloth", "unsloth_zoo", "bitsandbytes", "accelerate",
             "datasets", "vllm"):
    try:
        print(f"{name:13s}", md.version(name))
    except md.PackageNotFoundError:
        print(f"{name:13s} not installed")
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PY
  return $rc
}

step_llama() {
  local env=(LLAMA_CPP_PORTABLE=1)
  case $LLAMA in
    none) ls llama.cpp/build/bin && cat llama.cpp/.fintune-build; return ;;
    cpu) env+=(LLAMA_CPP_CUDA=0) ;;
    cuda) env+=(LLAMA_CPP_CUDA=1) ;;
  esac
  [ -f llama.cpp/convert_hf_to_gguf.py ] || { echo "llama.cpp source missing: run bash .gpu/b/finish_project.sh"; return 1; }
  cmake --version | head -1
  if [ "$REHEARSE" = 1 ]; then
    env "${env[@]}" LLAMA_CPP_DRY_RUN=1 bash scripts/setup_llama_cpp.sh llama.cpp "$PYTHON"
    return
  fi
  [ "$LLAMA" = cpu ] || nvcc --version | tail -1
  local t=$SECONDS
  env "${env[@]}" bash scripts/setup_llama_cpp.sh llama.cpp "$PYTHON" || { tail -40 llama.cpp/build.log; return 1; }
  echo "llama.cpp ($LLAMA) built in $((SECONDS - t))s: $(cat llama.cpp/.fintune-build)"
}

pytest_step() {  # pytest_step NAME: the step's tests, -v; exit 5 (none collected) is a failure
  local var=TESTS_$1
  # shellcheck disable=SC2086  # one node id a line
  "$PYTHON" -m pytest -v -p no:cacheprovider -m gpu ${!var}
}
step_r1() { pytest_step r1; }
step_smollm2() { pytest_step smollm2; }
step_sigterm() { pytest_step sigterm; }
step_qlora() { pytest_step qlora; }

step_bench() {
  # shellcheck disable=SC2086  # BENCH_ARGS is a word list
  if [ "$REHEARSE" = 1 ]; then has_flags bench/gpu_scale.py $BENCH_ARGS; return; fi
  "$PYTHON" bench/gpu_scale.py $BENCH_ARGS
}
export -f has_flags pytest_step step_versions step_llama step_r1 step_smollm2 step_sigterm step_qlora \
  step_bench

START=$SECONDS; planned=0; n=0
for s in "${STEPS[@]}"; do
  n=$((n + 1))
  planned=$((planned + SHARE[$s]))
  log=$(printf '%s/%02d-%s.log' "$OUTDIR" "$n" "$s")
  limit=$((START + planned - SECONDS))  # unused time of earlier steps rolls on
  [ $((START + BUDGET - SECONDS)) -lt "$limit" ] && limit=$((START + BUDGET - SECONDS))
  t=$SECONDS; note=""
  if [ "$limit" -lt 5 ]; then
    note="NOT RUN: ${limit}s left of its share (${SHARE[$s]}s) and the ${BUDGET}s budget"
    echo "$note" > "$log"; rc=skipped
  else
    echo "# call $CALL step $s, timeout ${limit}s (share ${SHARE[$s]}s), rehearse=$REHEARSE llama=$LLAMA," \
      "$(date -u +%FT%TZ)" > "$log"
    timeout -k 10 "$limit" bash -c "step_$s" >> "$log" 2>&1; rc=$?
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      note="TIMED OUT: did not finish in ${limit}s (share ${SHARE[$s]}s); what it printed is in $(basename "$log")"
      echo "# $note" >> "$log"
    fi
  fi
  printf '%02d-%-8s rc=%-7s %4ds (timeout %ds) %s\n' "$n" "$s" "$rc" $((SECONDS - t)) "$limit" "$note" \
    | tee -a "$SUMMARY"
done
echo "total $((SECONDS - START))s of ${BUDGET}s (call $CALL)" | tee -a "$SUMMARY"
# pytest's verdict on each test, then the lines the closing note needs from the pipeline runs
grep -h -E "^tests/.*(PASSED|FAILED|SKIPPED|ERROR|XFAIL)" "$OUTDIR"/*.log >> "$SUMMARY" 2>/dev/null
if ls "$OUTDIR"/runs/*.log > /dev/null 2>&1; then
  # formats: fintune/pipeline.py run_stage, train/trainer.py, train/grpo.py, eval/runner.py HFRunner
  grep -H -E "stage +[a-z]+ +done in|trained tokens/s|grpo: [0-9]+ steps in|eval: [^ ]+ on [^ ]+" \
    "$OUTDIR"/runs/*.log >> "$SUMMARY"
fi
grep -q -E "^[0-9]{2}-.* rc=([^0 ]|0[0-9])" "$SUMMARY" && exit 1
exit 0
