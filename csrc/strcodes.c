/*
 * strcodes.c - small integer codes for the values of a string column
 * (see strcodes.h).
 */
#include "strcodes.h"

#include <errno.h>
#include <string.h>

static inline uint64_t hash_bytes(const uint8_t *p, int32_t len)
{
    uint64_t h = (uint64_t)len * 0x9E3779B97F4A7C15ull;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        p += 8;
        len -= 8;
    }
    if (len > 0) {
        uint64_t w = 0;
        memcpy(&w, p, (size_t)len);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    return h ^ (h >> 29);
}

/* the first (up to) 8 bytes of a value, zero-padded; `room` bytes are
 * readable from p */
static inline uint64_t first_word(const uint8_t *p, int32_t len, int64_t room)
{
    uint64_t w = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (room >= 8) {
        memcpy(&w, p, 8);
        return len >= 8 ? w : w & ((1ull << (8 * len)) - 1);
    }
#endif
    (void)room;
    memcpy(&w, p, (size_t)(len < 8 ? len : 8));
    return w;
}

static inline uint64_t hash_word(uint64_t w, int32_t len)
{
    uint64_t h = (w ^ ((uint64_t)len << 58)) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

/* does code's value (longer than 8 bytes) equal p[0..len)? */
static inline int same_bytes(const struct skw_strcodes *d, const int32_t *offsets,
                             const uint8_t *data, int32_t code, const uint8_t *p, int32_t len)
{
    const int32_t ro = offsets[d->first[code]];
    return memcmp(data + ro, p, (size_t)len) == 0;
}

int skw_strcodes_encode(struct skw_strcodes *d, const int32_t *offsets, const uint8_t *data,
                        int64_t data_len, const uint8_t *valid, int64_t valid_off, int64_t lo,
                        int64_t hi, int32_t *codes)
{
    if (d->cap <= 0 || d->nslots < 2 * d->cap || (d->nslots & (d->nslots - 1)) || lo > hi)
        return -EINVAL;
    const uint32_t mask = (uint32_t)d->nslots - 1;
    /* the previous row's value: runs of one value cost a compare */
    int32_t last = -1, last_len = -1;
    uint64_t last_word = 0;
    for (int64_t i = lo; i < hi; i++) {
        if (valid) {
            int64_t bit = valid_off + i;
            if (!((valid[bit >> 3] >> (bit & 7)) & 1)) {
                if (d->null_code < 0) {
                    if (d->n >= d->cap)
                        return -E2BIG;
                    d->first[d->n] = i;
                    d->null_code = d->n++;
                }
                codes[i - lo] = d->null_code;
                continue;
            }
        }
        const int32_t o = offsets[i];
        const int32_t len = offsets[i + 1] - o;
        if (o < 0 || len < 0 || (int64_t)o + len > data_len)
            return -EINVAL;
        const uint8_t *p = data + o;
        const uint64_t w = first_word(p, len, data_len - o);
        if (len == last_len && w == last_word &&
            (len <= 8 || same_bytes(d, offsets, data, last, p, len))) {
            codes[i - lo] = last;
            continue;
        }
        uint32_t s = (uint32_t)(len <= 8 ? hash_word(w, len) : hash_bytes(p, len)) & mask;
        int32_t code = -1;
        for (;;) {
            struct skw_strcodes_slot *e = &d->slots[s];
            if (e->code1 == 0)
                break;
            if (e->len == len && e->word == w &&
                (len <= 8 || same_bytes(d, offsets, data, e->code1 - 1, p, len))) {
                code = e->code1 - 1;
                break;
            }
            s = (s + 1) & mask;
        }
        if (code < 0) {
            if (d->n >= d->cap)
                return -E2BIG;
            code = d->n++;
            d->first[code] = i;
            d->slots[s].word = w;
            d->slots[s].len = len;
            d->slots[s].code1 = code + 1;
        }
        codes[i - lo] = code;
        last = code;
        last_len = len;
        last_word = w;
    }
    return 0;
}

int skw_strcodes_remap(int32_t *codes, int64_t n, const int32_t *lut, int32_t nlut)
{
    for (int64_t i = 0; i < n; i++) {
        int32_t c = codes[i];
        if (c < 0 || c >= nlut)
            return -EINVAL;
        codes[i] = lut[c];
    }
    return 0;
}

int skw_strcodes_cross(const int32_t *a, const int32_t *b, int64_t n, int32_t na, int32_t nb,
                       int64_t *counts)
{
    for (int64_t i = 0; i < n; i++) {
        int32_t x = a[i], y = b[i];
        if (x < 0 || x >= na || y < 0 || y >= nb)
            return -EINVAL;
        counts[(int64_t)x * nb + y]++;
    }
    return 0;
}
