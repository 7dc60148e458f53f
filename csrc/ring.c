/*
 * ring.c - per-thread span rings: append, drain, ids, fork and thread exit.
 */
#define _GNU_SOURCE
#include "ring.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define LOAD_ACQ(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define STORE_REL(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

/* How many tracers one thread may use at a time. */
#define SKW_RING_TLS_MAX 16

struct skw_ring {
    /* owner thread's side */
    uint64_t head;
    uint64_t tail_cache;
    uint64_t recorded;
    uint64_t dropped;
    uint64_t page_gen;
    int64_t est[2];
    uint32_t page_flags;
    int page_cached;
    const struct skw_page *page;
    struct skw_span_rec *recs;
    uint64_t mask;
    struct skw_tracer *tracer;
    /* drainer's side */
    _Alignas(64) uint64_t tail;
    struct skw_ring *next;
    /* shared state */
    _Alignas(64) int refs;
    int orphaned;
    int closed;
};

struct skw_tracer {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int kicked;
    int closed;
    uint64_t id;
    uint32_t ring_size;
    const struct skw_page *page;
    struct skw_ring *rings;
    uint64_t gone_recorded; /* counters of rings already freed */
    uint64_t gone_dropped;
    uint64_t drained;
    struct skw_page anon;   /* the page of a tracer without a node */
};

struct tls_ent {
    struct skw_tracer *t;
    uint64_t id;
    struct skw_ring *r;
};

__thread struct skw_ctx skw_ring_current;

static __thread struct tls_ent tls_ents[SKW_RING_TLS_MAX];
static __thread int tls_n;
static __thread int tls_keyed;
static __thread uint64_t rng_state;
static __thread int rng_seeded;

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static uint64_t next_tracer_id = 1;

/* --- ids ------------------------------------------------------------------ */

static void rng_seed(void)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
            ((uint64_t)getpid() << 20) ^ (uint64_t)(uintptr_t)&rng_state;
    }
    rng_state = s;
    rng_seeded = 1;
}

