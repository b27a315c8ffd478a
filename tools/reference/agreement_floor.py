#!/usr/bin/env python3
"""How closely can two correct implementations of the default model agree?

llama.cpp is run on the teacher-forced text and the greedy prompts of tests/fixtures/ in
three of its own configurations (f16 KV with flash attention — the fixtures' configuration —,
f16 KV without, f32 KV without), and kvx with f16 and f32 KV.  The tables printed are the
top-1 agreement between every pair over the teacher-forced positions, and, between the
llama.cpp configurations, the number of the 8 greedy continuations that stay identical for
32 tokens (kvx's own greedy agreement is printed by tests/test_reference.c).  The model re-quantizes every
activation to 8 bits before each matmul, so a last-bit difference anywhere can flip a
rounding and the flips compound over 30 layers: llama.cpp's agreement with itself across KV
precisions is the floor against which kvx's agreement with llama.cpp should be read.

With --model F32.gguf (the default model's weights dequantized to f32: no activation is
rounded to 8 bits on either side) the same tables show how close the two engines come when
that rounding is out of the way; kvx's greedy continuations are then computed too (one
`kvx logits` call per step).  --kvx-args adds options to every kvx call (e.g. "--weights f32"
on the Q4_1 file, which computes the same as the f32 file).

Usage (from the repository root, with build/kvx built and a venv holding llama-cpp-python):
    REF_PYTHON=.venv-ref/bin/python; $REF_PYTHON tools/reference/agreement_floor.py [-n 1024]
        [--model FILE.gguf] [--kvx-args "--weights f32"] [--kvx-greedy]
"""
import argparse
import json
import shlex
import subprocess

import numpy as np
from llama_cpp import Llama

MODEL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
ARGS = None


def llama_run(tokens, prompts, type_kv, flash):
    llm = Llama(ARGS.model, n_ctx=2048, n_threads=2, logits_all=True, verbose=False,
                type_k=type_kv, type_v=type_kv, flash_attn=flash)
    llm.eval(tokens)
    top1 = np.array(llm.scores[:len(tokens)]).argmax(1)
    greedy = []
    for p in prompts:
        llm.reset()
        llm.eval(p["prompt_ids"])
        out = []
        for _ in range(len(p["greedy_ids"])):
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            out.append(tok)
            llm.eval([tok])
        greedy.append(out)
    return top1, greedy


def kvx_top1(tokens, kv):
    cmd = ["build/kvx", "logits", "-m", ARGS.model, "--kv", kv, "--top", "1", "--json"]
    cmd += shlex.split(ARGS.kvx_args) + ["--tokens", " ".join(map(str, tokens))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return np.array([row[0][0] for row in json.loads(out)["top"]])


def kvx_run(tokens, prompts, kv):
    greedy = None
    if ARGS.kvx_greedy:
        greedy = []
        for p in prompts:
            seq = list(p["prompt_ids"])
            for _ in range(len(p["greedy_ids"])):
                seq.append(int(kvx_top1(seq, kv)[-1]))
            greedy.append(seq[len(p["prompt_ids"]):])
    return kvx_top1(tokens, kv), greedy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1024, help="teacher-forced positions")
    ap.add_argument("--model", default=MODEL, help="GGUF file both engines run")
    ap.add_argument("--kvx-args", default="", help="more options for every kvx call")
    ap.add_argument("--kvx-greedy", action="store_true",
                    help="kvx's greedy continuations too (one kvx call per token)")
    global ARGS
    ARGS = ap.parse_args()
    args = ARGS
    teacher = json.load(open("tests/fixtures/smollm2_teacher.json"))
    prompts = json.load(open("tests/fixtures/smollm2_greedy.json"))["prompts"]
    tokens = teacher["tokens"][:args.n]
    runs = {
        "llama f16 FA": llama_run(tokens, prompts, 1, True),
        "llama f16": llama_run(tokens, prompts, 1, False),
        "llama f32": llama_run(tokens, prompts, 0, False),
        "kvx f16": kvx_run(tokens, prompts, "f16"),
        "kvx f32": kvx_run(tokens, prompts, "f32"),
    }
    names = list(runs)
    print(f"top-1 agreement over {len(tokens)} teacher-forced positions")
    print(" " * 14 + "".join(f"{n:>14}" for n in names))
    for a in names:
        print(f"{a:>14}" + "".join(f"{(runs[a][0] == runs[b][0]).mean():14.4f}" for b in names))
    names = [n for n in names if runs[n][1] is not None]  # else kvx's greedy runs in tests/
    print(f"\ngreedy continuations identical for {len(prompts[0]['greedy_ids'])} tokens (of {len(prompts)})")
    print(" " * 14 + "".join(f"{n:>14}" for n in names))
    for a in names:
        print(f"{a:>14}" + "".join(
            f"{sum(x == y for x, y in zip(runs[a][1], runs[b][1])):14d}" for b in names))


if __name__ == "__main__":
    main()
