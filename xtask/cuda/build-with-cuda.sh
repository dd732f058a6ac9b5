#!/usr/bin/env bash
# Build a candle-based crate with candle's CUDA backend on a machine that has no CUDA toolkit and no GPU.
# nvcc, the CUDA headers and libcudart come from the Python package index (CUDA 13.0, matching the
# GPU machine's driver); the other CUDA libraries are only needed at link time, so this script makes
# link stubs with the right sonames from the symbols the build actually references. The real libraries
# are loaded on the GPU machine at run time (see docs/cuda.md).
#
# usage: build-with-cuda.sh CRATE_DIR [cargo build args...]   e.g.  build-with-cuda.sh . --release --features cuda
# env:   CUDA_VENV (default ~/.cache/medseg-cuda/venv), CUDA_COMPUTE_CAP (default 90 = H100/H200)
set -euo pipefail
crate=$1; shift
venv=${CUDA_VENV:-$HOME/.cache/medseg-cuda/venv}
stubs=$(dirname "$venv")/stubs
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-crt==13.0.88" \
      "nvidia-cuda-cccl==13.0.85" "nvidia-nvvm==13.0.88"
fi
cu=$("$venv/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
mkdir -p "$cu/lib64" "$stubs"
for f in "$cu"/lib/*; do ln -sf "$f" "$cu/lib64/"; done
ln -sf "$cu/lib/libcudart.so.13" "$stubs/libcudart.so"
export PATH="$cu/bin:$PATH" CUDA_ROOT="$cu" CUDA_PATH="$cu" CUDA_HOME="$cu" CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export RUSTFLAGS="${RUSTFLAGS:-} -L $stubs"
make_stubs() {
  local deps=$1 und
  und=$(for f in "$deps"/libcudarc-*.rlib "$deps"/libcandle_core-*.rlib; do [ -f "$f" ] && nm -u "$f" 2>/dev/null; done | awk '{print $2}' | sort -u)
  gen() { # name soname pattern [exclude]
    { echo "$und" | grep -E "$3" | { if [ -n "${4:-}" ]; then grep -vE "$4"; else cat; fi; } || true; } \
      | sed 's/.*/void &(void){}/' >"$stubs/$1.c"
    gcc -shared -fPIC -Wl,-soname,"$2" -o "$stubs/lib$1.so" "$stubs/$1.c"
  }
  gen cuda libcuda.so.1 '^cu[A-Z]'; gen nvrtc libnvrtc.so.13 '^nvrtc'; gen curand libcurand.so.10 '^curand'
  gen cublasLt libcublasLt.so.13 '^cublasLt'; gen cublas libcublas.so.13 '^cublas' '^cublasLt'; gen cudnn libcudnn.so.9 '^cudnn'
}
cd "$crate"
# First pass compiles everything (the final link fails without stubs), then the stubs are made
# from the compiled rlibs and the link is repeated.
cargo build "$@" || true
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
profile=debug; for a in "$@"; do [ "$a" = "--release" ] && profile=release; done
make_stubs "$target/$profile/deps"
cargo build "$@"