uint64_t skw_ring_rand64(void)
{
    uint64_t z;
    if (__builtin_expect(!rng_seeded, 0))
        rng_seed();
    do { /* splitmix64 */
        z = (rng_state += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
    } while (z == 0);
    return z;
}

/* --- ring lifetime ---------------------------------------------------------- */

static void ring_free(struct skw_ring *r)
{
    free(r->recs);
    free(r);
}

static void ring_unref(struct skw_ring *r)
{
    if (__atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0)
        ring_free(r);
}

/* Thread exit: give up this thread's references. */
static void tls_destroy(void *arg)
{
    (void)arg;
    for (int i = 0; i < tls_n; i++) {
        struct skw_ring *r = tls_ents[i].r;
        STORE_REL(r->orphaned, 1);
        ring_unref(r);
    }
    tls_n = 0;
    tls_keyed = 0;
}

/* In a forked child the only thread is the one that forked: its table
 * points at the parent's rings (freed by skw_tracer_postfork_child) and its
 * id generator must not repeat the parent's ids. */
static void atfork_child(void)
{
    tls_n = 0;
    rng_seeded = 0;
    memset(&skw_ring_current, 0, sizeof skw_ring_current);
}

static void global_init(void)
{
    pthread_key_create(&tls_key, tls_destroy);
    pthread_atfork(NULL, NULL, atfork_child);
}

/* --- tracer ----------------------------------------------------------------- */

int skw_tracer_new(const struct skw_page *page, uint32_t ring_size,
                   struct skw_tracer **out)
{
    struct skw_tracer *t;
    pthread_condattr_t ca;
    uint32_t n = SKW_RING_MIN_SIZE;

    if (ring_size > SKW_RING_MAX_SIZE)
        return -EINVAL;
    while (n < ring_size)
        n <<= 1;
    pthread_once(&tls_once, global_init);
    t = calloc(1, sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    t->id = __atomic_fetch_add(&next_tracer_id, 1, __ATOMIC_RELAXED);
    t->ring_size = n;
    t->anon.magic = SKW_PAGE_MAGIC;
    t->anon.version = SKW_PAGE_VERSION;
    t->anon.header_size = SKW_PAGE_HEADER_SIZE;
    t->anon.base_clock = CLOCK_REALTIME;
    t->anon.next.start_ns = INT64_MAX;
    t->page = page ? page : &t->anon;
    *out = t;
    return 0;
}

uint32_t skw_tracer_ring_size(const struct skw_tracer *t)
{
    return t->ring_size;
}

/* Unlink every ring and drop the tracer's references. Lock held. */
static void release_rings(struct skw_tracer *t)
{
    struct skw_ring *r = t->rings, *nx;
    for (; r != NULL; r = nx) {
        nx = r->next;
        t->gone_recorded += LOAD(r->recorded);
        t->gone_dropped += LOAD(r->dropped);
        STORE_REL(r->closed, 1);
        ring_unref(r);
    }
    t->rings = NULL;
}

void skw_tracer_close(struct skw_tracer *t)
{
    pthread_mutex_lock(&t->lock);
    STORE_REL(t->closed, 1);
    release_rings(t);
    pthread_mutex_unlock(&t->lock);
    skw_tracer_kick(t);
}

void skw_tracer_free(struct skw_tracer *t)
{
    if (t == NULL)
        return;
    skw_tracer_close(t);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->cond);
    free(t);
}

void skw_tracer_prefork(struct skw_tracer *t)
{
    pthread_mutex_lock(&t->lock);
}

void skw_tracer_postfork_parent(struct skw_tracer *t)
{
    pthread_mutex_unlock(&t->lock);
}

void skw_tracer_postfork_child(struct skw_tracer *t)
{
    pthread_condattr_t ca;
    struct skw_ring *r, *nx;

    /* the parent's threads do not exist here: nothing else holds these */
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    for (r = t->rings; r != NULL; r = nx) {
        nx = r->next;
        ring_free(r);
    }
    t->rings = NULL;
    t->kicked = 0;
    t->gone_recorded = 0;
    t->gone_dropped = 0;
    t->drained = 0;
    /* a fresh id: no table entry made before the fork can match */
    t->id = __atomic_fetch_add(&next_tracer_id, 1, __ATOMIC_RELAXED);
}

/* --- this thread's ring ------------------------------------------------------ */

static struct skw_ring *ring_register(struct skw_tracer *t, int *err)
{
    struct skw_ring *r;
    int i, j;

    /* forget rings of tracers that closed since */
    for (i = 0, j = 0; i < tls_n; i++) {
        if (LOAD_ACQ(tls_ents[i].r->closed))
            ring_unref(tls_ents[i].r);
        else
            tls_ents[j++] = tls_ents[i];
    }
    tls_n = j;
    if (tls_n == SKW_RING_TLS_MAX) {
        *err = -ENOSPC;
        return NULL;
    }
    if (posix_memalign((void **)&r, 64, sizeof *r) != 0) {
        *err = -ENOMEM;
        return NULL;
    }
    memset(r, 0, sizeof *r);
    if (posix_memalign((void **)&r->recs, 64,
                       (size_t)t->ring_size * sizeof(struct skw_span_rec)) != 0) {
        free(r);
        *err = -ENOMEM;
        return NULL;
    }
    r->mask = t->ring_size - 1;
    r->page = t->page;
    r->tracer = t;
    r->refs = 2;
    pthread_mutex_lock(&t->lock);
    if (LOAD(t->closed)) {
        pthread_mutex_unlock(&t->lock);
        ring_free(r);
        *err = -EPIPE;
        return NULL;
    }
    r->next = t->rings;
    t->rings = r;
    pthread_mutex_unlock(&t->lock);

    tls_ents[tls_n].t = t;
    tls_ents[tls_n].id = t->id;
    tls_ents[tls_n].r = r;
    tls_n++;
    if (!tls_keyed) {
        pthread_setspecific(tls_key, (void *)1);
        tls_keyed = 1;
    }
    return r;
}

struct skw_ring *skw_ring_get(struct skw_tracer *t, int *err)
{
    uint64_t id = t->id;
    for (int i = 0; i < tls_n; i++)
        if (tls_ents[i].t == t && tls_ents[i].id == id)
            return tls_ents[i].r;
    return ring_register(t, err);
}

static void ring_refresh_page(struct skw_ring *r)
{
    struct skw_page_state st;
    if (skw_page_read(r->page, &st) != 0)
        return; /* writer stuck: keep the last view */
    r->page_flags = st.flags;
    r->page_gen = st.generation;
    if (st.flags & SKW_PAGE_F_MEASURED) {
        r->est[0] = st.meas_offset_ns;
        r->est[1] = st.meas_uncertainty_ns;
    } else {
        r->est[0] = SKW_RING_NULL;
        r->est[1] = SKW_RING_NULL;
    }
    r->page_cached = 1;
}

int skw_ring_now(struct skw_ring *r, int64_t *now_out, int64_t *inj_out,
                 int64_t *est)
{
    int64_t off;
    int rc;
    if (__builtin_expect(!r->page_cached ||
                         LOAD(r->page->generation) != r->page_gen, 0))
        ring_refresh_page(r);
    rc = skw_page_now(r->page, now_out, &off);
    if (rc != 0)
        return rc;
    if (inj_out)
        *inj_out = (r->page_flags & SKW_PAGE_F_INJECT) ? off : SKW_RING_NULL;
    if (est) {
        est[0] = r->est[0];
        est[1] = r->est[1];
    }
    return 0;
}

int skw_ring_append(struct skw_ring *r, const struct skw_span_rec *rec,
                    int count_drop)
{
    uint64_t h = r->head;
    uint64_t cap = r->mask + 1;

    if (__builtin_expect(LOAD(r->closed), 0))
        return -EPIPE;
    if (h - r->tail_cache >= cap) {
        r->tail_cache = LOAD_ACQ(r->tail);
        if (h - r->tail_cache >= cap) {
            if (count_drop)
                STORE(r->dropped, r->dropped + 1);
            skw_tracer_kick(r->tracer);
            return -ENOBUFS;
        }
    }
    r->recs[h & r->mask] = *rec;
    STORE_REL(r->head, h + 1);
    STORE(r->recorded, r->recorded + 1);
    if (__builtin_expect(h + 1 - r->tail_cache == cap / 2, 0)) {
        /* half full by our last view of tail: look again, wake the drainer */
        r->tail_cache = LOAD_ACQ(r->tail);
        if (h + 1 - r->tail_cache >= cap / 2)
            skw_tracer_kick(r->tracer);
    }
    return 0;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int skw_ring_wait_space(struct skw_ring *r, int64_t timeout_ns)
{
    int64_t deadline = mono_ns() + timeout_ns;
    struct timespec nap = {0, 20000};
    for (;;) {
        if (LOAD_ACQ(r->closed))
            return -EPIPE;
        uint64_t tl = LOAD_ACQ(r->tail);
        if (r->head - tl <= r->mask) {
            r->tail_cache = tl;
            return 0;
        }
        skw_tracer_kick(r->tracer);
        nanosleep(&nap, NULL);
        if (mono_ns() > deadline)
            return -ETIMEDOUT;
    }
}

/* --- drainer ------------------------------------------------------------------ */

static inline void put_be64(uint8_t *p, uint64_t v)
{
    v = __builtin_bswap64(v);
    memcpy(p, &v, 8);
}

static inline void set_valid(struct skw_cols *c, int col, size_t j, int ok)
{
    uint8_t *b = &c->valid[col][j >> 3];
    uint8_t bit = (uint8_t)(1u << (j & 7));
    if (ok) {
        *b |= bit;
    } else {
        *b &= (uint8_t)~bit;
        c->null_count[col]++;
    }
}

static inline void put_ns(struct skw_cols *c, int col, int64_t *dst, size_t j, int64_t v)
{
    dst[j] = v;
    set_valid(c, col, j, v != SKW_RING_NULL);
}

static size_t drain_ring(struct skw_ring *r, struct skw_cols *c, size_t at, size_t max)
{
    uint64_t tl = r->tail;
    uint64_t h = LOAD_ACQ(r->head);
    size_t k = (size_t)(h - tl), i;
    if (k > max - at)
        k = max - at;
    for (i = 0; i < k; i++) {
        const struct skw_span_rec *s = &r->recs[(tl + i) & r->mask];
        size_t j = at + i;
        int32_t off = c->name_offsets[j], len;
        if (s->name_id >= c->names_count)
            break; /* named after the table was taken: next drain */
        len = c->names_offsets[s->name_id + 1] - c->names_offsets[s->name_id];
        if ((size_t)off + (size_t)len > c->name_data_cap)
            break; /* name data full: next drain */
        memcpy(c->name_data + off, c->names_blob + c->names_offsets[s->name_id], (size_t)len);
        c->name_offsets[j + 1] = off + len;
        put_be64(c->trace_id + 16 * j, s->trace_hi);
        put_be64(c->trace_id + 16 * j + 8, s->trace_lo);
        put_be64(c->span_id + 8 * j, s->span_id);
        put_be64(c->parent_id + 8 * j, s->parent_id);
        set_valid(c, SKW_COL_PARENT, j, s->parent_id != 0);
        c->name_id[j] = s->name_id;
        c->kind[j] = (int8_t)s->kind;
        c->start_ns[j] = s->start_ns;
        c->end_ns[j] = s->end_ns;
        put_ns(c, SKW_COL_SEND, c->send_ns, j, s->send_ns);
        put_ns(c, SKW_COL_INJECTED, c->injected_offset_ns, j, s->injected_offset_ns);
        put_ns(c, SKW_COL_EST_OFFSET, c->est_offset_ns, j, s->est_offset_ns);
        put_ns(c, SKW_COL_EST_UNCERTAINTY, c->est_uncertainty_ns, j, s->est_uncertainty_ns);
    }
    STORE_REL(r->tail, tl + i);
    return i;
}

int skw_tracer_drain(struct skw_tracer *t, struct skw_cols *cols,
                     size_t max, size_t *n_out)
{
    struct skw_ring **pp, *r;
    size_t n = 0;

    for (int i = 0; i < SKW_COL_NULLABLE; i++)
        cols->null_count[i] = 0;
    cols->name_offsets[0] = 0;
    pthread_mutex_lock(&t->lock);
    pp = &t->rings;
    while ((r = *pp) != NULL && n < max) {
        int orphaned = LOAD_ACQ(r->orphaned);
        size_t got = drain_ring(r, cols, n, max);
        int stopped = got < max - n && LOAD_ACQ(r->head) != r->tail;
        n += got;
        if (stopped)
            break; /* an unknown name or full name data: leave the rest */
        if (orphaned && LOAD_ACQ(r->head) == r->tail) {
            /* its thread is gone and nothing is left: free it */
            *pp = r->next;
            t->gone_recorded += LOAD(r->recorded);
            t->gone_dropped += LOAD(r->dropped);
            ring_unref(r);
            continue;
        }
        pp = &r->next;
    }
    /* the next drain starts with the ring after the one that filled this
     * batch, so a busy thread cannot starve the others */
    if (n > 0 && t->rings != NULL && t->rings->next != NULL) {
        struct skw_ring *first = t->rings, *last = t->rings;
        while (last->next != NULL)
            last = last->next;
        t->rings = first->next;
        first->next = NULL;
        last->next = first;
    }
    t->drained += n;
    pthread_mutex_unlock(&t->lock);
    *n_out = n;
    return 0;
}

void skw_tracer_kick(struct skw_tracer *t)
{
    if (!__atomic_exchange_n(&t->kicked, 1, __ATOMIC_ACQ_REL))
        pthread_cond_signal(&t->cond);
}

void skw_tracer_wait(struct skw_tracer *t, int64_t timeout_ns)
{
    struct timespec ts;
    int64_t until;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    until = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec + timeout_ns;
    ts.tv_sec = until / 1000000000LL;
    ts.tv_nsec = until % 1000000000LL;
    pthread_mutex_lock(&t->lock);
    if (!LOAD_ACQ(t->kicked) && !LOAD(t->closed))
        pthread_cond_timedwait(&t->cond, &t->lock, &ts);
    STORE_REL(t->kicked, 0);
    pthread_mutex_unlock(&t->lock);
}

/* Whether a ring holds records. Lock held. */
static int any_pending(struct skw_tracer *t)
{
    for (struct skw_ring *r = t->rings; r != NULL; r = r->next)
        if (LOAD_ACQ(r->head) != r->tail)
            return 1;
    return 0;
}

int skw_tracer_pending(struct skw_tracer *t)
{
    int p;
    pthread_mutex_lock(&t->lock);
    p = any_pending(t);
    pthread_mutex_unlock(&t->lock);
    return p;
}

static struct timespec mono_ts(int64_t ns)
{
    struct timespec ts;
    ts.tv_sec = ns / 1000000000LL;
    ts.tv_nsec = ns % 1000000000LL;
    return ts;
}

int skw_tracer_wait_work(struct skw_tracer *t, int64_t interval_ns,
                         int64_t limit_ns)
{
    int64_t now = mono_ns();
    int64_t due = now + interval_ns, limit = now + limit_ns;
    int rc;

    if (limit < due)
        limit = due;
    pthread_mutex_lock(&t->lock);
    for (;;) {
        struct timespec ts = mono_ts(due < limit ? due : limit);
        if (!LOAD_ACQ(t->kicked) && !LOAD(t->closed))
            pthread_cond_timedwait(&t->cond, &t->lock, &ts);
        if (LOAD_ACQ(t->kicked) || LOAD(t->closed)) {
            STORE_REL(t->kicked, 0);
            rc = 1;
            break;
        }
        now = mono_ns();
        if (now >= due && any_pending(t)) {
            rc = 0;
            break;
        }
        if (now >= limit) {
            rc = -ETIMEDOUT;
            break;
        }
        if (now >= due) /* idle: look again one interval later */
            due = now + interval_ns;
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

void skw_tracer_stats(struct skw_tracer *t, struct skw_ring_stats *out)
{
    struct skw_ring *r;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&t->lock);
    out->recorded = t->gone_recorded;
    out->dropped = t->gone_dropped;
    out->drained = t->drained;
    for (r = t->rings; r != NULL; r = r->next) {
        out->recorded += LOAD(r->recorded);
        out->dropped += LOAD(r->dropped);
        out->pending += LOAD_ACQ(r->head) - r->tail;
        out->rings++;
    }
    pthread_mutex_unlock(&t->lock);
}

size_t skw_ring_fill(struct skw_ring *r, size_t n, uint32_t name_id)
{
    struct skw_span_rec rec;
    size_t i;
    memset(&rec, 0, sizeof rec);
    rec.trace_hi = skw_ring_rand64();
    rec.trace_lo = skw_ring_rand64();
    rec.name_id = name_id;
    rec.flags = SKW_RING_F_SAMPLED;
    rec.send_ns = SKW_RING_NULL;
    rec.injected_offset_ns = SKW_RING_NULL;
    rec.est_offset_ns = SKW_RING_NULL;
    rec.est_uncertainty_ns = SKW_RING_NULL;
    for (i = 0; i < n; i++) {
        rec.span_id = skw_ring_rand64();
        rec.parent_id = (i & 1) ? rec.span_id ^ 1 : 0;
        rec.kind = (uint8_t)(i % 5);
        rec.start_ns = (int64_t)i * 1000;
        rec.end_ns = rec.start_ns + 500;
        if (skw_ring_append(r, &rec, 0) != 0)
            break;
    }
    return i;
}
