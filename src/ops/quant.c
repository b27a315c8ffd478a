/* ops/quant: the kernel tables, one per ISA, and the vec-dot type of each weight format.
 *
 * Each table is static const and complete: an entry an ISA does not implement names the scalar
 * kernel, so what runs for (format, ISA) can be read off here.  The one exception is the optional
 * vec_dot_tile: NULL where an ISA has no register tile for a format (the matmul driver then
 * loops over that ISA's vec_dot, faster than the scalar tile would be).  Tiles: scalar (the
 * reference loop, every format), AVX-512 and AVX-512 VNNI (q4_0, q4_1, q5_0, q5_1, q8_0, q4_K,
 * q5_K, q6_K), AVX2 (q4_0, q4_1, q5_0, q5_1, q8_0).
 * The AVX-512 ISA has two tables; the one with the VNNI kernels (vpdpbusd) is picked at run time
 * when the CPU has VNNI.
 * The kernels themselves live in quant_scalar.c and quant_<isa>.c (x86-64 only). */
#include "ops/quant.h"

#include "ops/quant_internal.h"

#define KERNELS(to, from, dot) {.to_float = (to), .from_float = (from), .vec_dot = (dot)}
#define KERNELS_TILE(to, from, dot, tile)                                                          \
    {.to_float = (to), .from_float = (from), .vec_dot = (dot), .vec_dot_tile = (tile)}

