/*
 * clock.h - skewd clock core: POSIX clocks, PTP hardware clocks, the TSC.
 *
 * Every function returns 0 or a negative errno and never prints or exits.
 * Times are int64 nanoseconds.
 */
#ifndef SKW_CLOCK_H
#define SKW_CLOCK_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

static inline int64_t skw_ts_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

/* One read of a clock: a single vDSO call for the POSIX clocks. */
static inline int skw_clock_read(clockid_t id, int64_t *out)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return -1; /* caller looks at errno via skw_clock_read_checked */
    *out = skw_ts_ns(&ts);
    return 0;
}

int skw_clock_read_checked(clockid_t id, int64_t *out);
int skw_clock_resolution(clockid_t id, int64_t *out);

/* n reads of a clock into buf; stops at the first failure. */
int skw_clock_batch(clockid_t id, int64_t *buf, size_t n);

/* Median cost in ns of one read of id, over `rounds` rounds of n reads. */
int skw_clock_cost(clockid_t id, size_t n, int rounds, double *out_ns);

/* --- PTP hardware clocks ------------------------------------------------ */

/* Dynamic clock id of an open PHC file descriptor (FD_TO_CLOCKID). */
static inline clockid_t skw_phc_clockid(int fd)
{
    return (clockid_t)((((unsigned int)~fd) << 3) | 3);
}

/* Open a PHC by path ("/dev/ptp0"): fd and its clock id; -errno on failure,
 * -ENOTTY when the path exists but is not a PTP clock. */
int skw_phc_open(const char *path, int *fd_out, clockid_t *clk_out);
int skw_phc_close(int fd);

enum skw_xts_method {
    SKW_XTS_PRECISE = 1,  /* PTP_SYS_OFFSET_PRECISE: hardware cross-stamp */
    SKW_XTS_EXTENDED = 2, /* PTP_SYS_OFFSET_EXTENDED: narrowest of n */
    SKW_XTS_PLAIN = 3,    /* PTP_SYS_OFFSET: sys/phc/sys sandwiches */
};

/* A PHC reading with the CLOCK_REALTIME window around it. For PRECISE the
 * window is zero-width (sys_before == sys_after). */
struct skw_xts {
    int64_t phc_ns;
    int64_t sys_before_ns;
    int64_t sys_after_ns;
    int32_t method;
    int32_t samples;
};

/* Cross-timestamp a PHC against CLOCK_REALTIME, best method first. */
int skw_phc_cross(int fd, int nsamples, struct skw_xts *out);

/* Pick the narrowest sandwich among n (before, phc, after) triples laid out
 * as ns[3*i + 0..2]. Exposed so the selection is testable without a PHC. */
int skw_xts_pick(const int64_t *triples, int n, struct skw_xts *out);

/* --- TSC ------------------------------------------------------------------ */

/* 1 when the CPU advertises an invariant TSC; 0 with a reason otherwise. */
int skw_tsc_invariant(char *reason, size_t reason_len);

struct skw_tsc_cal {
    uint64_t tsc0;    /* TSC at the reference point */
    int64_t ns0;      /* MONOTONIC_RAW at the reference point */
    uint64_t mult;    /* ns = ns0 + ((tsc - tsc0) * mult) >> shift */
    uint32_t shift;
    uint32_t _pad;
    double hz;        /* measured TSC frequency */
    int64_t window_ns;/* width of the widest bracketing read used */
};

/* Calibrate against CLOCK_MONOTONIC_RAW over about duration_ns. */
int skw_tsc_calibrate(int64_t duration_ns, struct skw_tsc_cal *cal);

static inline uint64_t skw_tsc_raw(void)
{
#if defined(__x86_64__) || defined(__i386__)
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
#else
    return 0;
#endif
}

static inline int64_t skw_tsc_to_ns(const struct skw_tsc_cal *cal, uint64_t tsc)
{
    int64_t d = (int64_t)(tsc - cal->tsc0);
    __int128 p = (__int128)d * (__int128)cal->mult;
    return cal->ns0 + (int64_t)(p >> cal->shift);
}

static inline int64_t skw_tsc_ns(const struct skw_tsc_cal *cal)
{
    return skw_tsc_to_ns(cal, skw_tsc_raw());
}

/* Median cost in ns of one TSC read with conversion (C loop). */
int skw_tsc_cost(const struct skw_tsc_cal *cal, size_t n, int rounds, double *out_ns);

/* Fill buf with TSC-derived ns. */
int skw_tsc_batch(const struct skw_tsc_cal *cal, int64_t *buf, size_t n);

#endif
