/* ops/repack: the x16 layout (repack.h), its conversions, and the scalar specification of its
 * matrix product. */
#include "ops/repack.h"

#include <stdlib.h>
#include <string.h>

#include "ops/quant_internal.h"

/* A format's block: bytes, where its quants start, how many quant bytes; and its block16's
 * header bytes (d, and m for q4_1). */
struct x16_fmt {
    size_t bsz, qs_off, qs_len, hdr;
    bool min, bias;            /* q4_1's m; q8_0's quants stored + 128 */
};

/* bsz 0: not a format of the layout */
static struct x16_fmt x16_fmt_of(enum kvx_dtype t)
{
    switch (t) {
    case KVX_DTYPE_Q4_0: return (struct x16_fmt){18, 2, 16, 32, false, false};
    case KVX_DTYPE_Q4_1: return (struct x16_fmt){20, 4, 16, 64, true, false};
    case KVX_DTYPE_Q8_0: return (struct x16_fmt){34, 2, 32, 32, false, true};
    default: return (struct x16_fmt){0, 0, 0, 0, false, false};
    }
}

bool kvx_x16_supported(enum kvx_dtype t, int64_t n_in)
{
    return x16_fmt_of(t).bsz > 0 && n_in > 0 && n_in % KVX_QK == 0 && n_in <= KVX_X16_MAX_IN;
}

/* Row r's block from a block16 into the format's own block (and back). */
static void get_block(const struct x16_fmt *f, const uint8_t *b16, int r, uint8_t *blk)
{
    memcpy(blk, b16 + 2 * r, 2);
    if (f->min)
        memcpy(blk + 2, b16 + 32 + 2 * r, 2);
    for (size_t k = 0; k < f->qs_len / 4; k++)
        for (int j = 0; j < 4; j++)
            blk[f->qs_off + 4 * k + (size_t)j] =
                (uint8_t)(b16[f->hdr + 64 * k + 4 * (size_t)r + (size_t)j] ^ (f->bias ? 0x80 : 0));
}

static void put_block(const struct x16_fmt *f, uint8_t *b16, int r, const uint8_t *blk)
{
    memcpy(b16 + 2 * r, blk, 2);
    if (f->min)
        memcpy(b16 + 32 + 2 * r, blk + 2, 2);
    for (size_t k = 0; k < f->qs_len / 4; k++)
        for (int j = 0; j < 4; j++)
            b16[f->hdr + 64 * k + 4 * (size_t)r + (size_t)j] =
                (uint8_t)(blk[f->qs_off + 4 * k + (size_t)j] ^ (f->bias ? 0x80 : 0));
}

/* Whole groups of the matrix, in place, through a copy of one group (16 rows). */
static bool convert(enum kvx_dtype t, int64_t n_in, int64_t n_out, uint8_t *data, bool pack)
{
    const struct x16_fmt f = x16_fmt_of(t);
    const int64_t nb = n_in / KVX_QK;
    const size_t row_bytes = (size_t)nb * f.bsz, group = KVX_X16 * row_bytes;
    uint8_t *tmp = malloc(group);
    if (!tmp)
        return false;
    for (int64_t g = 0; g < n_out / KVX_X16; g++) {
        uint8_t *p = data + (size_t)g * group;
        memcpy(tmp, p, group);
        for (int64_t b = 0; b < nb; b++)
            for (int r = 0; r < KVX_X16; r++) {
                const size_t row_at = (size_t)r * row_bytes + (size_t)b * f.bsz;
                const size_t b16_at = (size_t)b * KVX_X16 * f.bsz;
                if (pack)
                    put_block(&f, p + b16_at, r, tmp + row_at);
                else
                    get_block(&f, tmp + b16_at, r, p + row_at);
            }
    }
    free(tmp);
    return true;
}

bool kvx_x16_pack(enum kvx_dtype t, int64_t n_in, int64_t n_out, uint8_t *data)
{
    return convert(t, n_in, n_out, data, true);
}

