/*
 * tracectx.h - the wire forms of a trace context, without allocation: the
 * W3C traceparent of version 00 and the decimal send time in nanoseconds.
 *
 * These are the fast paths of skewd.tracer's propagation. A parser here
 * accepts only the one canonical form and declines (-EINVAL) anything else,
 * valid or not; the caller then takes its general path, which knows every
 * rule and names what is wrong. So these never decide that a value is bad.
 *
 * traceparent, version 00, exactly SKW_TRACECTX_TP_LEN bytes:
 *
 *   off len
 *     0   2  "00"
 *     2   1  '-'
 *     3  32  trace id, lowercase hex, not all zero
 *    35   1  '-'
 *    36  16  parent (span) id, lowercase hex, not all zero
 *    52   1  '-'
 *    53   2  flags, lowercase hex; bit 0 is "sampled"
 *
 * Every function returns 0 or a negative errno; nothing prints or exits.
 */
#ifndef SKW_TRACECTX_H
#define SKW_TRACECTX_H

#include <stddef.h>
#include <stdint.h>

#define SKW_TRACECTX_TP_LEN 55
/* longest decimal int64: "-9223372036854775808" */
#define SKW_TRACECTX_NS_MAX_LEN 20

/* Write the traceparent of (hi, lo, span id, flags) into out[0..54]. */
void skw_tracectx_format(char *out, uint64_t trace_hi, uint64_t trace_lo,
                         uint64_t span_id, uint8_t flags);

/* Parse a canonical version-00 traceparent of exactly len == 55 bytes.
 * -EINVAL for anything else (other lengths or versions, upper case,
 * whitespace, zero ids): the caller's general parser decides those. */
int skw_tracectx_parse(const char *s, size_t len, uint64_t *trace_hi,
                       uint64_t *trace_lo, uint64_t *span_id, uint8_t *flags);

/* Write v in decimal into out (room for SKW_TRACECTX_NS_MAX_LEN bytes);
 * returns the length written. */
size_t skw_tracectx_format_ns(char *out, int64_t v);

/* Parse "-?[0-9]{1,19}" that fits in an int64 other than INT64_MIN (the
 * span ring's "absent"); -EINVAL for anything else (signs, spaces,
 * underscores, overflow: the caller's general parser decides those). */
int skw_tracectx_parse_ns(const char *s, size_t len, int64_t *out);

#endif
