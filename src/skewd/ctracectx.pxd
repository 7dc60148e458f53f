# Declarations of csrc/tracectx.h.
from libc.stdint cimport int64_t, uint64_t, uint8_t

cdef extern from "tracectx.h" nogil:
    enum:
        SKW_TRACECTX_TP_LEN
        SKW_TRACECTX_NS_MAX_LEN

    void skw_tracectx_format(char *out, uint64_t trace_hi, uint64_t trace_lo,
                             uint64_t span_id, uint8_t flags)
    int skw_tracectx_parse(const char *s, size_t len, uint64_t *trace_hi,
                           uint64_t *trace_lo, uint64_t *span_id, uint8_t *flags)
    size_t skw_tracectx_format_ns(char *out, int64_t v)
    int skw_tracectx_parse_ns(const char *s, size_t len, int64_t *out)
