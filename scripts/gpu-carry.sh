#!/usr/bin/env bash
# Builds here (no GPU needed) what ONE device run of scripts/gpu-check.sh
# runs, into gpu-carry/ (ignored by git; pass it to the device tool's
# `carry`, 64 MiB at most):
#   cuda_kernels  the trainer's kernel tests: NVRTC compiles the kernels,
#                 and the GPU optimizer must equal its CPU twin bit for bit
#                 (built with the plain toolchain: cudarc loads the CUDA
#                 driver and NVRTC at run time)
#
#   bash scripts/gpu-carry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p gpu-carry
exe=$(cargo test --release -p t5mix-trainer --test cuda_kernels --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda_kernels":
        print(m["executable"])')
cp "$exe" gpu-carry/cuda_kernels
strip gpu-carry/cuda_kernels
du -sh gpu-carry
total=$(du -sm gpu-carry | cut -f1)
if [ "$total" -gt 60 ]; then
  echo "gpu-carry is ${total} MiB: more than the device tool carries (64 MiB)" >&2
  exit 1
fi
