#!/usr/bin/env python3
"""A real-size check of the safetensors path: turn the default GGUF model (SmolLM2-135M, Q4_1)
into a Hugging Face folder (weights dequantized to float32, Q/K rows put back in Hugging Face's
half-split order, config.json), run transformers on it, and print transformers' logits for a
token list as JSON, so that they can be compared with `kvx logits` on the folder and on the
GGUF file.

  .venv-arch/bin/pip install gguf      # llama.cpp's gguf-py, from PyPI
  .venv-arch/bin/python tools/reference/gguf_to_hf_check.py --gguf MODEL.gguf --out DIR \
      --tokens "1 2 3" > hf.json
  build/kvx logits -m DIR --tokens "1 2 3" --kv f32 --json > kvx.json

The folder also gets a tokenizer.json rebuilt from the GGUF vocabulary and merges (byte-level
BPE with the "smollm" pre-tokenizer: single digits, then GPT-2's byte-level split), so that kvx
can read text with it too.  Without --tokens the script only converts.  One use: the same model
with float32 weights runs its matmuls on float32 activations (the Q4_1 file quantizes them to 8
bits), which isolates what a KV codec costs from activation rounding:

  build/kvx eval kld -m DIR -f data/corpus/eval.txt -c 4096 --chunks 1 --kv q8

Not run by the tests (it needs the model, torch and gguf-py); the README of tests/fixtures/arch
records what it measured.
"""
import argparse
import json
import os

import numpy as np
import torch
import transformers
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def field(r, key):
    f = r.fields[key]
    v = f.parts[f.data[0]]
    return v.tobytes().decode() if f.types[0].name == "STRING" else v.item()


def unpermute(w, n_head):
    """llama.cpp's converter turns each head's rows (i, i + d/2) into neighbours (2i, 2i+1);
    put them back."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tokenizer_json(r):
    """tokenizer.json (Hugging Face `tokenizers` format) from the GGUF's tokenizer.ggml.* keys."""
    pre = field(r, "tokenizer.ggml.pre")
    if field(r, "tokenizer.ggml.model") != "gpt2" or pre != "smollm":
        raise SystemExit(f"tokenizer.json: only byte-level BPE with the 'smollm' pre-tokenizer "
                         f"is rebuilt (this model: {pre})")
    f = r.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(f.parts[i]).decode() for i in f.data]
    f = r.fields["tokenizer.ggml.merges"]
    merges = [bytes(f.parts[i]).decode().split(" ", 1) for i in f.data]
    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 3]   # 3: control
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]},
        "post_processor": None, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }


def convert(path, out):
    r = GGUFReader(path)
    arch = field(r, "general.architecture")
    n_head = field(r, f"{arch}.attention.head_count")
    n_kv = field(r, f"{arch}.attention.head_count_kv")
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": field(r, f"{arch}.embedding_length"),
        "intermediate_size": field(r, f"{arch}.feed_forward_length"),
        "num_hidden_layers": field(r, f"{arch}.block_count"),
        "num_attention_heads": n_head, "num_key_value_heads": n_kv,
        "rms_norm_eps": field(r, f"{arch}.attention.layer_norm_rms_epsilon"),
        "rope_theta": field(r, f"{arch}.rope.freq_base"),
        "max_position_embeddings": field(r, f"{arch}.context_length"),
        "hidden_act": "silu", "tie_word_embeddings": True, "torch_dtype": "float32",
    }
    sd = {}
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(x) for x in reversed(t.shape)])
        name = t.name
        if name.startswith("blk."):
            _, i, rest = name.split(".", 2)
            hf = f"model.layers.{i}.{NAMES[rest]}"
            if rest == "attn_q.weight":
                w = unpermute(w, n_head)
            elif rest == "attn_k.weight":
                w = unpermute(w, n_kv)
        else:
            hf = NAMES[name]
        sd[hf] = np.ascontiguousarray(w)
        if hf == "model.embed_tokens.weight":
            cfg["vocab_size"] = w.shape[0]
    if "lm_head.weight" in sd:
        cfg["tie_word_embeddings"] = False
    os.makedirs(out, exist_ok=True)
    save_file(sd, os.path.join(out, "model.safetensors"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(r), f, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.out, "model.safetensors")):
        convert(a.gguf, a.out)
    if not a.tokens:
        return
    torch.set_num_threads(2)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        a.out, dtype=torch.float32, attn_implementation="eager").eval()
    ids = torch.tensor([[int(x) for x in a.tokens.split()]])
    with torch.no_grad():
        logits = model(ids).logits[0]
    print(json.dumps({"tokens": ids[0].tolist(), "logits": logits.tolist()}))


if __name__ == "__main__":
    main()
