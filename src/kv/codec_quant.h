/* kv/codec_quant: what the q8 and q4 KV codecs share between their scalar files
 * (codec_q8.c, codec_q4.c) and their SIMD files (codec_quant_avx2.c, codec_quant_avx512.c,
 * codec_quant_avx512vnni.c): the page geometry, the per-call quantization of the queries and the
 * kernel prototypes.  Internal to kv/.
 *
 * Groups: the values of one token of one head are cut into groups of 32 consecutive channels
 * (dim % 32 == 0); each (token, group) has its own f16 scale (q8: d; q4: d and min m).
 *
 * Page geometry: tokens in blocks of 16 (a K tile), each block `stride` bytes, scales of a block
 * right after its codes so that a kernel streams one block after the other:
 *
 *   q8 K tile (17*dim bytes):  codes   [dim/4][16 tokens][4 channels]  u8 = k_int + 128
 *                              scales  d[group][16 tokens]             f16
 *   q8 V block (17*dim bytes): codes   [16 tokens][dim]                s8 = v_int
 *                              scales  d[group][16 tokens]             f16
 *   q4 K tile (10*dim bytes):  codes   [dim/8][16 tokens][4 bytes]     byte i of 8-channel block j:
 *                                                                      ch 8j+i | ch 8j+4+i << 4
 *                              scales  d[group][16], m[group][16]      f16
 *   q4 V block (10*dim bytes): codes   [16 tokens][dim/2]              byte j of group g:
 *                                                                      ch 32g+j | ch 32g+16+j << 4
 *                              scales  d[group][16], m[group][16]      f16
 *
 * K codes are laid out for integer dot products: one 64-byte row holds 4 (q8) or 8 (q4, two
 * nibbles) channels of the tile's 16 tokens, 4 consecutive bytes per token, which is the operand
 * of one vpdpbusd (16 int32 lanes = 16 tokens, each lane summing 4 products).  V codes are
 * token-major so that p·V broadcasts one weight per token; q4 V puts channels j and j+16 of a
 * group in one byte so one zero-extension plus a mask and a shift unpack 32 channels.
 *
 * Queries (qk): each call quantizes its queries per group of 32 channels to int8, in blocks of
 * KVX_KV_QQ_ROWS queries and KVX_KV_QQ_CH channels (kvx_kv_qquery), with the rule every ISA
 * follows bit for bit:
 *   amax = max_c |q_c|;  amax >= KVX_KV_QQ_TINY:  qi_c = rint(q_c * (127 / amax)), dq = amax / 127
 *                        otherwise:               qi_c = 0,                          dq = 0
 * (rint: round half to even, the result is within [-127, 127]).  The integer sums
 * I_g[t] = sum_{c in g} qi_c k_int_c[t] are exact on every ISA, so SIMD and scalar scores differ
 * only by the fp32 rounding of the per-group epilogue. */
#ifndef KVX_KV_CODEC_QUANT_H
#define KVX_KV_CODEC_QUANT_H

#include <float.h>
#include <math.h>

#include "kv/codec.h"

#define KVX_KV_QGROUP 32
#define KVX_KV_QQ_ROWS 4
#define KVX_KV_QQ_CH 256
#define KVX_KV_QQ_GROUPS (KVX_KV_QQ_CH / KVX_KV_QGROUP)
/* Groups whose largest |q| is below this quantize to zero (127 / amax stays finite). */
#define KVX_KV_QQ_TINY 1e-30f

/* Quantized queries rows [i0, i0 + nq) and channels [c0, c0 + nc) of one call. */
struct kvx_kv_qquery {
    _Alignas(64) int8_t q[KVX_KV_QQ_ROWS][KVX_KV_QQ_CH];  /* qi, channel c0 + c at [i][c] */
    float d[KVX_KV_QQ_ROWS][KVX_KV_QQ_GROUPS];            /* dq per group */
    float sum[KVX_KV_QQ_ROWS][KVX_KV_QQ_GROUPS];          /* sum_c q_c (fp32, unquantized) */
    int32_t isum[KVX_KV_QQ_ROWS][KVX_KV_QQ_GROUPS];       /* sum_c qi_c */
};

/* v rounded to the nearest integer, ties to even, for |v| <= 2^22 (the codes here are within
 * +-127): adding and subtracting 1.5 * 2^23 leaves the rounded value (the default rounding
 * mode, single-precision arithmetic), with no call into libm. */
static inline float kvx_kv_rint(float v)
{
#if FLT_EVAL_METHOD == 0
    const float magic = 12582912.0f;
    return (v + magic) - magic;
#else
    return nearbyintf(v);
#endif
}

/* Bytes of one 16-token block (K tile or V block) of a head of `dim` channels. */
static inline size_t kvx_kv_q8_block_bytes(int32_t dim) { return 17 * (size_t)dim; }
static inline size_t kvx_kv_q4_block_bytes(int32_t dim) { return 10 * (size_t)dim; }

