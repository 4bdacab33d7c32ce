#!/usr/bin/env bash
# The GPU check (issue 33; docs/gpu_check.md): on the GPU machine, after the payload
# (scripts/gpu_payload.sh, .gpu/b/finish_project.sh), from the project root:
#   bash scripts/gpu_check.sh OUTDIR [--llama cpu|cuda|none] [--steps LIST] [--rehearse]
# Steps, in order, each logged to OUTDIR/NN-name.log; OUTDIR/summary.txt lists every step's
# exit code (124: timed out) and, at the end, the pipeline runs' stage lines:
#   01-versions  nvidia-smi and the library versions
#   02-llama     build llama.cpp: --llama cpu (default) = portable AVX2 CPU build, the issue's
#                fallback, ~1 min on 16 cores; cuda = GGML_CUDA=ON for this GPU (time it on its
#                own first: it may not fit the budget); none = use the build already there
#   03-pytest    python -m pytest -m gpu -v
#   04-bench     bench/gpu_scale.py --sizes 14b
# A failed step does not stop the next. The whole run stays inside GPU_CHECK_BUDGET_S
# (default 480 s, the issue's 8 minutes, well inside a 10-minute device call): every step
# runs under `timeout` up to its cumulative share, so time a step leaves unused goes on to
# the next ones. --rehearse (for a CPU, e.g. with CUDA_VISIBLE_DEVICES=): builds and runs
# nothing long; checks every command exists and accepts the arguments it would be given,
# and runs `pytest -m gpu -v` for real (the gpu tests skip there).
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET_S, GPU_CHECK_SHARES (below),
# GPU_CHECK_BENCH_STEPS (default 12, bench/gpu_scale.py's own).
set -uo pipefail  # not -e: a failed step is recorded and the next one runs

usage() { echo "usage: bash scripts/gpu_check.sh OUTDIR [--llama cpu|cuda|none] [--steps versions,llama,pytest,bench] [--rehearse]" >&2; exit 2; }
[ $# -ge 1 ] && [[ "$1" != -* ]] || usage
OUT=$1; shift
LLAMA=cpu; STEPS=versions,llama,pytest,bench; REHEARSE=0
while [ $# -gt 0 ]; do
  case $1 in
    --llama) LLAMA=${2:-}; shift $(($# > 1 ? 2 : 1)) ;;
    --steps) STEPS=${2:-}; shift $(($# > 1 ? 2 : 1)) ;;
    --rehearse) REHEARSE=1; shift ;;
    *) usage ;;
  esac
done
case $LLAMA in cpu|cuda|none) ;; *) echo "gpu_check: --llama must be cpu, cuda or none, not '$LLAMA'" >&2; exit 2 ;; esac
[ -n "${STEPS//,/}" ] || { echo "gpu_check: --steps needs a list: versions,llama,pytest,bench" >&2; exit 2; }
for s in ${STEPS//,/ }; do
  case $s in versions|llama|pytest|bench) ;; *) echo "gpu_check: unknown step '$s' (versions, llama, pytest, bench)" >&2; exit 2 ;; esac
done
[ -f scripts/gpu_check.sh ] || { echo "gpu_check: run it from the project root" >&2; exit 2; }

