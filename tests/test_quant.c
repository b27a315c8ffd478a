/* tests/test_quant.c: ops/quant, every format's kernels against the format definition and
 * against each other.
 *
 *   - hand-built blocks dequantize to values worked out from the layout by hand;
 *   - from_float -> to_float stays within each format's stated error bound;
 *   - scalar vec_dot equals the fp64 dot of the dequantized rows (1e-5 relative to sum |w*a|,
 *     plus the fp16 rounding of q8_1's s for q4_1/q5_1);
 *   - every SIMD table (AVX2, AVX-512, AVX-512 VNNI: those this CPU has) matches scalar on random
 *     rows of 1, 2, 3 and 7 blocks (odd lengths for the float formats) at unaligned addresses,
 *     within 1e-5 * sum |w*a|; activation quantizers are byte-identical to scalar;
 *   - every vec_dot_tile (the scalar reference loop, AVX-512, AVX-512 VNNI) matches scalar
 *     vec_dot per (row, token) within 1e-5 * sum |w*a| on every tile shape up to 4 x 4, rows of
 *     1..9 and 18 blocks, odd offsets and strides, int16 worst-case quants, and writes nothing
 *     outside its tile; kvx_matmul_part (tiles for n_tok > 1) matches vec_dot on ragged shapes;
 *   - quant_bench_* print vec_dot GB/s per ISA, and vec_dot vs vec_dot_tile GMAC/s in cache,
 *     when KVX_BENCH=1 (skipped otherwise). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops/matmul.h"
#include "ops/quant.h"
#include "ops/quant_internal.h"
#include "test.h"

/* ==================================== shared helpers ====================================== */

static const enum kvx_dtype all_types[] = {
    KVX_DTYPE_F32,  KVX_DTYPE_F16,  KVX_DTYPE_BF16, KVX_DTYPE_Q4_0, KVX_DTYPE_Q4_1,
    KVX_DTYPE_Q5_0, KVX_DTYPE_Q5_1, KVX_DTYPE_Q8_0, KVX_DTYPE_Q8_1, KVX_DTYPE_Q2_K,
    KVX_DTYPE_Q3_K, KVX_DTYPE_Q4_K, KVX_DTYPE_Q5_K, KVX_DTYPE_Q6_K, KVX_DTYPE_Q8_K,
};
#define N_TYPES ((int)(sizeof all_types / sizeof all_types[0]))

static const enum kvx_dtype activation_types[] = {
    KVX_DTYPE_F32, KVX_DTYPE_F16, KVX_DTYPE_BF16, KVX_DTYPE_Q8_0, KVX_DTYPE_Q8_1, KVX_DTYPE_Q8_K,
};

/* splitmix64: deterministic data for every run. */
struct rng {
    uint64_t s;
};
static uint64_t rng_u64(struct rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rng_uniform(struct rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)(rng_u64(r) >> 40) / (double)(1ull << 24));
}

static size_t row_bytes(enum kvx_dtype t, int64_t n)
{
    size_t b = 0;
    if (!kvx_dtype_row_bytes(t, n, &b))
        kvx_test_fail(__FILE__, __LINE__, "row_bytes(%s, %lld)", kvx_dtype_name(t), (long long)n);
    return b;
}

/* A kernel table and the name to report it by. */
struct variant {
    const char *name;
    bool (*available)(void);
    const struct kvx_quant_kernels *(*get)(enum kvx_dtype);
};

static bool has_scalar(void) { return true; }
static bool has_avx2(void) { return kvx_cpu_has_isa(KVX_ISA_AVX2); }
static bool has_avx512(void) { return kvx_cpu_has_isa(KVX_ISA_AVX512); }
static bool has_vnni(void) { return kvx_cpu_has_avx512_vnni(); }
static const struct kvx_quant_kernels *get_scalar(enum kvx_dtype t)
{
    return kvx_quant_kernels(t, KVX_ISA_SCALAR);
}
static const struct kvx_quant_kernels *get_avx2(enum kvx_dtype t)
{
    return kvx_quant_kernels(t, KVX_ISA_AVX2);
}
static const struct kvx_quant_kernels *get_avx512(enum kvx_dtype t)
{
    return kvx_quant_kernels_avx512_novnni(t);
}
/* with VNNI present, the AVX-512 table kvx_quant_kernels hands out is the VNNI one */
static const struct kvx_quant_kernels *get_vnni(enum kvx_dtype t)
{
    return kvx_quant_kernels(t, KVX_ISA_AVX512);
}

static const struct variant variants[] = {
    {"scalar", has_scalar, get_scalar},
    {"avx2", has_avx2, get_avx2},
    {"avx512", has_avx512, get_avx512},
    {"avx512vnni", has_vnni, get_vnni},
};
#define N_VARIANTS ((int)(sizeof variants / sizeof variants[0]))

static void store_f16(uint8_t *p, float v) { kvx_quant_store_f16(p, v); }

/* Byte offsets of the fp16 scale fields inside one block of t (f32 at `f32_at` for q8_K). */
struct scale_fields {
    int n, at[2];
};
static struct scale_fields scale_fields(enum kvx_dtype t)
{
    switch (t) {
    case KVX_DTYPE_Q4_0:
    case KVX_DTYPE_Q5_0:
    case KVX_DTYPE_Q8_0: return (struct scale_fields){1, {0, 0}};
    case KVX_DTYPE_Q4_1:
    case KVX_DTYPE_Q5_1:
    case KVX_DTYPE_Q8_1: return (struct scale_fields){2, {0, 2}};
    case KVX_DTYPE_Q2_K: return (struct scale_fields){2, {80, 82}};
    case KVX_DTYPE_Q3_K: return (struct scale_fields){1, {108, 0}};
    case KVX_DTYPE_Q4_K:
    case KVX_DTYPE_Q5_K: return (struct scale_fields){2, {0, 2}};
    case KVX_DTYPE_Q6_K: return (struct scale_fields){1, {208, 0}};
    default: return (struct scale_fields){0, {0, 0}};
    }
}

/* A weight row with every bit pattern a file may hold: random quants and scale codes, random
 * finite scales.  Float formats get random values in [-1, 1]. */
static void random_weights(struct rng *r, enum kvx_dtype t, uint8_t *dst, int64_t n)
{
    if (t == KVX_DTYPE_F32 || t == KVX_DTYPE_F16 || t == KVX_DTYPE_BF16) {
        float *f = malloc((size_t)n * sizeof *f);
        for (int64_t i = 0; i < n; i++)
            f[i] = rng_uniform(r, -1, 1);
        kvx_quant_kernels(t, KVX_ISA_SCALAR)->from_float(f, dst, n);
        free(f);
        return;
    }
    size_t bytes = row_bytes(t, n), bb = kvx_dtype_block_bytes(t);
    for (size_t i = 0; i < bytes; i++)
        dst[i] = (uint8_t)rng_u64(r);
    struct scale_fields sf = scale_fields(t);
    for (size_t b = 0; b < bytes / bb; b++) {
        for (int k = 0; k < sf.n; k++)
            store_f16(dst + b * bb + (size_t)sf.at[k], rng_uniform(r, -0.05f, 0.05f));
        if (t == KVX_DTYPE_Q8_K)
            kvx_quant_store_f32(dst + b * bb, rng_uniform(r, -0.05f, 0.05f));
    }
}

static void random_floats(struct rng *r, float *x, int64_t n, float amp)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = rng_uniform(r, -amp, amp);
}

/* Elements of a row of n of format t used in a test: `blocks` blocks, or n itself for floats. */
static int64_t test_len(enum kvx_dtype t, int64_t blocks)
{
    return kvx_dtype_block_size(t) * blocks;
}

