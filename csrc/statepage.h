/*
 * statepage.h - the per-node clock-state page.
 *
 * A small shared-memory file (/dev/shm/skewd/<node>.page by default) written
 * by one writer at a time (the daemon or `skewd inject`, serialised by an
 * flock on the file) under a seqlock, and read lock-free by every process on
 * the node. Byte layout, version 1, native byte order (little-endian on every
 * supported host), 256 bytes at the start of a 4096-byte file:
 *
 *   off size field
 *     0    4 magic              0x50574B53 ("SKWP")
 *     4    2 version            1
 *     6    2 header_size        256
 *     8    4 seq                seqlock: odd while a write is in progress
 *    12    4 flags              bit 0: injection set, bit 1: measurement set
 *    16    8 generation         +1 on every completed write
 *    24    4 base_clock         clockid the skewed clock is built on
 *    28    4 reserved0
 *    32   32 cur  segment       start_ns, offset_ns, drift_ppb, epoch_ns
 *    64   32 next segment       same; applies from next.start_ns on
 *    96    8 meas_offset_ns     node's measured offset to its reference
 *   104    8 meas_uncertainty_ns
 *   112    8 meas_drift_ppb
 *   120    8 meas_time_ns       base-clock time of that measurement
 *   128   64 node               NUL-padded node name
 *   192   64 reserved
 *
 * The injected offset at base-clock time t is, with seg = next when
 * t >= next.start_ns and cur otherwise:
 *     seg.offset_ns + seg.drift_ppb * (t - seg.epoch_ns) / 1e9
 * and the skewed clock reads t + that offset.
 */
#ifndef SKW_STATEPAGE_H
#define SKW_STATEPAGE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SKW_PAGE_MAGIC 0x50574B53u
#define SKW_PAGE_VERSION 1
#define SKW_PAGE_HEADER_SIZE 256
#define SKW_PAGE_FILE_SIZE 4096
#define SKW_PAGE_NODE_LEN 64

#define SKW_PAGE_F_INJECT 0x1u
#define SKW_PAGE_F_MEASURED 0x2u

struct skw_segment {
    int64_t start_ns;
    int64_t offset_ns;
    int64_t drift_ppb;
    int64_t epoch_ns;
};

struct skw_page {
    uint32_t magic;
    uint16_t version;
    uint16_t header_size;
    uint32_t seq;
    uint32_t flags;
    uint64_t generation;
    int32_t base_clock;
    uint32_t reserved0;
    struct skw_segment cur;
    struct skw_segment next;
    int64_t meas_offset_ns;
    int64_t meas_uncertainty_ns;
    int64_t meas_drift_ppb;
    int64_t meas_time_ns;
    char node[SKW_PAGE_NODE_LEN];
    uint8_t reserved[64];
};

_Static_assert(sizeof(struct skw_page) == SKW_PAGE_HEADER_SIZE, "page size");
_Static_assert(offsetof(struct skw_page, seq) == 8, "seq offset");
_Static_assert(offsetof(struct skw_page, generation) == 16, "generation offset");
_Static_assert(offsetof(struct skw_page, cur) == 32, "cur offset");
_Static_assert(offsetof(struct skw_page, next) == 64, "next offset");
_Static_assert(offsetof(struct skw_page, meas_offset_ns) == 96, "meas offset");
_Static_assert(offsetof(struct skw_page, node) == 128, "node offset");

/* The payload a writer sets and a reader gets, consistent as a whole. */
struct skw_page_state {
    uint32_t flags;
    int32_t base_clock;
    uint64_t generation;
    struct skw_segment cur;
    struct skw_segment next;
    int64_t meas_offset_ns;
    int64_t meas_uncertainty_ns;
    int64_t meas_drift_ppb;
    int64_t meas_time_ns;
};

/* Create a zeroed page file atomically (written to a temporary name, then
 * linked into place); -EEXIST if it is already there. */
int skw_page_create(const char *path, const char *node, int32_t base_clock);

/* Map a page. -EBADMSG: not a page; -EPROTONOSUPPORT: another layout version
 * (*version_out says which); -EINVAL: too small. */
int skw_page_map(const char *path, int writable, struct skw_page **out,
                 int *version_out);
void skw_page_unmap(struct skw_page *p);

/* Writer side: one complete update under the seqlock. */
void skw_page_write(struct skw_page *p, const struct skw_page_state *s);

/* Make a page whose writer died mid-update readable again (seq even). Only
 * call while holding the writer lock. Returns 1 if it repaired anything. */
int skw_page_repair(struct skw_page *p);

/* Reader side: a consistent snapshot; -EAGAIN if a write stayed in progress
 * for the whole bounded wait. */
int skw_page_read(const struct skw_page *p, struct skw_page_state *out);

/* Offset of a segment pair at base-clock time t. */
static inline int64_t skw_segment_offset(const struct skw_segment *cur,
                                         const struct skw_segment *next,
                                         int64_t t)
{
    const struct skw_segment *s = (t >= next->start_ns) ? next : cur;
    __int128 d = (__int128)s->drift_ppb * (__int128)(t - s->epoch_ns);
    return s->offset_ns + (int64_t)(d / 1000000000);
}

/* The skewed clock: base clock + injected offset, one consistent read.
 * *offset_out (may be NULL) receives the offset that was applied. */
int skw_page_now(const struct skw_page *p, int64_t *now_out, int64_t *offset_out);

/* n skewed-clock reads into buf. */
int skw_page_batch(const struct skw_page *p, int64_t *buf, size_t n);

/* Median cost in ns of one skewed-clock read (C loop). */
int skw_page_cost(const struct skw_page *p, size_t n, int rounds, double *out_ns);

#endif
