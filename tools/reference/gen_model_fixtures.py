#!/usr/bin/env python3
"""Reference fixtures for kvx's forward pass, made by llama.cpp (through llama-cpp-python).

Writes three JSON files into tests/fixtures/ (or --out):

  smollm2_teacher.json  one evaluation of --teacher-tokens tokens from the start of the corpus
                        (n_ctx 2048, prefilled in batches of 512 into one sequence, every row's
                        logits kept): per position the top-5 (id, logit), the logit of the actual
                        next token and log-sum-exp(logits), so kvx can compare logits and NLLs.
  smollm2_ppl.json      perplexity exactly as llama.cpp's `llama-perplexity` computes it
                        (tools/perplexity/perplexity.cpp, default mode): the corpus tokenized
                        with add_special=true, non-overlapping windows of n_ctx tokens, each
                        evaluated from an empty cache; BOS replaces a window's first token when
                        the model's add_bos is set; only the second half is scored (positions
                        n_ctx/2 .. n_ctx-2 predict the next token, n_ctx/2 - 1 per window).
  smollm2_greedy.json   8 prompts (4 raw corpus text, 4 ChatML chats) with 32 pure-argmax tokens
                        each (llama_decode + argmax of the logits, ties to the lowest id; no
                        llama.cpp sampler involved) and the top-1/top-2 logit margin per step.

Logits are rounded to 4 decimals.  Every file records the llama-cpp-python version, llama.cpp's
system info, the thread count, KV types, flash-attention setting, the model's sha256, the
corpus sha256 and the command line.  llama.cpp runs on the CPU with n_threads threads and its
default f16 K/V cache and default flash_attn_type (auto).

With --f32 the model is first copied with every tensor dequantized to float32
(tools/reference/gguf_f32.py, gguf-py), and the teacher and greedy files are written as
smollm2_f32_teacher.json and smollm2_f32_greedy.json from that copy: the same weights, but
llama.cpp then rounds no activation to 8 bits (kvx's counterpart is --weights f32), so these
fixtures measure the two forward passes without the rounding flips that 8-bit activations
compound over 30 layers.  The files record the sha256 of both the original and the copy.

Usage: gen_model_fixtures.py [--model M] [--corpus data/corpus/eval.txt] [--out tests/fixtures]
                             [--threads 2] [--only teacher,ppl,greedy] [--f32]
"""
import argparse
import ctypes
import hashlib
import json
import os
import sys
import time

import tempfile

import numpy as np
import llama_cpp as L

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rel(path):
    """A path under the repository as the repository-relative path (for the fixture records)."""
    return os.path.relpath(path, REPO) if os.path.isabs(path) and path.startswith(REPO + os.sep) else path


def r4(x):
    return round(float(x), 4)


class Llama:
    """The few llama.cpp C calls the fixtures need: tokenize, decode a batch, read logits."""

    def __init__(self, model_path, n_ctx, n_batch, n_threads):
        self.log = []
        # Keep llama.cpp's log (it says how flash_attn "auto" resolved) instead of printing it.
        @L.llama_log_callback
        def on_log(level, text, user_data):
            self.log.append(text.decode("utf-8", "replace"))
        self._on_log = on_log  # the C side keeps the pointer: keep the callback alive
        L.llama_log_set(on_log, ctypes.c_void_p(0))
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(model_path.encode(), mp)
        if not self.model:
            sys.exit(f"fixtures: error: llama.cpp could not load {model_path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        cp.n_threads = n_threads
        cp.n_threads_batch = n_threads
        self.type_k, self.type_v, self.flash_attn_type = cp.type_k, cp.type_v, cp.flash_attn_type
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            sys.exit("fixtures: error: llama.cpp could not create a context")
        self.n_ctx, self.n_batch = n_ctx, n_batch
        self.batch = L.llama_batch_init(n_batch, 0, 1)

    def close(self):
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)

    def add_bos(self):
        return bool(L.llama_vocab_get_add_bos(self.vocab))

    def bos(self):
        return int(L.llama_vocab_bos(self.vocab))

    def tokenize(self, text, add_special, parse_special):
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            sys.exit("fixtures: error: llama_tokenize needs %d slots" % -n)
        return [int(buf[i]) for i in range(n)]

    def piece(self, tok, special=False):
        buf = ctypes.create_string_buffer(256)
        n = L.llama_token_to_piece(self.vocab, tok, buf, 256, 0, special)
        return buf.raw[:n]

    def is_eog(self, tok):
        return bool(L.llama_vocab_is_eog(self.vocab, tok))

    def clear(self):
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)

    def decode(self, tokens, pos0, want_logits):
        """One llama_decode of len(tokens) <= n_batch tokens at positions pos0..; want_logits(i)
        says which rows to output.  Returns {row index: np.float32 logits copy}."""
        b = self.batch
        b.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            b.token[i] = t
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1 if want_logits(i) else 0
        rc = L.llama_decode(self.ctx, b)
        if rc != 0:
            sys.exit(f"fixtures: error: llama_decode returned {rc}")
        out = {}
        for i in range(len(tokens)):
            if b.logits[i]:
                p = L.llama_get_logits_ith(self.ctx, i)
                out[i] = np.ctypeslib.as_array(p, shape=(self.n_vocab,)).copy()
        return out

    def flash_attn_log(self):
        return [l.strip() for l in self.log if "flash_attn" in l or "Flash Attention" in l]


