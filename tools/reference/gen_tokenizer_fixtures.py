#!/usr/bin/env python3
"""Reference fixtures for kvx's tokenizer and chat templates, made with llama.cpp.

    /tmp/refvenv/bin/python tools/reference/gen_tokenizer_fixtures.py \
        [--model models/SmolLM2-135M-Instruct.Q4_1.gguf] [--out tests/fixtures/tokenizer_smollm2.json]

Needs llama-cpp-python==0.3.36 (its bundled llama.cpp is the reference) and jinja2 (which
llama-cpp-python depends on); tools/reference/make-fixtures.sh runs it.
Writes one JSON file (read by tests/test_tokenizer.c and tests/test_chat.c):

  encode          [{text|hex, ids}]  llama_tokenize(add_special=False, parse_special=False)
  encode_special  [{text|hex, ids}]  the same with parse_special=True (ChatML markup)
  pieces          [{id, special, hex}] llama_token_to_piece(lstrip=0)
  eog             ids for which llama_vocab_is_eog is true
  chat_templates  {name: Jinja text}  the model's own template ("model") and a few others
  chat            [{template, messages, add_generation_prompt, expected}] rendered by jinja2
                  (bos_token="" since kvx renders without the BOS the tokenizer adds)

Inputs are built programmatically (seeded) from Debian-shipped text on this machine
(/usr/share/common-licenses, C headers, the Python standard library) plus character
classes: digits, whitespace runs, accents, CJK, emoji, contractions, punctuation, invalid
UTF-8.  Inputs that are not valid UTF-8 are stored as "hex".
"""
import argparse
import ctypes
import glob
import json
import os
import random
import re
import sys

import jinja2
import llama_cpp

SEED = 20240611
LICENSES = "/usr/share/common-licenses"


def read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def prose_sources():
    texts = []
    for name in ("GPL-3", "Apache-2.0", "MPL-2.0", "Artistic", "GFDL-1.3"):
        p = os.path.join(LICENSES, name)
        if os.path.exists(p):
            texts.append(read(p))
    if not texts:
        sys.exit("no license texts under %s" % LICENSES)
    return texts


def code_sources():
    out = []
    for p in ("/usr/include/string.h", "/usr/include/stdio.h"):
        if os.path.exists(p):
            out.append(read(p))
    py = sorted(glob.glob("/usr/lib/python3*/json/encoder.py")) + \
        sorted(glob.glob("/usr/lib/python3*/textwrap.py"))
    for p in py[:2]:
        out.append(read(p))
    return out


def sentences(texts):
    s = []
    for t in texts:
        flat = re.sub(r"\s+", " ", t)
        s += [x.strip() for x in re.split(r"(?<=[.;:])\s+", flat) if 20 <= len(x.strip()) <= 300]
    return s


def paragraphs(texts):
    p = []
    for t in texts:
        p += [x for x in re.split(r"\n\s*\n", t) if 200 <= len(x) <= 1500]
    return p


def code_chunks(srcs, rng, n):
    out = []
    for _ in range(n):
        src = rng.choice(srcs).split("\n")
        i = rng.randrange(0, max(1, len(src) - 12))
        chunk = "\n".join(src[i:i + rng.randint(3, 12)])
        if chunk.strip():
            out.append(chunk)
    return out


def rand_from_ranges(rng, ranges, k):
    return "".join(chr(rng.randint(a, b)) for a, b in (rng.choice(ranges) for _ in range(k)))


CJK = [(0x4E00, 0x9FFF)]
KANA = [(0x3041, 0x3096), (0x30A1, 0x30FA)]
HANGUL = [(0xAC00, 0xD7A3)]
EMOJI = ["\U0001F600", "\U0001F44D\U0001F3FD", "\U0001F468\u200D\U0001F469\u200D\U0001F467",
         "\U0001F1FA\U0001F1F8", "\U0001F1EB\U0001F1F7", "\u2764\uFE0F", "\U0001F525",
         "\U0001F3F3\uFE0F\u200D\U0001F308", "\U0001F469\U0001F3FE\u200D\U0001F4BB", "\u263A"]
ACCENTS = {"a": "àáâäåā", "e": "éèêëę", "i": "íìîï", "o": "óòôöøő", "u": "úùûüů",
           "n": "ñń", "c": "çč", "s": "šś", "A": "ÅÄÁ", "E": "ÉÈ", "O": "ÖØ", "U": "ÜÚ"}
WHITESPACE = ["", " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", " \t \n", "\r\n",
              "trailing spaces   ", "   leading", "a  b   c    d", "x\t\ty", "line\n  indented",
              " \n \n ", "\u00a0nbsp\u00a0", "ideographic\u3000space", "en\u2002space",
              "tab\tthen\n\nnewlines\n", "\x0b\x0c", "a\r\rb", "end\n", "\n\nstart"]
