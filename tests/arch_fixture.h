/* tests/arch_fixture: checking kvx against one reference fixture of tests/fixtures/arch/
 * (tools/reference/gen_arch_fixtures.py): a tiny random Hugging Face model folder and its
 * transformers float32 logits.
 *
 * kvx_test_arch_fixture opens the folder, runs it with an f32 KV cache (pages of 16 tokens)
 * and checks
 *   prefill  one forward over all T tokens: every logit within `tol`;
 *   decode   the first P tokens in one step, then one token per step: every logit within
 *            `tol` of transformers' own incremental run;
 *   self     kvx's decode rows against kvx's prefill rows on the same tokens, within
 *            `self_tol` (they differ only by summation order);
 * that the pool then holds the bytes kv/layout predicts for T tokens, and that the model has a
 * tokenizer exactly when the folder holds tokenizer.json.  It prints
 * the three maxima on stderr. */
#ifndef KVX_TESTS_ARCH_FIXTURE_H
#define KVX_TESTS_ARCH_FIXTURE_H

#include <stdint.h>

#include <stdbool.h>

#include "kv/layout.h"
#include "kvx.h"

struct kvx_model;
struct kvx_model_cfg;

void kvx_test_arch_fixture(const char *name, double tol, double self_tol);
/* The same with model options (base->path is replaced by the fixture's folder): e.g. MLA's
 * naive form. */
void kvx_test_arch_fixture_cfg(const char *name, const struct kvx_model_cfg *base, double tol,
                               double self_tol);

/* An engine on m with an f32 KV cache, 128 tokens of context in pages of 16 (NULL after a
 * test failure naming the error). */
struct kvx_engine *kvx_test_arch_engine(const struct kvx_model *m, int32_t n_threads);

/* A copy of fixture `name` in the folder `dir` whose config.json has its first `from` replaced
 * by `to` (the weights: a link to the fixture's model.safetensors), opened and closed again:
 * kvx_model_open's status, its message in err. */
enum kvx_status kvx_test_arch_open_edited(const char *dir, const char *name, const char *from,
                                          const char *to, struct kvx_err *err);

/* One config.json edit and what opening the edited fixture must give: status `want` and, when
 * it fails, a message containing `needle`. */
struct kvx_test_config_edit {
    const char *from, *to;
    enum kvx_status want;
    const char *needle;
};

/* Check every edit with kvx_test_arch_open_edited in a temporary folder (removed after). */
void kvx_test_arch_config_edits(const char *fixture, const struct kvx_test_config_edit *edits,
                                size_t n);

/* The layout a config-only open of `path` declares with K and V in `codec` (pages of 16
 * tokens), validated, and the model's trained context (n_ctx_train may be NULL); false after
 * a test failure naming the error.  Free the layout with kvx_kv_layout_free. */
bool kvx_test_config_layout(const char *path, enum kvx_kv_codec codec, struct kvx_kv_layout *l,
                            int64_t *n_ctx_train);

#endif
