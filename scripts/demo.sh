#!/usr/bin/env bash
# The main job on the bundled example:
#   crawl text -> clean shards -> vocabulary -> span-corruption example shards
#   -> (with the shared GLUE files) a second task and a mixture of both
#   -> a short training run (held-out span-corruption loss vs the unigram
#      baseline) -> an evaluation on GLUE RTE's validation set.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
dpkg -s libsentencepiece-dev >/dev/null 2>&1 || need+=(libsentencepiece-dev)
dpkg -s libopenblas-dev >/dev/null 2>&1 || need+=(libopenblas-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=$(command -v sudo || true)
  $SUDO apt-get update && $SUDO apt-get install -y "${need[@]}"
fi
cargo build --release --bin t5mix
# where cargo put it (CARGO_TARGET_DIR or .cargo/config may move target/)
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
T5MIX="$TARGET_DIR/release/t5mix"

SHARED="${T5MIX_SHARED_DATA:-../shared/data}"
BADWORDS=()
if [ -f "$SHARED/ldnoobw/en.txt" ]; then
  BADWORDS=(--badwords "$SHARED/ldnoobw/en.txt")
else
  echo "note: no LDNOOBW list at $SHARED/ldnoobw/en.txt; the bad-words filter is off" >&2
fi

# 1. Clean the bundled crawl sample (WET + JSONL) with the C4 rules.
# Two shards of clean pages: the first for training, the second held out.
$T5MIX clean data/crawl --out out/clean --overwrite --pages-per-shard 16 "${BADWORDS[@]}"

# 2. The vocabulary: T5's own if the shared data has it, else one trained here.
if [ -f "$SHARED/t5-spm/spiece.model" ]; then
  MODEL="$SHARED/t5-spm/spiece.model"
else
  mkdir -p out/vocab
  $T5MIX vocab train --input out/clean --vocab-size 400 --out out/vocab/sample
  MODEL=out/vocab/sample.model
fi
$T5MIX vocab info --model "$MODEL"

# 3. T5's span-corruption task over the clean text, as Parquet example shards.
rm -rf out/c4_span_corruption out/c4_heldout
$T5MIX build --task c4_span_corruption --input out/clean/part-00000.parquet --vocab "$MODEL" \
  --sequence-length inputs=128,targets=29 --out out/c4_span_corruption
$T5MIX build --task c4_span_corruption --input out/clean/part-00001.parquet --vocab "$MODEL" \
  --sequence-length inputs=128,targets=29 --out out/c4_heldout
$T5MIX inspect out/c4_span_corruption --vocab "$MODEL"

# 4. With GLUE RTE from the shared data: a second task and a 3:1 mixture of both.
if [ -d "$SHARED/glue-hf-dummy/rte" ]; then
  rm -rf out/glue_rte out/demo_mixture
  $T5MIX build --task glue_rte --input "$SHARED/glue-hf-dummy/rte" --vocab "$MODEL" --out out/glue_rte
  $T5MIX build --mixture demo_c4_rte --tasks-file data/demo_mixture.toml \
    --caches out/c4_span_corruption out/glue_rte --examples 200 --out out/demo_mixture
  $T5MIX inspect out/demo_mixture --vocab "$MODEL" -n 2
fi

# 5. A short pretraining run on the span-corruption shards (a micro T5 on the
#    CPU) with the held-out loss; T5's recipe goes on with a multi-task stage
#    on the mixture and a fine-tuning stage on RTE alone, each from the last
#    one's weights; then an evaluation on RTE's validation set with its metric.
rm -rf out/train out/train_mixture out/finetune_rte
$T5MIX train --data out/c4_span_corruption --eval-data out/c4_heldout --out out/train \
  --model micro --steps 80 --batch-size 8 --sequence-length inputs=128,targets=32 \
  --optimizer adamw --schedule constant:0.001 --dropout 0.1 --loss-normalization tokens \
  --checkpoint-every 40 --eval-every 20
if [ -d out/demo_mixture ]; then
  $T5MIX train --data out/demo_mixture --init-from out/train/final --out out/train_mixture \
    --steps 40 --batch-size 8 --sequence-length inputs=128,targets=32 \
    --optimizer adamw --schedule constant:0.001 --loss-normalization tokens --checkpoint-every 40
  $T5MIX train --data out/glue_rte --init-from out/train_mixture/final --out out/finetune_rte \
    --steps 30 --batch-size 8 --sequence-length inputs=128,targets=8 --packing none \
    --optimizer adamw --schedule constant:0.001 --loss-normalization tokens --checkpoint-every 30
  RTE="$SHARED/rte-glue-hf"; [ -d "$RTE" ] || RTE="$SHARED/glue-hf-dummy/rte"
  $T5MIX eval --checkpoint out/finetune_rte/final --task glue_rte --task-input "$RTE" \
    --vocab "$MODEL" --max-output-length 4 --out out/finetune_rte/eval_glue_rte.json \
    --predictions out/finetune_rte/predictions_glue_rte.jsonl
fi
