/* The probe responder; see responder.h. */
#include "responder.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sha256.h"

struct skw_resp_source {
    unsigned char addr[16];
    double tokens;
    int64_t at_ns;
    uint64_t used;
};

struct skw_resp_session {
    unsigned char addr[16];
    uint16_t port;
    uint64_t session;
    int64_t top;          /* highest sequence seen, -1 for none */
    uint64_t bits;        /* the 64 below it (bit 0: top itself) */
    int has_prev;
    uint32_t prev_seq;
    uint8_t prev_sources;
    int64_t prev_t2, prev_t3;
    uint64_t used;
};

int skw_resp_init(struct skw_responder *r, int max_sources, int max_sessions)
{
    memset(r, 0, sizeof(*r));
    r->max_age_ns = -1;
    r->max_sources = max_sources > 0 ? max_sources : 1;
    r->max_sessions = max_sessions > 0 ? max_sessions : 1;
    r->sources = calloc((size_t)r->max_sources, sizeof(*r->sources));
    r->sessions = calloc((size_t)r->max_sessions, sizeof(*r->sessions));
    if (!r->sources || !r->sessions) {
        skw_resp_free(r);
        return -ENOMEM;
    }
    return 0;
}

void skw_resp_free(struct skw_responder *r)
{
    free(r->sources);
    free(r->sessions);
    r->sources = NULL;
    r->sessions = NULL;
    r->nsources = r->nsessions = 0;
}

int skw_resp_add_key(struct skw_responder *r, uint32_t id, const void *secret, size_t len)
{
    if (id == 0)
        return -EINVAL;
    if (r->nkeys >= SKW_RESP_MAX_KEYS)
        return -ENOSPC;
    struct skw_resp_key *k = &r->keys[r->nkeys++];
    k->id = id;
    if (len > SKW_RESP_MAX_SECRET) {   /* HMAC hashes a long key first: same MAC */
        skw_sha256(secret, len, k->secret);
        k->len = SKW_SHA256_LEN;
    } else {
        memcpy(k->secret, secret, len);
        k->len = (uint32_t)len;
    }
    return 0;
}

/* --- helpers ----------------------------------------------------------------- */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t offset_at(const struct skw_page *p, int64_t t)
{
    struct skw_page_state s;
    if (p == NULL || skw_page_read(p, &s) != 0 || !(s.flags & SKW_PAGE_F_INJECT))
        return 0;
    return skw_segment_offset(&s.cur, &s.next, t);
}

static int64_t skewed_now(const struct skw_page *p)
{
    int64_t now;
    if (p != NULL && skw_page_now(p, &now, NULL) == 0)
        return now;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

/* The address alone, as 16 bytes (IPv4 in the v4-mapped form). */
static void addr_key(const struct sockaddr_storage *a, unsigned char out[16], uint16_t *port)
{
    memset(out, 0, 16);
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)a;
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &v4->sin_addr, 4);
        *port = ntohs(v4->sin_port);
    } else {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)a;
        memcpy(out, &v6->sin6_addr, 16);
        *port = ntohs(v6->sin6_port);
    }
}

/* Token bucket of this source: 1 when the packet may go on. */
static int allow(struct skw_responder *r, const unsigned char addr[16])
{
    int64_t now = mono_ns();
    struct skw_resp_source *s = NULL, *oldest = NULL;
    for (int i = 0; i < r->nsources; i++) {
        if (memcmp(r->sources[i].addr, addr, 16) == 0) {
            s = &r->sources[i];
            break;
        }
        if (!oldest || r->sources[i].used < oldest->used)
            oldest = &r->sources[i];
    }
    if (s == NULL) {
        s = r->nsources < r->max_sources ? &r->sources[r->nsources++] : oldest;
        memcpy(s->addr, addr, 16);
        s->tokens = r->burst;
        s->at_ns = now;
    }
    s->used = ++r->tick;
    double tokens = s->tokens + (double)(now - s->at_ns) * r->rate_per_s / 1e9;
    if (tokens > r->burst)
        tokens = r->burst;
    int ok = tokens >= 1.0;
    s->tokens = ok ? tokens - 1.0 : tokens;
    s->at_ns = now;
    return ok;
}

