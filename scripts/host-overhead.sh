#!/usr/bin/env bash
# The host's own cost of one GPU training step, measured without a GPU: the
# train_step bench's `step-gpu` (bf16, AdamW) on the CPU stand-in of CUDA
# with T5MIX_STANDIN_HOST_ONLY=1, where kernels and products are checked
# and counted but not run. The step's time is then what our code, cudarc
# and a driver that does nothing take to issue it, the GPU taken as
# infinitely fast; a real driver adds a few µs a call, so the calls a step
# makes are printed beside it. When the host's time nears the GPU's (the
# GPU profile of scripts/gpu-check.sh: its `idle` line), the host sets the
# step's pace. The stand-in counts the step's allocations too: the last
# column is the most device memory its buffers hold at once, as a GPU's
# memory pool would count it.
#
#   bash scripts/host-overhead.sh [STEPS=20]
#
# CONFIGS as scripts/gpu-bench.sh's ("config batch inputs targets;...").
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-20}
CONFIGS=${CONFIGS:-"tiny 16 128 32;t5-v1_1-small 8 512 114;t5-v1_1-small 64 512 114"}
# the bench (release) and the stand-in's folder, from cargo's messages
read -r BENCH STANDIN < <(cargo bench -p t5mix-trainer --bench train_step --no-run \
  --message-format=json 2>/dev/null | python3 -c '
import json, sys
bench = standin = ""
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "train_step" and m.get("executable"):
        bench = m["executable"]
    if m.get("reason") == "build-script-executed" and m["package_id"].find("t5mix-trainer") >= 0:
        standin = m["out_dir"] + "/cuda-standin"
print(bench, standin)')
[ -x "$BENCH" ] && [ -f "$STANDIN/libcuda.so" ] || {
  echo "host-overhead: no bench ($BENCH) or no CPU stand-in of CUDA ($STANDIN)" >&2
  exit 1
}
# run STEPS: the stand-in's call counts (name count per line) and the
# bench's ms/step, of a run of STEPS timed steps
run() {
  T5MIX_STANDIN_HOST_ONLY=1 LD_LIBRARY_PATH="$STANDIN" T5MIX_NVRTC="$STANDIN/libnvrtc.so" \
    "$BENCH" step-gpu "$name" "$b" "$s" "$t" "$1" adamw bf16 2>&1 >/dev/null |
    sed -n 's/^CUDA stand-in calls: \(.*\) \([0-9]*\)$/\1\t\2/p'
}
printf '%-32s %10s %9s %9s %12s %9s %8s %9s\n' "config (bf16, AdamW)" "host ms" launches products \
  allocations memsets copies "peak GiB"
IFS=';' read -ra rows <<< "$CONFIGS"
for row in "${rows[@]}"; do
  read -r name b s t <<< "$row"
  # the bench's line: "ms_per_step peak_gib"
  result=$(T5MIX_STANDIN_HOST_ONLY=1 LD_LIBRARY_PATH="$STANDIN" T5MIX_NVRTC="$STANDIN/libnvrtc.so" \
    "$BENCH" step-gpu "$name" "$b" "$s" "$t" "$STEPS" adamw bf16 2>/dev/null |
    python3 -c 'import json, sys; r = json.loads(sys.stdin.read().strip().splitlines()[-1]); print(r["ms_per_step"], r["peak_gib"])')
  # calls a step: the difference of two runs, STEPS timed steps apart
  python3 - "$name b$b $s/$t" $result "$STEPS" <(run 1) <(run $((1 + STEPS))) <<'PY'
import sys
label, ms, peak, steps = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
def counts(path):
    return {k: int(v) for k, v in (l.rstrip("\n").split("\t") for l in open(path))}
a, b = counts(sys.argv[5]), counts(sys.argv[6])
per = {k: (b[k] - a[k]) / steps for k in a}
copies = sum(per[k] for k in per if k.startswith("copies"))
print(f"{label:<32} {ms:>10.2f} {per['kernel launches']:>9.0f} {per['products']:>9.0f} "
      f"{per['allocations']:>12.0f} {per['memsets']:>9.0f} {copies:>8.0f} {peak:>9.2f}")
PY
done
echo "(host ms: the bench's median step with no device work; the counts are per step)"
