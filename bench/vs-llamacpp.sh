#!/usr/bin/env bash
# kvx against llama.cpp on the same model, same threads, same depths, one run.  See README.md.
#
#   bench/vs-llamacpp.sh [-m MODEL] [-t THREADS] [-d "0 1024 4096 8000"] [-p 512] [-n 128]
#                        [--reps N] [--only kvx|llamacpp] [--kv "f16 q8 q4"]  (or: make bench)
#
# kvx:       build/kvx bench -m MODEL -p P -n N -d DEPTH --threads T --kv CODEC --json
# llama.cpp: bench/llamacpp_bench.py through llama-cpp-python: REF_PYTHON, else .venv-ref
#            (tools/reference/make-fixtures.sh creates it); flash_attn auto.
# --kv lists KV storage formats (default f16): each runs on both sides, kvx's codec against
# llama.cpp's nearest cache type (f16 -> f16, q8 -> q8_0, q4 -> q4_0; kvx-only codecs such as
# kivi2, rot4, rot3 run on kvx alone), and a second table compares each with f16.
# Then the read bandwidth (bench/membw.c, built here into build/bench/membw) and, per depth,
# the decode ceiling = bandwidth / (weight bytes + KV bytes per token x depth).
# Raw JSON goes to build/bench/vs-llamacpp-<time>.jsonl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

model=${KVX_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
threads=$(nproc)
depths="0 1024 4096 8000"
prefill=512
gen=128
reps=3
kvs=f16
only=
kvx=${KVX_BIN:-build/kvx}

die() { echo "bench: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    -m) model=${2:?}; shift 2 ;;
    -t) threads=${2:?}; shift 2 ;;
    -d) depths=${2:?}; shift 2 ;;
    -p) prefill=${2:?}; shift 2 ;;
    -n) gen=${2:?}; shift 2 ;;
    --reps) reps=${2:?}; shift 2 ;;
    --only) only=${2:?}; shift 2 ;;
    --kv) kvs=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$only" in ""|kvx|llamacpp) ;; *) die "--only takes kvx or llamacpp" ;; esac
[ -f "$model" ] || die "$model is missing (make model)"

run_kvx=1 run_llama=1
[ "$only" = llamacpp ] && run_kvx=0
[ "$only" = kvx ] && run_llama=0
if [ $run_kvx = 1 ]; then
  [ -x "$kvx" ] || die "$kvx is missing (make), or run with --only llamacpp"
fi
if [ $run_llama = 1 ]; then
  py=${REF_PYTHON:-$repo/.venv-ref/bin/python}
  [ -x "$py" ] || die "no python with llama-cpp-python: set REF_PYTHON, or create .venv-ref with tools/reference/make-fixtures.sh (make reference)"
  "$py" -c 'import llama_cpp' 2>/dev/null || die "$py cannot import llama_cpp"
fi

mkdir -p build/bench
membw=build/bench/membw
if [ ! -x "$membw" ] || [ bench/membw.c -nt "$membw" ]; then
  ${CC:-cc} -O2 -march=native -pthread bench/membw.c -o "$membw" || die "cannot build $membw"
fi

load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" -v n="$(nproc)" 'BEGIN { exit !(l > 0.5 * n) }'; then
  echo "bench: warning: load average $load on $(nproc) CPUs: other processes compete for the cores and the numbers will be noisy (llama.cpp's spinning OpenMP threads suffer most)" >&2
fi

out=build/bench/vs-llamacpp-$(date +%Y%m%d-%H%M%S).jsonl
: >"$out"
echo "bench: $model, $threads threads, depths $depths, prefill $prefill, decode $gen, KV $kvs; raw JSON in $out" >&2
status=0
llama_kv() { case "$1" in f16) echo f16 ;; q8) echo q8_0 ;; q4) echo q4_0 ;; *) echo ;; esac; }
for d in $depths; do
  for kv in $kvs; do
    if [ $run_kvx = 1 ]; then
      echo "bench: kvx at depth $d, KV $kv" >&2
      if line=$("$kvx" bench -m "$model" -p "$prefill" -n "$gen" -d "$d" --threads "$threads" --kv "$kv" --json 2>build/bench/kvx.err); then
        echo "{\"side\": \"kvx\", \"kv\": \"$kv\", \"result\": $line}" >>"$out"
      else
        echo "bench: kvx bench failed at depth $d, KV $kv: $(tail -n 3 build/bench/kvx.err)" >&2
        status=1
      fi
    fi
    lkv=$(llama_kv "$kv")
    if [ $run_llama = 1 ] && [ -n "$lkv" ]; then
      echo "bench: llama.cpp at depth $d, KV $lkv" >&2
      if line=$("$py" bench/llamacpp_bench.py -m "$model" -t "$threads" -d "$d" -p "$prefill" -n "$gen" --reps "$reps" --kv-type "$lkv" 2>build/bench/llamacpp.err); then
        echo "{\"side\": \"llamacpp\", \"kv\": \"$kv\", \"result\": $line}" >>"$out"
      else
        echo "bench: llama.cpp bench failed at depth $d, KV $lkv: $(tail -n 3 build/bench/llamacpp.err)" >&2
        status=1
      fi
    fi
  done
done
echo "bench: measuring memory bandwidth ($threads threads, 1 GiB)" >&2
"$membw" --threads "$threads" --mib 1024 --json | sed 's/^/{"side": "membw", "result": /; s/$/}/' >>"$out"