NUMBERS = ["0", "7", "42", "123", "1234", "12345", "1234567890", "3.14159", "1,000,000",
           "-17", "+3.5e-10", "0x1F", "2024-06-11", "12:30:45", "v1.2.3", "$1,234.56", "50%",
           "1st 2nd 3rd 4th", "⅓ ½ ¾", "²³¹", "٠١٢٣٤", "१२३", "Ⅻ", "１２３"]
CODE = [
    "int main(void) {\n    printf(\"hello\\n\");\n    return 0;\n}\n",
    "def f(x):\n    if x > 0:\n        return x * 2\n    return -x\n",
    "{\n  \"name\": \"kvx\",\n  \"version\": [1, 2, 3],\n  \"ok\": true,\n  \"n\": null\n}",
    "for (size_t i = 0; i < n; i++) { a[i] += b[i] * c; }",
    "x = [i**2 for i in range(10) if i % 2 == 0]",
    "#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\n",
    "\tif (p == NULL)\n\t\treturn -1;\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "<div class=\"x\"><a href=\"/y?z=1&w=2\">link</a></div>",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "    \n        deeply\n            nested\n",
    "a->b->c; x >>= 2; y <<= 3; z != w && q || !r;",
]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL", "'D",
                "'x", "''", "'"]
PUNCT = ".,;:!?-_()[]{}<>\"'/\\|@#$%^&*+=~`…—–«»¿¡§¶•"
FUZZ_POOLS = [
    " \t\n\r\x0b\x0c\x1c\x85\xa0\u1680\u2000\u2028\u3000\u205f\ufeff",
    "abcXYZ'sStTmMdDrReEvVlL", "0123456789\u00b2\u00bd\u0660\u2160\u3007\uff10",
    PUNCT, "éüñÅßøçÆœ", "中文字符日本語かなカナ한국어", "".join(EMOJI) + "\u200d\ufe0f",
    "\u0301\u0308\u064b\u0915\u093f\u0e01\u0e34", "\u0378\u0530\U000e0001\U0010fffd\ue000",
]
INVALID = [b"\xff", b"\xfe\xff", b"abc\x80def", b"\xc3", b"caf\xc3", b"\xe3\x80", b"\xf0\x9f\x98",
           b"\xc0\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"ok \xff\xfe ok",
           b"\x80\x80\x80"]
SPECIAL = [
    "<|im_start|>user\nHello<|im_end|>\n",
    "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<|im_start|><|im_end|>", "<|im_end|><|im_end|>", "x<|im_start|>y", "<|im_start",
    "im_start|>", "<|endoftext|>", "text<|endoftext|>more", " <|im_start|> ", "<reponame>kvx",
    "<file_sep><filename>a.c", "<|im_start|>assistant\n<|im_end|>", "<<|im_start|>>",
    "<|im_start|>user\n😀 ünïcödé<|im_end|>\n", "\n<|im_end|>\n\n", "<|IM_START|>", "<issue_start>",
    "<jupyter_code>print(1)<jupyter_output>", "<empty_output>", "",
]

# Chat templates other than the model's: public templates of well-known families, used to
# check kvx's family renderers against jinja2.
OTHER_TEMPLATES = {
    "chatml_qwen2": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
        "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] "
        "| trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content "
        "%}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
        "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role "
        "not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == "
        "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must "
        "alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == "
        "'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
        "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + "
        "'<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}"
        "{{'<start_of_turn>model\n'}}{% endif %}"),
    "mistral_inst": (
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
        "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
        "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
        "'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only "
        "user and assistant roles are supported!') }}{% endif %}{% endfor %}"),
}


