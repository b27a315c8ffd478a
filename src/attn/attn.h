/* attn: attention over a layer's cache, read through a struct kvx_kv_view.
 *
 * Full / GQA attention for the n_q query heads that share one KV head, over keys [k0, k1):
 *   s_it  = scale * q_i · k_t
 *   m_i   = max_t s_it,   l_i = sum_t exp(s_it - m_i),   acc_i = sum_t exp(s_it - m_i) v_t
 * kvx_attn_partial produces (m, l, acc) for one key range so that callers can split long
 * contexts across threads (flash-decoding); kvx_attn_merge combines ranges and divides:
 *   out_i = (sum_r exp(m_ir - M_i) acc_ir) / (sum_r exp(m_ir - M_i) l_ir),  M_i = max_r m_ir.
 * The kernels read the codec's page layout in place; exp is evaluated in fp32 (the view's ISA
 * picks a vectorized exp, relative error ~1e-7).  Reentrant: callers on several threads pass
 * their own scratch. */
#ifndef KVX_ATTN_ATTN_H
#define KVX_ATTN_ATTN_H

#include <stdint.h>

#include "kv/pool.h"

/* Scratch floats kvx_attn_partial needs for n_q queries of k_dim values and a key range of
 * n_keys keys: n_q rows of round_up(n_keys + 15, 16) scores (the range plus the keys before k0
 * in its first 16-token tile), n_q rotated queries (for rotating K codecs) and one decoded key
 * (LATENT views); 0 for an empty range.
 *
 * A LATENT view (v_is_k) takes V from the K region: acc_i = sum_t exp(s_it - m_i) k_t, k_dim
 * values (the key decoded once per token by the K codec's k_get; scalar for now). */
int64_t kvx_attn_scratch_floats(int32_t n_q, int64_t n_keys, int32_t k_dim);

/* q: n_q rows of k_dim floats; m, l: n_q floats; acc: n_q rows of v_dim floats (overwritten).
 * An empty range gives m = -inf, l = 0, acc = 0.  [k0, k1) may start and end anywhere but must
 * lie in pages the view holds (a window layer: k0 >= kvx_kv_layer_first_pos of the query).
 * m is the largest scaled score, l = sum exp(s - m), acc = sum exp(s - m) v (not divided). */
void kvx_attn_partial(const struct kvx_kv_view *v, int32_t kv_head, int64_t k0, int64_t k1,
                      const float *q, int32_t n_q, float scale, float *scratch, float *m, float *l,
                      float *acc);

/* The raw scores q_i · k_t (no scale) of n_q queries for keys [k0, k1) of KV head kv_head:
 * scores[i*ld + t - b] with b = k0 rounded down to a multiple of 16 (entries for t < k0 in
 * that tile are scratch); ld >= k1 - b.  q_rot: n_q * k_dim floats of scratch where a
 * rotating K codec rotates the queries.  Writes nothing for an empty range. */
void kvx_attn_scores(const struct kvx_kv_view *v, int32_t kv_head, int64_t k0, int64_t k1,
                     const float *q, int32_t n_q, float *scores, int64_t ld, float *q_rot);

/* Combine n_parts partial results (part r at m + r*n_q, l + r*n_q, acc + r*n_q*v_dim) into
 * out (n_q rows of v_dim floats). */
void kvx_attn_merge(int32_t n_parts, int32_t n_q, int32_t v_dim, const float *m, const float *l,
                    const float *acc, float *out);

#endif
