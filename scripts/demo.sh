#!/usr/bin/env bash
# The main job on the bundled example: crawl text -> clean shards.
# (Later stages -- vocabulary, mixture shards, training -- join as they land.)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cc >/dev/null; then
  SUDO=$(command -v sudo || true)
  $SUDO apt-get update && $SUDO apt-get install -y build-essential pkg-config
fi
cargo build --release --bin t5mix

SHARED="${T5MIX_SHARED_DATA:-../shared/data}"
BADWORDS=()
if [ -f "$SHARED/ldnoobw/en.txt" ]; then
  BADWORDS=(--badwords "$SHARED/ldnoobw/en.txt")
else
  echo "note: no LDNOOBW list at $SHARED/ldnoobw/en.txt; the bad-words filter is off" >&2
fi

# 1. Clean the bundled crawl sample (WET + JSONL) with the C4 rules.
./target/release/t5mix clean data/crawl --out out/clean --overwrite "${BADWORDS[@]}"
