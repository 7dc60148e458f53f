# Declarations of csrc/statepage.h.
from libc.stdint cimport int64_t, uint64_t, uint32_t, int32_t

cdef extern from "statepage.h" nogil:
    enum:
        SKW_PAGE_VERSION
        SKW_PAGE_HEADER_SIZE
        SKW_PAGE_FILE_SIZE
        SKW_PAGE_NODE_LEN
        SKW_PAGE_F_INJECT
        SKW_PAGE_F_MEASURED

    struct skw_segment:
        int64_t start_ns
        int64_t offset_ns
        int64_t drift_ppb
        int64_t epoch_ns

    struct skw_page:
        uint32_t seq
        uint64_t generation
        int32_t base_clock
        skw_segment cur
        skw_segment next
        char node[64]

    struct skw_page_state:
        uint32_t flags
        int32_t base_clock
        uint64_t generation
        skw_segment cur
        skw_segment next
        int64_t meas_offset_ns
        int64_t meas_uncertainty_ns
        int64_t meas_drift_ppb
        int64_t meas_time_ns

    int skw_page_create(const char *path, const char *node, int32_t base_clock)
    int skw_page_map(const char *path, int writable, skw_page **out, int *version_out)
    void skw_page_unmap(skw_page *p)
    void skw_page_write(skw_page *p, const skw_page_state *s)
    int skw_page_repair(skw_page *p)
    int skw_page_read(const skw_page *p, skw_page_state *out)
    int64_t skw_segment_offset(const skw_segment *cur, const skw_segment *next, int64_t t)
    int skw_page_now(const skw_page *p, int64_t *now_out, int64_t *offset_out)
    int skw_page_batch(const skw_page *p, int64_t *buf, size_t n)
    int skw_page_cost(const skw_page *p, size_t n, int rounds, double *out_ns)
