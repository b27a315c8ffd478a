#!/usr/bin/env python3
"""Tiny random Hugging Face models and their reference logits, for tests/test_arch_*.c.

For each configuration below: build the model with `transformers` (float32, eager attention),
give every parameter random values (including those that initialize to constants: norm weights,
biases), save it with save_pretrained (config.json + safetensors; one fixture sharded), and
write reference.safetensors next to it:

  tokens          I32 [T]        random token ids
  prefill_logits  F32 [T, V]     one forward over all T tokens
  decode_logits   F32 [T, V]     a forward over the first P tokens (rows 0..P-1), then one
                                 token at a time with the cache (rows P..T-1)
  __metadata__    prefix = P, plus the versions used

Run by tools/reference/make-arch-fixtures.sh (which makes the venv); writes
tests/fixtures/arch/<name>/.
"""
import argparse
import json
import os
import shutil
import zlib

import torch
import transformers
from safetensors.torch import save_file

T, P = 56, 24


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if "e_score_correction_bias" in name:   # MoE routing bias (a buffer, zeros)
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif "tid2eid" in name:   # DeepSeek-V4 hash routing table (zeros): distinct experts
                n_exp = model.config.n_routed_experts
                b.copy_(torch.stack([torch.randperm(n_exp, generator=g)[:b.shape[1]]
                                     for _ in range(b.shape[0])]))
            elif name.endswith("layer_scalar"):     # Gemma 4 per-layer output scale (ones)
                b.copy_(1.0 + 0.3 * torch.randn(b.shape, generator=g))
            if "balancing_biases" in name:          # ZAYA router biases (skip class: -1)
                b.copy_(b + 0.1 * torch.randn(b.shape, generator=g))
        for name, p in model.named_parameters():
            # incl. ZAYA qk_norm.temp and scales, Gemma 4 router.scale / per_expert_scale
            if "norm" in name or name.endswith(("_scale", "router.scale")):
                v = 1.0 + 0.3 * torch.randn(p.shape, generator=g)
            elif name.endswith(".bias"):
                v = 0.3 * torch.randn(p.shape, generator=g)
            elif name.endswith((".sinks", ".position_bias", ".base", ".hc_base")):
                v = 0.5 * torch.randn(p.shape, generator=g)    # DeepSeek-V4: zeros at init
            elif name.endswith((".scale", ".hc_scale")):
                v = 1.0 + 0.3 * torch.randn(p.shape, generator=g)   # DeepSeek-V4: ones
            else:
                v = 0.15 * torch.randn(p.shape, generator=g)
            p.copy_(v)


