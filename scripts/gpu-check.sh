#!/usr/bin/env bash
# ONE device run for issue #13 (what a session lent a GPU runs first): the
# binaries scripts/gpu-carry.sh built here, then a summary.
#   kernels: our CUDA kernels compile for the GPU, and the optimizer step on
#            the GPU equals its CPU twin bit for bit (weights, norm, state)
# then, when gpu-carry/ holds the CUDA build's bench (scripts/build-cuda.sh),
# the side-by-side with PyTorch (scripts/gpu-bench.sh).
#
#   bash scripts/gpu-check.sh [CARRY_DIR=gpu-carry]
#
# Logs go to $OUT/gpu-check (or out/gpu-check); the exit status is 1 when a
# check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
C=${1:-gpu-carry}
DIR="${OUT:-out}/gpu-check"
mkdir -p "$DIR"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader
status=0
summary=()
check() {
  local name=$1; shift
  echo "== $name: $*" >&2
  local t0=$SECONDS
  if "$@" > "$DIR/$name.log" 2>&1; then
    summary+=("PASS $name ($((SECONDS - t0)) s)")
  else
    summary+=("FAIL $name ($((SECONDS - t0)) s, $DIR/$name.log)")
    status=1
  fi
  grep -E '^test |test result' "$DIR/$name.log" >&2 || tail -5 "$DIR/$name.log" >&2
}
check kernels "$C/cuda_kernels" --include-ignored --test-threads 1
if [ -x "$C/train_step" ]; then
  OUT="${OUT:-out}" bash scripts/gpu-bench.sh "$C/train_step" || status=1
fi
printf '%s\n' "== summary" "${summary[@]}"
exit $status