/* ===================================== tables ============================================= */

KVX_TEST(quant_tables_complete)
{
    for (int v = 0; v < N_VARIANTS; v++) {
        if (!variants[v].available())
            continue;
        for (int i = 0; i < N_TYPES; i++) {
            const struct kvx_quant_kernels *k = variants[v].get(all_types[i]);
            KVX_CHECK(k != NULL);
            if (k) {
                KVX_CHECK(k->to_float != NULL);
                KVX_CHECK(k->from_float != NULL);
                KVX_CHECK(k->vec_dot != NULL);
            }
        }
        KVX_CHECK(variants[v].get((enum kvx_dtype)4) == NULL);  /* removed q4_2 */
        KVX_CHECK(variants[v].get((enum kvx_dtype)16) == NULL); /* iq2_xxs: not supported */
        KVX_CHECK(variants[v].get(KVX_DTYPE_COUNT) == NULL);
    }
    KVX_CHECK(kvx_quant_kernels(KVX_DTYPE_Q4_1, KVX_ISA_COUNT) == NULL);
    /* the block structs agree with ops/dtype's geometry */
    KVX_CHECK_EQ_INT(kvx_dtype_block_bytes(KVX_DTYPE_Q4_0), sizeof(struct kvx_block_q4_0));
    KVX_CHECK_EQ_INT(kvx_dtype_block_bytes(KVX_DTYPE_Q4_1), sizeof(struct kvx_block_q4_1));
    KVX_CHECK_EQ_INT(kvx_dtype_block_bytes(KVX_DTYPE_Q5_0), sizeof(struct kvx_block_q5_0));
    KVX_CHECK_EQ_INT(kvx_dtype_block_bytes(KVX_DTYPE_Q5_1), sizeof(struct kvx_block_q5_1));
    KVX_CHECK_EQ_INT(kvx_dtype_block_bytes(KVX_DTYPE_Q8_0), sizeof(struct kvx_block_q8_0));
    KVX_CHECK_EQ_INT(kvx_dtype_block_bytes(KVX_DTYPE_Q8_1), sizeof(struct kvx_block_q8_1));
    KVX_CHECK_EQ_INT(kvx_dtype_block_bytes(KVX_DTYPE_Q2_K), sizeof(struct kvx_block_q2_K));
    KVX_CHECK_EQ_INT(kvx_dtype_block_bytes(KVX_DTYPE_Q3_K), sizeof(struct kvx_block_q3_K));
    KVX_CHECK_EQ_INT(kvx_dtype_block_bytes(KVX_DTYPE_Q4_K), sizeof(struct kvx_block_q4_K));
    KVX_CHECK_EQ_INT(kvx_dtype_block_bytes(KVX_DTYPE_Q5_K), sizeof(struct kvx_block_q5_K));
    KVX_CHECK_EQ_INT(kvx_dtype_block_bytes(KVX_DTYPE_Q6_K), sizeof(struct kvx_block_q6_K));
    KVX_CHECK_EQ_INT(kvx_dtype_block_bytes(KVX_DTYPE_Q8_K), sizeof(struct kvx_block_q8_K));
    KVX_CHECK_EQ_INT(kvx_dtype_block_size(KVX_DTYPE_Q4_1), KVX_QK);
    KVX_CHECK_EQ_INT(kvx_dtype_block_size(KVX_DTYPE_Q6_K), KVX_QK_K);
    KVX_CHECK_EQ_INT(kvx_quant_vec_dot_type(KVX_DTYPE_F32), KVX_DTYPE_F32);
    KVX_CHECK_EQ_INT(kvx_quant_vec_dot_type(KVX_DTYPE_F16), KVX_DTYPE_F16);
    KVX_CHECK_EQ_INT(kvx_quant_vec_dot_type(KVX_DTYPE_BF16), KVX_DTYPE_BF16);
    KVX_CHECK_EQ_INT(kvx_quant_vec_dot_type(KVX_DTYPE_Q4_0), KVX_DTYPE_Q8_0);
    KVX_CHECK_EQ_INT(kvx_quant_vec_dot_type(KVX_DTYPE_Q5_0), KVX_DTYPE_Q8_0);
    KVX_CHECK_EQ_INT(kvx_quant_vec_dot_type(KVX_DTYPE_Q8_0), KVX_DTYPE_Q8_0);
    KVX_CHECK_EQ_INT(kvx_quant_vec_dot_type(KVX_DTYPE_Q4_1), KVX_DTYPE_Q8_1);
    KVX_CHECK_EQ_INT(kvx_quant_vec_dot_type(KVX_DTYPE_Q5_1), KVX_DTYPE_Q8_1);
    for (enum kvx_dtype t = KVX_DTYPE_Q2_K; t <= KVX_DTYPE_Q8_K; t++)
        KVX_CHECK_EQ_INT(kvx_quant_vec_dot_type(t), KVX_DTYPE_Q8_K);
    KVX_CHECK_EQ_INT(kvx_quant_vec_dot_type((enum kvx_dtype)4), KVX_DTYPE_COUNT);
}

/* ============================ hand-built blocks: dequantization =========================== */

static void dequant_scalar(enum kvx_dtype t, const void *blk, float *out)
{
    kvx_quant_kernels(t, KVX_ISA_SCALAR)->to_float(blk, out, kvx_dtype_block_size(t));
}

KVX_TEST(quant_known_float_formats)
{
    uint8_t h[6];
    float out[3];
    store_f16(h, 1.0f);
    memcpy(h + 2, &(uint16_t){0xc000}, 2); /* -2 */
    memcpy(h + 4, &(uint16_t){0x0001}, 2); /* smallest subnormal, 2^-24 */
    kvx_quant_kernels(KVX_DTYPE_F16, KVX_ISA_SCALAR)->to_float(h, out, 3);
    KVX_CHECK(out[0] == 1.0f && out[1] == -2.0f && out[2] == 5.9604644775390625e-08f);
    memcpy(h, &(uint16_t){0x3f80}, 2);     /* bf16 1.0 */
    memcpy(h + 2, &(uint16_t){0xc040}, 2); /* bf16 -3.0 */
    kvx_quant_kernels(KVX_DTYPE_BF16, KVX_ISA_SCALAR)->to_float(h, out, 2);
    KVX_CHECK(out[0] == 1.0f && out[1] == -3.0f);
}

KVX_TEST(quant_known_q4_q5)
{
    float out[32];
    struct kvx_block_q4_0 b40 = {0};
    store_f16(b40.d, 0.5f);
    b40.qs[0] = 0x3a; /* element 0: (10 - 8) * 0.5 = 1; element 16: (3 - 8) * 0.5 = -2.5 */
    dequant_scalar(KVX_DTYPE_Q4_0, &b40, out);
    KVX_CHECK(out[0] == 1.0f && out[16] == -2.5f && out[1] == -4.0f);

    struct kvx_block_q4_1 b41 = {0};
    store_f16(b41.d, 0.5f);
    store_f16(b41.m, -1.0f);
    b41.qs[1] = 0xf0; /* element 1: 0 * 0.5 - 1; element 17: 15 * 0.5 - 1 = 6.5 */
    dequant_scalar(KVX_DTYPE_Q4_1, &b41, out);
    KVX_CHECK(out[1] == -1.0f && out[17] == 6.5f);

    struct kvx_block_q5_0 b50 = {0};
    store_f16(b50.d, 0.25f);
    uint32_t qh = 1u | (1u << 17);
    memcpy(b50.qh, &qh, 4);
    b50.qs[0] = 0x21; /* e0: (1|16) - 16 = 1; e16: 2 - 16 = -14; e17: (0|16) - 16 = 0; e1: -16 */
    dequant_scalar(KVX_DTYPE_Q5_0, &b50, out);
    KVX_CHECK(out[0] == 0.25f && out[16] == -3.5f && out[17] == 0.0f && out[1] == -4.0f);

    struct kvx_block_q5_1 b51 = {0};
    store_f16(b51.d, 1.0f);
    store_f16(b51.m, 0.5f);
    qh = 1u << 31;
    memcpy(b51.qh, &qh, 4);
    b51.qs[15] = 0xf0; /* e15: 0 + 0.5; e31: (15|16) + 0.5 = 31.5 */
    dequant_scalar(KVX_DTYPE_Q5_1, &b51, out);
    KVX_CHECK(out[15] == 0.5f && out[31] == 31.5f);
}