CONFIGS = {
    # GQA, separate lm_head, default RoPE
    "llama_gqa": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
        max_position_embeddings=256, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), {}),
    # MHA, tied embeddings (no lm_head in the file), linear RoPE scaling, other theta and eps
    "llama_tied": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6,
        max_position_embeddings=512, tie_word_embeddings=True,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0}), {}),
    # Q/K/V biases; saved as shards with an index
    "qwen2_bias": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(
        vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
        max_position_embeddings=256, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
        {"max_shard_size": "150KB"}),
    # per-head q/k RMSNorm, head_dim (32) != hidden / heads (16)
    "qwen3_qknorm": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, dict(
        vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
        max_position_embeddings=256, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}), {}),
    # Mistral: GQA, sliding_window longer than the fixture (full attention in practice)
    "mistral_gqa": (transformers.MistralConfig, transformers.MistralForCausalLM, dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, rms_norm_eps=1e-5,
        max_position_embeddings=512, sliding_window=128, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), {}),
    # Mistral with a window of 8 tokens: every layer a WINDOW layer, crossed many times by the
    # 56 tokens (the decode steps read a window that has slid past the prefill)
    "mistral_swa": (transformers.MistralConfig, transformers.MistralForCausalLM, dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
        max_position_embeddings=512, sliding_window=8, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), {}),
    # Qwen3 with use_sliding_window: layers >= max_window_layers (1) slide over 8 tokens,
    # layer 0 stays full (transformers' default layer_types)
    "qwen3_swa": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
        max_position_embeddings=256, tie_word_embeddings=True, use_sliding_window=True,
        sliding_window=8, max_window_layers=1,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}), {}),
    # DeepSeek-V3 multi-head latent attention, dense layers only (first_k_dense_replace = all),
    # interleaved RoPE on 8 dims with YaRN (factor 4: softmax scale 24^-0.5 * mscale^2).
    # kvx does not run it yet: the fixture is the target of the MLA work.
    "deepseek_v3_mla": (transformers.DeepseekV3Config, transformers.DeepseekV3ForCausalLM, dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32,
        kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
        n_routed_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1,
        first_k_dense_replace=2, rope_interleave=True, max_position_embeddings=256,
        rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64, "mscale": 1.0,
                         "mscale_all_dim": 1.0, "beta_fast": 32, "beta_slow": 1}), {}),
    # DeepSeek-V3 MLA whose cached vector [latent | rope key] is 56 + 8 = 64 wide, so that the
    # quantizing KV codecs (groups of 32 values) can store it: the q8-latent test
    "deepseek_v3_wide": (transformers.DeepseekV3Config, transformers.DeepseekV3ForCausalLM, dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32,
        kv_lora_rank=56, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
        n_routed_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1,
        first_k_dense_replace=2, rope_interleave=True, max_position_embeddings=256,
        rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), {}),
    # DeepSeek-V3 with a plain q_proj (q_lora_rank null), default RoPE in half-split order
    # (rope_interleave false), tied embeddings
    "deepseek_v3_qproj": (transformers.DeepseekV3Config, transformers.DeepseekV3ForCausalLM, dict(
        vocab_size=288, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, q_lora_rank=None,
        kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=24,
        n_routed_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1,
        first_k_dense_replace=2, rope_interleave=False, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 50000.0}), {}),
    # DeepSeek-V3 mixture of experts: layer 0 dense, layer 1 with 8 routed experts in 4
    # groups (top 2 groups, top 2 experts, sigmoid scores + correction bias), 1 shared expert
    "deepseek_v3_moe": (transformers.DeepseekV3Config, transformers.DeepseekV3ForCausalLM, dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32,
        kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
        n_routed_experts=8, num_experts_per_tok=2, n_group=4, topk_group=2, n_shared_experts=1,
        norm_topk_prob=True, routed_scaling_factor=2.5, first_k_dense_replace=1,
        rope_interleave=True, max_position_embeddings=256, rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64, "mscale": 1.0,
                         "mscale_all_dim": 1.0, "beta_fast": 32, "beta_slow": 1}), {}),
    # DeepSeek-V4, sliding-window layers only: K=V MQA with sinks, q low-rank + per-head norm,
    # partial interleaved RoPE (last 8 of 32 dims), grouped output projection, mHC (4 streams),
    # one hash-routed and one learned MoE layer (sqrtsoftplus, shared expert, swiglu_limit)
    "deepseek_v4_swa": (transformers.DeepseekV4Config, transformers.DeepseekV4ForCausalLM, dict(
        vocab_size=256, hidden_size=64, moe_intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, head_dim=32, q_lora_rank=32, partial_rotary_factor=0.25,
        o_groups=2, o_lora_rank=16, sliding_window=8, n_routed_experts=4,
        num_experts_per_tok=2, n_shared_experts=1, routed_scaling_factor=1.5, swiglu_limit=0.6,
        layer_types=["sliding_attention"] * 2, mlp_layer_types=["hash_moe", "moe"],
        hc_mult=4, hc_sinkhorn_iters=20, index_n_heads=2, index_head_dim=16, index_topk=3,
        rms_norm_eps=1e-6, max_position_embeddings=256, tie_word_embeddings=False), {}),
    # DeepSeek-V4 with every attention kind: SWA, CSA (4:1 overlapping compressor + lightning
    # indexer keeping 3 entries of up to 14), HCA (8:1); window 8; YaRN on the compress rope.
    # 16 indexer heads: a ReLU'd score is 0 only when every head's dot product is negative, and
    # such ties would make the top-k choice depend on torch's tie-breaking
    "deepseek_v4_mix": (transformers.DeepseekV4Config, transformers.DeepseekV4ForCausalLM, dict(
        vocab_size=256, hidden_size=64, moe_intermediate_size=32, num_hidden_layers=4,
        num_attention_heads=4, head_dim=32, q_lora_rank=32, partial_rotary_factor=0.25,
        o_groups=2, o_lora_rank=16, sliding_window=8, n_routed_experts=4,
        num_experts_per_tok=2, n_shared_experts=1, routed_scaling_factor=2.5, swiglu_limit=0.6,
        layer_types=["sliding_attention", "compressed_sparse_attention",
                     "heavily_compressed_attention", "compressed_sparse_attention"],
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
        mlp_layer_types=["hash_moe", "moe", "moe", "moe"], hc_mult=4, hc_sinkhorn_iters=20,
        index_n_heads=16, index_head_dim=16, index_topk=3, compress_rope_theta=160000.0,
        rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=256,
        rope_parameters={"rope_type": "yarn", "factor": 4.0,
                         "original_max_position_embeddings": 16, "beta_fast": 32,
                         "beta_slow": 1},
        tie_word_embeddings=False), {}),
    # Laguna: per-layer query heads (4 on the global layer, 8 on sliding ones), window 8 (the
    # 56 tokens cross it), YaRN on half the dims of the global layer with an explicit
    # attention_factor, default RoPE on all dims of sliding layers, softplus per-head gate,
    # sigmoid-routed MoE (top 2 of 4, scaled 2.5, + shared expert) on two layers
    "laguna_swa": (transformers.LagunaConfig, transformers.LagunaForCausalLM, dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, num_attention_heads_per_layer=[4, 8, 8, 8],
        head_dim=16, layer_types=["full_attention", "sliding_attention", "sliding_attention",
                                  "sliding_attention"],
        sliding_window=8, mlp_layer_types=["dense", "sparse", "sparse", "dense"], num_experts=4,
        num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32,
        moe_routed_scaling_factor=2.5, max_position_embeddings=256, rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        rope_parameters={"full_attention": {"rope_type": "yarn", "rope_theta": 500000.0,
                                            "factor": 32.0, "original_max_position_embeddings": 64,
                                            "beta_fast": 64.0, "beta_slow": 1.0,
                                            "attention_factor": 1.3465735902799727,
                                            "partial_rotary_factor": 0.5},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0,
                                               "partial_rotary_factor": 1.0}}), {}),
    # Laguna: sliding layers first and last (window 5, different head counts 2 and 4), a global
    # layer with 6 heads, per-element gate, attention biases, router softcapping, top 3 of 6,
    # tied embeddings, YaRN without attention_factor (0.1 ln(factor) + 1) on sliding layers
    "laguna_mix": (transformers.LagunaConfig, transformers.LagunaForCausalLM, dict(
        vocab_size=288, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2, num_attention_heads_per_layer=[2, 6, 4],
        head_dim=16, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        sliding_window=5, mlp_layer_types=["sparse", "dense", "sparse"], num_experts=6,
        num_experts_per_tok=3, moe_intermediate_size=32, shared_expert_intermediate_size=64,
        moe_routed_scaling_factor=1.0, moe_router_logit_softcapping=2.0, gating="per-element",
        attention_bias=True, max_position_embeddings=256, rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 500000.0,
                                            "partial_rotary_factor": 0.5},
                         "sliding_attention": {"rope_type": "yarn", "rope_theta": 10000.0,
                                               "factor": 4.0,
                                               "original_max_position_embeddings": 32}}), {}),
    # ZAYA1 compressed convolutional attention: 4 query heads, 2 KV heads (value head 0 from
    # the current token, head 1 from the previous), depthwise + grouped causal convolutions of
    # width 2, top-1 MoE with a skip expert and the EDA router
    "zaya_cca": (transformers.ZayaConfig, transformers.ZayaForCausalLM, dict(
        vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, moe_intermediate_size=32, num_experts=4,
        num_experts_per_tok=1, router_hidden_size=16, cca_time0=2, cca_time1=2,
        max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True), {}),
    # ZAYA: 8 query heads on 4 KV heads (values: 2 heads current, 2 previous), head_dim 16,
    # convolutions of width 3 and 2 (3 frames of state), 3 layers, separate lm_head, other RoPE
    "zaya_cca3": (transformers.ZayaConfig, transformers.ZayaForCausalLM, dict(
        vocab_size=320, hidden_size=64, num_hidden_layers=3, num_attention_heads=8,
        num_key_value_heads=4, head_dim=16, moe_intermediate_size=32, num_experts=3,
        num_experts_per_tok=1, router_hidden_size=32, cca_time0=3, cca_time1=2,
        max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_parameters={"hybrid": {"rope_type": "default", "rope_theta": 100000.0,
                                    "partial_rotary_factor": 0.5}}), {}),
    # ZAYA with a sliding-window layer (hybrid_sliding, window 6: the 56 tokens cross it)
    # before a global one, other RoPE bases per layer type
    "zaya_swa": (transformers.ZayaConfig, transformers.ZayaForCausalLM, dict(
        vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, moe_intermediate_size=32, num_experts=2,
        num_experts_per_tok=1, router_hidden_size=16, cca_time0=2, cca_time1=2,
        layer_types=["hybrid_sliding", "hybrid"], sliding_window=6,
        max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"hybrid": {"rope_type": "default", "rope_theta": 500000.0,
                                    "partial_rotary_factor": 0.5},
                         "hybrid_sliding": {"rope_type": "default", "rope_theta": 10000.0,
                                            "partial_rotary_factor": 1.0}}), {}),
}


