/* model/hf_config: reading hyper-parameters from a Hugging Face config.json (util/json.h tree).
 *
 * Every getter treats a JSON null like an absent key (save_pretrained writes "head_dim": null
 * and the like), and every error names the key: "config.json: key 'hidden_size' is missing",
 * "... = -3 is outside 1..2147483647", "... is a string, not a number". */
#ifndef KVX_MODEL_HF_CONFIG_H
#define KVX_MODEL_HF_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "kvx.h"
#include "util/json.h"

/* An integer key in [lo, hi]; absent and !required: def. */
enum kvx_status kvx_hf_int(const struct kvx_jv *cfg, const char *key, bool required, int64_t def,
                           int64_t lo, int64_t hi, int64_t *out, struct kvx_err *err);
/* A number (integer or not), finite and > 0 unless it is absent (then def). */
enum kvx_status kvx_hf_pos_float(const struct kvx_jv *cfg, const char *key, double def,
                                 double *out, struct kvx_err *err);
enum kvx_status kvx_hf_bool(const struct kvx_jv *cfg, const char *key, bool def, bool *out,
                            struct kvx_err *err);
/* A string key, or `def` when absent; a present non-string is an error. */
enum kvx_status kvx_hf_str(const struct kvx_jv *cfg, const char *key, const char *def,
                           const char **out, struct kvx_err *err);
/* A token id: an integer, or the first of a list of integers (eos_token_id may be a list);
 * -1 when absent. */
enum kvx_status kvx_hf_token_id(const struct kvx_jv *cfg, const char *key, int32_t *out,
                                struct kvx_err *err);

/* RoPE of a config: transformers 5.x "rope_parameters" {rope_type, rope_theta, factor,
 * partial_rotary_factor}, or the 4.x top-level "rope_theta" with "rope_scaling" {type or
 * rope_type, factor} and "partial_rotary_factor".  Types "default" and "linear" are
 * implemented; any other (llama3, yarn, dynamic, longrope, ...) is KVX_ERR_UNSUPPORTED naming
 * the key.  n_rot = head_dim * partial_rotary_factor (even, >= 2). */
struct kvx_hf_rope {
    float theta;
    float freq_scale;          /* 1 / linear factor; 1 for none */
    int32_t n_rot;
};
enum kvx_status kvx_hf_rope(const struct kvx_jv *cfg, int32_t head_dim, struct kvx_hf_rope *out,
                            struct kvx_err *err);

#endif