KVX_TEST(quant_known_q8)
{
    float out[256];
    struct kvx_block_q8_0 b80 = {0};
    store_f16(b80.d, 2.0f);
    b80.qs[5] = -3;
    dequant_scalar(KVX_DTYPE_Q8_0, &b80, out);
    KVX_CHECK(out[5] == -6.0f && out[4] == 0.0f);

    struct kvx_block_q8_1 b81 = {0};
    store_f16(b81.d, 0.5f);
    b81.qs[31] = 127;
    dequant_scalar(KVX_DTYPE_Q8_1, &b81, out);
    KVX_CHECK(out[31] == 63.5f);

    static struct kvx_block_q8_K b8k;
    memset(&b8k, 0, sizeof b8k);
    kvx_quant_store_f32(b8k.d, -0.5f);
    b8k.qs[3] = 10;
    dequant_scalar(KVX_DTYPE_Q8_K, &b8k, out);
    KVX_CHECK(out[3] == -5.0f);
}

KVX_TEST(quant_known_q2_k_q3_k)
{
    float out[256];
    struct kvx_block_q2_K b2 = {0};
    store_f16(b2.d, 1.0f);
    store_f16(b2.dmin, 0.5f);
    b2.scales[0] = 0x23; /* sub-block 0: scale 3, min 2 */
    b2.scales[2] = 0x01; /* sub-block 2: scale 1, min 0 */
    b2.scales[6] = 0x42; /* sub-block 6: scale 2, min 4 */
    b2.scales[9] = 0x1f; /* sub-block 9: scale 15, min 1 */
    b2.qs[0] = 0xe4;     /* shifts 0,2,4,6 of byte 0 -> quants 0,1,2,3 of elements 0,32,64,96 */
    b2.qs[48] = 0x02;    /* element 128 + 16 (h=1, j=0, l=16): quant 2 */
    dequant_scalar(KVX_DTYPE_Q2_K, &b2, out);
    KVX_CHECK(out[0] == -1.0f);   /* 1*3*0 - 0.5*2 */
    KVX_CHECK(out[32] == 1.0f);   /* 1*1*1 - 0 */
    KVX_CHECK(out[96] == 4.0f);   /* 1*2*3 - 0.5*4 */
    KVX_CHECK(out[144] == 29.5f); /* 1*15*2 - 0.5*1 */

    struct kvx_block_q3_K b3 = {0};
    store_f16(b3.d, 0.5f);
    b3.scales[0] = 0x01; /* scale 0 low bits 1 ... */
    b3.scales[8] = 0x02; /* ... high bits 2: code 33 -> 33 - 32 = 1; scales 1..15 code 0 -> -32 */
    b3.qs[0] = 0x03;     /* element 0: low bits 3 */
    b3.hmask[0] = 0x01;  /* element 0: high bit set -> 3 + 4 - 4 = 3 */
    b3.qs[48] = 0x40;    /* element 240 (h=1, j=3, l=16): low bits 1 */
    b3.hmask[16] = 0x80; /* ... bit 4h + j = 7: high bit set -> 1 */
    dequant_scalar(KVX_DTYPE_Q3_K, &b3, out);
    KVX_CHECK(out[0] == 1.5f);     /* 0.5 * 1 * 3 */
    KVX_CHECK(out[1] == -2.0f);    /* 0.5 * 1 * (0 - 4) */
    KVX_CHECK(out[240] == -16.0f); /* 0.5 * -32 * 1 */
    KVX_CHECK(out[17] == 64.0f);   /* sub-block 1: 0.5 * -32 * (0 - 4) */
}

KVX_TEST(quant_known_q4_k_q5_k_q6_k)
{
    float out[256];
    struct kvx_block_q4_K b4 = {0};
    store_f16(b4.d, 1.0f);
    store_f16(b4.dmin, 1.0f);
    b4.scales[0] = 2;     /* sub-block 0: scale 2 */
    b4.scales[4] = 3;     /* sub-block 0: min 3 */
    b4.scales[1] = 1;     /* sub-block 1: scale 1, min 0 */
    b4.scales[11] = 0x21; /* sub-block 7: scale low 1, min low 2 */
    b4.scales[3] = 0x40;  /* sub-block 7: scale high bits 1 -> 17 (sub-block 3: scale 0) */
    b4.scales[7] = 0x80;  /* sub-block 7: min high bits 2 -> 34 */
    b4.qs[0] = 0x75;      /* element 0: 5, element 32: 7 */
    b4.qs[96] = 0x30;     /* element 224 (sub-block 7): 3 */
    dequant_scalar(KVX_DTYPE_Q4_K, &b4, out);
    KVX_CHECK(out[0] == 7.0f);    /* 2*5 - 3 */
    KVX_CHECK(out[32] == 7.0f);   /* 1*7 - 0 */
    KVX_CHECK(out[224] == 17.0f); /* 17*3 - 34 */

    struct kvx_block_q5_K b5 = {0};
    store_f16(b5.d, 0.5f);
    b5.scales[0] = 4;
    b5.scales[1] = 1;
    b5.qs[0] = 0x0f;
    b5.qh[0] = 0x03; /* element 0: 15 + 16; element 32: 0 + 16 */
    dequant_scalar(KVX_DTYPE_Q5_K, &b5, out);
    KVX_CHECK(out[0] == 62.0f); /* 0.5*4*31 */
    KVX_CHECK(out[32] == 8.0f); /* 0.5*1*16 */

    struct kvx_block_q6_K b6 = {0};
    store_f16(b6.d, 0.25f);
    b6.scales[0] = -2;
    b6.scales[6] = 3;
    b6.ql[0] = 0x01;
    b6.qh[0] = 0xc2; /* element 0: 1 | 2<<4 = 33; element 96: 15 | 3<<4 = 63 */
    b6.ql[32] = 0xf0;
    dequant_scalar(KVX_DTYPE_Q6_K, &b6, out);
    KVX_CHECK(out[0] == -0.5f);   /* 0.25 * -2 * (33 - 32) */
    KVX_CHECK(out[96] == 23.25f); /* 0.25 * 3 * (63 - 32) */
}

/* =============================== activation rounding rules ================================ */

/* q8_0 / q8_1 (llama.cpp's x86 run-time rule) and q8_K round half to even; q8_K takes the sign
 * of the largest-magnitude element; checked on every ISA's from_float. */