def gemma4_global_keys(d, kw):
    """Write the full layers' dims as the released checkpoints do (global_head_dim,
    num_global_key_value_heads) instead of transformers 5.x's per_layer_config."""
    path = os.path.join(d, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    del cfg["per_layer_config"]
    cfg["global_head_dim"] = kw["global_head_dim"]
    cfg["num_global_key_value_heads"] = kw["num_global_key_value_heads"]
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def gemma4_multimodal(d, kw):
    """Lay the text model out as a multimodal checkpoint does: model_type gemma4 with the text
    config under text_config, tensors under model.language_model."""
    from safetensors.torch import load_file
    path = os.path.join(d, "config.json")
    with open(path) as f:
        text = json.load(f)
    cfg = {"architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4",
           "text_config": text, "tie_word_embeddings": text["tie_word_embeddings"],
           "transformers_version": text["transformers_version"]}
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    st = os.path.join(d, "model.safetensors")
    sd = load_file(st)
    save_file({("model.language_model." + k[len("model."):] if k.startswith("model.") else k): v
               for k, v in sd.items()}, st, metadata={"format": "pt"})


GEMMA4_E = dict(
    vocab_size=256, hidden_size=64, intermediate_size=64, num_hidden_layers=5,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32,
    sliding_window=12, num_kv_shared_layers=2, use_double_wide_mlp=True,
    hidden_size_per_layer_input=8, vocab_size_per_layer_input=256,
    final_logit_softcapping=30.0, max_position_embeddings=256, rms_norm_eps=1e-6,
    layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention",
                 "full_attention"],
    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                     "full_attention": {"rope_type": "proportional",
                                        "partial_rotary_factor": 0.25, "rope_theta": 1e6}})

