#!/usr/bin/env bash
# The planner's decode roofline against kvx's measured decode speed, same machine, one run.
#
#   bench/plan-vs-bench.sh [-m MODEL] [-t THREADS] [-d "0 1024 4096 8000"] [-n 64] [--kv CODEC]
#
# Prediction: kvx plan -m MODEL --measure --ctx D,... --json (the bandwidth kvx measures here;
#             decode step = (weights + KV bytes of D tokens) / bandwidth).
# Measured:   kvx bench -m MODEL -p 16 -n N -d D --threads T --kv CODEC --json, per depth.
# Prints predicted and measured tokens/s and their ratio per depth.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${KVX_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
threads=$(nproc)
depths="0 1024 4096 8000"
gen=64
kv=f16
kvx=${KVX_BIN:-build/kvx}
die() { echo "plan-vs-bench: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    -m) model=${2:?}; shift 2 ;;
    -t) threads=${2:?}; shift 2 ;;
    -d) depths=${2:?}; shift 2 ;;
    -n) gen=${2:?}; shift 2 ;;
    --kv) kv=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ -f "$model" ] || die "$model is missing (make model)"
[ -x "$kvx" ] || die "$kvx is missing (make)"
mkdir -p build/bench
out=build/bench/plan-vs-bench-$(date +%Y%m%d-%H%M%S).jsonl
ctxs=$(echo "$depths" | tr ' ' '\n' | awk '{ print ($1 > 0 ? $1 : 1) }' | paste -sd, -)
echo "plan-vs-bench: $model, $threads threads, KV $kv, depths $depths; raw JSON in $out" >&2
"$kvx" plan -m "$model" --measure --ctx "$ctxs" --kv "$kv" --json | sed 's/^/{"side": "plan", "result": /; s/$/}/' >>"$out"
for d in $depths; do
  echo "plan-vs-bench: kvx bench at depth $d" >&2
  line=$("$kvx" bench -m "$model" -p 16 -n "$gen" -d "$d" --threads "$threads" --kv "$kv" --json 2>/dev/null)
  echo "{\"side\": \"bench\", \"result\": $line}" >>"$out"
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
plan = next(r["result"] for r in rows if r["side"] == "plan")
bw = plan["hardware"]["bw_bytes_s"]
pred = {a["context"]: a["tok_s_per_seq"] for a in plan["models"][0]["at"]}
print(f"\nmeasured read bandwidth {bw / 1e9:.2f} GB/s; roofline = bandwidth / (weights + KV of the context)")
print("depth | predicted tok/s | measured tok/s | predicted / measured")
print("------|-----------------|----------------|---------------------")
for r in rows:
    if r["side"] != "bench":
        continue
    b = r["result"]
    d = b["depth"]
    p = pred.get(max(d, 1))
    m = b["decode_tok_s"]
    print(f"{d:>5} | {p:>15.1f} | {m:>14.1f} | {p / m:>19.2f}")
PY
