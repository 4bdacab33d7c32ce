#!/usr/bin/env bash
# The payload for the offline GPU machine (docs/gpu_check.md): the shared part from
# ../shared/gpu/make_payload.sh (wheels + the embedded model, .gpu/a and .gpu/b), plus what
# this project's GPU check needs and that machine lacks, added to .gpu/b:
#   llama.cpp.tar.xz    the llama.cpp source pruned to what the four tools + converter need
#                       (the 76 MB llama-cpp-python sdist is over one transfer), built there
#   r1-tokenizer.tar.xz the DeepSeek-R1-Distill-Qwen tokenizer, saved from tests/r1_tokenizer.py
#                       (the header wheel it is rebuilt from is 95 MB)
#   finish_project.sh   run after the second transfer: the shared finish.sh, then unpacks both
# Usage (from the project root):
#   bash scripts/gpu_payload.sh              # everything, with the transfer sizes
#   bash scripts/gpu_payload.sh prune DEST   # only the pruned llama.cpp tree, into DEST
# PYTHON (default .venv/bin/python) builds the tokenizer; LLAMA_CPP_SRC (default ./llama.cpp)
# is the source tree that scripts/setup_llama_cpp.sh fetched from the sdist.
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
SRC=${LLAMA_CPP_SRC:-llama.cpp}
LIMIT=$((64 * 1024 * 1024))  # one transfer, the checkout included

# Not needed to configure and build llama-quantize, llama-completion, llama-perplexity,
# llama-server or to run convert_hf_to_gguf.py (setup_llama_cpp.sh turns tests and examples
# off; the web UI is not built from source). Every tools/* and app/ stay: CMake adds them
# unconditionally. The build outputs and the stamp must not travel: the stamp would make
# setup_llama_cpp.sh skip the build there.
PRUNE=(build build.log build-configure.log .fintune-build build-xcframework.sh
       docs media models examples pocs benches tests ci skills .github .devops .gemini .pi
       tools/ui/src tools/ui/static tools/ui/tests tools/ui/package-lock.json)

prune() {  # prune SRC DEST: copy SRC without PRUNE and without backends other than CPU and CUDA
  local src=$1 dest=$2 ex=()
  [ -f "$src/convert_hf_to_gguf.py" ] && [ -f "$src/.fintune-source" ] || {
    echo "gpu_payload: $src is not the llama.cpp tree scripts/setup_llama_cpp.sh fetches;" \
         "run: bash scripts/setup_llama_cpp.sh $src (or set LLAMA_CPP_SRC)" >&2; return 1; }
  for p in "${PRUNE[@]}"; do ex+=("--exclude=./$p"); done
  for d in "$src"/ggml/src/ggml-*/; do
    case $(basename "$d") in ggml-cpu|ggml-cuda) ;; *) ex+=("--exclude=./ggml/src/$(basename "$d")") ;; esac
  done
  mkdir -p "$dest"
  tar -C "$src" "${ex[@]}" --exclude=__pycache__ -cf - . | tar -C "$dest" -xf -
}

checkout_bytes() {  # what a transfer carries besides .gpu/: tracked + untracked-not-ignored files
  git ls-files -z --cached --others --exclude-standard | sort -zu |
    xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

if [ "${1:-}" = prune ]; then
  prune "$SRC" "${2:?usage: gpu_payload.sh prune DEST}"
  exit 0
fi

bash ../shared/gpu/make_payload.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prune "$SRC" "$tmp/llama.cpp"
tar -C "$tmp" -cf - llama.cpp | xz -6 -T0 > .gpu/b/llama.cpp.tar.xz
PYTHONPATH="$PWD:$PWD/tests" "$PY" -c "
import sys
from r1_tokenizer import build_r1_tokenizer
build_r1_tokenizer().save_pretrained(sys.argv[1])" "$tmp/r1-tokenizer"
tar -C "$tmp" -cf - r1-tokenizer | xz -6 -T0 > .gpu/b/r1-tokenizer.tar.xz

cat > .gpu/b/finish_project.sh <<'SH'
# After the second transfer, from the project root: the shared finish (embedded model), then
# the pruned llama.cpp source into ./llama.cpp (scripts/gpu_check.sh builds it) and the R1
# tokenizer into /tmp/r1-tokenizer (tests/conftest.py reads FINTUNE_R1_TOKENIZER_DIR).
set -e
bash .gpu/b/finish.sh
rm -rf llama.cpp && tar -xJf .gpu/b/llama.cpp.tar.xz
rm -rf /tmp/r1-tokenizer && tar -xJf .gpu/b/r1-tokenizer.tar.xz -C /tmp
echo "llama.cpp source: $(cat llama.cpp/.fintune-source), $(du -sh llama.cpp | cut -f1)"
echo "R1 tokenizer: /tmp/r1-tokenizer ($(ls /tmp/r1-tokenizer | tr '\n' ' '))"
SH

co=$(checkout_bytes)
fail=0
for t in a b; do
  part=$(du -sb ".gpu/$t" | cut -f1)
  total=$((co + part))
  awk -v t="$t" -v c="$co" -v p="$part" 'BEGIN {m = 1048576
    printf "transfer %s: checkout %.1f MiB + .gpu/%s %.1f MiB = %.1f MiB (limit 64 MiB)\n", t, c / m, t, p / m, (c + p) / m}'
  [ "$total" -le "$LIMIT" ] || { echo "gpu_payload: transfer $t is over 64 MiB" >&2; fail=1; }
done
exit $fail
