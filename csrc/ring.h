/*
 * ring.h - the span ring: fixed-size span records appended per thread
 * without locks or allocation, drained in batches into column buffers.
 *
 * A tracer (struct skw_tracer) owns one single-producer/single-consumer ring
 * per thread that has recorded a span with it. The owning thread appends
 * (skw_ring_append: a bounds check, a 96-byte store and a release store of
 * head); one drainer at a time (skw_tracer_drain, under the tracer's mutex)
 * copies records out column by column and advances tail. A full ring drops
 * the record and counts it; blocking callers wait with skw_ring_wait_space.
 *
 * Ring lifetime: a ring holds two references, its thread's and its tracer's.
 * Thread exit (a pthread key destructor) drops the first and marks the ring
 * orphaned; the drainer unlinks and drops an orphaned ring once it is empty;
 * skw_tracer_close drops the tracer's references. The last one frees it.
 *
 * Record layout (native byte order, 96 bytes):
 *
 *   off size field
 *     0    8 trace_hi            trace id, high 64 bits
 *     8    8 trace_lo            trace id, low 64 bits
 *    16    8 span_id             never 0
 *    24    8 parent_id           0 at a root
 *    32    8 start_ns
 *    40    8 end_ns
 *    48    8 send_ns             SKW_RING_NULL when absent
 *    56    8 injected_offset_ns  SKW_RING_NULL when no injection
 *    64    8 est_offset_ns       SKW_RING_NULL when no measurement
 *    72    8 est_uncertainty_ns  SKW_RING_NULL when no measurement
 *    80    4 name_id             index into the tracer's name table
 *    84    1 kind                0 internal, 1 producer, 2 consumer,
 *                                3 client, 4 server
 *    85    1 flags               bit 0: sampled
 *    86   10 reserved
 *
 * Ids are written to the column buffers big-endian, so the bytes of an id
 * read as hex are the id's hex digits (as in a W3C traceparent).
 *
 * Every function returns 0 or a negative errno; nothing prints or exits.
 */
#ifndef SKW_RING_H
#define SKW_RING_H

#include <stddef.h>
#include <stdint.h>

#include "statepage.h"

#define SKW_RING_NULL INT64_MIN
#define SKW_RING_MIN_SIZE 16
#define SKW_RING_MAX_SIZE (1u << 26)
#define SKW_RING_F_SAMPLED 0x1u

struct skw_span_rec {
    uint64_t trace_hi;
    uint64_t trace_lo;
    uint64_t span_id;
    uint64_t parent_id;
    int64_t start_ns;
    int64_t end_ns;
    int64_t send_ns;
    int64_t injected_offset_ns;
    int64_t est_offset_ns;
    int64_t est_uncertainty_ns;
    uint32_t name_id;
    uint8_t kind;
    uint8_t flags;
    uint8_t reserved[10];
};

_Static_assert(sizeof(struct skw_span_rec) == 96, "span record size");
_Static_assert(offsetof(struct skw_span_rec, start_ns) == 32, "start offset");
_Static_assert(offsetof(struct skw_span_rec, name_id) == 80, "name_id offset");
_Static_assert(offsetof(struct skw_span_rec, kind) == 84, "kind offset");

/* The current span of this thread (implicit parent of the next span). */
struct skw_ctx {
    uint64_t trace_hi;
    uint64_t trace_lo;
    uint64_t span_id;
    uint8_t valid;
    uint8_t sampled;
};

extern __thread struct skw_ctx skw_ring_current;

struct skw_ring;
struct skw_tracer;

/* Nullable columns, by their index in skw_cols.valid / null_count. */
enum {
    SKW_COL_PARENT = 0,
    SKW_COL_SEND,
    SKW_COL_INJECTED,
    SKW_COL_EST_OFFSET,
    SKW_COL_EST_UNCERTAINTY,
    SKW_COL_NULLABLE
};

/* Caller-provided column buffers for a drain, each with room for max rows,
 * laid out as Arrow arrays want them (so they become Arrow buffers as is). */
struct skw_cols {
    uint8_t *trace_id;      /* 16 bytes a row */
    uint8_t *span_id;       /* 8 bytes a row */
    uint8_t *parent_id;     /* 8 bytes a row, zeros at a root */
    uint32_t *name_id;
    int8_t *kind;
    int64_t *start_ns;
    int64_t *end_ns;
    int64_t *send_ns;       /* SKW_RING_NULL where absent, as the rest below */
    int64_t *injected_offset_ns;
    int64_t *est_offset_ns;
    int64_t *est_uncertainty_ns;
    /* Arrow validity bitmaps (bit i of byte i/8, LSB first; 1 = present) and
     * null counts of the nullable columns; the drain fills both */
    uint8_t *valid[SKW_COL_NULLABLE];
    int64_t null_count[SKW_COL_NULLABLE];
    /* span names: the tracer's name table in (blob, offsets) form, and the
     * name column the drain builds from it (Arrow string offsets and data) */
    const char *names_blob;
    const int32_t *names_offsets; /* names_count + 1 entries */
    uint32_t names_count;
    int32_t *name_offsets;        /* max + 1 entries */
    char *name_data;
    size_t name_data_cap;
};

