# Declarations of csrc/ring.h.
from libc.stdint cimport int64_t, uint64_t, uint32_t, uint8_t, int8_t, int32_t
from skewd.cstatepage cimport skw_page

cdef extern from "ring.h" nogil:
    int64_t SKW_RING_NULL
    enum:
        SKW_RING_MIN_SIZE
        SKW_RING_MAX_SIZE
        SKW_RING_F_SAMPLED

    struct skw_span_rec:
        uint64_t trace_hi
        uint64_t trace_lo
        uint64_t span_id
        uint64_t parent_id
        int64_t start_ns
        int64_t end_ns
        int64_t send_ns
        int64_t injected_offset_ns
        int64_t est_offset_ns
        int64_t est_uncertainty_ns
        uint32_t name_id
        uint8_t kind
        uint8_t flags

    struct skw_ctx:
        uint64_t trace_hi
        uint64_t trace_lo
        uint64_t span_id
        uint8_t valid
        uint8_t sampled

    skw_ctx skw_ring_current

    struct skw_ring:
        pass
    struct skw_tracer:
        pass

    enum:
        SKW_COL_PARENT
        SKW_COL_SEND
        SKW_COL_INJECTED
        SKW_COL_EST_OFFSET
        SKW_COL_EST_UNCERTAINTY
        SKW_COL_NULLABLE

    struct skw_cols:
        uint8_t *trace_id
        uint8_t *span_id
        uint8_t *parent_id
        uint32_t *name_id
        int8_t *kind
        int64_t *start_ns
        int64_t *end_ns
        int64_t *send_ns
        int64_t *injected_offset_ns
        int64_t *est_offset_ns
        int64_t *est_uncertainty_ns
        uint8_t *valid[5]
        int64_t null_count[5]
        const char *names_blob
        const int32_t *names_offsets
        uint32_t names_count
        int32_t *name_offsets
        char *name_data
        size_t name_data_cap

    struct skw_ring_stats:
        uint64_t recorded
        uint64_t dropped
        uint64_t drained
        uint64_t rings
        uint64_t pending

    int skw_tracer_new(const skw_page *page, uint32_t ring_size, skw_tracer **out)
    void skw_tracer_close(skw_tracer *t)
    void skw_tracer_free(skw_tracer *t)
    uint32_t skw_tracer_ring_size(const skw_tracer *t)
    skw_ring *skw_ring_get(skw_tracer *t, int *err)
    int skw_ring_now(skw_ring *r, int64_t *now_out, int64_t *inj_out, int64_t *est)
    int skw_ring_append(skw_ring *r, const skw_span_rec *rec, int count_drop)
    int skw_ring_wait_space(skw_ring *r, int64_t timeout_ns)
    uint64_t skw_ring_rand64()
    int skw_tracer_drain(skw_tracer *t, skw_cols *cols, size_t max, size_t *n_out)
    void skw_tracer_wait(skw_tracer *t, int64_t timeout_ns)
    int skw_tracer_wait_work(skw_tracer *t, int64_t interval_ns, int64_t limit_ns)
    int skw_tracer_pending(skw_tracer *t)
    void skw_tracer_kick(skw_tracer *t)
    void skw_tracer_stats(skw_tracer *t, skw_ring_stats *out)
    void skw_tracer_prefork(skw_tracer *t)
    void skw_tracer_postfork_parent(skw_tracer *t)
    void skw_tracer_postfork_child(skw_tracer *t)
    size_t skw_ring_fill(skw_ring *r, size_t n, uint32_t name_id)