CONFIGS.update({
    # Gemma 4, E-like: 5 layers (full at 1 and 4), window 12, the last 2 layers share the KV
    # of layers 2 (sliding) and 1 (full) and have double-wide MLPs; per-layer embeddings (8);
    # proportional RoPE on the full layers (4 of 16 pairs); final logit softcap
    "gemma4_e": (transformers.Gemma4TextConfig, transformers.Gemma4ForCausalLM, GEMMA4_E, {}),
    # Gemma 4, 31B-like: no sharing, no per-layer embeddings; full layers with K = V (one
    # projection) and 1 KV head of 32 dims, sliding layers 2 KV heads of 16, window 8; untied
    # lm_head, no softcap; config.json written with global_head_dim as the releases do
    "gemma4_31b": (transformers.Gemma4TextConfig, transformers.Gemma4ForCausalLM, dict(
        vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32,
        num_global_key_value_heads=1, attention_k_eq_v=True, sliding_window=8,
        num_kv_shared_layers=0, hidden_size_per_layer_input=0, final_logit_softcapping=None,
        tie_word_embeddings=False, max_position_embeddings=256, rms_norm_eps=1e-6,
        layer_types=["sliding_attention", "full_attention", "sliding_attention",
                     "full_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "proportional",
                                            "partial_rotary_factor": 0.25, "rope_theta": 1e6}}),
        {}, gemma4_global_keys),
    # Gemma 4 as a multimodal checkpoint: a 2-layer gemma4_e (no sharing) under text_config,
    # weights under model.language_model.
    "gemma4_mm": (transformers.Gemma4TextConfig, transformers.Gemma4ForCausalLM, dict(
        GEMMA4_E, num_hidden_layers=2, num_kv_shared_layers=0,
        layer_types=["sliding_attention", "full_attention"]), {}, gemma4_multimodal),
    # Gemma 4 mixture of experts (26B-A4B-like): every layer's dense MLP plus 4 experts of 16
    # (top 2, router scales and per-expert scales random), K = V full layers, no PLE
    "gemma4_moe": (transformers.Gemma4TextConfig, transformers.Gemma4ForCausalLM, dict(
        vocab_size=256, hidden_size=64, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32,
        num_global_key_value_heads=1, attention_k_eq_v=True, sliding_window=8,
        num_kv_shared_layers=0, hidden_size_per_layer_input=0, final_logit_softcapping=30.0,
        enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=16,
        max_position_embeddings=256, rms_norm_eps=1e-6,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "proportional",
                                            "partial_rotary_factor": 0.25, "rope_theta": 1e6}}),
        {}),
})