# The table: one python3 (Debian's) over the JSON lines.
python3 - "$out" "$depths" "$kvs" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
depths = [int(d) for d in sys.argv[2].split()]
kvs = sys.argv[3].split()
allres = {(r["side"], r["result"].get("depth"), r.get("kv", "f16")): r["result"]
          for r in rows if r["side"] != "membw"}
base_kv = kvs[0]
res = {(s, d): v for (s, d, kv), v in allres.items() if kv == base_kv}
bw = next((r["result"]["read_gb_s"] for r in rows if r["side"] == "membw"), None)

def f(x, w=10, p=1):
    return f"{x:>{w}.{p}f}" if isinstance(x, (int, float)) else f"{'n/a':>{w}}"

def ratio(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

print()
print(f"KV {base_kv} on both sides" + (" (llama.cpp: " + {"q8": "q8_0", "q4": "q4_0"}.get(base_kv, base_kv) + ")" if base_kv != "f16" else ""))
print("depth | kvx decode tok/s | llama.cpp decode tok/s | ratio | kvx prefill tok/s | llama.cpp prefill tok/s | ratio")
print("------|------------------|------------------------|-------|-------------------|-------------------------|------")
for d in depths:
    k, l = res.get(("kvx", d), {}), res.get(("llamacpp", d), {})
    kd, ld, kp, lp = k.get("decode_tok_s"), l.get("decode_tok_s"), k.get("prefill_tok_s"), l.get("prefill_tok_s")
    print(f"{d:>5} | {f(kd, 16)} | {f(ld, 22)} | {f(ratio(kd, ld), 5, 2)} | {f(kp, 17)} | {f(lp, 23)} | {f(ratio(kp, lp), 5, 2)}")

print()
if bw is None:
    print("memory bandwidth: n/a (membw failed)")
    sys.exit(0)
print(f"memory read bandwidth (bench/membw, 1 GiB, {rows[-1]['result']['threads']} threads): {bw:.2f} GB/s")
# Bytes one decode step must read: every weight once, plus the K and V of every cached token.
src = next((res[(s, d)] for d in depths for s in ("kvx", "llamacpp") if (s, d) in res), None)
if src is None:
    sys.exit(0)
side = "kvx" if any(("kvx", d) in res for d in depths) else "llama.cpp"
wb, kvb = src["weight_bytes"], src["kv_bytes_per_token"]
print(f"weights {wb / 2**20:.1f} MiB, KV {kvb} bytes/token (from {side} bench --json)")
l_any = next((res[("llamacpp", d)] for d in depths if ("llamacpp", d) in res), None)
if side == "kvx" and l_any and l_any["kv_bytes_per_token"] != kvb:
    print(f"note: kvx reports {kvb} KV bytes/token, llama.cpp's f16 cache holds {l_any['kv_bytes_per_token']}: not the same KV format")
print()
print("depth | bytes/token read | decode ceiling tok/s | kvx % of ceiling | llama.cpp % of ceiling")
print("------|------------------|----------------------|------------------|-----------------------")
for d in depths:
    per_tok = wb + kvb * d
    ceil = bw * 1e9 / per_tok
    kd = res.get(("kvx", d), {}).get("decode_tok_s")
    ld = res.get(("llamacpp", d), {}).get("decode_tok_s")
    pk = 100 * kd / ceil if kd is not None else None
    pl = 100 * ld / ceil if ld is not None else None
    print(f"{d:>5} | {per_tok / 2**20:>12.1f} MiB | {ceil:>20.1f} | {f(pk, 16)} | {f(pl, 21)}")
if len(kvs) > 1:
    lname = {"f16": "f16", "q8": "q8_0", "q4": "q4_0"}
    print()
    print("KV storage, decode tok/s: kvx with each codec against kvx f16 and llama.cpp f16 (same run)")
    print("depth | KV    | kvx bytes/token | kvx decode | llama.cpp decode (its type) | kvx / kvx f16 | llama.cpp / its f16 | kvx / llama.cpp f16")
    print("------|-------|-----------------|------------|-----------------------------|---------------|---------------------|--------------------")
    for d in depths:
        kf = allres.get(("kvx", d, "f16"), {}).get("decode_tok_s")
        lf = allres.get(("llamacpp", d, "f16"), {}).get("decode_tok_s")
        for kv in kvs:
            k = allres.get(("kvx", d, kv), {})
            l = allres.get(("llamacpp", d, kv), {})
            kd, ld = k.get("decode_tok_s"), l.get("decode_tok_s")
            lt = f"{f(ld, 10)} ({lname[kv]})" if kv in lname else f"{'-':>10} (none)"
            print(f"{d:>5} | {kv:<5} | {k.get('kv_bytes_per_token', 'n/a'):>15} | {f(kd)} | {lt:>27} | "
                  f"{f(ratio(kd, kf), 13, 2)} | {f(ratio(ld, lf), 19, 2)} | {f(ratio(kd, lf), 18, 2)}")
try:
    llc = open("/sys/devices/system/cpu/cpu0/cache/index3/size").read().strip()
    print(f"\n(last-level cache {llc}: when weights + KV fit in it, decode can beat the DRAM ceiling)")
except OSError:
    pass
PY
exit $status