KVX_TEST(quant_q8_rounding_rules)
{
    float x[256] = {0};
    x[0] = 127.0f; /* amax 127 -> d = 1 (q8_0/q8_1), iscale = -1 (q8_K) */
    x[1] = 2.5f;
    x[2] = -2.5f;
    x[3] = 0.5f;
    x[4] = -127.0f; /* same magnitude as x[0]: the first one sets q8_K's sign */
    for (int v = 0; v < N_VARIANTS; v++) {
        if (!variants[v].available())
            continue;
        struct kvx_block_q8_0 b0;
        variants[v].get(KVX_DTYPE_Q8_0)->from_float(x, &b0, 32);
        KVX_CHECK(kvx_quant_load_u16(b0.d) == 0x3c00);
        KVX_CHECK(b0.qs[0] == 127 && b0.qs[1] == 2 && b0.qs[2] == -2 && b0.qs[3] == 0 &&
                  b0.qs[4] == -127);

        struct kvx_block_q8_1 b1;
        variants[v].get(KVX_DTYPE_Q8_1)->from_float(x, &b1, 32);
        KVX_CHECK(b1.qs[1] == 2 && b1.qs[2] == -2 && b1.qs[3] == 0);
        KVX_CHECK(kvx_quant_load_f16(b1.s) == 0.0f); /* d * (127 + 2 - 2 + 0 - 127) */
        x[5] = 3.5f; /* 3.5 rounds to 4 */
        variants[v].get(KVX_DTYPE_Q8_1)->from_float(x, &b1, 32);
        KVX_CHECK(b1.qs[5] == 4 && kvx_quant_load_f16(b1.s) == 4.0f);
        x[5] = 0;

        static struct kvx_block_q8_K bk;
        variants[v].get(KVX_DTYPE_Q8_K)->from_float(x, &bk, 256);
        KVX_CHECK(kvx_quant_load_f32(bk.d) == -1.0f);
        KVX_CHECK(bk.qs[0] == -127 && bk.qs[1] == -2 && bk.qs[2] == 2 && bk.qs[3] == 0 &&
                  bk.qs[4] == 127);
        KVX_CHECK_EQ_INT(kvx_quant_load_i16(bk.bsums), 0);
    }
}

/* ===================================== round trip ========================================= */

/* Largest allowed |x - x'| for an element of a block with largest magnitude A and range R
 * (max - min).  Derivations: see the quantizers in quant_scalar.c. */
static double roundtrip_bound(enum kvx_dtype t, double x, double A, double R)
{
    const double h = 1.0 / 2048; /* fp16 relative rounding */
    switch (t) {
    case KVX_DTYPE_F32: return 0;
    case KVX_DTYPE_F16: return fmax(fabs(x) * h, 0x1p-25); /* subnormal halves: 2^-24 apart */
    case KVX_DTYPE_BF16: return fabs(x) / 256;             /* 8-bit significand */
    case KVX_DTYPE_Q4_0: return A / 8 + A * h * 1.01; /* d = A/8; +A rounds to 8 -> 7: one step */
    case KVX_DTYPE_Q5_0: return A / 16 + A * h * 1.01;
    case KVX_DTYPE_Q4_1: return R / 30 + (A + R) * h * 1.01; /* half a step + fp16 d, m */
    case KVX_DTYPE_Q5_1: return R / 62 + (A + R) * h * 1.01;
    case KVX_DTYPE_Q8_0:
    case KVX_DTYPE_Q8_1: return A / 254 + A * h * 1.01;
    case KVX_DTYPE_Q8_K: return A / 254 * 1.0001;
    /* K-quants: no clamping, half of the effective step d*sc <= s_j + d */
    case KVX_DTYPE_Q2_K: return 0.368 * A;
    case KVX_DTYPE_Q3_K: return 0.1725 * A;
    case KVX_DTYPE_Q4_K: return 0.0685 * A;
    case KVX_DTYPE_Q5_K: return 0.0332 * A;
    case KVX_DTYPE_Q6_K: return 0.0163 * A;
    default: return 0;
    }
}

/* One row of 4 super-blocks' worth of elements: random at amplitude amp, with a zero block, a
 * constant negative block and a block of one sign. */
static void roundtrip_row(float *x, int64_t n, int64_t bs, struct rng *r, float amp)
{
    random_floats(r, x, n, amp);
    for (int64_t i = 0; i < bs && bs > 1; i++) {
        x[i] = 0;                             /* block 0: zeros */
        x[bs + i] = -0.3f * amp;              /* block 1: constant */
        x[2 * bs + i] = fabsf(x[2 * bs + i]); /* block 2: positive */
    }
}

KVX_TEST(quant_roundtrip_error)
{
    struct rng r = {1};
    const int64_t n = 4 * 256;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    uint8_t *q = malloc(row_bytes(KVX_DTYPE_F32, n));
    const float amps[] = {1.0f, 30.0f, 0.05f};
    for (int i = 0; i < N_TYPES; i++) {
        enum kvx_dtype t = all_types[i];
        int64_t bs = kvx_dtype_block_size(t);
        const struct kvx_quant_kernels *k = kvx_quant_kernels(t, KVX_ISA_SCALAR);
        for (int a = 0; a < 3; a++) {
            roundtrip_row(x, n, bs, &r, amps[a]);
            k->from_float(x, q, n);
            k->to_float(q, y, n);
            int bad = 0;
            for (int64_t b = 0; b < n; b += bs) {
                float amax = 0, mn = x[b], mx = x[b];
                for (int64_t j = b; j < b + bs; j++) {
                    amax = fmaxf(amax, fabsf(x[j]));
                    mn = fminf(mn, x[j]);
                    mx = fmaxf(mx, x[j]);
                }
                for (int64_t j = b; j < b + bs; j++) {
                    double tol = roundtrip_bound(t, x[j], amax, (double)mx - mn) + 1e-30;
                    if (!(fabs((double)y[j] - x[j]) <= tol) && bad++ < 3)
                        kvx_test_fail(__FILE__, __LINE__,
                                      "%s amp %g element %lld: %.9g -> %.9g (bound %.3g)",
                                      kvx_dtype_name(t), amps[a], (long long)j, x[j], y[j], tol);
                }
            }
            for (int64_t j = 0; j < bs && bs > 1; j++) /* zeros stay zeros */
                KVX_CHECK(y[j] == 0.0f);
        }
    }
    free(x);
    free(y);
    free(q);
}

/* =========================== scalar vec_dot vs fp64 reference ============================= */

/* The fp16 rounding of q8_1's s = fp16(d * sum q) (taken with the fp32 d) that q4_1/q5_1 use
 * for their min term: sum_b |m_b| * (|s_b| + d_b * sum_j |q_j|) * 2^-10. */
static double q8_1_min_slack(enum kvx_dtype t, const uint8_t *w, const uint8_t *a, int64_t nb)
{
    if (t != KVX_DTYPE_Q4_1 && t != KVX_DTYPE_Q5_1)
        return 0;
    size_t wb = kvx_dtype_block_bytes(t);
    double slack = 0;
    for (int64_t b = 0; b < nb; b++) {
        const struct kvx_block_q8_1 *y = (const struct kvx_block_q8_1 *)(a + (size_t)b * sizeof *y);
        double sq = 0;
        for (int j = 0; j < 32; j++)
            sq += abs(y->qs[j]);
        double m = kvx_quant_load_f16(w + (size_t)b * wb + 2);
        slack += fabs(m) * (fabs(kvx_quant_load_f16(y->s)) + kvx_quant_load_f16(y->d) * sq) / 1024;
    }
    return slack;
}

/* sum |w_i * a_i| and the fp64 dot of two dequantized rows. */
static double dot64(const float *wf, const float *af, int64_t n, double *abs_sum)
{
    double s = 0, as = 0;
    for (int64_t i = 0; i < n; i++) {
        s += (double)wf[i] * af[i];
        as += fabs((double)wf[i] * af[i]);
    }
    *abs_sum = as;
    return s;
}

