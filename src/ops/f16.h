/* ops/f16: IEEE half and bfloat16 conversions (scalar, exact; round-to-nearest-even). */
#ifndef KVX_OPS_F16_H
#define KVX_OPS_F16_H

#include <stdint.h>
#include <string.h>

static inline float kvx_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t kvx_f32_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* half -> float, exact for every input including subnormals, inf and NaN. */
static inline float kvx_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f)
        return kvx_f32_from_bits(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    return kvx_f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

/* float -> half, round to nearest even, overflow to inf, NaN kept quiet. */
static inline uint16_t kvx_f32_to_f16(float f)
{
    uint32_t x = kvx_f32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        /* value * 2^24 rounded to an integer gives the subnormal mantissa */
        float v = kvx_f32_from_bits(ax) * 16777216.0f;
        uint32_t m = (uint32_t)v;
        float rem = v - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1u)))
            m++;
        return (uint16_t)(sign | m);
    }
    uint32_t exp = (ax >> 23) - 112u;
    uint32_t man = ax & 0x7fffffu;
    uint32_t h = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++; /* may carry into the exponent, which is the right answer */
    return (uint16_t)(sign | h);
}

static inline float kvx_bf16_to_f32(uint16_t b) { return kvx_f32_from_bits((uint32_t)b << 16); }

static inline uint16_t kvx_f32_to_bf16(float f)
{
    uint32_t x = kvx_f32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

#endif