def provenance(args, llm, what):
    return {
        "what": what,
        "generator": "tools/reference/gen_model_fixtures.py",
        "command": " ".join(["python"] + [rel(a) for a in sys.argv]),
        "llama_cpp_python": L.__version__,
        "llama_cpp_system_info": L.llama_print_system_info().decode().strip(),
        "model": rel(args.model),
        "model_sha256": args.model_sha256,
        **({"f32_copy": "every tensor of the model dequantized to float32 by "
                        "tools/reference/gguf_f32.py (gguf-py); llama.cpp ran the copy",
            "f32_copy_sha256": args.f32_sha256} if args.f32_sha256 else {}),
        "corpus": "data/corpus/eval.txt (tools/gather-corpus.sh)",
        "corpus_sha256": args.corpus_sha256,
        "n_threads": args.threads,
        "n_ctx": llm.n_ctx,
        "n_batch": llm.n_batch,
        "n_ubatch": llm.n_batch,
        "type_k": "f16" if llm.type_k == L.GGML_TYPE_F16 else int(llm.type_k),
        "type_v": "f16" if llm.type_v == L.GGML_TYPE_F16 else int(llm.type_v),
        "flash_attn_type": {-1: "auto", 0: "disabled", 1: "enabled"}.get(llm.flash_attn_type,
                                                                       llm.flash_attn_type),
        "flash_attn_log": llm.flash_attn_log(),
        "model_add_bos": llm.add_bos(),
        "logits_rounding": "4 decimals",
        "created": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def write_json(path, obj):
    # One line per position/prompt keeps the files diffable without being huge.
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")
    print(f"fixtures: wrote {os.path.relpath(path, REPO)} ({os.path.getsize(path)} bytes)",
          file=sys.stderr)


def logsumexp(row):
    m = float(row.max())
    return m + float(np.log(np.sum(np.exp(row - m), dtype=np.float64)))


def gen_teacher(args, corpus):
    llm = Llama(args.run_model, 2048, 512, args.threads)
    # add_special=False: no BOS (SmolLM2's add_bos_token is false, so llama.cpp's own
    # tokenization with add_special=true gives the same ids; recorded below).
    toks = llm.tokenize(corpus, add_special=False, parse_special=False)[: args.teacher_tokens]
    text = b"".join(llm.piece(t) for t in toks)
    assert corpus.encode("utf-8").startswith(text), "token pieces do not rebuild the corpus prefix"
    llm.clear()
    rows = {}
    for s in range(0, len(toks), 512):
        out = llm.decode(toks[s:s + 512], s, lambda i: True)
        for i, row in out.items():
            rows[s + i] = row
    top5_ids, top5_logits, next_logit, lse = [], [], [], []
    for p in range(len(toks)):
        row = rows[p]
        idx = np.argsort(-row, kind="stable")[:5]
        top5_ids.append([int(i) for i in idx])
        top5_logits.append([r4(row[i]) for i in idx])
        lse.append(r4(logsumexp(row)))
        if p + 1 < len(toks):
            next_logit.append(r4(row[toks[p + 1]]))
    nll = [lse[p] - next_logit[p] for p in range(len(toks) - 1)]
    meta = provenance(args, llm, "teacher logits: one llama.cpp evaluation, every row's logits")
    meta.update({
        "add_bos": False,
        "add_bos_note": "tokenized with add_special=false; the model's add_bos_token is false, "
                        "so llama-perplexity (add_special=true) adds no BOS either",
        "parse_special": False,
        "corpus_bytes": [0, len(text)],
        "prefill": "positions 0..n-1 of one sequence, llama_decode in batches of 512",
    })
    write_json(os.path.join(args.out, f"smollm2{args.suffix}_teacher.json"), {
        "meta": meta,
        "n_tokens": len(toks),
        "n_vocab": llm.n_vocab,
        "text": text.decode("utf-8"),
        "tokens": toks,
        "top5_ids": top5_ids,
        "top5_logits": top5_logits,
        "next_logit": next_logit,
        "logsumexp": lse,
        "mean_nll": round(sum(nll) / len(nll), 6),
    })
    llm.close()


def gen_ppl(args, corpus):
    n_ctx = args.ppl_ctx
    llm = Llama(args.model, n_ctx, n_ctx, args.threads)  # n_batch = n_ctx: one decode per window
    # perplexity.cpp: tokens = common_tokenize(ctx, prompt, add_special=true) (parse_special false)
    toks = llm.tokenize(corpus, add_special=True, parse_special=False)
    add_bos, bos = llm.add_bos(), llm.bos()
    n_chunk = min(args.ppl_windows, len(toks) // n_ctx)
    if n_chunk < args.ppl_windows:
        sys.exit(f"fixtures: error: the corpus has {len(toks)} tokens, {args.ppl_windows} windows "
                 f"of {n_ctx} need {args.ppl_windows * n_ctx}")
    first = n_ctx // 2
    nll_total, count, windows, running = 0.0, 0, [], []
    for c in range(n_chunk):
        start = c * n_ctx
        win = toks[start:start + n_ctx]
        inp = list(win)
        if add_bos:
            inp[0] = bos  # perplexity.cpp overwrites (not prepends) the window's first token
        llm.clear()
        rows = llm.decode(inp, 0, lambda i: i >= first)
        w_nll = 0.0
        for j in range(first, n_ctx - 1):
            row = rows[j]
            # log_softmax() in perplexity.cpp: max + log(sum expf(l - max)) - l[tok], sum in double
            m = row.max()
            sum_exp = np.sum(np.exp(row - m), dtype=np.float64)
            w_nll += float(m) + float(np.log(sum_exp)) - float(row[win[j + 1]])
        n_scored = n_ctx - 1 - first
        nll_total += w_nll
        count += n_scored
        windows.append({"start": start, "nll_sum": round(w_nll, 6), "n_scored": n_scored,
                        "ppl": round(float(np.exp(w_nll / n_scored)), 6)})
        running.append(round(float(np.exp(nll_total / count)), 4))
    ppl = float(np.exp(nll_total / count))
    meta = provenance(args, llm, "perplexity as llama.cpp's llama-perplexity computes it")
    meta.update({
        "method": "tools/perplexity/perplexity.cpp perplexity() (ppl_stride 0): corpus tokenized "
                  "with add_special=true, parse_special=false; window c = tokens[c*n_ctx, "
                  "(c+1)*n_ctx), KV cleared before each; if the model's add_bos is set, the "
                  "window's first input token is replaced by BOS (not prepended); logits at "
                  "positions j = n_ctx/2 .. n_ctx-2 score token j+1 of the window; "
                  "ppl = exp(sum nll / count)",
        "bos_replaced": add_bos,
        "n_ctx": n_ctx,
        "llama_perplexity_equivalent": f"llama-perplexity -m MODEL -f data/corpus/eval.txt "
                                       f"-c {n_ctx} -b {n_ctx} --chunks {n_chunk} -t {args.threads}",
        "running_ppl_note": "running_ppl[i] is what llama-perplexity prints as [i+1]",
    })
    write_json(os.path.join(args.out, "smollm2_ppl.json"), {
        "meta": meta,
        "n_ctx": n_ctx,
        "n_windows": n_chunk,
        "first_scored": first,
        "n_scored": count,
        "ppl": round(ppl, 6),
        "running_ppl": running,  # what llama-perplexity prints as [1]x,[2]y,...
        "windows": windows,
        "corpus_tokens_total": len(toks),
        "tokens": toks[:n_chunk * n_ctx],
    })
    llm.close()
    return ppl


# Chats: each has an explicit system message, so llama.cpp's built-in ChatML formatter and the
# model's Jinja template (which would otherwise insert its own default system line) agree.
CHATS = [
    [("system", "You are a helpful assistant."),
     ("user", "What is the capital of France? Answer in one sentence.")],
    [("system", "You are a helpful assistant."),
     ("user", "Explain what a shell is in computing, in two sentences.")],
    [("system", "You are a concise assistant."),
     ("user", "List three uses of the gzip program.")],
    [("system", "You are a helpful assistant."),
     ("user", "Summarize this text:\n\n{corpus_paragraph}")],
]


def render_chat(llm, msgs):
    """ChatML via llama.cpp's llama_chat_apply_template with the model's own template string,
    checked against llama-cpp-python's Jinja formatter (what create_chat_completion uses)."""
    tmpl = L.llama_model_chat_template(llm.model, None)
    arr = (L.llama_chat_message * len(msgs))()
    keep = []
    for i, (role, content) in enumerate(msgs):
        r, c = role.encode(), content.encode()
        keep += [r, c]
        arr[i].role, arr[i].content = r, c
    cap = 8192
    buf = ctypes.create_string_buffer(cap)
    n = L.llama_chat_apply_template(tmpl, arr, len(msgs), True, buf, cap)
    if n < 0 or n > cap:
        sys.exit("fixtures: error: llama_chat_apply_template failed")
    text = buf.raw[:n].decode("utf-8")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    fmt = Jinja2ChatFormatter(template=tmpl.decode(), eos_token="<|im_end|>", bos_token="<|im_start|>",
                              add_generation_prompt=True)
    jinja = fmt(messages=[{"role": r, "content": c} for r, c in msgs]).prompt
    if jinja != text:
        sys.exit("fixtures: error: llama.cpp's ChatML and the Jinja template disagree:\n%r\n%r"
                 % (text, jinja))
    return text


def corpus_slices(corpus, n):
    """n raw-text prompts: the first paragraph (>= 200 bytes) of different sources, cut at a
    word boundary near 300 bytes; each is an exact substring of the corpus."""
    paras, pos = [], 0
    for block in corpus.split("\n\n"):
        b = block.strip()
        if len(b) >= 200 and not b.startswith(("Copyright", "  ")) and len(paras) < 64:
            paras.append((corpus.index(b, pos), b))
        pos += len(block) + 2
    step = max(1, len(paras) // n)
    chosen = [paras[i * step] for i in range(n)]
    out = []
    for off, b in chosen:
        cut = b[:300]
        if len(b) > 300:
            cut = cut[:cut.rfind(" ")]
        out.append((off, cut))
    return out


def gen_greedy(args, corpus):
    llm = Llama(args.run_model, 2048, 512, args.threads)
    prompts = []
    raws = corpus_slices(corpus, 5)
    for off, text in raws[:4]:
        prompts.append({"kind": "raw", "corpus_offset": off, "text": text})
    summary_src = raws[4][1]
    for msgs in CHATS:
        msgs = [(r, c.replace("{corpus_paragraph}", summary_src)) for r, c in msgs]
        prompts.append({"kind": "chat", "messages": [{"role": r, "content": c} for r, c in msgs],
                        "text": render_chat(llm, msgs)})
    out = []
    for p in prompts:
        chat = p["kind"] == "chat"
        ids = llm.tokenize(p["text"], add_special=True, parse_special=chat)
        llm.clear()
        rows = {}
        for s in range(0, len(ids), 512):
            last = min(len(ids), s + 512) - 1
            rows.update({s + i: r for i, r in llm.decode(ids[s:s + 512], s,
                                                           lambda i, s=s, last=last: s + i == last).items()})
        row = rows[len(ids) - 1]
        gen, margins, top2, first_eog = [], [], [], None
        for step in range(args.greedy_tokens):
            tok = int(np.argmax(row))  # first maximum: ties go to the lowest id
            part = np.partition(row, -2)[-2:]
            margins.append(r4(float(part[1]) - float(part[0])))
            runner_up = int(np.argsort(-row, kind="stable")[1])
            top2.append([tok, runner_up])
            gen.append(tok)
            if first_eog is None and llm.is_eog(tok):
                first_eog = step
            row = llm.decode([tok], len(ids) + step, lambda i: True)[0]
        p.update({"prompt_ids": ids, "add_special": True, "parse_special": chat,
                  "greedy_ids": gen, "greedy_text": b"".join(llm.piece(t) for t in gen).decode(
                      "utf-8", "replace"),
                  "top2_ids": top2, "top2_margin": margins, "first_eog_step": first_eog})
        out.append(p)
    meta = provenance(args, llm, "greedy continuations: llama_decode + argmax, no sampler")
    meta.update({
        "method": "prompt prefilled in one sequence (batches of 512), then one token per "
                  "llama_decode; each step takes numpy argmax of the last row (ties -> lowest "
                  "id), continuing past end-of-generation tokens (first_eog_step marks the "
                  "first); top2_margin = top-1 logit - top-2 logit at that step",
        "chat_template": "the model's tokenizer.chat_template (ChatML) applied by llama.cpp's "
                         "llama_chat_apply_template, add_generation_prompt true; identical to "
                         "llama-cpp-python's Jinja2ChatFormatter output (checked)",
        "n_generated": args.greedy_tokens,
    })
    write_json(os.path.join(args.out, f"smollm2{args.suffix}_greedy.json"),
               {"meta": meta, "prompts": out})
    llm.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(REPO, "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--corpus", default=os.path.join(REPO, "data/corpus/eval.txt"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests/fixtures"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher-tokens", type=int, default=2048)
    ap.add_argument("--ppl-ctx", type=int, default=512)
    ap.add_argument("--ppl-windows", type=int, default=8)
    ap.add_argument("--greedy-tokens", type=int, default=32)
    ap.add_argument("--only", default="teacher,ppl,greedy")
    ap.add_argument("--f32", action="store_true",
                    help="run a float32 copy of the model; write smollm2_f32_{teacher,greedy}")
    args = ap.parse_args()
    for path, what in ((args.model, "model (make model)"), (args.corpus, "corpus (make corpus)")):
        if not os.path.isfile(path):
            sys.exit(f"fixtures: error: {path} is missing: the {what}")
    args.model = os.path.abspath(args.model)
    args.model_sha256 = sha256_file(args.model)
    args.corpus_sha256 = sha256_file(args.corpus)
    with open(args.corpus, encoding="utf-8") as f:
        corpus = f.read()
    os.makedirs(args.out, exist_ok=True)
    only = set(args.only.split(","))
    args.run_model, args.suffix, args.f32_sha256 = args.model, "", None
    tmp = None
    if args.f32:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from gguf_f32 import convert
        tmp = tempfile.TemporaryDirectory()
        args.run_model = os.path.join(tmp.name, "model-f32.gguf")
        convert(args.model, args.run_model)
        args.suffix, args.f32_sha256 = "_f32", sha256_file(args.run_model)
        only.discard("ppl")
    if "teacher" in only:
        gen_teacher(args, corpus)
    if "ppl" in only:
        ppl = gen_ppl(args, corpus)
        print(f"fixtures: llama.cpp perplexity (ctx {args.ppl_ctx}, {args.ppl_windows} windows) "
              f"= {ppl:.4f}", file=sys.stderr)
    if "greedy" in only:
        gen_greedy(args, corpus)
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
