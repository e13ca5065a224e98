#!/usr/bin/env bash
# The side-by-side GPU benchmark of issue #13, for ONE device run: each
# configuration trained by HF transformers + PyTorch (fp32 with TF32 off,
# TF32, bf16 autocast with fused AdamW, bf16 + torch.compile;
# scripts/gpu_bench_torch.py) and by our CUDA build (the train_step bench),
# on the same model config (written by our bench), random batches, AdamW;
# then one table: ms/step, tokens/s, model TFLOP/s, MFU, our ratio.
#
#   bash scripts/gpu-bench.sh [BENCH=target-cuda/release/train_step] [STEPS=20]
#
# BENCH is the bench binary scripts/build-cuda.sh builds (carry it, with the
# CUDA libraries it names); on a CPU machine the CPU bench binary works too
# (then PyTorch runs on the CPU: a smoke test; CONFIGS="tiny 2 16 8" keeps it
# short). Results go to $OUT/gpu-bench (or out/gpu-bench) as JSON lines.
set -uo pipefail
cd "$(dirname "$0")/.."
BENCH=${1:-target-cuda/release/train_step} STEPS=${2:-20}
DIR="${OUT:-out}/gpu-bench"
mkdir -p "$DIR" && : > "$DIR/results.jsonl"
# config batch inputs targets, as the issue lists them
CONFIGS=${CONFIGS:-"tiny 16 128 32;t5-v1_1-small 8 512 114;t5-v1_1-small 64 512 114;t5-v1_1-base 32 512 114"}
MODES=${MODES:-"fp32 tf32 bf16 bf16-compile"}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
IFS=';' read -ra rows <<< "$CONFIGS"
for row in "${rows[@]}"; do
  read -r name b s t <<< "$row"
  "$BENCH" config "$name" > "$DIR/$name.json" || { echo "no config $name" >&2; exit 1; }
  for mode in $MODES; do
    echo "== pytorch $mode: $name batch $b $s/$t" >&2
    if ! timeout 300 python3 scripts/gpu_bench_torch.py "$DIR/$name.json" "$b" "$s" "$t" "$mode" "$STEPS" \
        >> "$DIR/results.jsonl" 2> "$DIR/torch-$name-$b-$mode.log"; then
      tail -3 "$DIR/torch-$name-$b-$mode.log" >&2
      printf '{"side": "pytorch %s", "config": "%s", "batch": %s, "inputs": %s, "targets": %s, "error": "failed (torch-%s-%s-%s.log)"}\n' \
        "$mode" "$name" "$b" "$s" "$t" "$name" "$b" "$mode" >> "$DIR/results.jsonl"
    fi
  done
  echo "== t5mix: $name batch $b $s/$t" >&2
  if ! timeout 300 "$BENCH" step "$name" "$b" "$s" "$t" "$STEPS" adamw > "$DIR/t5mix-$name-$b.log" 2>&1; then
    tail -3 "$DIR/t5mix-$name-$b.log" >&2
    printf '{"side": "t5mix", "config": "%s", "batch": %s, "inputs": %s, "targets": %s, "error": "failed (t5mix-%s-%s.log)"}\n' \
      "$name" "$b" "$s" "$t" "$name" "$b" >> "$DIR/results.jsonl"
  else
    tail -1 "$DIR/t5mix-$name-$b.log" >> "$DIR/results.jsonl"
  fi
done
python3 scripts/gpu_bench_torch.py --table "$DIR/results.jsonl" | tee "$DIR/table.txt"