KVX_TEST(quant_vec_dot_scalar_vs_fp64)
{
    struct rng r = {2};
    for (int i = 0; i < N_TYPES; i++) {
        enum kvx_dtype t = all_types[i], at = kvx_quant_vec_dot_type(t);
        int64_t n = kvx_dtype_block_size(t) == 1 ? 1000 : test_len(t, 7);
        const struct kvx_quant_kernels *kw = kvx_quant_kernels(t, KVX_ISA_SCALAR);
        const struct kvx_quant_kernels *ka = kvx_quant_kernels(at, KVX_ISA_SCALAR);
        uint8_t *w = malloc(row_bytes(t, n)), *a = malloc(row_bytes(at, n));
        float *x = malloc(n * sizeof *x), *wf = malloc(n * sizeof *wf),
              *af = malloc(n * sizeof *af);
        for (int rep = 0; rep < 2; rep++) {
            if (rep == 0) { /* weights from the quantizer */
                random_floats(&r, x, n, 1.0f);
                kw->from_float(x, w, n);
            } else { /* weights with any bit pattern */
                random_weights(&r, t, w, n);
            }
            random_floats(&r, x, n, 2.0f);
            ka->from_float(x, a, n);
            kw->to_float(w, wf, n);
            ka->to_float(a, af, n);
            double abs_sum, want = dot64(wf, af, n, &abs_sum);
            float got;
            kw->vec_dot(n, &got, w, a);
            double tol = 1e-5 * abs_sum + q8_1_min_slack(t, w, a, n / 32);
            if (!(fabs(got - want) <= tol))
                kvx_test_fail(__FILE__, __LINE__, "%s rep %d: %.9g vs fp64 %.9g (tol %.3g)",
                              kvx_dtype_name(t), rep, (double)got, want, tol);
            KVX_CHECK(abs_sum > 0);
        }
        free(w), free(a), free(x), free(wf), free(af);
    }
}

/* A hand-checked dot: q4_1 weights d = 1, m = -1, all quants 1 (every weight 0) against
 * activations all 127 (q8_1: d = 1, q = 127, s = 4064, all exact): sumi * d + m * s =
 * 4064 - 4064 = 0 per block on every ISA; with block 1's m = 0 its weights are 1: 4064. */
KVX_TEST(quant_vec_dot_known_q4_1)
{
    struct kvx_block_q4_1 w[3];
    struct kvx_block_q8_1 a[3];
    float x[96];
    for (int i = 0; i < 96; i++)
        x[i] = 127.0f;
    for (int b = 0; b < 3; b++) {
        store_f16(w[b].d, 1.0f);
        store_f16(w[b].m, -1.0f);
        memset(w[b].qs, 0x11, sizeof w[b].qs);
    }
    kvx_from_float_q8_1_scalar(x, a, 96);
    KVX_CHECK(kvx_quant_load_f16(a[2].d) == 1.0f && a[2].qs[31] == 127 &&
              kvx_quant_load_f16(a[2].s) == 4064.0f);
    for (int v = 0; v < N_VARIANTS; v++) {
        if (!variants[v].available())
            continue;
        float s = -1;
        variants[v].get(KVX_DTYPE_Q4_1)->vec_dot(96, &s, w, a);
        KVX_CHECK(s == 0.0f);
        store_f16(w[1].m, 0.0f);
        variants[v].get(KVX_DTYPE_Q4_1)->vec_dot(96, &s, w, a);
        KVX_CHECK(s == 4064.0f);
        store_f16(w[1].m, -1.0f);
    }
}

/* ================================= SIMD vs scalar ========================================= */

/* Row lengths tried per format: 1, 2, 3, 7 blocks; odd lengths for the float formats. */
static int lengths(enum kvx_dtype t, int64_t *out)
{
    if (kvx_dtype_block_size(t) == 1) {
        static const int64_t f[] = {1, 2, 3, 7, 15, 16, 17, 31, 33, 63, 64, 65, 100, 1000, 1023};
        memcpy(out, f, sizeof f);
        return (int)(sizeof f / sizeof f[0]);
    }
    static const int64_t blocks[] = {1, 2, 3, 7, 18};
    for (int i = 0; i < 5; i++)
        out[i] = test_len(t, blocks[i]);
    return 5;
}

/* The dot of one random pair of rows at byte offsets (ow, oa) by `simd` and by scalar. */
static void simd_dot_case(const struct variant *v, enum kvx_dtype t, int64_t n, int ow, int oa,
                          struct rng *r)
{
    enum kvx_dtype at = kvx_quant_vec_dot_type(t);
    size_t wbytes = row_bytes(t, n), abytes = row_bytes(at, n);
    uint8_t *wbuf = malloc(wbytes + 64), *abuf = malloc(abytes + 64);
    float *x = malloc(n * sizeof *x), *wf = malloc(n * sizeof *wf), *af = malloc(n * sizeof *af);
    uint8_t *w = wbuf + ow, *a = abuf + oa;
    random_weights(r, t, w, n);
    random_floats(r, x, n, 1.5f);
    kvx_quant_kernels(at, KVX_ISA_SCALAR)->from_float(x, a, n);
    kvx_quant_kernels(t, KVX_ISA_SCALAR)->to_float(w, wf, n);
    kvx_quant_kernels(at, KVX_ISA_SCALAR)->to_float(a, af, n);
    double abs_sum;
    dot64(wf, af, n, &abs_sum);
    float want, got;
    kvx_quant_kernels(t, KVX_ISA_SCALAR)->vec_dot(n, &want, w, a);
    v->get(t)->vec_dot(n, &got, w, a);
    double tol = 1e-5 * abs_sum + 1e-30;
    if (!(fabs((double)got - want) <= tol))
        kvx_test_fail(
            __FILE__, __LINE__, "%s/%s n=%lld offsets %d,%d: %.9g vs scalar %.9g (tol %.3g)",
            kvx_dtype_name(t), v->name, (long long)n, ow, oa, (double)got, (double)want, tol);
    free(wbuf), free(abuf), free(x), free(wf), free(af);
}

KVX_TEST(quant_simd_vec_dot_vs_scalar)
{
    struct rng r = {3};
    int tried = 0;
    for (int v = 1; v < N_VARIANTS; v++) {
        if (!variants[v].available())
            continue;
        for (int i = 0; i < N_TYPES; i++) {
            int64_t ns[16];
            int nn = lengths(all_types[i], ns);
            for (int j = 0; j < nn; j++) {
                simd_dot_case(&variants[v], all_types[i], ns[j], 0, 0, &r);
                simd_dot_case(&variants[v], all_types[i], ns[j], 1, 3, &r);
                tried++;
            }
        }
    }
    if (!tried)
        kvx_test_skip("no SIMD ISA on this CPU");
}

/* ================================ register tiles (vec_dot_tile) ============================ */

/* The tile of every variant that has one for t, against the scalar vec_dot of each (row, token):
 * nr x nc rows of n elements, rows w_stride apart and tokens a_stride apart (row bytes + pads,
 * so odd strides), at byte offsets ow, oa of buffers sized exactly (a sanitizer build sees any
 * read past the last row), into s with ldS = nr + 3 whose other entries must stay untouched.
 * `extreme`: every bit of every non-fp16 field set (largest quants and K-quant scales; q8_0
 * quants -128; not q8_K, whose d is fp32) and activations all 127, the int16 worst case. */
struct tile_shape {
    int64_t n;
    int nr, nc, ow, oa, wpad, apad;
    bool extreme;
};

