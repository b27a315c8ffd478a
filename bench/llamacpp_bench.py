#!/usr/bin/env python3
"""llama.cpp's side of bench/vs-llamacpp.sh: prefill and decode speed at a given depth.

Measures what `llama-bench -p 512 -n 128 -d DEPTH` measures, with llama.cpp's C API through
llama-cpp-python (llama_decode on a llama_batch; no sampling, no Python tokenizer):

  1. fill the cache with DEPTH tokens (untimed; batches of n_batch),
  2. warm up (one 8-token batch and one single-token step, then removed from the cache),
  3. prefill: time one prompt of --prefill tokens (batches of n_batch) at positions DEPTH..,
  4. remove those tokens again (llama_memory_seq_rm), so that decoding, like llama-bench's tg
     test, starts right after the depth,
  5. decode: time --gen single-token llama_decode calls at positions DEPTH...

Steps 3-5 repeat --reps times over the same filled depth; the reported speeds are the medians
(one rep stalled by another process does not move them), the per-rep values are kept too.
Token ids are fixed pseudo-random ids (speed does not depend on them).  Prints one JSON object
with the keys of `kvx bench --json` plus a few llama.cpp details.

Usage: llamacpp_bench.py -m MODEL [--threads N] [--depth D] [-p 512] [-n 128]
                         [--kv-type f16|q8_0|q4_0] [--flash-attn auto|on|off] [--reps 3]
"""
import argparse
import ctypes
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import llama_cpp as L

KV_TYPES = {  # name -> (ggml type, bytes per 32 values)
    "f16": (L.GGML_TYPE_F16, 64),
    "q8_0": (L.GGML_TYPE_Q8_0, 34),
    "q4_0": (L.GGML_TYPE_Q4_0, 18),
}
FLASH = {"auto": L.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": L.LLAMA_FLASH_ATTN_TYPE_ENABLED,
         "off": L.LLAMA_FLASH_ATTN_TYPE_DISABLED}


def die(msg):
    sys.exit(f"llamacpp_bench: error: {msg}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("-d", "--depth", type=int, default=0)
    ap.add_argument("-p", "--prefill", type=int, default=512)
    ap.add_argument("-n", "--gen", type=int, default=128)
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--kv-type", choices=sorted(KV_TYPES), default="f16")
    ap.add_argument("--flash-attn", choices=sorted(FLASH), default="auto")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if args.kv_type != "f16" and args.flash_attn == "off":
        die("a quantized V cache needs flash attention in llama.cpp (use --flash-attn on/auto)")
    if min(args.threads, args.prefill, args.gen, args.reps, args.n_batch) < 1 or args.depth < 0:
        die("threads, prefill, gen, reps and n-batch must be >= 1, depth >= 0")

    log = []

    @L.llama_log_callback
    def on_log(level, text, user_data):
        log.append(text.decode("utf-8", "replace"))
    L.llama_log_set(on_log, ctypes.c_void_p(0))
    L.llama_backend_init()

    mp = L.llama_model_default_params()
    mp.n_gpu_layers = 0
    model = L.llama_model_load_from_file(args.model.encode(), mp)
    if not model:
        die(f"llama.cpp could not load {args.model}")
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)

    cp = L.llama_context_default_params()
    cp.n_ctx = args.depth + args.prefill + args.gen + 256
    cp.n_batch = args.n_batch
    cp.n_ubatch = args.n_batch
    cp.n_threads = args.threads
    cp.n_threads_batch = args.threads
    kv_ggml, kv_block_bytes = KV_TYPES[args.kv_type]
    cp.type_k = kv_ggml
    cp.type_v = kv_ggml
    cp.flash_attn_type = FLASH[args.flash_attn]
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        die("llama.cpp could not create the context (see --kv-type / --flash-attn)")
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(args.n_batch, 0, 1)

    rng = np.random.default_rng(1234)
    toks = [int(t) for t in rng.integers(0, n_vocab, args.depth + args.prefill + 8)]

    def decode(tokens, pos0):
        for s in range(0, len(tokens), args.n_batch):
            part = tokens[s:s + args.n_batch]
            batch.n_tokens = len(part)
            for i, t in enumerate(part):
                batch.token[i] = t
                batch.pos[i] = pos0 + s + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1 if i == len(part) - 1 else 0
            rc = L.llama_decode(ctx, batch)
            if rc != 0:
                die(f"llama_decode returned {rc} at position {pos0 + s}")
        L.llama_synchronize(ctx)

    d = args.depth
    t0 = time.perf_counter()
    decode(toks[:d], 0)
    fill_s = time.perf_counter() - t0
    decode(toks[d:d + 8], d)            # warm-up: a small batch ...
    decode([toks[d]], d + 8)            # ... and one decode step
    L.llama_memory_seq_rm(mem, 0, d, -1)

    pp_rates, tg_rates = [], []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        decode(toks[d:d + args.prefill], d)
        pp_rates.append(args.prefill / (time.perf_counter() - t0))
        L.llama_memory_seq_rm(mem, 0, d, -1)
        tok = toks[d]
        t0 = time.perf_counter()
        for i in range(args.gen):
            decode([tok], d + i)
            tok = (tok * 31 + 7) % n_vocab  # no sampling: its cost is not llama.cpp's decode
        tg_rates.append(args.gen / (time.perf_counter() - t0))
        L.llama_memory_seq_rm(mem, 0, d, -1)

    n_layer = L.llama_model_n_layer(model)
    n_head = L.llama_model_n_head(model)
    n_head_kv = L.llama_model_n_head_kv(model)
    head_dim = L.llama_model_n_embd(model) // n_head
    kv_values_per_token = 2 * n_layer * n_head_kv * head_dim  # K and V, every layer
    desc = ctypes.create_string_buffer(256)
    L.llama_model_desc(model, desc, 256)
    info = L.llama_print_system_info().decode().strip()
    isa = "AVX512" if "AVX512 = 1" in info else "AVX2" if "AVX2 = 1" in info else "scalar"
    out = {
        "engine": "llama.cpp",
        "model": args.model,
        "threads": args.threads,
        "depth": d,
        "prefill_tokens": args.prefill,
        "prefill_tok_s": round(statistics.median(pp_rates), 2),
        "decode_tokens": args.gen,
        "decode_tok_s": round(statistics.median(tg_rates), 2),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "kv_bytes_per_token": kv_values_per_token // 32 * kv_block_bytes,
        "weight_bytes": int(L.llama_model_size(model)),
        "isa": isa,
        # llama.cpp specifics
        "llama_cpp_python": L.__version__,
        "model_desc": desc.value.decode(),
        "kv_type": args.kv_type,
        "flash_attn": args.flash_attn,
        "flash_attn_log": [l.strip() for l in log if "Flash Attention" in l],
        "n_ctx": cp.n_ctx,
        "n_batch": args.n_batch,
        "reps": args.reps,
        "prefill_tok_s_best": round(max(pp_rates), 2),
        "decode_tok_s_best": round(max(tg_rates), 2),
        "prefill_tok_s_reps": [round(r, 2) for r in pp_rates],
        "decode_tok_s_reps": [round(r, 2) for r in tg_rates],
        "depth_fill_s": round(fill_s, 3),
        "loadavg_1min": os.getloadavg()[0],
        "system_info": info,
    }
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
