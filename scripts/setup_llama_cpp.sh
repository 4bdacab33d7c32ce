#!/usr/bin/env bash
# Obtain llama.cpp from the llama-cpp-python sdist (PyPI is the one source this
# machine can reach) and build only the tools the pipeline calls.
#   usage: scripts/setup_llama_cpp.sh [DEST=./llama.cpp] [PYTHON=python3]
# GGML_NATIVE=OFF: a -march=native build dies with "Illegal instruction" on CPUs
# that advertise AMX; the portable build still uses AVX2/FMA/F16C, plus the
# AVX-512 / VNNI / BF16 instruction sets this CPU lists in /proc/cpuinfo (never
# AMX: with GGML_AMX_* the server stopped with SIGILL at `tilezero` in an OpenMP
# worker on an Intel Xeon here). Set LLAMA_CPP_PORTABLE=1 for a build that runs on
# any AVX2 machine.
set -euo pipefail

DEST=${1:-./llama.cpp}
PY=${2:-python3}
LCP_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
# llama-server: the eval decodes several prompts together through its slots
# (2.1x faster than one llama-completion per prompt, measured on 2 cores)
TARGETS=(llama-quantize llama-completion llama-perplexity llama-server)

# ggml's CMake option for each /proc/cpuinfo flag it needs (GGML_AVX512 needs all five).
# Every option is passed ON or OFF: CMake's cache would keep an ON from an earlier build.
FLAGS=" "  # LLAMA_CPP_PORTABLE: as if the CPU listed none
if [ -z "${LLAMA_CPP_PORTABLE:-}" ]; then
  FLAGS=" $( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true) | cut -d: -f2) "
fi
on() { [[ "$FLAGS" == *" $1 "* ]]; }
ISA=()
avx512=OFF
on avx512f && on avx512cd && on avx512vl && on avx512dq && on avx512bw && avx512=ON
ISA+=("-DGGML_AVX512=$avx512")
for pair in AVX512_VNNI:avx512_vnni AVX512_BF16:avx512_bf16 AVX512_VBMI:avx512vbmi; do
  if [ $avx512 = ON ] && on "${pair#*:}"; then ISA+=("-DGGML_${pair%%:*}=ON"); else ISA+=("-DGGML_${pair%%:*}=OFF"); fi
done
if on avx_vnni; then ISA+=(-DGGML_AVX_VNNI=ON); else ISA+=(-DGGML_AVX_VNNI=OFF); fi
# CUDA: with nvcc on PATH and a GPU that nvidia-smi lists, the tools offload to the GPU
# (the eval of a 14B GGUF is hours on CPU cores). A CUDA toolkit alone (a CPU CI machine
# may carry one) keeps the CPU build: a CUDA build there is slow to compile and cannot
# run. LLAMA_CPP_CUDA=0 forces it off, =1 on (e.g. building for a GPU machine without its
# GPU, with LLAMA_CPP_CUDA_ARCHS). The architecture is the present GPU's where nvidia-smi
# tells it, else LLAMA_CPP_CUDA_ARCHS, else CMake's "native".
CUDA=()
gpu=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
if [ "${LLAMA_CPP_CUDA:-auto}" = 1 ] || { [ "${LLAMA_CPP_CUDA:-auto}" != 0 ] && [ "$gpu" -gt 0 ] \
    && command -v nvcc > /dev/null 2>&1; }; then
  arch=$( (nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null || true) | head -1 | tr -d ' .')
  [[ "$arch" =~ ^[0-9]+$ ]] || arch=${LLAMA_CPP_CUDA_ARCHS:-native}
  CUDA=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$arch")
fi
STAMP="$DEST/.fintune-build"
# a build for other instruction sets (a copied tree, another machine) is rebuilt, and a
# CPU build where CUDA is now wanted; a CPU build's stamp reads as before this option
# (no cuda= field), so an existing CPU build is not rebuilt for it
CUDA_STAMP=""
[ ${#CUDA[@]} -gt 0 ] && CUDA_STAMP=" cuda=ON arch=${CUDA[1]#*=}"
WANT="llama-cpp-python==$LCP_VERSION targets=${TARGETS[*]}$CUDA_STAMP isa=${ISA[*]}"
[ ${#CUDA[@]} -gt 0 ] || CUDA=(-DGGML_CUDA=OFF)  # CMake's cache would keep an ON from an earlier build
CONFIGURE=(cmake -S "$DEST" -B "$DEST/build" -DCMAKE_BUILD_TYPE=Release
  -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF "${ISA[@]}" "${CUDA[@]}"
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF
  # no web UI: the prebuilt one is a download (tools/ui, scripts/ui-assets.cmake) that waits
  # out its timeouts on an offline machine; the eval only calls the server's HTTP API
  -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF)

if [ -n "${LLAMA_CPP_DRY_RUN:-}" ]; then  # print what would be configured and recorded; fetch and build nothing
  echo "configure: ${CONFIGURE[*]}"
  echo "stamp: $WANT"
  exit 0
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "llama.cpp: $DEST already built ($WANT)"
  exit 0
fi

if [ ! -f "$DEST/convert_hf_to_gguf.py" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "llama.cpp: fetching llama-cpp-python==$LCP_VERSION sdist"
  # An empty PIP_CONSTRAINT keeps a machine-wide constraint file from making pip
  # build the whole wheel just to read its metadata.
  PIP_CONSTRAINT= "$PY" -m pip download --quiet --no-deps --no-binary :all: \
      "llama-cpp-python==$LCP_VERSION" -d "$tmp"
  tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
  rm -rf "$DEST.partial"
  mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$DEST.partial"
  # The sdist keeps the submodule's .git pointer file; it points nowhere here.
  rm -f "$DEST.partial/.git"
  # Record which llama.cpp this is; the sdist carries no .git.
  echo "llama-cpp-python==$LCP_VERSION" > "$DEST.partial/.fintune-source"
  mv "$DEST.partial" "$DEST"
fi

echo "llama.cpp: building ${TARGETS[*]} (GGML_NATIVE=OFF, AVX2 and ${ISA[*]} ${CUDA[*]})"
"${CONFIGURE[@]}" > "$DEST/build-configure.log"
cmake --build "$DEST/build" --config Release -j "$(nproc)" --target "${TARGETS[@]}" \
  > "$DEST/build.log" 2>&1 || { tail -30 "$DEST/build.log"; exit 1; }
echo "$WANT" > "$STAMP"
echo "llama.cpp: ready in $DEST/build/bin"
