#!/usr/bin/env bash
# The main job on the bundled example:
#   crawl text -> clean shards -> vocabulary -> span-corruption example shards
#   -> (with the shared GLUE files) a second task and a mixture of both.
# (The training run joins when the trainer lands.)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
dpkg -s libsentencepiece-dev >/dev/null 2>&1 || need+=(libsentencepiece-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=$(command -v sudo || true)
  $SUDO apt-get update && $SUDO apt-get install -y "${need[@]}"
fi
cargo build --release --bin t5mix
T5MIX=./target/release/t5mix

SHARED="${T5MIX_SHARED_DATA:-../shared/data}"
BADWORDS=()
if [ -f "$SHARED/ldnoobw/en.txt" ]; then
  BADWORDS=(--badwords "$SHARED/ldnoobw/en.txt")
else
  echo "note: no LDNOOBW list at $SHARED/ldnoobw/en.txt; the bad-words filter is off" >&2
fi

# 1. Clean the bundled crawl sample (WET + JSONL) with the C4 rules.
$T5MIX clean data/crawl --out out/clean --overwrite "${BADWORDS[@]}"

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
rm -rf out/c4_span_corruption
$T5MIX build --task c4_span_corruption --input out/clean --vocab "$MODEL" \
  --sequence-length inputs=128,targets=29 --out out/c4_span_corruption
$T5MIX inspect out/c4_span_corruption --vocab "$MODEL"

# 4. With GLUE RTE from the shared data: a second task and a 3:1 mixture of both.
if [ -d "$SHARED/glue-hf-dummy/rte" ]; then
  rm -rf out/glue_rte out/demo_mixture
  $T5MIX build --task glue_rte --input "$SHARED/glue-hf-dummy/rte" --vocab "$MODEL" --out out/glue_rte
  $T5MIX build --mixture demo_c4_rte --tasks-file data/demo_mixture.toml \
    --caches out/c4_span_corruption out/glue_rte --examples 200 --out out/demo_mixture
  $T5MIX inspect out/demo_mixture --vocab "$MODEL" -n 2
fi
