/* text/unicode: UTF-8 coding, category lookup and the GPT-2 byte mapping (see unicode.h). */
#include "text/unicode.h"

unsigned kvx_unicode_flags(uint32_t cp)
{
    if (cp < 128)
        return kvx_unicode_ascii_flags[cp];
    if (cp > KVX_UNICODE_MAX)
        return 0;
    /* Last range whose start <= cp. */
    size_t lo = 0, hi = kvx_unicode_n_ranges;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if ((kvx_unicode_ranges[mid] >> 8) <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return kvx_unicode_ranges[lo] & 0xFFu;
}

static int is_cont(uint8_t b)
{
    return (b & 0xC0) == 0x80;
}

uint32_t kvx_utf8_decode(const uint8_t *s, size_t n, size_t *used)
{
    uint8_t b = s[0];
    *used = 1;
    if (b < 0x80)
        return b;
    if (!(b & 0x40))
        return KVX_UNICODE_REPLACEMENT;          /* stray continuation byte */
    if (!(b & 0x20)) {
        if (n < 2 || !is_cont(s[1]))
            return KVX_UNICODE_REPLACEMENT;
        *used = 2;
        return ((uint32_t)(b & 0x1F) << 6) | (s[1] & 0x3Fu);
    }
    if (!(b & 0x10)) {
        if (n < 3 || !is_cont(s[1]) || !is_cont(s[2]))
            return KVX_UNICODE_REPLACEMENT;
        *used = 3;
        return ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3Fu);
    }
    if (!(b & 0x08)) {
        if (n < 4 || !is_cont(s[1]) || !is_cont(s[2]) || !is_cont(s[3]))
            return KVX_UNICODE_REPLACEMENT;
        uint32_t cp = ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
                      ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3Fu);
        /* llama.cpp decodes F5..F7 leads to values above U+10FFFF and then throws (the
         * process aborts); we treat the lead byte as invalid instead. */
        if (cp > KVX_UNICODE_MAX)
            return KVX_UNICODE_REPLACEMENT;
        *used = 4;
        return cp;
    }
    return KVX_UNICODE_REPLACEMENT;
}

size_t kvx_utf8_encode(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | ((cp >> 18) & 0x07));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

size_t kvx_utf8_len(uint8_t lead)
{
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[lead >> 4];
}

/* Bytes that GPT-2 keeps as themselves: '!'..'~', 0xA1..0xAC, 0xAE..0xFF. */
static int byte_is_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

/* The others (0x00..0x20, 0x7F..0xA0, 0xAD) map in byte order to U+0100, U+0101, ... */
uint32_t kvx_unicode_byte_to_cp(uint8_t b)
{
    if (byte_is_printable(b))
        return b;
    if (b <= 0x20)
        return 0x100u + b;                      /* 33 bytes: U+0100..U+0120 */
    if (b <= 0xA0)
        return 0x100u + 33 + (b - 0x7Fu);       /* 34 bytes: U+0121..U+0142 */
    return 0x100u + 33 + 34;                    /* 0xAD: U+0143 */
}

int kvx_unicode_cp_to_byte(uint32_t cp)
{
    if (cp < 0x100)
        return byte_is_printable(cp) ? (int)cp : -1;
    if (cp < 0x100 + 33)
        return (int)(cp - 0x100);
    if (cp < 0x100 + 33 + 34)
        return (int)(cp - 0x100 - 33 + 0x7F);
    if (cp == 0x100 + 33 + 34)
        return 0xAD;
    return -1;
}