# The first fixtures took their seed from their place in CONFIGS; later ones from their name,
# so that fixtures added in any order keep their seeds.
FIRST = ["llama_gqa", "llama_tied", "qwen2_bias", "qwen3_qknorm", "mistral_gqa",
         "deepseek_v3_mla", "deepseek_v3_qproj", "deepseek_v3_moe"]


def seed_of(name, base):
    return base + (FIRST.index(name) if name in FIRST else zlib.crc32(name.encode()) % 100000)


def make(name, out_root, seed):
    cfg_cls, model_cls, kw, save_kw, *post = CONFIGS[name]
    torch.manual_seed(seed)
    config = cfg_cls(**kw)
    config._attn_implementation = "eager"
    model = model_cls(config).eval().float()
    randomize(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, config.vocab_size, (1, T), generator=g)
    with torch.no_grad():
        full = model(ids).logits[0]
        out = model(ids[:, :P], use_cache=True)
        past, rows = out.past_key_values, [out.logits[0]]
        for t in range(P, T):
            out = model(ids[:, t:t + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            rows.append(out.logits[0])
        dec = torch.cat(rows, 0)
    d = os.path.join(out_root, name)
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d, safe_serialization=True, **save_kw)
    gen = os.path.join(d, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    for fn in post:
        fn(d, kw)
    meta = {"prefix": str(P), "torch": torch.__version__, "transformers": transformers.__version__,
            "seed": str(seed)}
    save_file({"tokens": ids[0].to(torch.int32).contiguous(),
               "prefill_logits": full.float().contiguous(),
               "decode_logits": dec.float().contiguous()},
              os.path.join(d, "reference.safetensors"), metadata=meta)
    diff = (full - dec).abs().max().item()
    print(f"{name}: vocab {config.vocab_size}, logits std {full.std().item():.3f}, "
          f"max |prefill - decode| in transformers {diff:.2e}")
    return {"name": name, "model_type": config.model_type, "max_prefill_decode_diff": diff}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/arch")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--only", nargs="*", default=None, metavar="NAME",
                    help="regenerate these fixtures only (the others and their entries in "
                         "versions.json stay as they are)")
    args = ap.parse_args()
    unknown = [n for n in args.only or [] if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown fixture(s) {unknown}; known: {list(CONFIGS)}")
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)   # one thread: the same sums in the same order on every run
    made = {n: make(n, args.out, seed_of(n, args.seed)) for n in CONFIGS
            if args.only is None or n in args.only}
    vpath = os.path.join(args.out, "versions.json")
    old = []
    if args.only is not None and os.path.exists(vpath):
        with open(vpath) as f:
            old = json.load(f).get("fixtures", [])
    entries = {e["name"]: e for e in old if e["name"] in CONFIGS}
    entries.update(made)
    with open(vpath, "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
                   "tokens": T, "prefix": P,
                   "fixtures": [entries[n] for n in CONFIGS if n in entries]}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