def build_inputs(rng):
    prose = prose_sources()
    sents, paras = sentences(prose), paragraphs(prose)
    code = code_sources()
    words = re.findall(r"[A-Za-z]+", " ".join(sents))
    items = []                                        # (label, bytes)

    def add(label, s):
        items.append((label, s if isinstance(s, bytes) else s.encode("utf-8")))

    add("empty", "")
    for s in rng.sample(sents, 60):
        add("sentence", s)
    for p in rng.sample(paras, 12):
        add("paragraph", p)
    for s in WHITESPACE:
        add("whitespace", s)
    for s in NUMBERS:
        add("number", s)
    for _ in range(12):
        add("number", " ".join(str(rng.randint(0, 10 ** rng.randint(1, 15))) for _ in range(3)))
    for s in CODE:
        add("code", s)
    for s in code_chunks(code, rng, 12):
        add("code", s)
    for _ in range(16):
        w = rng.sample(words, 4)
        add("accent", " ".join("".join(rng.choice(ACCENTS[c]) if c in ACCENTS and
                                       rng.random() < 0.4 else c for c in x) for x in w))
    for ranges, label in ((CJK, "cjk"), (KANA, "kana"), (HANGUL, "hangul")):
        for _ in range(6):
            add(label, rand_from_ranges(rng, ranges, rng.randint(1, 12)))
    for _ in range(6):
        add("cjk_mixed", rng.choice(sents)[:40] + " " + rand_from_ranges(rng, CJK + KANA, 6) +
            "。" + rand_from_ranges(rng, HANGUL, 4) + "!")
    for e in EMOJI:
        add("emoji", e)
    for _ in range(8):
        add("emoji", " ".join(rng.choice(words) + rng.choice(EMOJI) for _ in range(3)))
    for c in CONTRACTIONS:
        add("contraction", rng.choice(words) + c + " " + rng.choice(words))
    add("contraction", "I'm sure they'll say we'd've known it's John's and you're right, "
        "we've THEY'LL IT'S")
    for _ in range(10):
        add("punct", "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 12))))
    for _ in range(6):
        add("punct", rng.choice(words) + "".join(rng.choice(PUNCT) for _ in range(3)) +
            rng.choice(words))
    for _ in range(40):
        add("fuzz", "".join(rng.choice(rng.choice(FUZZ_POOLS)) for _ in range(rng.randint(1, 30))))
    for b in INVALID:
        add("invalid_utf8", b)
    for s in SPECIAL[:8]:
        add("markup_plain", s)
    return items


def vocab_of(llm):
    return llama_cpp.llama_model_get_vocab(llm.model)


def tokenize(llm, data, special):
    return llm.tokenize(data, add_bos=False, special=special)


def piece(vocab, tok, special):
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, tok, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, tok, buf, len(buf), 0, special)
    return buf.raw[:n]


def entry(data, ids):
    try:
        return {"text": data.decode("utf-8"), "ids": ids}
    except UnicodeDecodeError:
        return {"hex": data.hex(), "ids": ids}


def render(tmpl, messages, gen):
    env = jinja2.Environment(loader=jinja2.BaseLoader())

    def raise_exception(msg):
        raise jinja2.TemplateError(msg)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(tmpl).render(messages=messages, add_generation_prompt=gen,
                                        bos_token="", eos_token="</s>")


def chat_cases(model_tmpl):
    u = lambda c: {"role": "user", "content": c}            # noqa: E731
    a = lambda c: {"role": "assistant", "content": c}       # noqa: E731
    s = lambda c: {"role": "system", "content": c}          # noqa: E731
    convs = [
        ([u("Hello")], True),
        ([u("Hello")], False),
        ([s("You are terse."), u("Hi")], True),
        ([u("What is 2+2?"), a("4."), u("And 3+3?")], True),
        ([s("Be brief."), u("a"), a("b"), u("c"), a("d")], False),
        ([u("  spaced  \n"), a(" reply\n")], True),
        ([u("ünïcödé 日本語 😀")], True),
        ([], True),
    ]
    templates = {"model": model_tmpl}
    templates.update(OTHER_TEMPLATES)
    cases = []
    for name, tmpl in templates.items():
        for msgs, gen in convs:
            try:
                expected = render(tmpl, msgs, gen)
            except jinja2.TemplateError:
                continue                         # the family rejects this conversation
            except IndexError:
                continue
            if name in ("gemma", "mistral_inst") and not msgs:
                continue
            cases.append({"template": name, "messages": msgs, "add_generation_prompt": gen,
                          "expected": expected})
    return templates, cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", default="tests/fixtures/tokenizer_smollm2.json")
    args = ap.parse_args()

    rng = random.Random(SEED)
    llm = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False)
    vocab = vocab_of(llm)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    items = build_inputs(rng)
    encode = [dict(entry(d, tokenize(llm, d, False)), kind=label) for label, d in items]
    encode_special = [entry(s.encode("utf-8"), tokenize(llm, s.encode("utf-8"), True))
                      for s in SPECIAL]
    sample = list(range(0, 20)) + list(range(20, n_vocab, 977)) + [n_vocab - 1]
    pieces = [{"id": t, "special": sp, "hex": piece(vocab, t, sp).hex()}
              for t in sample for sp in (False, True)]
    eog = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]

    model_tmpl = llm.metadata["tokenizer.chat_template"]
    templates, chat = chat_cases(model_tmpl)

    doc = {
        "generator": "tools/reference/gen_tokenizer_fixtures.py",
        "llama_cpp_python": llama_cpp.__version__,
        "model": os.path.basename(args.model),
        "n_vocab": n_vocab,
        "bos": llama_cpp.llama_vocab_bos(vocab),
        "eos": llama_cpp.llama_vocab_eos(vocab),
        "eog": eog,
        "encode": encode,
        "encode_special": encode_special,
        "pieces": pieces,
        "chat_templates": templates,
        "chat": chat,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("%s: %d encode, %d encode_special, %d pieces, %d chat cases, %d bytes" % (
        args.out, len(encode), len(encode_special), len(pieces), len(chat),
        os.path.getsize(args.out)))


if __name__ == "__main__":
    main()