static void tile_case(const struct variant *v, enum kvx_dtype t, struct tile_shape sh,
                      struct rng *r)
{
    enum kvx_dtype at = kvx_quant_vec_dot_type(t);
    const int64_t n = sh.n;
    const size_t ws = row_bytes(t, n) + (size_t)sh.wpad, as = row_bytes(at, n) + (size_t)sh.apad;
    uint8_t *wbuf = calloc(1, ws * (size_t)sh.nr + (size_t)sh.ow);
    uint8_t *abuf = calloc(1, as * (size_t)sh.nc + (size_t)sh.oa);
    uint8_t *w = wbuf + sh.ow, *a = abuf + sh.oa;
    float *x = malloc(n * sizeof *x), *wf = malloc(n * sizeof *wf), *af = malloc(n * sizeof *af);
    const struct kvx_quant_kernels *ks = kvx_quant_kernels(t, KVX_ISA_SCALAR);
    const struct kvx_quant_kernels *ka = kvx_quant_kernels(at, KVX_ISA_SCALAR);
    for (int i = 0; i < sh.nr; i++) {
        uint8_t *wr = w + (size_t)i * ws;
        random_weights(r, t, wr, n);
        if (sh.extreme) { /* quants all ones, scale fields kept */
            size_t bb = kvx_dtype_block_bytes(t), rb = row_bytes(t, n);
            struct scale_fields sf = scale_fields(t);
            for (size_t o = 0; o < rb; o++) {
                size_t in = o % bb;
                bool scale = false;
                for (int k = 0; k < sf.n; k++)
                    scale |= in >= (size_t)sf.at[k] && in < (size_t)sf.at[k] + 2;
                if (!scale)
                    wr[o] = t == KVX_DTYPE_Q8_0 ? 0x80 : 0xff; /* q8_0: -128 */
            }
        }
    }
    for (int c = 0; c < sh.nc; c++) {
        if (sh.extreme)
            for (int64_t i = 0; i < n; i++)
                x[i] = 1.5f;
        else
            random_floats(r, x, n, 1.5f);
        ka->from_float(x, a + (size_t)c * as, n);
    }
    const int64_t ldS = sh.nr + 3;
    float s[(KVX_QUANT_TILE_MAX + 3) * KVX_QUANT_TILE_MAX];
    const float sentinel = -12345.0f;
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++)
        s[i] = sentinel;
    v->get(t)->vec_dot_tile(n, sh.nr, sh.nc, s, ldS, w, ws, a, as);
    for (int c = sh.nc; c < KVX_QUANT_TILE_MAX; c++) /* columns past nc: untouched */
        for (int i = 0; i < ldS; i++)
            if (s[c * ldS + i] != sentinel)
                kvx_test_fail(__FILE__, __LINE__, "%s/%s tile %dx%d wrote s[%d][%d]",
                              kvx_dtype_name(t), v->name, sh.nr, sh.nc, c, i);
    for (int c = 0; c < sh.nc; c++) {
        ka->to_float(a + (size_t)c * as, af, n);
        for (int i = 0; i < ldS; i++) {
            float got = s[c * ldS + i];
            if (i >= sh.nr) {
                if (got != sentinel)
                    kvx_test_fail(__FILE__, __LINE__, "%s/%s tile %dx%d wrote s[%d][%d]",
                                  kvx_dtype_name(t), v->name, sh.nr, sh.nc, c, i);
                continue;
            }
            float want;
            ks->vec_dot(n, &want, w + (size_t)i * ws, a + (size_t)c * as);
            ks->to_float(w + (size_t)i * ws, wf, n);
            double abs_sum;
            dot64(wf, af, n, &abs_sum);
            double tol = 1e-5 * abs_sum + 1e-30;
            if (!(fabs((double)got - want) <= tol))
                kvx_test_fail(__FILE__, __LINE__,
                              "%s/%s tile %dx%d n=%lld (r %d, c %d)%s: %.9g vs vec_dot %.9g "
                              "(tol %.3g)",
                              kvx_dtype_name(t), v->name, sh.nr, sh.nc, (long long)n, i, c,
                              sh.extreme ? " extreme" : "", (double)got, (double)want, tol);
        }
    }
    free(wbuf), free(abuf), free(x), free(wf), free(af);
}

/* Every variant's tiles (scalar: the reference loop itself) on every nr, nc in 1..4, rows of
 * 1..9 and 18 blocks (quads of 4 blocks and every tail), aligned and odd offsets and strides. */
KVX_TEST(quant_vec_dot_tile_vs_vec_dot)
{
    static const int64_t blocks[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 18};
    struct rng r = {6};
    int tried = 0;
    for (int v = 0; v < N_VARIANTS; v++) {
        if (!variants[v].available())
            continue;
        for (int i = 0; i < N_TYPES; i++) {
            enum kvx_dtype t = all_types[i];
            if (!variants[v].get(t)->vec_dot_tile)
                continue;
            for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++)
                for (int nr = 1; nr <= KVX_QUANT_TILE_MAX; nr++)
                    for (int nc = 1; nc <= KVX_QUANT_TILE_MAX; nc++) {
                        int k = nr * 5 + nc + (int)b;
                        struct tile_shape sh = {
                            .n = kvx_dtype_block_size(t) == 1 ? 16 * blocks[b] + (k % 3)
                                                              : test_len(t, blocks[b]),
                            .nr = nr, .nc = nc, .ow = k % 2 ? 1 : 0, .oa = k % 3 ? 3 : 0,
                            .wpad = k % 4 ? 0 : 5, .apad = k % 5 ? 0 : 7};
                        tile_case(&variants[v], t, sh, &r);
                        if (b < 3 && kvx_dtype_block_size(t) > 1 && t != KVX_DTYPE_Q8_K) {
                            sh.extreme = true;
                            tile_case(&variants[v], t, sh, &r);
                        }
                        tried += v > 0;
                    }
        }
    }
    if (!tried)
        kvx_test_skip("no SIMD tile on this CPU");
}

/* Which formats have tiles: every one in the scalar table (the spec); the 32-element formats
 * and q4_K, q5_K, q6_K on AVX-512 with and without VNNI; the others stay NULL (matmul loops
 * over vec_dot). */
KVX_TEST(quant_vec_dot_tile_table)
{
    for (int i = 0; i < N_TYPES; i++)
        KVX_CHECK(get_scalar(all_types[i])->vec_dot_tile != NULL);
    static const enum kvx_dtype tiled[] = {KVX_DTYPE_Q4_0, KVX_DTYPE_Q4_1, KVX_DTYPE_Q5_0,
                                           KVX_DTYPE_Q5_1, KVX_DTYPE_Q8_0, KVX_DTYPE_Q4_K,
                                           KVX_DTYPE_Q5_K, KVX_DTYPE_Q6_K};
    for (int v = 2; v < N_VARIANTS; v++) {
        if (!variants[v].available())
            continue;
        for (size_t i = 0; i < sizeof tiled / sizeof tiled[0]; i++)
            KVX_CHECK(variants[v].get(tiled[i])->vec_dot_tile != NULL);
    }
}

/* The matmul driver against one vec_dot per (row, token): two matrices in one job (37 and 20
 * rows, neither a multiple of the tile or row block), 1..9 tokens, split over 1..3 threads run
 * one after the other; y's padding past n_out stays untouched. */
