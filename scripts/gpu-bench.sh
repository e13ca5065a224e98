#!/usr/bin/env bash
# The side-by-side GPU benchmark of issue #13, for ONE device run: each
# configuration trained by HF transformers + PyTorch (fp32 with TF32 off,
# TF32, bf16 autocast with fused AdamW, bf16 + torch.compile;
# scripts/gpu_bench_torch.py) and by our whole step on the GPU in f32, TF32
# and bf16 (the train_step bench's `step-gpu`), on the same model config
# (written by our bench), random batches, AdamW; then one table: ms/step,
# tokens/s, model TFLOP/s, MFU, our ratio over PyTorch's same precision.
#
#   bash scripts/gpu-bench.sh BENCH [STEPS=20]
#
# BENCH is the plain release bench binary (scripts/gpu-carry.sh builds and
# packs it, scripts/gpu-check.sh unpacks it and passes it here:
# it loads the driver, NVRTC and cuBLAS at run time, from PyTorch's
# environment). Results go to $OUT/gpu-bench (or out/gpu-bench) as JSON
# lines; CONFIGS="tiny 2 16 8" MODES=fp32 PRECISIONS=f32 keeps a run short,
# DEADLINE (epoch seconds) bounds it, APPEND=1 adds to an earlier run.
set -uo pipefail
cd "$(dirname "$0")/.."
BENCH=${1:?usage: gpu-bench.sh BENCH [STEPS]} STEPS=${2:-20}
DIR="${OUT:-out}/gpu-bench"
mkdir -p "$DIR"
# APPEND=1 adds to the results of an earlier call (the table covers both)
[ "${APPEND:-0}" = 1 ] || : > "$DIR/results.jsonl"
failed=0
# config batch inputs targets, as the issue lists them
CONFIGS=${CONFIGS:-"tiny 16 128 32;t5-v1_1-small 8 512 114;t5-v1_1-small 64 512 114;t5-v1_1-base 32 512 114"}
# run in this order, mode by mode over the configs (the first mode is the
# one that matters most when time runs out); a row's fifth field adds
# modes for that row alone (e.g. bf16-compile), run after all the others
MODES=${MODES:-"bf16 tf32 fp32 bf16-compile"}
# our precisions: the whole step on the GPU (train_step -- step-gpu), each
# run after PyTorch's mode of the same precision
PRECISIONS=${PRECISIONS:-"f32 tf32 bf16"}
# DEADLINE (seconds since the epoch): no job starts with less than 30 s
# left, and none runs past it
DEADLINE=${DEADLINE:-$(($(date +%s) + 100000))}
limit() { # seconds the next job may take (at most $1), or nothing
  local left=$((DEADLINE - $(date +%s)))
  [ "$left" -ge 30 ] && echo $((left < $1 ? left : $1))
}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
IFS=';' read -ra rows <<< "$CONFIGS"
jobs=()
for mode in $MODES; do
  for row in "${rows[@]}"; do jobs+=("$mode $row"); done
done
for row in "${rows[@]}"; do
  read -r _ _ _ _ extra <<< "$row"
  for mode in ${extra:-}; do jobs+=("$mode $row"); done
done
for job in "${jobs[@]}"; do
  read -r mode name b s t _ <<< "$job"
  [ -f "$DIR/$name.json" ] || "$BENCH" config "$name" > "$DIR/$name.json" \
    || { echo "no config $name" >&2; exit 1; }
  case $mode in fp32) p=f32 ;; tf32) p=tf32 ;; bf16) p=bf16 ;; *) p= ;; esac
  if ! lim=$(limit 300); then
    echo "== out of time: pytorch $mode, $name batch $b skipped" >&2
    continue
  fi
  echo "== pytorch $mode: $name batch $b $s/$t" >&2
  if ! timeout -k 5 "$lim" python3 scripts/gpu_bench_torch.py "$DIR/$name.json" "$b" "$s" "$t" "$mode" "$STEPS" \
      >> "$DIR/results.jsonl" 2> "$DIR/torch-$name-$b-$mode.log"; then
    tail -3 "$DIR/torch-$name-$b-$mode.log" >&2
    printf '{"side": "pytorch %s", "config": "%s", "batch": %s, "inputs": %s, "targets": %s, "error": "failed (torch-%s-%s-%s.log)"}\n' \
      "$mode" "$name" "$b" "$s" "$t" "$name" "$b" "$mode" >> "$DIR/results.jsonl"
  fi
  [ -n "$p" ] && [[ " $PRECISIONS " == *" $p "* ]] || continue
  if ! lim=$(limit 300); then
    echo "== out of time: t5mix gpu $p, $name batch $b skipped" >&2
    continue
  fi
  echo "== t5mix gpu $p: $name batch $b $s/$t" >&2
  log="$DIR/t5mix-$name-$b-$p.log"
  if ! timeout -k 5 "$lim" "$BENCH" step-gpu "$name" "$b" "$s" "$t" "$STEPS" adamw "$p" > "$log" 2>&1; then
    tail -3 "$log" >&2
    failed=1
    printf '{"side": "t5mix gpu %s", "config": "%s", "batch": %s, "inputs": %s, "targets": %s, "error": "failed (%s)"}\n' \
      "$p" "$name" "$b" "$s" "$t" "$(basename "$log")" >> "$DIR/results.jsonl"
  else
    grep '^{' "$log" | tail -1 >> "$DIR/results.jsonl"
  fi
done
python3 scripts/gpu_bench_torch.py --table "$DIR/results.jsonl" | tee "$DIR/table.txt"
exit "${failed:-0}"
