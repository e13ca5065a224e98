#!/usr/bin/env bash
# Staged cleaning against the one-process run, in one run, on the same
# inputs: ~MB of crawl text made from ../shared/data's Common Crawl sample
# (copies with their own hosts and lines, so neither dedup empties them).
#
#   [BUDGET_MB=1024] bash scripts/bench-staged-clean.sh [MB=200] [N=8] [R=4] [K=2]
#
# BUDGET_MB is the staged run's --memory-budget-mb (records a task sorts in
# memory before it spills a sorted run).
# Prints MB/s of the one-process run (all threads), of the staged run with
# each task its own `t5mix clean --task` process, K at a time (as a
# scheduler runs them), and of the staged run in one process
# (`--local-workers K`); the peak RSS of the one-process run and of each
# stage's largest task; and checks that the shards are byte-identical.
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-200} N=${2:-8} R=${3:-4} K=${4:-2} BUDGET_MB=${BUDGET_MB:-1024}
SHARED="${T5MIX_SHARED_DATA:-../shared/data}"
SRC="$SHARED/dolma-cc/CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"
[ -f "$SRC" ] || { echo "needs $SRC (../shared/data)" >&2; exit 1; }
cargo build --release --bin t5mix -q
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
T5MIX="$TARGET_DIR/release/t5mix"
W=${BENCH_DIR:-out/bench-staged}
rm -rf "$W" && mkdir -p "$W/in"

python3 - "$SRC" "$W/in" "$MB" <<'EOF'
import gzip, json, sys
src, out, mb = sys.argv[1], sys.argv[2], float(sys.argv[3])
docs = [json.loads(l) for l in gzip.open(src, "rt", encoding="utf-8") if l.strip()]
size = sum(len(d["text"].encode()) for d in docs)
copies = max(1, int(mb * 1e6 / size + 0.999))
for k in range(copies):
    with open(f"{out}/part-{k:04d}.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            text = "\n".join(f"{k} {l}" if l.strip() else l for l in d["text"].split("\n"))
            url = d.get("url") or d["id"]
            url = url.replace("://", f"://c{k}.", 1) if "://" in url else f"http://c{k}.example/{url}"
            f.write(json.dumps({"url": url, "timestamp": d.get("timestamp", ""), "text": text}) + "\n")
print(f"{copies} files of {size / 1e6:.1f} MB of text", file=sys.stderr)
EOF
BYTES=$(cat "$W"/in/*.jsonl | wc -c)

rss() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }
start=$(date +%s.%N)
/usr/bin/time -v "$T5MIX" clean "$W"/in --out "$W/one" -q 2>"$W/one.time" >/dev/null
one_s=$(echo "$(date +%s.%N) - $start" | bc)
one_rss=$(rss "$W/one.time")

"$T5MIX" clean "$W"/in --out "$W/staged" -q --num-tasks "$N" --buckets "$R" --memory-budget-mb "$BUDGET_MB" --plan-only >/dev/null
start=$(date +%s.%N)
declare -A peak
for stage in extract urls lines owners finalize write; do
  n=$N; case $stage in urls|owners) n=$R ;; esac
  seq 0 $((n - 1)) | xargs -P "$K" -I{} sh -c \
    "/usr/bin/time -v '$T5MIX' clean --out '$W/staged' --task $stage:{} -q 2>'$W/$stage-{}.time'"
  peak[$stage]=$(for i in $(seq 0 $((n - 1))); do rss "$W/$stage-$i.time"; done | sort -n | tail -1)
done
"$T5MIX" clean --out "$W/staged" --finish -q 2>/dev/null
staged_s=$(echo "$(date +%s.%N) - $start" | bc)

start=$(date +%s.%N)
"$T5MIX" clean "$W"/in --out "$W/local" -q --num-tasks "$N" --buckets "$R" --memory-budget-mb "$BUDGET_MB" --local-workers "$K" 2>/dev/null
local_s=$(echo "$(date +%s.%N) - $start" | bc)

same=yes
for d in staged local; do
  for f in "$W"/one/part-*; do cmp -s "$f" "$W/$d/$(basename "$f")" || same=no; done
  [ "$(ls "$W"/one/part-* | wc -l)" = "$(ls "$W"/$d/part-* | wc -l)" ] || same=no
done
printf 'input: %.1f MB of JSONL, %s files; %s cores\n' "$(echo "$BYTES / 1000000" | bc -l)" "$(ls "$W"/in | wc -l)" "$(nproc)"
printf '%-34s %8.1f s %8.1f MB/s  peak RSS %6.0f MB\n' "one process (all threads)" "$one_s" \
  "$(echo "$BYTES / 1000000 / $one_s" | bc -l)" "$(echo "$one_rss / 1024" | bc -l)"
printf '%-34s %8.1f s %8.1f MB/s\n' "staged N=$N R=$R ${BUDGET_MB} MB, $K at a time" "$staged_s" \
  "$(echo "$BYTES / 1000000 / $staged_s" | bc -l)"
printf '%-34s %8.1f s %8.1f MB/s\n' "staged, one process, --local-workers $K" "$local_s" \
  "$(echo "$BYTES / 1000000 / $local_s" | bc -l)"
for stage in extract urls lines owners finalize write; do
  printf '  %-10s largest task peak RSS %6.0f MB\n' "$stage" "$(echo "${peak[$stage]} / 1024" | bc -l)"
done
echo "shards byte-identical: $same"
