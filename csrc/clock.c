/*
 * clock.c - POSIX clock reads, PTP hardware clocks and the TSC.
 */
#define _GNU_SOURCE
#include "clock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/ptp_clock.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

int skw_clock_read_checked(clockid_t id, int64_t *out)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return -errno;
    *out = skw_ts_ns(&ts);
    return 0;
}

int skw_clock_resolution(clockid_t id, int64_t *out)
{
    struct timespec ts;
    if (clock_getres(id, &ts) != 0)
        return -errno;
    *out = skw_ts_ns(&ts);
    return 0;
}

int skw_clock_batch(clockid_t id, int64_t *buf, size_t n)
{
    struct timespec ts;
    for (size_t i = 0; i < n; i++) {
        if (clock_gettime(id, &ts) != 0)
            return -errno;
        buf[i] = skw_ts_ns(&ts);
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return (n % 2) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define SKW_MAX_ROUNDS 256

int skw_clock_cost(clockid_t id, size_t n, int rounds, double *out_ns)
{
    double per[SKW_MAX_ROUNDS];
    struct timespec ts;
    int64_t a = 0, b = 0;
    volatile int64_t sink = 0;

    if (n == 0 || rounds <= 0 || rounds > SKW_MAX_ROUNDS)
        return -EINVAL;
    if (clock_gettime(id, &ts) != 0)
        return -errno;
    for (int r = 0; r < rounds; r++) {
        skw_clock_read(CLOCK_MONOTONIC_RAW, &a);
        for (size_t i = 0; i < n; i++) {
            clock_gettime(id, &ts);
            sink += ts.tv_nsec;
        }
        skw_clock_read(CLOCK_MONOTONIC_RAW, &b);
        per[r] = (double)(b - a) / (double)n;
    }
    (void)sink;
    *out_ns = median(per, rounds);
    return 0;
}

/* --- PTP hardware clocks ------------------------------------------------ */

int skw_phc_open(const char *path, int *fd_out, clockid_t *clk_out)
{
    struct ptp_clock_caps caps;
    struct stat st;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0 || !S_ISCHR(st.st_mode) ||
        ioctl(fd, PTP_CLOCK_GETCAPS, &caps) != 0) {
        close(fd);
        return -ENOTTY;
    }
    *fd_out = fd;
    *clk_out = skw_phc_clockid(fd);
    return 0;
}

int skw_phc_close(int fd)
{
    return close(fd) == 0 ? 0 : -errno;
}

static int64_t pct_ns(const struct ptp_clock_time *t)
{
    return t->sec * 1000000000LL + t->nsec;
}

int skw_xts_pick(const int64_t *triples, int n, struct skw_xts *out)
{
    int best = -1;
    int64_t width = INT64_MAX;
    if (n <= 0)
        return -EINVAL;
    for (int i = 0; i < n; i++) {
        int64_t w = triples[3 * i + 2] - triples[3 * i];
        if (w < 0)
            continue; /* the system clock stepped inside this sample */
        if (w < width) {
            width = w;
            best = i;
        }
    }
    if (best < 0)
        return -ERANGE;
    out->sys_before_ns = triples[3 * best];
    out->phc_ns = triples[3 * best + 1];
    out->sys_after_ns = triples[3 * best + 2];
    out->samples = n;
    return 0;
}

int skw_phc_cross(int fd, int nsamples, struct skw_xts *out)
{
    int64_t triples[3 * PTP_MAX_SAMPLES];
    int rc;

    if (nsamples < 1 || nsamples > PTP_MAX_SAMPLES)
        return -EINVAL;

    {
        struct ptp_sys_offset_precise p;
        memset(&p, 0, sizeof p);
        if (ioctl(fd, PTP_SYS_OFFSET_PRECISE, &p) == 0) {
            out->phc_ns = pct_ns(&p.device);
            out->sys_before_ns = out->sys_after_ns = pct_ns(&p.sys_realtime);
            out->method = SKW_XTS_PRECISE;
            out->samples = 1;
            return 0;
        }
        if (errno != EOPNOTSUPP && errno != ENOTTY && errno != EINVAL)
            return -errno;
    }
    {
        struct ptp_sys_offset_extended e;
        memset(&e, 0, sizeof e);
        e.n_samples = (unsigned)nsamples;
        if (ioctl(fd, PTP_SYS_OFFSET_EXTENDED, &e) == 0) {
            for (int i = 0; i < nsamples; i++) {
                triples[3 * i] = pct_ns(&e.ts[i][0]);
                triples[3 * i + 1] = pct_ns(&e.ts[i][1]);
                triples[3 * i + 2] = pct_ns(&e.ts[i][2]);
            }
            rc = skw_xts_pick(triples, nsamples, out);
            out->method = SKW_XTS_EXTENDED;
            return rc;
        }
        if (errno != EOPNOTSUPP && errno != ENOTTY && errno != EINVAL)
            return -errno;
    }
    {
        /* ts[] = sys0, phc0, sys1, phc1, ..., sysN */
        struct ptp_sys_offset s;
        memset(&s, 0, sizeof s);
        s.n_samples = (unsigned)nsamples;
        if (ioctl(fd, PTP_SYS_OFFSET, &s) != 0)
            return -errno;
        for (int i = 0; i < nsamples; i++) {
            triples[3 * i] = pct_ns(&s.ts[2 * i]);
            triples[3 * i + 1] = pct_ns(&s.ts[2 * i + 1]);
            triples[3 * i + 2] = pct_ns(&s.ts[2 * i + 2]);
        }
        rc = skw_xts_pick(triples, nsamples, out);
        out->method = SKW_XTS_PLAIN;
        return rc;
    }
}

/* --- TSC ------------------------------------------------------------------ */

int skw_tsc_invariant(char *reason, size_t reason_len)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned int a, b, c, d;
    if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000007u) {
        snprintf(reason, reason_len,
                 "CPUID leaf 0x80000007 is not available, so TSC invariance cannot be confirmed");
        return 0;
    }
    __get_cpuid(0x80000007u, &a, &b, &c, &d);
    if (!(d & (1u << 8))) {
        snprintf(reason, reason_len,
                 "CPUID 0x80000007 EDX bit 8 (invariant TSC) is clear: the TSC rate may change with power states");
        return 0;
    }
    snprintf(reason, reason_len, "invariant TSC (CPUID 0x80000007 EDX bit 8)");
    return 1;