KVX_TEST(quant_matmul_part_vs_vec_dot)
{
    static const enum kvx_dtype types[] = {KVX_DTYPE_Q4_1, KVX_DTYPE_Q8_0, KVX_DTYPE_Q4_K,
                                           KVX_DTYPE_F16};
    static const enum kvx_isa isas[] = {KVX_ISA_SCALAR, KVX_ISA_AVX2, KVX_ISA_AVX512};
    struct rng r = {7};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        enum kvx_dtype t = types[ti], at = kvx_quant_vec_dot_type(t);
        const int64_t n = 2 * 256, n_out[2] = {37, 20}, max_tok = 9, ldy = 41;
        const size_t rb = row_bytes(t, n), xs = row_bytes(at, n);
        uint8_t *wd[2], *xq = malloc(xs * (size_t)max_tok);
        struct kvx_mat mats[2];
        float *x = malloc(n * sizeof *x), *y[2], *want[2];
        for (int m = 0; m < 2; m++) {
            wd[m] = malloc(rb * (size_t)n_out[m]);
            for (int64_t i = 0; i < n_out[m]; i++)
                random_weights(&r, t, wd[m] + (size_t)i * rb, n);
            mats[m] = (struct kvx_mat){.type = t, .n_in = n, .n_out = n_out[m], .row_bytes = rb,
                                       .data = wd[m]};
            y[m] = malloc((size_t)(ldy * max_tok) * sizeof *y[m]);
            want[m] = malloc((size_t)(ldy * max_tok) * sizeof *want[m]);
        }
        for (int64_t tk = 0; tk < max_tok; tk++) {
            random_floats(&r, x, n, 1.0f);
            kvx_quant_kernels(at, KVX_ISA_SCALAR)->from_float(x, xq + (size_t)tk * xs, n);
        }
        const struct kvx_quant_kernels *ks = kvx_quant_kernels(t, KVX_ISA_SCALAR);
        for (int m = 0; m < 2; m++)
            for (int64_t tk = 0; tk < max_tok; tk++)
                for (int64_t i = 0; i < n_out[m]; i++)
                    ks->vec_dot(n, &want[m][tk * ldy + i], wd[m] + (size_t)i * rb,
                                xq + (size_t)tk * xs);
        for (size_t ii = 0; ii < sizeof isas / sizeof isas[0]; ii++) {
            if (!kvx_cpu_has_isa(isas[ii]))
                continue;
            for (int64_t n_tok = 1; n_tok <= max_tok; n_tok += n_tok < 5 ? 1 : 4)
                for (int nth = 1; nth <= 3; nth++) {
                    struct kvx_matmul_job job = {.n_mats = 2, .n_tok = n_tok, .isa = isas[ii]};
                    for (int m = 0; m < 2; m++) {
                        for (int64_t i = 0; i < ldy * max_tok; i++)
                            y[m][i] = -1.0f;
                        job.w[m] = &mats[m];
                        job.y[m] = y[m];
                        job.ldy[m] = ldy;
                        job.xq[m] = xq;
                        job.xq_stride[m] = xs;
                    }
                    for (int ith = 0; ith < nth; ith++)
                        kvx_matmul_part(&job, ith, nth);
                    for (int m = 0; m < 2; m++)
                        for (int64_t tk = 0; tk < max_tok; tk++)
                            for (int64_t i = 0; i < ldy; i++) {
                                float got = y[m][tk * ldy + i];
                                bool in = tk < n_tok && i < n_out[m];
                                float exp = in ? want[m][tk * ldy + i] : -1.0f;
                                if (!(fabsf(got - exp) <= (in ? 1e-4f * (1 + fabsf(exp)) : 0)))
                                    kvx_test_fail(__FILE__, __LINE__,
                                                  "%s %s n_tok %lld nth %d: y%d[%lld][%lld] = "
                                                  "%.9g, want %.9g",
                                                  kvx_dtype_name(t), kvx_isa_name(isas[ii]),
                                                  (long long)n_tok, nth, m, (long long)tk,
                                                  (long long)i, (double)got, (double)exp);
                            }
                }
        }
        for (int m = 0; m < 2; m++)
            free(wd[m]), free(y[m]), free(want[m]);
        free(xq), free(x);
    }
}

/* Activation rows with the cases that tell rounding rules apart: exact ties (amax 127 makes
 * x * id exact), zeros, a negative largest element, equal magnitudes of both signs, huge, tiny
 * and half-precision edge values. */
static void activation_row(float *x, int64_t n, struct rng *r)
{
    random_floats(r, x, n, 3.0f);
    static const float special[] = {127.0f,         2.5f,           -2.5f,    0.5f,    -0.5f,
                                    1.5f,           -127.0f,        64.5f,    0.0f,    -0.0f,
                                    70000.0f,       -65520.0f,      65504.0f, 1e-6f,   -3e-8f,
                                    1.00048828125f, 6.1035156e-05f, 1e30f,    -1e-30f, 3.0f};
    int64_t ns = (int64_t)(sizeof special / sizeof special[0]);
    for (int64_t i = 0; i < n && i < ns; i++)
        x[i] = special[i];
    if (n >= 512) {
        for (int64_t i = 256; i < 512; i++) /* a super-block of ties around a negative max */
            x[i] = (float)((int)(i % 64) - 32) + 0.5f;
        x[300] = -127.0f;
    }
    if (n >= 768)
        memset(x + 512, 0, 256 * sizeof *x);
}

KVX_TEST(quant_simd_from_float_bitexact)
{
    struct rng r = {4};
    int tried = 0;
    static const int64_t float_ns[] = {1, 3, 7, 15, 16, 17, 33, 100, 1023};
    for (int v = 1; v < N_VARIANTS; v++) {
        if (!variants[v].available())
            continue;
        for (size_t i = 0; i < sizeof activation_types / sizeof activation_types[0]; i++) {
            enum kvx_dtype t = activation_types[i];
            int64_t bs = kvx_dtype_block_size(t);
            for (size_t j = 0; j < sizeof float_ns / sizeof float_ns[0]; j++) {
                int64_t n =
                    bs == 1 ? float_ns[j] : bs * (bs == 32 ? float_ns[j] : (float_ns[j] % 4) + 1);
                size_t bytes = row_bytes(t, n);
                float *xbuf = malloc(n * sizeof *xbuf + 64);
                uint8_t *want = malloc(bytes), *gotbuf = malloc(bytes + 64), *got = gotbuf + 1;
                float *x = (float *)(void *)((uint8_t *)xbuf + (j % 2 ? 4 : 0));
                activation_row(x, n, &r);
                kvx_quant_kernels(t, KVX_ISA_SCALAR)->from_float(x, want, n);
                variants[v].get(t)->from_float(x, got, n);
                if (memcmp(want, got, bytes) != 0)
                    kvx_test_fail(__FILE__, __LINE__, "%s/%s from_float n=%lld differs from scalar",
                                  kvx_dtype_name(t), variants[v].name, (long long)n);
                float *fa = malloc(n * sizeof *fa), *fb = malloc(n * sizeof *fb);
                kvx_quant_kernels(t, KVX_ISA_SCALAR)->to_float(want, fa, n);
                variants[v].get(t)->to_float(want, fb, n);
                if (memcmp(fa, fb, n * sizeof *fa) != 0)
                    kvx_test_fail(__FILE__, __LINE__, "%s/%s to_float n=%lld differs from scalar",
                                  kvx_dtype_name(t), variants[v].name, (long long)n);
                free(xbuf), free(want), free(gotbuf), free(fa), free(fb);
                tried++;
            }
        }
    }
    if (!tried)
        kvx_test_skip("no SIMD ISA on this CPU");
}

