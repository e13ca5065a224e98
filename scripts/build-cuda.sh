#!/usr/bin/env bash
# Builds `t5mix` with the dfdx CUDA backend (`--features cuda`) on a machine
# without a GPU or a system CUDA toolkit, from PyPI's CUDA 13.0 wheels:
#   bash scripts/build-cuda.sh [WORK_DIR]      -> target-cuda/release/t5mix
# The binary needs, where it runs: an NVIDIA driver (libcuda.so.1), cuBLAS 13
# and NVRTC 13.0 (e.g. LD_LIBRARY_PATH=$WORK/cu13/nvidia/cu13/lib plus a
# PyTorch cu13 venv's nvidia/cu13/lib). Build-time paths are baked into the
# binary for the kernels NVRTC compiles at run time: keep WORK_DIR and
# target-cuda/ at the same paths there, or rebuild in place.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-/tmp/t5mix-cuda}"
CR="$WORK/cu13/nvidia/cu13"
if [ ! -x "$CR/bin/nvcc" ]; then
  # one pip call: later --target calls would replace the nvidia/ folder
  python3 -m pip install --no-deps --target "$WORK/cu13" \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
    nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.1.0.3
fi
( cd "$CR/lib" && ln -sf libcublas.so.13 libcublas.so && ln -sf libcublasLt.so.13 libcublasLt.so \
    && ln -sf libnvrtc.so.13 libnvrtc.so )
# link-time stub for libcuda (every driver symbol cudarc declares, soname libcuda.so.1)
mkdir -p "$CR/lib64/stubs" "$WORK/fakebin"
if [ ! -f "$CR/lib64/stubs/libcuda.so" ]; then
  cargo fetch -q
  SYS=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.9.*/src/driver/sys.rs | head -1)
  grep -ohE 'pub fn cu[A-Za-z0-9_]+' "$SYS" | sed 's/pub fn //' | sort -u > "$WORK/syms.txt"
  { grep -vE '^cuGetError(String|Name)$' "$WORK/syms.txt" | awk '{print "int " $1 "(void) { return 100; }"}'
    echo 'int cuGetErrorString(int e, const char **s) { *s = "no CUDA driver (link stub)"; return 0; }'
    echo 'int cuGetErrorName(int e, const char **s) { *s = "CUDA_ERROR_NO_DEVICE"; return 0; }'; } > "$WORK/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CR/lib64/stubs/libcuda.so" "$WORK/stub.c"
fi
# dfdx's build script asks nvidia-smi for the compute capability: sm_90 (H100)
if ! command -v nvidia-smi >/dev/null; then
  printf '#!/bin/sh\nprintf "compute_cap\\n9.0\\n"\n' > "$WORK/fakebin/nvidia-smi"
  chmod +x "$WORK/fakebin/nvidia-smi"
fi
# the build folder is under WORK too: dfdx bakes its path into the binaries
# (NVRTC includes from it at run time), so scripts/gpu-check.sh recreates it
# on the device machine
cuda() {
  PATH="$WORK/fakebin:$CR/bin:$PATH" CUDA_ROOT="$CR" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" \
    CARGO_TARGET_DIR="$WORK/target" "$@"
}
mkdir -p target-cuda/release
cuda cargo build --release --features cuda --bin t5mix
cp "$WORK/target/release/t5mix" target-cuda/release/t5mix
# the training-step bench of scripts/gpu-bench.sh and the trainer's parity,
# gradient and training tests, as target-cuda/release/<name>
executables() {
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}
{ cuda cargo bench --no-run --features cuda -p t5mix-trainer --bench train_step --message-format=json
  cuda cargo test --release --no-run --features cuda -p t5mix-trainer \
    --test hf_parity --test gradients --test training --message-format=json
} | executables | while read -r name exe; do cp "$exe" "target-cuda/release/$name"; done
echo "built target-cuda/release/{t5mix,train_step,hf_parity,gradients,training} (sm_${CUDA_COMPUTE_CAP:-90}); run them with LD_LIBRARY_PATH=$CR/lib:<cuBLAS 13 dir>"