#else
    snprintf(reason, reason_len, "not an x86 CPU: there is no TSC");
    return 0;
#endif
}

static inline uint64_t tsc_fenced(void)
{
#if defined(__x86_64__) || defined(__i386__)
    uint32_t lo, hi;
    __asm__ __volatile__("lfence; rdtsc; lfence" : "=a"(lo), "=d"(hi)::"memory");
    return ((uint64_t)hi << 32) | lo;
#else
    return 0;
#endif
}

/* One (tsc, raw ns) pair: the tightest bracket of several tries, with the TSC
 * taken as the midpoint of the two TSC reads around clock_gettime. */
static void tsc_pair(uint64_t *tsc, int64_t *ns, int64_t *width_cycles)
{
    uint64_t best_w = UINT64_MAX;
    for (int i = 0; i < 64; i++) {
        int64_t t = 0;
        uint64_t a = tsc_fenced();
        skw_clock_read(CLOCK_MONOTONIC_RAW, &t);
        uint64_t b = tsc_fenced();
        if (b - a < best_w) {
            best_w = b - a;
            *tsc = a + (b - a) / 2;
            *ns = t;
        }
    }
    *width_cycles = (int64_t)best_w;
}

int skw_tsc_calibrate(int64_t duration_ns, struct skw_tsc_cal *cal)
{
    char why[160];
    uint64_t t0, t1;
    int64_t n0, n1, w0, w1;
    struct timespec req;

    if (!skw_tsc_invariant(why, sizeof why))
        return -ENOTSUP;
    if (duration_ns < 1000000)
        return -EINVAL;

    tsc_pair(&t0, &n0, &w0);
    req.tv_sec = (time_t)(duration_ns / 1000000000LL);
    req.tv_nsec = (long)(duration_ns % 1000000000LL);
    while (nanosleep(&req, &req) != 0 && errno == EINTR)
        ;
    tsc_pair(&t1, &n1, &w1);
    if (t1 <= t0 || n1 <= n0)
        return -ERANGE;

    double hz = (double)(t1 - t0) * 1e9 / (double)(n1 - n0);
    /* mult/shift with 32 fractional bits: ns = cycles * mult >> 32. The 128-bit
     * product keeps this exact for any realistic uptime. */
    uint32_t shift = 32;
    __int128 num = (__int128)(n1 - n0) << shift;
    uint64_t mult = (uint64_t)((num + (t1 - t0) / 2) / (t1 - t0));

    cal->tsc0 = t1;
    cal->ns0 = n1;
    cal->mult = mult;
    cal->shift = shift;
    cal->hz = hz;
    cal->window_ns = (int64_t)((double)(w0 > w1 ? w0 : w1) * 1e9 / hz);
    return 0;
}

int skw_tsc_cost(const struct skw_tsc_cal *cal, size_t n, int rounds, double *out_ns)
{
    double per[SKW_MAX_ROUNDS];
    int64_t a = 0, b = 0;
    volatile int64_t sink = 0;
    if (n == 0 || rounds <= 0 || rounds > SKW_MAX_ROUNDS)
        return -EINVAL;
    for (int r = 0; r < rounds; r++) {
        skw_clock_read(CLOCK_MONOTONIC_RAW, &a);
        for (size_t i = 0; i < n; i++)
            sink += skw_tsc_ns(cal);
        skw_clock_read(CLOCK_MONOTONIC_RAW, &b);
        per[r] = (double)(b - a) / (double)n;
    }
    (void)sink;
    *out_ns = median(per, rounds);
    return 0;
}

int skw_tsc_batch(const struct skw_tsc_cal *cal, int64_t *buf, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = skw_tsc_ns(cal);
    return 0;
}
