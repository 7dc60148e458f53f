# Declarations of csrc/clock.h.
from libc.stdint cimport int64_t, uint64_t, uint32_t, int32_t
from posix.types cimport clockid_t

cdef extern from "clock.h" nogil:
    int skw_clock_read(clockid_t id, int64_t *out)
    int skw_clock_read_checked(clockid_t id, int64_t *out)
    int skw_clock_resolution(clockid_t id, int64_t *out)
    int skw_clock_batch(clockid_t id, int64_t *buf, size_t n)
    int skw_clock_cost(clockid_t id, size_t n, int rounds, double *out_ns)

    clockid_t skw_phc_clockid(int fd)
    int skw_phc_open(const char *path, int *fd_out, clockid_t *clk_out)
    int skw_phc_close(int fd)

    enum:
        SKW_XTS_PRECISE
        SKW_XTS_EXTENDED
        SKW_XTS_PLAIN

    struct skw_xts:
        int64_t phc_ns
        int64_t sys_before_ns
        int64_t sys_after_ns
        int32_t method
        int32_t samples

    int skw_phc_cross(int fd, int nsamples, skw_xts *out)
    int skw_xts_pick(const int64_t *triples, int n, skw_xts *out)

    int skw_tsc_invariant(char *reason, size_t reason_len)

    struct skw_tsc_cal:
        uint64_t tsc0
        int64_t ns0
        uint64_t mult
        uint32_t shift
        double hz
        int64_t window_ns

    int skw_tsc_calibrate(int64_t duration_ns, skw_tsc_cal *cal)
    uint64_t skw_tsc_raw()
    int64_t skw_tsc_to_ns(const skw_tsc_cal *cal, uint64_t tsc)
    int64_t skw_tsc_ns(const skw_tsc_cal *cal)
    int skw_tsc_cost(const skw_tsc_cal *cal, size_t n, int rounds, double *out_ns)
    int skw_tsc_batch(const skw_tsc_cal *cal, int64_t *buf, size_t n)