/* scalar entries of format `f` whose vec-dot kernel is `dot` (no tile: matmul loops over dot) */
#define SCALAR(f, dot) KERNELS(kvx_to_float_##f##_scalar, kvx_from_float_##f##_scalar, dot)
/* ... with the register tile `tile` */
#define SCALAR_TILE(f, dot, tile)                                                                  \
    KERNELS_TILE(kvx_to_float_##f##_scalar, kvx_from_float_##f##_scalar, dot, tile)
/* the scalar table's entries: vec_dot and the tile that loops over it */
#define SCALAR_REF(f, af)                                                                          \
    SCALAR_TILE(f, kvx_vec_dot_##f##_##af##_scalar, kvx_vec_dot_tile_##f##_##af##_scalar)

static const struct kvx_quant_kernels table_scalar[KVX_DTYPE_COUNT] = {
    [KVX_DTYPE_F32] = SCALAR_REF(f32, f32),
    [KVX_DTYPE_F16] = SCALAR_REF(f16, f16),
    [KVX_DTYPE_BF16] = SCALAR_REF(bf16, bf16),
    [KVX_DTYPE_Q4_0] = SCALAR_REF(q4_0, q8_0),
    [KVX_DTYPE_Q4_1] = SCALAR_REF(q4_1, q8_1),
    [KVX_DTYPE_Q5_0] = SCALAR_REF(q5_0, q8_0),
    [KVX_DTYPE_Q5_1] = SCALAR_REF(q5_1, q8_1),
    [KVX_DTYPE_Q8_0] = SCALAR_REF(q8_0, q8_0),
    [KVX_DTYPE_Q8_1] = SCALAR_REF(q8_1, q8_1),
    [KVX_DTYPE_Q2_K] = SCALAR_REF(q2_K, q8_K),
    [KVX_DTYPE_Q3_K] = SCALAR_REF(q3_K, q8_K),
    [KVX_DTYPE_Q4_K] = SCALAR_REF(q4_K, q8_K),
    [KVX_DTYPE_Q5_K] = SCALAR_REF(q5_K, q8_K),
    [KVX_DTYPE_Q6_K] = SCALAR_REF(q6_K, q8_K),
    [KVX_DTYPE_Q8_K] = SCALAR_REF(q8_K, q8_K),
};

static const struct kvx_quant_kernels table_avx2[KVX_DTYPE_COUNT] = {
    [KVX_DTYPE_F32] = SCALAR(f32, kvx_vec_dot_f32_f32_avx2),
    [KVX_DTYPE_F16] = KERNELS(kvx_to_float_f16_avx2, kvx_from_float_f16_avx2,
                              kvx_vec_dot_f16_f16_avx2),
    [KVX_DTYPE_BF16] = KERNELS(kvx_to_float_bf16_scalar, kvx_from_float_bf16_avx2,
                               kvx_vec_dot_bf16_bf16_avx2),
    [KVX_DTYPE_Q4_0] =
        SCALAR_TILE(q4_0, kvx_vec_dot_q4_0_q8_0_avx2, kvx_vec_dot_tile_q4_0_q8_0_avx2),
    [KVX_DTYPE_Q4_1] =
        SCALAR_TILE(q4_1, kvx_vec_dot_q4_1_q8_1_avx2, kvx_vec_dot_tile_q4_1_q8_1_avx2),
    [KVX_DTYPE_Q5_0] =
        SCALAR_TILE(q5_0, kvx_vec_dot_q5_0_q8_0_avx2, kvx_vec_dot_tile_q5_0_q8_0_avx2),
    [KVX_DTYPE_Q5_1] =
        SCALAR_TILE(q5_1, kvx_vec_dot_q5_1_q8_1_avx2, kvx_vec_dot_tile_q5_1_q8_1_avx2),
    [KVX_DTYPE_Q8_0] = KERNELS_TILE(kvx_to_float_q8_0_scalar, kvx_from_float_q8_0_avx2,
                                    kvx_vec_dot_q8_0_q8_0_avx2, kvx_vec_dot_tile_q8_0_q8_0_avx2),
    [KVX_DTYPE_Q8_1] = KERNELS(kvx_to_float_q8_1_scalar, kvx_from_float_q8_1_avx2,
                               kvx_vec_dot_q8_1_q8_1_scalar),
    [KVX_DTYPE_Q2_K] = SCALAR(q2_K, kvx_vec_dot_q2_K_q8_K_avx2),
    [KVX_DTYPE_Q3_K] = SCALAR(q3_K, kvx_vec_dot_q3_K_q8_K_avx2),
    [KVX_DTYPE_Q4_K] = SCALAR(q4_K, kvx_vec_dot_q4_K_q8_K_avx2),
    [KVX_DTYPE_Q5_K] = SCALAR(q5_K, kvx_vec_dot_q5_K_q8_K_avx2),
    [KVX_DTYPE_Q6_K] = SCALAR(q6_K, kvx_vec_dot_q6_K_q8_K_avx2),
    [KVX_DTYPE_Q8_K] = KERNELS(kvx_to_float_q8_K_scalar, kvx_from_float_q8_K_avx2,
                               kvx_vec_dot_q8_K_q8_K_scalar),
};

/* The rows every AVX-512 table shares; the vec-dot kernels and register tiles of the 32-element
 * formats are those of `isa` (avx512 or avx512vnni). */
#define AVX512_TABLE(isa)                                                                          \
    {                                                                                              \
        [KVX_DTYPE_F32] = SCALAR(f32, kvx_vec_dot_f32_f32_avx512),                                 \
        [KVX_DTYPE_F16] = KERNELS(kvx_to_float_f16_avx512, kvx_from_float_f16_avx512,              \
                                  kvx_vec_dot_f16_f16_avx512),                                     \
        [KVX_DTYPE_BF16] = KERNELS(kvx_to_float_bf16_scalar, kvx_from_float_bf16_avx512,           \
                                   kvx_vec_dot_bf16_bf16_avx512),                                  \
        [KVX_DTYPE_Q4_0] = SCALAR_TILE(q4_0, kvx_vec_dot_q4_0_q8_0_##isa,                          \
                                       kvx_vec_dot_tile_q4_0_q8_0_##isa),                          \
        [KVX_DTYPE_Q4_1] = SCALAR_TILE(q4_1, kvx_vec_dot_q4_1_q8_1_##isa,                          \
                                       kvx_vec_dot_tile_q4_1_q8_1_##isa),                          \
        [KVX_DTYPE_Q5_0] = SCALAR_TILE(q5_0, kvx_vec_dot_q5_0_q8_0_##isa,                          \
                                       kvx_vec_dot_tile_q5_0_q8_0_##isa),                          \
        [KVX_DTYPE_Q5_1] = SCALAR_TILE(q5_1, kvx_vec_dot_q5_1_q8_1_##isa,                          \
                                       kvx_vec_dot_tile_q5_1_q8_1_##isa),                          \
        [KVX_DTYPE_Q8_0] = KERNELS_TILE(kvx_to_float_q8_0_scalar, kvx_from_float_q8_0_avx512,      \
                                        kvx_vec_dot_q8_0_q8_0_##isa,                               \
                                        kvx_vec_dot_tile_q8_0_q8_0_##isa),                         \
        [KVX_DTYPE_Q8_1] = KERNELS(kvx_to_float_q8_1_scalar, kvx_from_float_q8_1_avx512,           \
                                   kvx_vec_dot_q8_1_q8_1_scalar),                                  \
        [KVX_DTYPE_Q2_K] = SCALAR(q2_K, kvx_vec_dot_q2_K_q8_K_avx512),                             \
        [KVX_DTYPE_Q3_K] = SCALAR(q3_K, kvx_vec_dot_q3_K_q8_K_avx512),                             \
        [KVX_DTYPE_Q4_K] = SCALAR_TILE(q4_K, kvx_vec_dot_q4_K_q8_K_avx512,                         \
                                       kvx_vec_dot_tile_q4_K_q8_K_##isa),                          \
        [KVX_DTYPE_Q5_K] = SCALAR_TILE(q5_K, kvx_vec_dot_q5_K_q8_K_avx512,                         \
                                       kvx_vec_dot_tile_q5_K_q8_K_##isa),                          \
        [KVX_DTYPE_Q6_K] = SCALAR_TILE(q6_K, kvx_vec_dot_q6_K_q8_K_avx512,                         \
                                       kvx_vec_dot_tile_q6_K_q8_K_##isa),                          \
        [KVX_DTYPE_Q8_K] = KERNELS(kvx_to_float_q8_K_scalar, kvx_from_float_q8_K_avx512,           \
                                   kvx_vec_dot_q8_K_q8_K_scalar),                                  \
    }

static const struct kvx_quant_kernels table_avx512[KVX_DTYPE_COUNT] = AVX512_TABLE(avx512);

static const struct kvx_quant_kernels table_avx512vnni[KVX_DTYPE_COUNT] = AVX512_TABLE(avx512vnni);

enum kvx_dtype kvx_quant_vec_dot_type(enum kvx_dtype w)
{
    switch (w) {
    case KVX_DTYPE_F32:
    case KVX_DTYPE_F16:
    case KVX_DTYPE_BF16:
    case KVX_DTYPE_Q8_0:
    case KVX_DTYPE_Q8_1:
    case KVX_DTYPE_Q8_K:
        return w;
    case KVX_DTYPE_Q4_0:
    case KVX_DTYPE_Q5_0:
        return KVX_DTYPE_Q8_0;
    case KVX_DTYPE_Q4_1:
    case KVX_DTYPE_Q5_1:
        return KVX_DTYPE_Q8_1;
    case KVX_DTYPE_Q2_K:
    case KVX_DTYPE_Q3_K:
    case KVX_DTYPE_Q4_K:
    case KVX_DTYPE_Q5_K:
    case KVX_DTYPE_Q6_K:
        return KVX_DTYPE_Q8_K;
    default:
        return KVX_DTYPE_COUNT; /* unsupported format: no vec-dot type */
    }
}

static const struct kvx_quant_kernels *table_entry(const struct kvx_quant_kernels *table,
                                                   enum kvx_dtype t)
{
    if (!kvx_dtype_supported((uint32_t)t))
        return NULL;
    return &table[t];
}

/* The caller checks kvx_cpu_has_isa(isa) first: the tables of an ISA the CPU lacks are returned
 * as asked, and calling their kernels would fault.  Only the VNNI choice is made here. */
const struct kvx_quant_kernels *kvx_quant_kernels(enum kvx_dtype t, enum kvx_isa isa)
{
    switch (isa) {
    case KVX_ISA_SCALAR:
        return table_entry(table_scalar, t);
    case KVX_ISA_AVX2:
        return table_entry(table_avx2, t);
    case KVX_ISA_AVX512:
        return table_entry(kvx_cpu_has_avx512_vnni() ? table_avx512vnni : table_avx512, t);
    default:
        return NULL;
    }
}

const struct kvx_quant_kernels *kvx_quant_kernels_avx512_novnni(enum kvx_dtype t)
{
    return table_entry(table_avx512, t);
}
