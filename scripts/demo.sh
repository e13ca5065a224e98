#!/usr/bin/env bash
# The main job on the bundled example, T5's whole recipe on a laptop-sized
# scale, from nothing but this repository:
#   crawl sample -> clean shards -> vocabulary -> span-corruption task
#   -> the bundled supervised task (data/demo_reviews) -> a mixture of both
#   -> pretraining (span corruption) -> multi-task training (the mixture)
#   -> fine-tuning (demo_reviews) -> evaluation against the majority baseline
# With ../shared/data (or T5MIX_SHARED_DATA) it adds GLUE RTE to the mixture
# and the evaluation, and the LDNOOBW bad-words list to cleaning.
# Outputs go to out/demo/; a summary table ends the run.
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
OUT=out/demo
rm -rf "$OUT" && mkdir -p "$OUT/logs"
VOCAB=data/vocab/crawl.model   # 512 pieces, see data/README.md
TASKS=(--tasks-file data/demo_tasks.toml)
LEN=(--sequence-length inputs=128,targets=32)
ADAMW=(--optimizer adamw --loss-normalization tokens)

# run STAGE OUTPUT COMMAND...: runs it with its output in $OUT/logs/STAGE.log
# (and on the terminal) and times it; `metric` then adds the table's row.
ROWS=()
run() {
  STAGE=$1 OUTPUT=$2; shift 2
  echo "== $STAGE: $*"
  local start=$SECONDS
  "$@" 2>&1 | tee "$OUT/logs/$STAGE.log"
  ELAPSED=$((SECONDS - start))
}
metric() { ROWS+=("$STAGE|$OUTPUT|${ELAPSED}s|$1"); }
# the first match of a sed expression in the stage's log
grab() { sed -n "$1" "$OUT/logs/$STAGE.log" | head -1; }

BADWORDS=()
if [ -f "$SHARED/ldnoobw/en.txt" ]; then
  BADWORDS=(--badwords "$SHARED/ldnoobw/en.txt")
fi
# GLUE RTE: the shared data's TSV sample to train on (3 pairs), and the whole
# validation split (277 pairs) to evaluate on.
RTE="" RTE_EVAL=""
if [ -d "$SHARED/glue-hf-dummy/rte" ]; then
  RTE="$SHARED/glue-hf-dummy/rte" RTE_EVAL="$SHARED/glue-hf-dummy/rte"
  [ -f "$SHARED/rte-glue-hf/dev.tsv" ] && RTE_EVAL="$SHARED/rte-glue-hf"
fi

# 1. Clean the crawl sample (WET + JSONL) with the C4 rules; two shards of
#    clean pages: the first for training, the second held out.
run clean "$OUT/clean" $T5MIX clean data/crawl --out "$OUT/clean" --pages-per-shard 16 -q "${BADWORDS[@]}"
metric "$(grab 's/.*, \([0-9]*\) pages ([^)]*) in, \([0-9]*\) pages.*/\2 of \1 pages kept/p')"

# 2. The vocabulary: trained again here as data/vocab/crawl.model was (see
#    data/README.md); the stages below use the committed one, so their
#    numbers do not depend on the local SentencePiece version. Real runs use
#    T5's 32000-piece spiece.model.
run vocab_train "$OUT/vocab/crawl.model" $T5MIX vocab train --input data/crawl --vocab-size 512 \
  --threads 2 --out "$OUT/vocab/crawl" -q
if cmp -s "$OUT/vocab/crawl.vocab" data/vocab/crawl.vocab; then
  metric "512 pieces, the same as $VOCAB's"
else
  metric "512 pieces, not all as $VOCAB's (another SentencePiece version?)"
fi
run vocab "$VOCAB" $T5MIX vocab info --model "$VOCAB"
metric "$(grab 's/^pieces *\([0-9]*\) .*vocab_size \([0-9]*\).*/\1 pieces, vocab_size \2 with the sentinels/p')"

# 3. T5's span corruption over the clean pages.
run span_corruption "$OUT/c4_span_corruption" $T5MIX build --task c4_span_corruption -q \
  --input "$OUT/clean/part-00000.parquet" --vocab "$VOCAB" "${LEN[@]}" --out "$OUT/c4_span_corruption"
$T5MIX build --task c4_span_corruption -q --input "$OUT/clean/part-00001.parquet" \
  --vocab "$VOCAB" "${LEN[@]}" --out "$OUT/c4_heldout" 2>&1 | tail -1
metric "$(grab 's/.*-> \([0-9]*\) examples.*/\1 examples/p')"