bool kvx_x16_unpack(enum kvx_dtype t, int64_t n_in, int64_t n_out, uint8_t *data)
{
    return convert(t, n_in, n_out, data, false);
}

/* Row r's block b of a repacked matrix, in the format's own block layout. */
static void row_block(const struct x16_fmt *f, int64_t nb, const uint8_t *data, int64_t r,
                      int64_t b, uint8_t *blk)
{
    const size_t row_bytes = (size_t)nb * f->bsz;
    const uint8_t *g = data + (size_t)(r / KVX_X16) * KVX_X16 * row_bytes;
    get_block(f, g + (size_t)b * KVX_X16 * f->bsz, (int)(r % KVX_X16), blk);
}

void kvx_x16_row_to_float(enum kvx_dtype t, int64_t n_in, int64_t n_out, const uint8_t *data,
                          int64_t r, float *dst)
{
    const struct x16_fmt f = x16_fmt_of(t);
    const struct kvx_quant_kernels *k = kvx_quant_kernels(t, KVX_ISA_SCALAR);
    const int64_t nb = n_in / KVX_QK;
    if (r >= n_out / KVX_X16 * KVX_X16) {   /* a row past the last group: the file's layout */
        k->to_float(data + (size_t)r * (size_t)nb * f.bsz, dst, n_in);
        return;
    }
    uint8_t blk[sizeof(struct kvx_block_q8_0)];   /* the largest of the three blocks */
    for (int64_t b = 0; b < nb; b++) {
        row_block(&f, nb, data, r, b, blk);
        k->to_float(blk, dst + b * KVX_QK, KVX_QK);
    }
}

/* The specification: per output, the scalar vec_dot of each block of the row, summed in block
 * order in fp32 (which is how the scalar vec_dot sums a whole row). */
void kvx_x16_matmul_scalar(enum kvx_dtype t, int64_t n_in, const uint8_t *w, int64_t n_groups,
                           int nt, const uint8_t *a, size_t a_stride, float *y, int64_t ldy)
{
    const struct x16_fmt f = x16_fmt_of(t);
    const struct kvx_quant_kernels *k = kvx_quant_kernels(t, KVX_ISA_SCALAR);
    const size_t ab = f.min ? sizeof(struct kvx_block_q8_1) : sizeof(struct kvx_block_q8_0);
    const int64_t nb = n_in / KVX_QK;
    uint8_t blk[sizeof(struct kvx_block_q8_0)];   /* the largest of the three blocks */
    for (int64_t r = 0; r < n_groups * KVX_X16; r++) {
        float sum[4] = {0, 0, 0, 0};
        for (int64_t b = 0; b < nb; b++) {
            row_block(&f, nb, w, r, b, blk);
            for (int c = 0; c < nt; c++) {
                float s;
                k->vec_dot(KVX_QK, &s, blk, a + (size_t)c * a_stride + (size_t)b * ab);
                sum[c] += s;
            }
        }
        for (int c = 0; c < nt; c++)
            y[c * ldy + r] = sum[c];
    }
}

kvx_x16_matmul_fn kvx_x16_matmul(enum kvx_isa isa)
{
#if defined(__x86_64__) || defined(__i386__)
    if (isa == KVX_ISA_AVX512 && kvx_cpu_has_isa(KVX_ISA_AVX512) && kvx_cpu_has_avx512_vnni())
        return kvx_x16_matmul_avx512vnni;
    if (isa >= KVX_ISA_AVX2 && kvx_cpu_has_isa(KVX_ISA_AVX2))
        return kvx_x16_matmul_avx2;
#else
    (void)isa;
#endif
    return kvx_x16_matmul_scalar;
}

bool kvx_x16_fast(void)
{
    return kvx_x16_matmul(kvx_cpu_best_isa()) != kvx_x16_matmul_scalar;
}