/* bf16 keeps NaN a quiet NaN on every ISA (f16 NaN payloads are left to the hardware). */
KVX_TEST(quant_bf16_nan)
{
    float x[17];
    for (int i = 0; i < 17; i++)
        x[i] = i % 2 ? NAN : 1.0f;
    for (int v = 0; v < N_VARIANTS; v++) {
        if (!variants[v].available())
            continue;
        uint16_t b[17];
        variants[v].get(KVX_DTYPE_BF16)->from_float(x, b, 17);
        for (int i = 0; i < 17; i++)
            KVX_CHECK(i % 2 ? (b[i] & 0x7fc0) == 0x7fc0 : b[i] == 0x3f80);
    }
}

/* ===================================== benchmarks ========================================= */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* GB/s of weight bytes streamed by vec_dot over `rows` rows of n (one pass). */
static double bench_rows(const struct kvx_quant_kernels *k, const uint8_t *w, size_t rb,
                         int64_t rows, int64_t n, const uint8_t *a, float *out)
{
    double t0 = now_s();
    for (int64_t i = 0; i < rows; i++)
        k->vec_dot(n, &out[i], w + (size_t)i * rb, a);
    return (double)rb * (double)rows / (now_s() - t0) / 1e9;
}

/* The read ceiling: summing the same bytes as 16-byte vectors (baseline SSE2, so the loop is
 * not what limits it), prefetching as the kernels do. */
static double bench_read(const uint8_t *p, size_t bytes)
{
    typedef uint64_t u64x2 __attribute__((vector_size(16)));
    double t0 = now_s();
    u64x2 s0 = {0, 0}, s1 = s0, s2 = s0, s3 = s0, v[4];
    for (size_t i = 0; i + 64 <= bytes; i += 64) {
        __builtin_prefetch(p + i + KVX_QUANT_PREFETCH_BYTES);
        memcpy(v, p + i, 64);
        s0 += v[0], s1 += v[1], s2 += v[2], s3 += v[3];
    }
    u64x2 t = s0 + s1 + s2 + s3;
    volatile uint64_t sink = t[0] + t[1];
    (void)sink;
    return (double)bytes / (now_s() - t0) / 1e9;
}

/* Best of 5 interleaved passes per kernel (the machine's bandwidth drifts), against the best
 * read pass over the same bytes. */
static void bench_format(enum kvx_dtype t, int64_t n)
{
    const char *env = getenv("KVX_BENCH_MB");
    double mb = env ? atof(env) : 100.0;
    size_t rb = row_bytes(t, n);
    int64_t rows = (int64_t)(mb * 1e6 / (double)rb);
    enum kvx_dtype at = kvx_quant_vec_dot_type(t);
    uint8_t *w = malloc(rb * (size_t)rows), *a = malloc(row_bytes(at, n));
    float *x = malloc(n * sizeof *x), *out = malloc((size_t)rows * sizeof *out);
    struct rng r = {5};
    random_weights(&r, t, w, n * rows);
    random_floats(&r, x, n, 1.0f);
    kvx_quant_kernels(at, KVX_ISA_SCALAR)->from_float(x, a, n);
    double best[N_VARIANTS] = {0}, ceiling = 0;
    for (int pass = 0; pass < 5; pass++) {
        ceiling = fmax(ceiling, bench_read(w, rb * (size_t)rows));
        for (int v = 0; v < N_VARIANTS; v++)
            if (variants[v].available() && (v > 0 || pass == 0))
                best[v] = fmax(best[v], bench_rows(variants[v].get(t), w, rb, rows, n, a, out));
    }
    printf("  %s vec_dot, %lld rows x %lld (%.0f MB), one thread; read ceiling %.1f GB/s\n",
           kvx_dtype_name(t), (long long)rows, (long long)n, (double)rb * rows / 1e6, ceiling);
    for (int v = 0; v < N_VARIANTS; v++)
        if (variants[v].available())
            printf("    %-10s %6.1f GB/s  (%3.0f%%)\n", variants[v].name, best[v],
                   100 * best[v] / ceiling);
    free(w), free(a), free(x), free(out);
}

static bool bench_enabled(void)
{
    const char *e = getenv("KVX_BENCH");
    if (e && strcmp(e, "1") == 0)
        return true;
    kvx_test_skip("set KVX_BENCH=1");
    return false;
}

KVX_TEST(quant_bench_q4_1)
{
    if (!bench_enabled())
        return;
    bench_format(KVX_DTYPE_Q4_1, 576);
    bench_format(KVX_DTYPE_Q4_1, 1536);
}

KVX_TEST(quant_bench_q8_0)
{
    if (!bench_enabled())
        return;
    bench_format(KVX_DTYPE_Q8_0, 576);
}

/* Prefill's inner loop, one thread: 16 rows x 64 tokens, all in cache (as a ROW_BLOCK of the
 * matmul driver), by vec_dot per (row, token) and by vec_dot_tile, best of 10 passes, in
 * GMAC/s (multiply-adds of the dequantized rows). */
static void bench_tile_format(enum kvx_dtype t, int64_t n)
{
    enum kvx_dtype at = kvx_quant_vec_dot_type(t);
    enum { R = 16, C = 64 };
    const size_t rb = row_bytes(t, n), ab = row_bytes(at, n);
    uint8_t *w = malloc(rb * R), *a = malloc(ab * C);
    float *x = malloc(n * sizeof *x), y[R * C];
    struct rng r = {8};
    random_weights(&r, t, w, n * R);
    for (int c = 0; c < C; c++) {
        random_floats(&r, x, n, 1.0f);
        kvx_quant_kernels(at, KVX_ISA_SCALAR)->from_float(x, a + (size_t)c * ab, n);
    }
    printf("  %s, rows of %lld, 16 rows x 64 tokens in cache, one thread (GMAC/s)\n",
           kvx_dtype_name(t), (long long)n);
    for (int v = 1; v < N_VARIANTS; v++) {
        const struct kvx_quant_kernels *k = variants[v].get(t);
        if (!variants[v].available() || !k->vec_dot_tile)
            continue;
        double best_dot = 1e30, best_tile = 1e30;
        for (int pass = 0; pass < 10; pass++) {
            double t0 = now_s();
            for (int c = 0; c < C; c++)
                for (int i = 0; i < R; i++)
                    k->vec_dot(n, &y[c * R + i], w + (size_t)i * rb, a + (size_t)c * ab);
            double t1 = now_s();
            for (int c = 0; c < C; c += KVX_QUANT_TILE_MAX)
                for (int i = 0; i < R; i += KVX_QUANT_TILE_MAX)
                    k->vec_dot_tile(n, KVX_QUANT_TILE_MAX, KVX_QUANT_TILE_MAX, &y[c * R + i], R,
                                    w + (size_t)i * rb, rb, a + (size_t)c * ab, ab);
            double t2 = now_s();
            best_dot = fmin(best_dot, t1 - t0);
            best_tile = fmin(best_tile, t2 - t1);
        }
        const double macs = (double)R * C * (double)n;
        printf("    %-10s vec_dot %6.1f   tile %6.1f  (%.2fx)\n", variants[v].name,
               macs / best_dot / 1e9, macs / best_tile / 1e9, best_dot / best_tile);
    }
    free(w), free(a), free(x);
}

KVX_TEST(quant_bench_tile)
{
    if (!bench_enabled())
        return;
    bench_tile_format(KVX_DTYPE_Q4_1, 576);
    bench_tile_format(KVX_DTYPE_Q4_1, 1536);
    bench_tile_format(KVX_DTYPE_Q8_0, 576);
    bench_tile_format(KVX_DTYPE_Q4_K, 1536);
    bench_tile_format(KVX_DTYPE_Q6_K, 1536);
}