struct skw_ring_stats {
    uint64_t recorded;  /* records appended */
    uint64_t dropped;   /* records lost because a ring was full */
    uint64_t drained;   /* records handed to a drain */
    uint64_t rings;     /* live rings */
    uint64_t pending;   /* records waiting in rings */
};

/* A tracer over a clock-state page (NULL: plain CLOCK_REALTIME). ring_size
 * (records per thread) is rounded up to a power of two. The page must stay
 * mapped until skw_tracer_free. */
int skw_tracer_new(const struct skw_page *page, uint32_t ring_size,
                   struct skw_tracer **out);
/* Stop accepting spans and free every ring (drain first). */
void skw_tracer_close(struct skw_tracer *t);
/* Free the tracer itself: only when no thread can call into it any more. */
void skw_tracer_free(struct skw_tracer *t);
uint32_t skw_tracer_ring_size(const struct skw_tracer *t);

/* This thread's ring for t, registering one on first use (allocates).
 * NULL with *err set: -ENOMEM, -EPIPE (tracer closed), -ENOSPC (this thread
 * already uses too many tracers). */
struct skw_ring *skw_ring_get(struct skw_tracer *t, int *err);

/* The skewed clock through t's page, one consistent read. *inj_out gets the
 * injected offset, or SKW_RING_NULL when the page has no injection set. When
 * est is non-NULL, est[0..1] get the page's measured offset and uncertainty
 * (SKW_RING_NULL without a measurement); those come from a per-ring cache
 * refreshed when the page's generation changes. */
int skw_ring_now(struct skw_ring *r, int64_t *now_out, int64_t *inj_out,
                 int64_t *est);

/* Append a record to r (the calling thread's ring). -ENOBUFS when full:
 * counted as dropped unless count_drop is 0. -EPIPE when the tracer closed. */
int skw_ring_append(struct skw_ring *r, const struct skw_span_rec *rec,
                    int count_drop);

/* Wake the drainer and wait until r has room, at most timeout_ns.
 * 0, or -ETIMEDOUT, or -EPIPE when the tracer closed meanwhile. */
int skw_ring_wait_space(struct skw_ring *r, int64_t timeout_ns);

/* Random 64-bit ids from a per-thread generator seeded from getrandom and
 * reseeded in a forked child; never 0. */
uint64_t skw_ring_rand64(void);

/* Drainer side: copy at most max records from all rings into cols, oldest
 * ring first; *n_out gets how many. A record whose name id is not in the
 * name table yet, or whose name does not fit name_data, stays in its ring
 * for the next drain. Frees orphaned rings it emptied. */
int skw_tracer_drain(struct skw_tracer *t, struct skw_cols *cols,
                     size_t max, size_t *n_out);

/* Drainer side: sleep until kicked or timeout_ns passed. */
void skw_tracer_wait(struct skw_tracer *t, int64_t timeout_ns);
/* Drainer side: sleep until a drain is due, without waking the caller while
 * there is nothing to do. Returns 1 when kicked (a ring half full, close,
 * skw_tracer_kick), 0 when interval_ns has passed and some ring holds records,
 * -ETIMEDOUT when limit_ns passed with every ring empty. An idle tracer's
 * drainer thus wakes once per limit_ns, not once per interval_ns. */
int skw_tracer_wait_work(struct skw_tracer *t, int64_t interval_ns,
                         int64_t limit_ns);
/* Whether any ring holds records not drained yet (takes the mutex). */
int skw_tracer_pending(struct skw_tracer *t);
/* Wake the drainer (cheap when nobody waits). */
void skw_tracer_kick(struct skw_tracer *t);

void skw_tracer_stats(struct skw_tracer *t, struct skw_ring_stats *out);

/* Fork support: hold the tracer's mutex across fork() in the parent, and in
 * the child forget the parent's rings (their records belong to the parent)
 * and start afresh. */
void skw_tracer_prefork(struct skw_tracer *t);
void skw_tracer_postfork_parent(struct skw_tracer *t);
void skw_tracer_postfork_child(struct skw_tracer *t);

/* Fill this thread's ring with n synthetic records (for the drain benchmark
 * and tests); returns how many fitted. */
size_t skw_ring_fill(struct skw_ring *r, size_t n, uint32_t name_id);

#endif