# 4. The bundled supervised task (scripts/make_demo_task.py) and, with the
#    shared data, GLUE RTE.
run demo_reviews "$OUT/demo_reviews" $T5MIX build --task demo_reviews "${TASKS[@]}" -q \
  --input data/demo_reviews --vocab "$VOCAB" --out "$OUT/demo_reviews"
metric "$(grab 's/.*-> \([0-9]*\) examples.*/\1 examples/p')"
CACHES=("$OUT/c4_span_corruption" "$OUT/demo_reviews")
MIXTURE=demo_mix
if [ -n "$RTE" ]; then
  run glue_rte "$OUT/glue_rte" $T5MIX build --task glue_rte -q --input "$RTE" --vocab "$VOCAB" \
    --out "$OUT/glue_rte"
  metric "$(grab 's/.*-> \([0-9]*\) examples.*/\1 examples/p')"
  CACHES+=("$OUT/glue_rte")
  MIXTURE=demo_mix_rte
fi

# 5. The mixture: the tasks at equal rates.
run mixture "$OUT/$MIXTURE" $T5MIX build --mixture $MIXTURE "${TASKS[@]}" -q \
  --caches "${CACHES[@]}" --examples 2000 --out "$OUT/$MIXTURE"
metric "$(grab 's/.*: \([0-9]*\) examples from \([0-9]*\) task.*/\1 examples of \2 tasks/p')"

# 6. T5's recipe: pretrain a micro T5 on span corruption (held-out loss vs
#    the unigram baseline), train on the mixture, fine-tune on demo_reviews.
run pretrain "$OUT/pretrain" $T5MIX train --data "$OUT/c4_span_corruption" --eval-data "$OUT/c4_heldout" \
  --out "$OUT/pretrain" --model micro --steps 60 --batch-size 8 "${LEN[@]}" "${ADAMW[@]}" \
  --schedule constant:0.001 --dropout 0.1 --checkpoint-every 60 --eval-every 20 -q
metric "$(grab 's/^held-out loss\/token \([0-9.]*\) (unigram of the training targets: \([0-9.]*\).*/held-out loss\/token \1 (unigram \2)/p')"
run multi_task "$OUT/multi_task" $T5MIX train --data "$OUT/$MIXTURE" --init-from "$OUT/pretrain/final" \
  --out "$OUT/multi_task" --steps 150 --batch-size 16 "${LEN[@]}" "${ADAMW[@]}" \
  --schedule constant:0.001 --checkpoint-every 150 -q
metric "$(grab 's/.*\(loss\/token [0-9.]* -> [0-9.]*\).*/\1/p')"
run fine_tune "$OUT/fine_tune" $T5MIX train --data "$OUT/demo_reviews" --init-from "$OUT/multi_task/final" \
  --out "$OUT/fine_tune" --steps 150 --batch-size 16 --sequence-length inputs=128,targets=8 \
  --packing none "${ADAMW[@]}" --schedule constant:0.001 --checkpoint-every 150 -q
metric "$(grab 's/.*\(loss\/token [0-9.]* -> [0-9.]*\).*/\1/p')"

# 7. Evaluate: greedy decoding, the task's postprocessor and metric, next to
#    the majority baseline (always the most frequent label).
evaluate() { # TASK INPUT STAGE (the training stage whose model is scored)
  run "eval_$1" "$OUT/$3/eval_$1.json" $T5MIX eval --checkpoint "$OUT/$3/final" \
    --task "$1" --task-input "$2" "${TASKS[@]}" --vocab "$VOCAB" --max-output-length 8 -q \
    --out "$OUT/$3/eval_$1.json" --predictions "$OUT/$3/predictions_$1.jsonl"
  metric "$(grab "s/^$1 *[0-9]* *accuracy \([0-9.]*\) *accuracy \([0-9.]*\).*/accuracy \1 (majority baseline \2)/p")"
}
evaluate demo_reviews data/demo_reviews fine_tune
if [ -n "$RTE" ]; then
  # RTE was only in the mixture (3 pairs), and needs far more pretraining
  # than a micro model gets here: expect about the baseline.
  evaluate glue_rte "$RTE_EVAL" multi_task
fi

echo
echo "t5mix demo: the T5 recipe on the bundled example (outputs in $OUT/, logs in $OUT/logs/)"
printf '%-18s %-44s %5s  %s\n' stage output time metric
for r in "${ROWS[@]}"; do
  IFS='|' read -r s o t m <<<"$r"
  printf '%-18s %-44s %5s  %s\n' "$s" "$o" "$t" "$m"
done