/* Quantize q rows [0, nq) (row stride dim), channels [c0, c0 + nc) (nc % 32 == 0,
 * nq <= KVX_KV_QQ_ROWS, nc <= KVX_KV_QQ_CH) by the rule above.  sum is accumulated in channel
 * order here; the SIMD variants sum in another order (fp32 rounding only). */
void kvx_kv_qquery_scalar(const float *q, int32_t dim, int32_t nq, int32_t c0, int32_t nc,
                          struct kvx_kv_qquery *out);

KVX_KV_DECLARE_STORE(q8);
KVX_KV_DECLARE_STORE(q4plain);
KVX_KV_DECLARE_KERNELS(q8, scalar);
KVX_KV_DECLARE_KERNELS(q4plain, scalar);
KVX_KV_DECLARE_KERNELS(q8, avx2);
KVX_KV_DECLARE_KERNELS(q4plain, avx2);
/* AVX-512: pv in codec_quant_avx512.c, qk in codec_quant_avx512vnni.c (AVX2's qk without VNNI). */
void kvx_kv_pv_q8_avx512(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                         int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc);
void kvx_kv_pv_q4plain_avx512(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                         int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc);
void kvx_kv_qk_q8_avx512vnni(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                             int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld);
void kvx_kv_qk_q4plain_avx512vnni(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                             int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld);

/* The q4 codec's centre share per page (kv/codec_q4.c has the scalar specification):
 * centre_qk adds q_i·c to n scores of each query row, centre_pv adds (sum of n weights of row
 * i) c to accumulator row i. */
#define KVX_KV_DECLARE_Q4_CENTRE(isa)                                                            \
    void kvx_kv_q4_centre_qk_##isa(const float *q, int32_t n_q, int32_t dim, const float *c,    \
                                   float *scores, int64_t ld, int32_t n);                       \
    void kvx_kv_q4_centre_pv_##isa(const float *p, int32_t n_q, int64_t ld, int32_t n,          \
                                   const float *c, int32_t dim, float *acc)
KVX_KV_DECLARE_Q4_CENTRE(scalar);
KVX_KV_DECLARE_Q4_CENTRE(avx2);
KVX_KV_DECLARE_Q4_CENTRE(avx512);

/* The method tables of an integer codec NAME (q8, q4) and its getter kvx_kv_codec_NAME:
 * scalar, AVX2 and AVX-512 kernels, the AVX-512 table taking the VNNI integer q·k when the CPU
 * has it (AVX-512 without VNNI uses AVX2's integer dot products).  Needs ops/cpu.h. */
#define KVX_KV_QUANT_OPS(NAME, BITS, qk_isa, pv_isa)                                              \
    {                                                                                            \
        .name = #NAME, .bits = BITS, .k_region_bytes = kvx_kv_k_region_bytes_##NAME,             \
        .v_region_bytes = kvx_kv_v_region_bytes_##NAME, .k_put = kvx_kv_k_put_##NAME,            \
        .v_put = kvx_kv_v_put_##NAME, .k_get = kvx_kv_k_get_##NAME, .v_get = kvx_kv_v_get_##NAME,\
        .qk = kvx_kv_qk_##NAME##_##qk_isa, .pv = kvx_kv_pv_##NAME##_##pv_isa,                    \
    }

#if defined(__x86_64__) || defined(__i386__)
#define KVX_KV_QUANT_CODEC(NAME, BITS)                                                            \
    static const struct kvx_kv_codec_ops ops_##NAME[KVX_ISA_COUNT] = {                           \
        [KVX_ISA_SCALAR] = KVX_KV_QUANT_OPS(NAME, BITS, scalar, scalar),                         \
        [KVX_ISA_AVX2] = KVX_KV_QUANT_OPS(NAME, BITS, avx2, avx2),                               \
        [KVX_ISA_AVX512] = KVX_KV_QUANT_OPS(NAME, BITS, avx2, avx512),                           \
    };                                                                                           \
    static const struct kvx_kv_codec_ops ops_##NAME##_vnni =                                     \
        KVX_KV_QUANT_OPS(NAME, BITS, avx512vnni, avx512);                                        \
    const struct kvx_kv_codec_ops *kvx_kv_codec_##NAME(enum kvx_isa isa)                         \
    {                                                                                            \
        if ((int)isa < 0 || isa >= KVX_ISA_COUNT)                                                \
            isa = KVX_ISA_SCALAR;                                                                \
        if (isa == KVX_ISA_AVX512 && kvx_cpu_has_avx512_vnni())                                  \
            return &ops_##NAME##_vnni;                                                           \
        return &ops_##NAME[isa];                                                                 \
    }
#else
#define KVX_KV_QUANT_CODEC(NAME, BITS)                                                            \
    static const struct kvx_kv_codec_ops ops_##NAME = KVX_KV_QUANT_OPS(NAME, BITS, scalar, scalar); \
    const struct kvx_kv_codec_ops *kvx_kv_codec_##NAME(enum kvx_isa isa)                         \
    {                                                                                            \
        (void)isa;                                                                               \
        return &ops_##NAME;                                                                      \
    }
#endif

#endif
