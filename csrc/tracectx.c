/*
 * tracectx.c - traceparent and send-time wire forms, formatted and parsed
 * without allocation (see tracectx.h).
 */
#include "tracectx.h"

#include <errno.h>
#include <string.h>

static const char hexdig[16] = "0123456789abcdef";

static void put_hex64(char *out, uint64_t v)
{
    for (int i = 15; i >= 0; i--) {
        out[i] = hexdig[v & 0xf];
        v >>= 4;
    }
}

void skw_tracectx_format(char *out, uint64_t trace_hi, uint64_t trace_lo,
                         uint64_t span_id, uint8_t flags)
{
    out[0] = '0';
    out[1] = '0';
    out[2] = '-';
    put_hex64(out + 3, trace_hi);
    put_hex64(out + 19, trace_lo);
    out[35] = '-';
    put_hex64(out + 36, span_id);
    out[52] = '-';
    out[53] = hexdig[flags >> 4];
    out[54] = hexdig[flags & 0xf];
}

/* Lowercase hex digit value, or -1. */
static inline int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int get_hex(const char *s, int ndig, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < ndig; i++) {
        int d = hexval((unsigned char)s[i]);
        if (d < 0)
            return -EINVAL;
        v = (v << 4) | (uint64_t)d;
    }
    *out = v;
    return 0;
}

int skw_tracectx_parse(const char *s, size_t len, uint64_t *trace_hi,
                       uint64_t *trace_lo, uint64_t *span_id, uint8_t *flags)
{
    uint64_t hi, lo, sid, fl;

    if (len != SKW_TRACECTX_TP_LEN || s[0] != '0' || s[1] != '0' ||
        s[2] != '-' || s[35] != '-' || s[52] != '-')
        return -EINVAL;
    if (get_hex(s + 3, 16, &hi) || get_hex(s + 19, 16, &lo) ||
        get_hex(s + 36, 16, &sid) || get_hex(s + 53, 2, &fl))
        return -EINVAL;
    if ((hi == 0 && lo == 0) || sid == 0)
        return -EINVAL;
    *trace_hi = hi;
    *trace_lo = lo;
    *span_id = sid;
    *flags = (uint8_t)fl;
    return 0;
}

size_t skw_tracectx_format_ns(char *out, int64_t v)
{
    char tmp[SKW_TRACECTX_NS_MAX_LEN];
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t n = 0, k = 0;

    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        out[k++] = '-';
    while (n > 0)
        out[k++] = tmp[--n];
    return k;
}

int skw_tracectx_parse_ns(const char *s, size_t len, int64_t *out)
{
    size_t i = 0, ndig;
    int neg = 0;
    uint64_t u = 0;

    if (len > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    ndig = len - i;
    if (ndig < 1 || ndig > 19)
        return -EINVAL;
    for (; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < '0' || c > '9')
            return -EINVAL;
        u = u * 10 + (uint64_t)(c - '0'); /* 19 digits cannot wrap a uint64 */
    }
    if (u > (uint64_t)INT64_MAX) /* INT64_MIN is the ring's "absent" too */
        return -EINVAL;
    *out = neg ? -(int64_t)u : (int64_t)u;
    return 0;
}
