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
# lines; CONFIGS="tiny 2 16 8" MODES=fp32 PRECISIONS=f32 keeps a run short.
set -uo pipefail
cd "$(dirname "$0")/.."
BENCH=${1:?usage: gpu-bench.sh BENCH [STEPS]} STEPS=${2:-20}
DIR="${OUT:-out}/gpu-bench"
mkdir -p "$DIR" && : > "$DIR/results.jsonl"
failed=0
# config batch inputs targets, as the issue lists them
CONFIGS=${CONFIGS:-"tiny 16 128 32;t5-v1_1-small 8 512 114;t5-v1_1-small 64 512 114;t5-v1_1-base 32 512 114"}
MODES=${MODES:-"fp32 tf32 bf16 bf16-compile"}
# our precisions: the whole step on the GPU (train_step -- step-gpu)
PRECISIONS=${PRECISIONS:-"f32 tf32 bf16"}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
IFS=';' read -ra rows <<< "$CONFIGS"
for row in "${rows[@]}"; do
  # (a fifth field adds modes for that row alone, e.g. bf16-compile)
  read -r name b s t extra <<< "$row"
  "$BENCH" config "$name" > "$DIR/$name.json" || { echo "no config $name" >&2; exit 1; }
  for mode in $MODES ${extra:-}; do
    echo "== pytorch $mode: $name batch $b $s/$t" >&2
    if ! timeout 300 python3 scripts/gpu_bench_torch.py "$DIR/$name.json" "$b" "$s" "$t" "$mode" "$STEPS" \
        >> "$DIR/results.jsonl" 2> "$DIR/torch-$name-$b-$mode.log"; then
      tail -3 "$DIR/torch-$name-$b-$mode.log" >&2
      printf '{"side": "pytorch %s", "config": "%s", "batch": %s, "inputs": %s, "targets": %s, "error": "failed (torch-%s-%s-%s.log)"}\n' \
        "$mode" "$name" "$b" "$s" "$t" "$name" "$b" "$mode" >> "$DIR/results.jsonl"
    fi
  done
  for p in $PRECISIONS; do
    echo "== t5mix gpu $p: $name batch $b $s/$t" >&2
    log="$DIR/t5mix-$name-$b-$p.log"
    if ! timeout 300 "$BENCH" step-gpu "$name" "$b" "$s" "$t" "$STEPS" adamw "$p" > "$log" 2>&1; then
      tail -3 "$log" >&2
      failed=1
      printf '{"side": "t5mix gpu %s", "config": "%s", "batch": %s, "inputs": %s, "targets": %s, "error": "failed (%s)"}\n' \
        "$p" "$name" "$b" "$s" "$t" "$(basename "$log")" >> "$DIR/results.jsonl"
    else
      tail -1 "$log" >> "$DIR/results.jsonl"
    fi
  done
done
python3 scripts/gpu_bench_torch.py --table "$DIR/results.jsonl" | tee "$DIR/table.txt"
exit "${failed:-0}"
