#!/usr/bin/env python3
"""Tiny byte-level BPE tokenizer.json files and their encodings by Hugging Face `tokenizers`,
for tests/test_tokenizer_hf.c.

Each tokenizer is trained here (about a thousand tokens, on text that ships with Python) with one
of the pre-tokenizer layouts real models use, and saved with a tokenizer_config.json:

  gpt2     ByteLevel(use_regex=True)                                   (GPT-2)
  smollm   Sequence[Digits(individual_digits=True), ByteLevel]         (SmolLM, StarCoder)
  llama3   Sequence[Split(llama-3 regex, \\p{N}{1,3}), ByteLevel(use_regex=False)],
           BPE(ignore_merges=True)                                    (Llama 3)
  qwen2    Sequence[Split(Qwen2 regex, \\p{N}), ByteLevel(use_regex=False)]   (Qwen2/2.5/3)

encodings.json holds the ids of a list of strings (special tokens split out, as
Tokenizer.encode does; no BOS/EOS).  A 360-token qwen2-style tokenizer also goes into the
qwen3_qknorm model fixture, whose vocabulary (384) is larger (padded, as converters do).
Run by tools/reference/make-arch-fixtures.sh.
"""
import argparse
import codecs
import json
import os
import shutil
import sys
import contextlib
import io

import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

STRINGS = [
    "Hello world", "hello, World!", " leading space", "trailing space ", "  two  spaces",
    "don't you're we've I'm they'll she'd IT'S", "1234567 89 0", "x = 3.14159 + 2e10",
    "tabs\tand\nnew\nlines\n\n", "héllo wörld — ünïcode ñ", "日本語のテキスト", "emoji 🙂👍🏽!",
    "def f(x):\n    return x * 2  # comment", "Beautiful is better than ugly.",
    "<|im_start|>user\nHi there<|im_end|>\n", "a<|endoftext|>b", "   \n  \n", "",
    "MiXeD CaSe WoRdS", "$100 & 50% off!!!", "snake_case_and-kebab-case",
    "2024-11-28 12:34:56 and 1234567890", "IT'S DON'T WE'LL I'M", "wait... what?! -> ok",
]


def zen():
    with contextlib.redirect_stdout(io.StringIO()):   # importing `this` prints it
        import this
    return codecs.decode(this.s, "rot13")


def corpus():
    zen_text = zen()
    docs = [zen_text]
    for obj in (str, dict, list, int, float, bytes, set, tuple, open, print, sorted, zip, map,
                json, os.path, codecs):
        if obj.__doc__:
            docs.append(obj.__doc__)
    # digit groups, contractions in both cases, punctuation runs: where the layouts differ
    docs.append(" ".join(str(i * 7919 % 100000) for i in range(300)))
    docs.append(" ".join(["It's", "IT'S", "don't", "DON'T", "we'll", "WE'LL", "I'm", "I'M",
                          "they'd", "THEY'D", "you're", "YOU'RE"] * 20))
    docs.append(" ".join(["!!!", "...", "?!", "--", "==", "->", "$100", "50%"] * 20))
    return docs * 3


def train(vocab_size):
    """One vocabulary for every layout, trained with no pre-splitting at all, so that merges
    cross spaces, digit groups, apostrophes and punctuation: any difference in how a layout
    splits the text then changes the ids."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], [tuple(m) for m in model["merges"]]


def build(kind, vocab_size=1200):
    vocab, merges = train(vocab_size)
    if kind == "gpt2":
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif kind == "smollm":
        pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                use_regex=True)])
    else:
        pat = LLAMA3 if kind == "llama3" else QWEN2
        pre = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=(kind == "llama3")))
    tok.add_special_tokens(SPECIAL)
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    return tok


def save(tok, d, kind):
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    cfg = {"bos_token": None, "eos_token": "<|endoftext|>", "add_bos_token": False,
           "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                            "{{ m['content'] }}<|im_end|>\n{% endfor %}"
                            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
           "tokenizer_class": "PreTrainedTokenizerFast"}
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/arch")
    args = ap.parse_args()
    meta = {"tokenizers": tokenizers.__version__, "python": sys.version.split()[0], "sets": {}}
    for kind in ("gpt2", "smollm", "llama3", "qwen2"):
        tok = build(kind)
        d = os.path.join(args.out, "tokenizer_" + kind)
        shutil.rmtree(d, ignore_errors=True)
        save(tok, d, kind)
        texts = STRINGS + zen().splitlines()[2:12]   # text the merges were trained on
        enc = [{"text": s, "ids": tok.encode(s).ids} for s in texts]
        with open(os.path.join(d, "encodings.json"), "w") as f:
            json.dump({"tokenizers": tokenizers.__version__, "vocab": tok.get_vocab_size(),
                       "encodings": enc}, f, indent=0, ensure_ascii=False)
            f.write("\n")
        meta["sets"][kind] = tok.get_vocab_size()
        print(f"tokenizer_{kind}: {tok.get_vocab_size()} tokens")
    # the qwen3 model fixture gets a qwen2-style tokenizer of 360 tokens (its vocab is 384)
    save(build("qwen2", 360), os.path.join(args.out, "qwen3_qknorm"), "qwen2")


if __name__ == "__main__":
    main()