static struct skw_resp_session *session(struct skw_responder *r, const unsigned char addr[16],
                                        uint16_t port, uint64_t id)
{
    struct skw_resp_session *s = NULL, *oldest = NULL;
    for (int i = 0; i < r->nsessions; i++) {
        struct skw_resp_session *c = &r->sessions[i];
        if (c->session == id && c->port == port && memcmp(c->addr, addr, 16) == 0) {
            s = c;
            break;
        }
        if (!oldest || c->used < oldest->used)
            oldest = c;
    }
    if (s == NULL) {
        s = r->nsessions < r->max_sessions ? &r->sessions[r->nsessions++] : oldest;
        memset(s, 0, sizeof(*s));
        memcpy(s->addr, addr, 16);
        s->port = port;
        s->session = id;
        s->top = -1;
    }
    s->used = ++r->tick;
    return s;
}

/* The replay window (as skewd.probe.ReplayWindow): 0 for a repeat or a
 * sequence number too far behind. */
static int window_accept(struct skw_resp_session *s, uint32_t seq)
{
    int64_t q = seq;
    if (q > s->top) {
        int64_t shift = q - s->top;
        s->bits = shift < 64 ? (s->bits << shift) | 1 : 1;
        s->top = q;
        return 1;
    }
    int64_t back = s->top - q;
    if (back >= 64 || (s->bits >> back) & 1)
        return 0;
    s->bits |= (uint64_t)1 << back;
    return 1;
}

static const struct skw_resp_key *find_key(const struct skw_responder *r, uint32_t id)
{
    for (int i = 0; i < r->nkeys; i++)
        if (r->keys[i].id == id)
            return &r->keys[i];
    return NULL;
}

static int valid_sources(unsigned v)
{
    return (v >> 4) <= SKW_SRC_HARDWARE && (v & 0xF) <= SKW_SRC_HARDWARE;
}

/* --- the hook ---------------------------------------------------------------- */

