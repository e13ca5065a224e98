#!/usr/bin/env bash
# Builds here (no GPU needed) what ONE device run of scripts/gpu-check.sh
# runs, into gpu-carry/ (ignored by git; pass it to the device tool's
# `carry`, 64 MiB at most):
#   cuda_kernels   the trainer's kernel tests: NVRTC compiles our kernels,
#                  and on the GPU the optimizer, the RMS norm, the loss,
#                  the activations, dropout masks and attention's kernels
#                  must equal their CPU references bit for bit
#                  (built with the plain toolchain: cudarc loads the CUDA
#                  driver and NVRTC at run time), and the whole flat step
#                  on the GPU against the CPU's, twice the same bits
#   train_step     the bench, whose `step-gpu` times the whole step on the
#                  GPU for scripts/gpu-bench.sh (cuBLAS from PyTorch's wheels)
#   training       the trainer's training tests, among them a resumed GPU
#                  run equal to an uninterrupted one bit for bit
#   hf_parity, shared/hf-t5-tiny   the flat step's loss and gradients on
#                  the GPU against HF transformers' (computed there by
#                  scripts/t5_grads_reference.py with the image's PyTorch)
#   t5mix, shards/ the binary and span-corruption shards (512/114, the T5
#                  vocabulary, from ../shared/data's dolma-cc pages) for a
#                  short `t5mix train --device cuda` run timed against the
#                  bench's step (skipped without ../shared/data)
# and with --cuda, the dfdx CUDA build (scripts/build-cuda.sh, ~12 min on
# 2 cores; the dfdx model on CUDA, the old path) and what its binaries
# need there:
#   cuda/train_step, hf_parity, gradients, training   (stripped)
#   cuda/include.tar.xz   CUDA 13.0 headers, cuda/dfdx-out/   dfdx's .cuh:
#                  NVRTC includes both at run time from paths baked into the
#                  binaries, which gpu-check.sh recreates
#   shared/hf-t5-tiny     the parity tests' model (T5MIX_SHARED_DATA there)
#   cuda/nvrtc.tar.xz     NVRTC 13.0 (32 MB), with --nvrtc only: for a
#                  driver that refuses newer PTX and a host without 13.0
#
# The plain binaries travel packed in bin.tar.xz.
#
#   bash scripts/gpu-carry.sh [--cuda [--nvrtc]]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${T5MIX_CUDA_WORK:-/tmp/t5mix-cuda}
rm -rf gpu-carry
mkdir -p gpu-carry
executable() { # the test binary of `cargo test --no-run --message-format=json`
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$1"
}
exe=$(cargo test --release -p t5mix-trainer --test cuda_kernels --no-run --message-format=json 2>/dev/null \
  | executable cuda_kernels)
cp "$exe" gpu-carry/cuda_kernels
strip gpu-carry/cuda_kernels
exe=$(cargo test --release -p t5mix-trainer --test training --no-run --message-format=json 2>/dev/null \
  | executable training)
cp "$exe" gpu-carry/training
strip gpu-carry/training
exe=$(cargo test --release -p t5mix-trainer --test hf_parity --no-run --message-format=json 2>/dev/null \
  | executable hf_parity)
cp "$exe" gpu-carry/hf_parity
strip gpu-carry/hf_parity
exe=$(cargo bench -p t5mix-trainer --bench train_step --no-run --message-format=json 2>/dev/null \
  | executable train_step)
cp "$exe" gpu-carry/train_step
strip gpu-carry/train_step
shared=${T5MIX_SHARED_DATA:-../shared/data}
mkdir -p gpu-carry/shared
cp -r "$shared/hf-t5-tiny" gpu-carry/shared/
if [ -f "$shared/t5-spm/spiece.model" ]; then
  cargo build --release --bin t5mix 2>/dev/null
  cp target/release/t5mix gpu-carry/t5mix
  strip gpu-carry/t5mix
  tmp=$(mktemp -d)
  gpu-carry/t5mix clean "$shared"/dolma-cc/cc_en_head-*.jsonl --out "$tmp/clean" -q
  gpu-carry/t5mix build --task c4_span_corruption --input "$tmp/clean" \
    --vocab "$shared/t5-spm/spiece.model" --sequence-length inputs=512,targets=114 \
    --out gpu-carry/shards -q
  rm -rf "$tmp"
fi
# the plain binaries packed (xz: 45 MiB -> ~10); gpu-check.sh unpacks them
tar -C gpu-carry -cf - cuda_kernels training hf_parity train_step $(cd gpu-carry && ls t5mix 2>/dev/null) \
  | xz -T2 -6 > gpu-carry/bin.tar.xz
(cd gpu-carry && rm -f cuda_kernels training hf_parity train_step t5mix)
if [ "${1:-}" = "--cuda" ]; then
  bash scripts/build-cuda.sh "$WORK"
  mkdir -p gpu-carry/cuda/dfdx-out
  for b in train_step hf_parity gradients training; do
    cp "target-cuda/release/$b" gpu-carry/cuda/ && strip "gpu-carry/cuda/$b"
  done
  tar -C "$WORK/cu13/nvidia/cu13" -cf - include | xz -T2 -6 > gpu-carry/cuda/include.tar.xz
  for d in $(cat gpu-carry/cuda/{train_step,hf_parity,gradients,training} | strings \
      | grep -oE "$WORK/target/release/build/dfdx-[0-9a-f]+/out" | sort -u); do
    mkdir -p "gpu-carry/cuda/dfdx-out/$(basename "$(dirname "$d")")"
    cp "$d"/*.cuh "gpu-carry/cuda/dfdx-out/$(basename "$(dirname "$d")")/"
  done
  echo "$WORK" > gpu-carry/cuda/WORK
  if [ "${2:-}" = "--nvrtc" ]; then
    tar -C "$WORK/cu13/nvidia/cu13/lib" -cf - libnvrtc.so.13 libnvrtc-builtins.so.13.0 \
      | xz -T2 -6 > gpu-carry/cuda/nvrtc.tar.xz
  fi
fi
du -sh gpu-carry/* gpu-carry/cuda/* 2>/dev/null || true
total=$(du -sm gpu-carry | cut -f1)
if [ "$total" -gt 62 ]; then
  echo "gpu-carry is ${total} MiB: more than the device tool carries (64 MiB)" >&2
  exit 1
fi
echo "gpu-carry: ${total} MiB"
