#!/usr/bin/env bash
# ONE device run for issue #13 (what a session lent a GPU runs first): the
# binaries scripts/gpu-carry.sh built here, then a summary.
#   kernels     our CUDA kernels compile for the GPU; the optimizer step
#               equals its CPU twin bit for bit (weights, norm, state), the
#               RMS norm, the loss, the feed-forward's activations, the
#               dropout masks and attention's softmax, dropout and bias
#               gradients the trainer's CPU kernels; cuBLAS's products; the
#               whole flat step the CPU's, deterministic, and training
#   training    the training tests, among them a resumed GPU run (bf16,
#               TF32) equal to an uninterrupted one bit for bit
#   hf-gradients  the flat step's loss and gradients on the GPU against
#               HF transformers' (f32 within 1e-4; TF32, bf16 within their
#               rounding)
#   bench       the side-by-side with PyTorch (scripts/gpu-bench.sh)
#   adafactor-step  our step with Adafactor (t5mix train's default), the
#               bench's AdamW step's shape: its cost over AdamW (and its
#               optimizer's GPU time: profile-adafactor)
#   profile     the GPU's time per operation of that step (bf16, AdamW),
#               and of batch 64's (profile-b64)
#   train       `t5mix train --device cuda --precision bf16`: t5-v1_1-small,
#               batch 8, 512/114 on span-corruption shards; its median step
#               against the bench's step-gpu bf16 of the same shape (≤ 5%)
# and when gpu-carry/cuda/ holds the dfdx CUDA build (gpu-carry.sh --cuda):
#   cuda-hf_parity, cuda-gradients, cuda-training   the trainer's tests with
#               Dev = Cuda (the older path)
#
#   bash scripts/gpu-check.sh [CARRY_DIR=gpu-carry]
#
# The checks run in order of what matters most, within BUDGET seconds
# (default 540, inside one device call of 600): none starts with less than
# 20 s left, each is stopped at its own limit or the budget's end. Logs are
# packed every 15 s into $OUT/gpu-check.tar.gz (or out/), so a call stopped
# at its limit still brings back what ran; the exit status is 1 when a
# check failed or was skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
C=$(realpath "${1:-gpu-carry}")
export OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
START=$(date +%s)
export DEADLINE=$((START + ${BUDGET:-540}))
# the logs, here and packed into $OUT as they come
W=$(mktemp -d)
DIR="$W/gpu-check"
mkdir -p "$DIR"
pack() {
  tar -C "$W" -czf "$OUT/.gpu-check.tar.gz" gpu-check gpu-bench 2>/dev/null
  mv -f "$OUT/.gpu-check.tar.gz" "$OUT/gpu-check.tar.gz"
}
(while sleep 15; do pack; done) &
PACKER=$!
B=$(mktemp -d)
trap 'kill $PACKER 2>/dev/null; pack; rm -rf "$B" "$W"' EXIT
status=0
summary=()
{
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total,clocks.max.sm --format=csv,noheader
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name(0))'
  python3 -c 'import site; print(site.getsitepackages())'
  ls "$(python3 -c 'import site; print(site.getsitepackages()[0])')"/nvidia/cu13/lib 2>&1 | tr '\n' ' '
  echo
} 2>&1 | tee "$DIR/machine.txt" >&2
# the carried shared data (hf-t5-tiny) for the parity tests
export T5MIX_SHARED_DATA="$C/shared"
# the plain binaries, unpacked
xz -dc "$C/bin.tar.xz" | tar -C "$B" -xf -
left() { echo $((DEADLINE - $(date +%s))); }
check() { # NAME MAX_SECONDS COMMAND...: its log in $DIR/NAME.log
  local name=$1 max=$2; shift 2
  local l; l=$(left)
  if [ "$l" -lt 20 ]; then
    summary+=("SKIP $name (out of time)")
    status=1
    return 1
  fi
  [ "$l" -lt "$max" ] && max=$l
  echo "== $name (at most ${max} s): $*" >&2
  local t0=$SECONDS rc=0
  timeout -k 5 "$max" "$@" > "$DIR/$name.log" 2>&1 || rc=$?
  if [ $rc = 0 ]; then
    summary+=("PASS $name ($((SECONDS - t0)) s)")
  else
    [ $rc = 124 ] || [ $rc = 137 ] && echo "stopped at its limit (${max} s)" >> "$DIR/$name.log"
    summary+=("FAIL $name ($((SECONDS - t0)) s, rc $rc, gpu-check/$name.log)")
    status=1
  fi
  grep -E '^test .*(FAILED|ok)$|test result|panicked' "$DIR/$name.log" | grep -vE '^test .* ok$' >&2 \
    || tail -5 "$DIR/$name.log" >&2
  return $rc
}
bench() { # the side-by-side (scripts/gpu-bench.sh) of MODES=$1 on CONFIGS=$3, APPEND=$2
  local t0=$SECONDS
  if OUT="$W" MODES="$1" APPEND="$2" CONFIGS="$3" bash scripts/gpu-bench.sh "$B/train_step" "${BENCH_STEPS:-10}" 2>>"$DIR/bench.log"; then
    summary+=("PASS bench $1 ($((SECONDS - t0)) s, gpu-bench/)")
  else
    summary+=("FAIL bench $1 ($((SECONDS - t0)) s, gpu-bench/, gpu-check/bench.log)")
    status=1
  fi
}
profile() { # NAME BATCH STEPS OPTIMIZER [LINES]: where a bf16 t5-v1_1-small
  # step's GPU time goes, per operation (timing events around each: not
  # the bench's step time); the profile's lines matching LINES printed
  local name=$1 b=$2 steps=$3 opt=$4 lines=${5:-.}
  T5MIX_GPU_PROFILE=1 check "$name" 45 "$B/train_step" step-gpu t5-v1_1-small "$b" 512 114 \
    "$steps" "$opt" bf16 && sed -n '/GPU profile/,/idle/p' "$DIR/$name.log" | grep -E "$lines" >&2
}
# 1. our kernels against their CPU twins, the flat step against the CPU's
check kernels 150 "$B/cuda_kernels" --include-ignored --test-threads 1 --nocapture
# 2. the side-by-side in bf16 (the issue's bar): the issue's must-have
#    shapes, 10 steps each (CONFIGS, BENCH_STEPS override; t5-v1_1-base
#    when time allows)
CONFIGS="${CONFIGS:-tiny 16 128 32;t5-v1_1-small 8 512 114;t5-v1_1-small 64 512 114 bf16-compile}"
bench bf16 0 "$(sed -E 's/([0-9]+ [0-9]+ [0-9]+) [^;]*/\1/g' <<< "$CONFIGS")"
# 3. `t5mix train --device cuda` against the bench's step of its shape
if [ -x "$B/t5mix" ] && [ -d "$C/shards" ]; then
  if check train 150 "$B/t5mix" train --data "$C/shards" --model t5-v1_1-small --device cuda \
      --precision bf16 --optimizer adamw --schedule constant:0.0003 --dropout 0 \
      --batch-size 8 --sequence-length inputs=512,targets=114 --steps "${TRAIN_STEPS:-40}" \
      --checkpoint-every 0 --out "$W/gpu-train" -q; then
    cp "$W"/gpu-train/*.json* "$DIR/" 2>/dev/null
    # its median step (after 5 warm-up steps) against the bench's same shape
    python3 - "$DIR/metrics.jsonl" "$W/gpu-bench/results.jsonl" <<'PY' \
      | tee "$DIR/train-vs-bench.txt" >&2 || { summary+=("FAIL train vs bench"); status=1; }
import json, statistics, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ms = 1e3 * statistics.median(s["seconds"] for s in steps[5:])
tok = sum(s["tokens"] for s in steps[5:]) / sum(s["seconds"] for s in steps[5:])
bench = [json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")]
b = [r for r in bench if r.get("side") == "t5mix gpu bf16" and r.get("config") == "t5-v1_1-small"
     and r.get("batch") == 8 and "ms_per_step" in r]
print(f"t5mix train --device cuda --precision bf16, t5-v1_1-small b8 512/114: "
      f"{ms:.1f} ms/step median, {tok:.0f} tokens/s")
if b:
    r = ms / b[0]["ms_per_step"]
    print(f"bench step-gpu bf16: {b[0]['ms_per_step']:.1f} ms/step; train/bench = {r:.3f} (bar: <= 1.05)")
    sys.exit(0 if r <= 1.05 else 1)
print("no bench line for t5-v1_1-small b8 bf16 to compare with")
sys.exit(1)
PY
  fi
fi
# 4. the training tests (a resumed GPU run equal to an uninterrupted one
#    bit for bit), and the flat step's gradients on the GPU against HF
#    transformers' (the image's PyTorch computes them)
check training 120 "$B/training" --include-ignored --test-threads 4
check hf-gradients 120 "$B/hf_parity" --include-ignored --test-threads 1 --nocapture gradients
# 5. where the bf16 AdamW step's GPU time goes, at b8 and b64
profile profile 8 3 adamw
profile profile-b64 64 2 adamw
# 6. the side-by-side in TF32 and f32, and bf16 + torch.compile at b64
bench "tf32 fp32" 1 "$CONFIGS"
# 7. `t5mix train`'s default optimizer (the bench's is AdamW): Adafactor's
#    step at the train check's shape, for its cost over AdamW's
check adafactor-step 60 "$B/train_step" step-gpu t5-v1_1-small 8 512 114 "${BENCH_STEPS:-10}" adafactor bf16 \
  && tail -1 "$DIR/adafactor-step.log" >&2
profile profile-adafactor 8 3 adafactor 'GPU profile|optimizer'
# 8. with gpu-carry.sh --cuda: the older path's tests, dfdx's CUDA build
#    (Dev = Cuda), with a library path of their own
if [ -d "$C/cuda" ]; then
  # the paths dfdx baked into its binaries (NVRTC includes from them)
  WORK=$(cat "$C/cuda/WORK")
  mkdir -p "$WORK/cu13/nvidia/cu13" "$WORK/target/release/build"
  [ -d "$WORK/cu13/nvidia/cu13/include" ] || xz -dc "$C/cuda/include.tar.xz" | tar -C "$WORK/cu13/nvidia/cu13" -xf -
  for d in "$C"/cuda/dfdx-out/dfdx-*; do
    mkdir -p "$WORK/target/release/build/$(basename "$d")"
    ln -sfn "$d" "$WORK/target/release/build/$(basename "$d")/out"
  done
  # NVRTC for dfdx's run-time kernels: the carried 13.0, else the host
  # toolkit's, else PyTorch's; cuBLAS 13 from PyTorch's environment
  torch_nv=$(python3 -c 'import os, nvidia; print(os.path.join(os.path.dirname(nvidia.__path__[0]), "nvidia", "cu13", "lib"))' 2>/dev/null || true)
  libs="$torch_nv"
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -e "$d/libnvrtc.so.13" ] && libs="$d:$libs" && break
  done
  if [ -f "$C/cuda/nvrtc.tar.xz" ]; then
    mkdir -p "$WORK/nvrtc13.0" && xz -dc "$C/cuda/nvrtc.tar.xz" | tar -C "$WORK/nvrtc13.0" -xf -
    libs="$WORK/nvrtc13.0:$libs"
  fi
  libs="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "LD_LIBRARY_PATH=$libs" >&2
  for t in hf_parity gradients training; do
    LD_LIBRARY_PATH="$libs" check "cuda-$t" 120 "$C/cuda/$t" --test-threads 1
  done
fi
[ -f "$W/gpu-bench/table.txt" ] && cat "$W/gpu-bench/table.txt" >&2
printf '%s\n' "== summary ($(($(date +%s) - START)) s)" "${summary[@]}" | tee "$DIR/summary.txt" >&2
exit $status
