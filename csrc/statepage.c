/*
 * statepage.c - seqlocked clock-state page: create, map, write, read.
 */
#define _GNU_SOURCE
#include "statepage.h"
#include "clock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

/* A writer that dies mid-update leaves seq odd; readers give up after this
 * many tries (a normal update takes tens of ns). */
#define SKW_READ_TRIES 1000000

int skw_page_create(const char *path, const char *node, int32_t base_clock)
{
    char tmp[PATH_MAX];
    struct skw_page page;
    int fd, rc = 0;

    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    memset(&page, 0, sizeof page);
    page.magic = SKW_PAGE_MAGIC;
    page.version = SKW_PAGE_VERSION;
    page.header_size = SKW_PAGE_HEADER_SIZE;
    page.base_clock = base_clock;
    page.next.start_ns = INT64_MAX;
    strncpy(page.node, node, SKW_PAGE_NODE_LEN - 1);

    fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, SKW_PAGE_FILE_SIZE) != 0 ||
        pwrite(fd, &page, sizeof page, 0) != (ssize_t)sizeof page ||
        fsync(fd) != 0)
        rc = -errno;
    close(fd);
    if (rc == 0 && link(tmp, path) != 0)
        rc = -errno;
    unlink(tmp);
    return rc;
}

int skw_page_map(const char *path, int writable, struct skw_page **out,
                 int *version_out)
{
    struct stat st;
    void *m;
    int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (st.st_size < (off_t)SKW_PAGE_HEADER_SIZE) {
        close(fd);
        return -EINVAL;
    }
    m = mmap(NULL, SKW_PAGE_HEADER_SIZE, PROT_READ | (writable ? PROT_WRITE : 0),
             MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return -errno;
    struct skw_page *p = m;
    if (p->magic != SKW_PAGE_MAGIC) {
        munmap(m, SKW_PAGE_HEADER_SIZE);
        return -EBADMSG;
    }
    if (version_out)
        *version_out = p->version;
    if (p->version != SKW_PAGE_VERSION || p->header_size != SKW_PAGE_HEADER_SIZE) {
        munmap(m, SKW_PAGE_HEADER_SIZE);
        return -EPROTONOSUPPORT;
    }
    *out = p;
    return 0;
}

void skw_page_unmap(struct skw_page *p)
{
    if (p)
        munmap(p, SKW_PAGE_HEADER_SIZE);
}

static void seg_store(struct skw_segment *d, const struct skw_segment *s)
{
    STORE(d->start_ns, s->start_ns);
    STORE(d->offset_ns, s->offset_ns);
    STORE(d->drift_ppb, s->drift_ppb);
    STORE(d->epoch_ns, s->epoch_ns);
}

static void seg_load(struct skw_segment *d, const struct skw_segment *s)
{
    d->start_ns = LOAD(s->start_ns);
    d->offset_ns = LOAD(s->offset_ns);
    d->drift_ppb = LOAD(s->drift_ppb);
    d->epoch_ns = LOAD(s->epoch_ns);
}

void skw_page_write(struct skw_page *p, const struct skw_page_state *s)
{
    uint32_t seq = LOAD(p->seq);
    STORE(p->seq, seq + 1);
    __atomic_thread_fence(__ATOMIC_RELEASE); /* seq odd before any field */
    STORE(p->flags, s->flags);
    STORE(p->base_clock, s->base_clock);
    seg_store(&p->cur, &s->cur);
    seg_store(&p->next, &s->next);
    STORE(p->meas_offset_ns, s->meas_offset_ns);
    STORE(p->meas_uncertainty_ns, s->meas_uncertainty_ns);
    STORE(p->meas_drift_ppb, s->meas_drift_ppb);
    STORE(p->meas_time_ns, s->meas_time_ns);
    STORE(p->generation, LOAD(p->generation) + 1);
    __atomic_store_n(&p->seq, seq + 2, __ATOMIC_RELEASE);
}

int skw_page_repair(struct skw_page *p)
{
    uint32_t seq = LOAD(p->seq);
    if (!(seq & 1))
        return 0;
    __atomic_store_n(&p->seq, seq + 1, __ATOMIC_RELEASE);
    return 1;
}

int skw_page_read(const struct skw_page *p, struct skw_page_state *out)
{
    for (int i = 0; i < SKW_READ_TRIES; i++) {
        uint32_t s1 = __atomic_load_n(&p->seq, __ATOMIC_ACQUIRE);
        if (s1 & 1) {
            cpu_relax();
            continue;
        }
        out->flags = LOAD(p->flags);
        out->base_clock = LOAD(p->base_clock);
        out->generation = LOAD(p->generation);
        seg_load(&out->cur, &p->cur);
        seg_load(&out->next, &p->next);
        out->meas_offset_ns = LOAD(p->meas_offset_ns);
        out->meas_uncertainty_ns = LOAD(p->meas_uncertainty_ns);
        out->meas_drift_ppb = LOAD(p->meas_drift_ppb);
        out->meas_time_ns = LOAD(p->meas_time_ns);
        __atomic_thread_fence(__ATOMIC_ACQUIRE); /* fields before seq re-read */
        if (LOAD(p->seq) == s1)
            return 0;
    }
    return -EAGAIN;
}

int skw_page_now(const struct skw_page *p, int64_t *now_out, int64_t *offset_out)
{
    struct skw_segment cur, next;
    struct timespec ts;
    for (int i = 0; i < SKW_READ_TRIES; i++) {
        uint32_t s1 = __atomic_load_n(&p->seq, __ATOMIC_ACQUIRE);
        if (s1 & 1) {
            cpu_relax();
            continue;
        }
        clockid_t base = (clockid_t)LOAD(p->base_clock);
        seg_load(&cur, &p->cur);
        seg_load(&next, &p->next);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (LOAD(p->seq) != s1)
            continue;
        if (clock_gettime(base, &ts) != 0)
            return -errno;
        int64_t t = skw_ts_ns(&ts);
        int64_t off = skw_segment_offset(&cur, &next, t);
        *now_out = t + off;
        if (offset_out)
            *offset_out = off;
        return 0;
    }
    return -EAGAIN;
}

int skw_page_batch(const struct skw_page *p, int64_t *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = skw_page_now(p, &buf[i], NULL);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int skw_page_cost(const struct skw_page *p, size_t n, int rounds, double *out_ns)
{
    double per[256];
    int64_t a = 0, b = 0, v;
    volatile int64_t sink = 0;
    if (n == 0 || rounds <= 0 || rounds > 256)
        return -EINVAL;
    for (int r = 0; r < rounds; r++) {
        skw_clock_read(CLOCK_MONOTONIC_RAW, &a);
        for (size_t i = 0; i < n; i++) {
            skw_page_now(p, &v, NULL);
            sink += v;
        }
        skw_clock_read(CLOCK_MONOTONIC_RAW, &b);
        per[r] = (double)(b - a) / (double)n;
    }
    (void)sink;
    qsort(per, (size_t)rounds, sizeof(double), cmp_double);
    *out_ns = per[rounds / 2];
    return 0;
}