int skw_resp_hook(void *responder, struct skw_tsock *sock, const unsigned char *p, size_t n,
                  const struct sockaddr_storage *from, socklen_t fromlen,
                  const struct skw_stamp *rx)
{
    static const unsigned char zero_mac[SKW_PROBE_MAC_LEN];
    struct skw_responder *r = responder;
    struct skw_resp_stats *st = &r->st;
    if (n <= 5 || p[5] != SKW_PROBE_REQUEST || memcmp(p, "SKWG", 4) == 0)
        return 0;                      /* not a request (gossip has its own magic) */
    if (sock->mode == SKW_TS_HARDWARE || rx->src == SKW_SRC_HARDWARE)
        return 0;                      /* PHC stamps: Python converts them */
    st->received++;
    unsigned char addr[16];
    uint16_t port;
    addr_key(from, addr, &port);
    if (r->rate_per_s > 0 && !allow(r, addr)) {
        st->rate_limited++;
        return 1;
    }
    /* the form, in skewd.probe.decode's order */
    if (n != SKW_PROBE_LEN || memcmp(p, "SKWD", 4) != 0) {
        st->malformed++;
        return 1;
    }
    if (p[4] != SKW_PROBE_VERSION) {
        st->bad_version++;
        return 1;
    }
    unsigned flags = p[6], sources = p[7];
    uint32_t key_id = get32(p + 8);
    int auth = (flags & SKW_PROBE_F_AUTH) != 0;
    if ((flags & ~(unsigned)(SKW_PROBE_F_AUTH | SKW_PROBE_F_INTERLEAVED)) ||
        p[53] || p[54] || p[55] || !valid_sources(sources) || !valid_sources(p[52]) ||
        auth != (key_id != 0) ||
        (!auth && memcmp(p + SKW_PROBE_MAC_OFFSET, zero_mac, SKW_PROBE_MAC_LEN) != 0)) {
        st->malformed++;
        return 1;
    }
    /* authentication */
    const struct skw_resp_key *key = NULL;
    if (!auth) {
        if (r->require_auth) {
            st->unauthenticated++;
            return 1;
        }
    } else {
        unsigned char mac[SKW_SHA256_LEN];
        key = find_key(r, key_id);
        if (key == NULL) {
            st->unauthenticated++;
            return 1;
        }
        skw_hmac_sha256(key->secret, key->len, p, SKW_PROBE_MAC_OFFSET, mac);
        if (!skw_mac_equal(mac, p + SKW_PROBE_MAC_OFFSET, SKW_PROBE_MAC_LEN)) {
            st->unauthenticated++;
            return 1;
        }
    }
    uint32_t seq = get32(p + 12);
    uint64_t sid = get64(p + 16);
    int64_t t1 = (int64_t)get64(p + 24);
    if (key != NULL && r->max_age_ns >= 0) {
        __int128 age = (__int128)t1 - skewed_now(r->page);   /* t1 is the peer's: any value */
        if (age > r->max_age_ns || -age > r->max_age_ns) {
            st->stale++;
            return 1;
        }
    }
    int64_t t2 = rx->ns + offset_at(r->page, rx->ns);
    struct skw_resp_session *s = session(r, addr, port, sid);
    if (!window_accept(s, seq)) {
        st->replayed++;
        return 1;
    }
    /* the response */
    unsigned char out[SKW_PROBE_LEN] = {0};
    unsigned out_flags = 0;
    int with_prev = (flags & SKW_PROBE_F_INTERLEAVED) && s->has_prev;
    if (with_prev)
        out_flags |= SKW_PROBE_F_INTERLEAVED;
    if (key != NULL)
        out_flags |= SKW_PROBE_F_AUTH;
    int64_t t3 = skewed_now(r->page);
    memcpy(out, "SKWD", 4);
    out[4] = SKW_PROBE_VERSION;
    out[5] = SKW_PROBE_RESPONSE;
    out[6] = (unsigned char)out_flags;
    out[7] = (unsigned char)(rx->src << 4 | SKW_SRC_USER);
    put32(out + 8, key ? key->id : 0);
    put32(out + 12, seq);
    put64(out + 16, sid);
    put64(out + 24, (uint64_t)t1);
    put64(out + 32, (uint64_t)t2);
    put64(out + 40, (uint64_t)t3);
    if (with_prev) {
        put32(out + 48, s->prev_seq);
        out[52] = s->prev_sources;
        put64(out + 56, (uint64_t)s->prev_t2);
        put64(out + 64, (uint64_t)s->prev_t3);
    }
    if (key != NULL)
        skw_hmac_sha256(key->secret, key->len, out, SKW_PROBE_MAC_OFFSET,
                        out + SKW_PROBE_MAC_OFFSET);
    uint32_t id;
    int64_t user_ns;
    if (skw_tsock_send(sock, out, sizeof(out), from, fromlen, &id, &user_ns) < 0) {
        st->send_errors++;
        return 1;
    }
    st->answered++;
    struct skw_stamp tx = {user_ns, SKW_SRC_USER, id};
    if (sock->mode != SKW_TS_NONE) {
        struct skw_stamp got;
        if (skw_tsock_tx_stamp(sock, id, r->tx_wait_ns, &got) == 0)
            tx = got;
        if (tx.src == SKW_SRC_USER)
            st->tx_stamp_missing++;
    }
    s->has_prev = 1;
    s->prev_seq = seq;
    s->prev_t2 = t2;
    s->prev_t3 = tx.ns + offset_at(r->page, tx.ns);
    s->prev_sources = (uint8_t)(rx->src << 4 | tx.src);
    return 1;
}
