#!/usr/bin/env bash
# `t5mix vocab encode` on a file of lines next to Python sentencepiece's batch
# encode of the same lines (one process each, 2 threads), with the outputs
# compared. Needs python3 with `sentencepiece` (pip) and the shared T5 model.
#   bash scripts/bench-vocab-encode-cli.sh [LINES_FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${T5MIX_SHARED_DATA:-../shared/data}"
MODEL="$SHARED/t5-spm/spiece.model"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
LINES="${1:-$WORK/lines.txt}"
if [ ! -f "$LINES" ]; then
  # 150,000 non-empty lines of the shared dolma crawl sample
  zcat "$SHARED/dolma-cc/CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz" |
    python3 -c 'import json, sys
lines = [l for r in sys.stdin for l in json.loads(r)["text"].split("\n") if l.strip()]
print("\n".join(lines[i % len(lines)] for i in range(150000)))' > "$LINES"
fi
cargo build --release --bin t5mix -q
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
MB=$(python3 -c "import os; print(os.path.getsize('$LINES') / 1e6)")
python3 - "$MODEL" "$LINES" "$WORK/py.txt" <<'PY'
import os, sys, time, sentencepiece as spm
t = time.time()
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
lines = open(sys.argv[2], encoding="utf-8").read().split("\n")[:-1]
with open(sys.argv[3], "w") as f:
    for ids in sp.encode(lines, num_threads=2):
        f.write(" ".join(map(str, ids)) + "\n")
dt = time.time() - t
mb = os.path.getsize(sys.argv[2]) / 1e6
print(f"python sentencepiece {spm.__version__} batch encode: {mb:.1f} MB in {dt:.2f} s = {mb / dt:.1f} MB/s")
PY
t0=$(date +%s.%N)
"$TARGET_DIR/release/t5mix" --threads 2 vocab encode --model "$MODEL" --input "$LINES" --output "$WORK/rs.txt"
t1=$(date +%s.%N)
python3 -c "dt = $t1 - $t0; print(f't5mix vocab encode (2 threads): $MB MB in {dt:.2f} s = {$MB / dt:.1f} MB/s')"
if cmp -s "$WORK/py.txt" "$WORK/rs.txt"; then echo "ids: identical"; else echo "ids: DIFFER"; exit 1; fi