export PYTHON=${PYTHON:-python3} REHEARSE LLAMA
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
# what .gpu/a/stage.sh and .gpu/b/finish_project.sh unpacked, where they unpacked it (the
# site folder holds wheels for the GPU machine's Python 3.12: a rehearsal keeps its own)
[ -d /tmp/site ] && [ "$REHEARSE" = 0 ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
[ -d /tmp/r1-tokenizer ] && export FINTUNE_R1_TOKENIZER_DIR=${FINTUNE_R1_TOKENIZER_DIR:-/tmp/r1-tokenizer}
command -v nvcc > /dev/null 2>&1 || { [ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH; }
export BENCH_ARGS="--sizes 14b --steps ${GPU_CHECK_BENCH_STEPS:-12}"
BUDGET=${GPU_CHECK_BUDGET_S:-480}
# each step's share of the budget: seconds out of 480, scaled to BUDGET. Guesses until a GPU
# run times them (bench: building and saving the random 14B took 80 s on an H100, then two
# training processes); GPU_CHECK_SHARES=versions=20,llama=100,... replaces any of them
declare -A SHARE=([versions]=20 [llama]=100 [pytest]=180 [bench]=180)
shares=${GPU_CHECK_SHARES:-}
for kv in ${shares//,/ }; do
  [[ "$kv" =~ ^(versions|llama|pytest|bench)=[0-9]+$ ]] || { echo "gpu_check: GPU_CHECK_SHARES: bad entry '$kv'" >&2; exit 2; }
  SHARE[${kv%%=*}]=${kv#*=}
done
mkdir -p "$OUT/runs"
OUT=$(cd "$OUT" && pwd)
export FINTUNE_GPU_LOG_DIR=$OUT/runs  # tests/test_gpu.py keeps its pipeline runs' logs here
: > "$OUT/summary.txt"

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
    nvidia-smi || rc=$?
  fi
  "$PYTHON" - <<'PY' || rc=$?
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("torch", "transformers", "trl", "peft", "unsloth", "unsloth_zoo", "bitsandbytes", "accelerate", "datasets"):
    try:
        print(f"{name:13s}", getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as e:  # a missing or broken library is a finding, not a reason to stop
        print(f"{name:13s} not importable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
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

step_pytest() {
  "$PYTHON" -m pytest -m gpu -v -p no:cacheprovider
}

step_bench() {
  # shellcheck disable=SC2086  # BENCH_ARGS is a word list
  if [ "$REHEARSE" = 1 ]; then has_flags bench/gpu_scale.py $BENCH_ARGS; return; fi
  "$PYTHON" bench/gpu_scale.py $BENCH_ARGS
}
export -f has_flags step_versions step_llama step_pytest step_bench

START=$SECONDS; planned=0; n=0
for s in versions llama pytest bench; do
  n=$((n + 1))
  [[ ",$STEPS," == *",$s,"* ]] || continue
  planned=$((planned + SHARE[$s]))
  log=$(printf '%s/%02d-%s.log' "$OUT" "$n" "$s")
  limit=$((START + planned * BUDGET / 480 - SECONDS))  # unused time of earlier steps rolls on
  [ $((START + BUDGET - SECONDS)) -lt "$limit" ] && limit=$((START + BUDGET - SECONDS))
  t=$SECONDS
  if [ "$limit" -lt 5 ]; then
    echo "not run: ${limit}s left of the ${BUDGET}s budget" > "$log"; rc=skipped
  else
    echo "# step $s, timeout ${limit}s, rehearse=$REHEARSE llama=$LLAMA, $(date -u +%FT%TZ)" > "$log"
    timeout -k 10 "$limit" bash -c "step_$s" >> "$log" 2>&1; rc=$?
    [ "$rc" = 124 ] && echo "# TIMED OUT after ${limit}s" >> "$log"
  fi
  printf '%02d-%-8s rc=%-7s %4ds (timeout %ds)\n' "$n" "$s" "$rc" $((SECONDS - t)) "$limit" | tee -a "$OUT/summary.txt"
done
echo "total $((SECONDS - START))s of ${BUDGET}s" | tee -a "$OUT/summary.txt"
# the lines the closing note needs from the pipeline runs: stage times, tokens/s, peak CUDA, eval device
if ls "$OUT"/runs/*.log > /dev/null 2>&1; then
  # formats: fintune/pipeline.py run_stage, train/trainer.py, eval/runner.py HFRunner
  grep -H -E "stage +[a-z]+ +done in|trained tokens/s|eval: [^ ]+ on [^ ]+" "$OUT"/runs/*.log >> "$OUT/summary.txt"
fi
grep -q -v -E "rc=0 |^total|^/" "$OUT/summary.txt" && exit 1
exit 0
