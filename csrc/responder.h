/* The probe responder in C: answers skewd probe requests (the protocol in
 * docs/probe-protocol.md) inside skw_tsock_recv, so a daemon's Python never
 * wakes for its peers' probes. It does exactly what skewd.probe.ProbeServer
 * does, in the same order: per-source rate limit, form checks, HMAC-SHA256
 * authentication, staleness, replay window per session, t2 and t3 on the
 * node's skewed clock, the response (interleaved: last exchange's exact TX
 * stamp), its TX stamp kept for the next one. Every drop is counted by
 * reason. Requests stamped by a NIC (PHC timescale) are left to Python,
 * which converts them. */
#ifndef SKW_RESPONDER_H
#define SKW_RESPONDER_H

#include <stdint.h>
#include <sys/socket.h>

#include "statepage.h"
#include "tsock.h"

/* the packet (docs/probe-protocol.md) */
#define SKW_PROBE_LEN 104
#define SKW_PROBE_MAC_OFFSET 72
#define SKW_PROBE_MAC_LEN 32
#define SKW_PROBE_VERSION 1
#define SKW_PROBE_REQUEST 1
#define SKW_PROBE_RESPONSE 2
#define SKW_PROBE_F_AUTH 0x01
#define SKW_PROBE_F_INTERLEAVED 0x02

#define SKW_RESP_MAX_KEYS 64
#define SKW_RESP_MAX_SECRET 64   /* longer secrets are hashed first, as HMAC does */

struct skw_resp_stats {
    uint64_t received, answered, malformed, bad_version, wrong_type, unauthenticated,
        replayed, stale, rate_limited, oversize, send_errors, tx_stamp_missing;
};

struct skw_resp_key {
    uint32_t id;
    uint32_t len;
    unsigned char secret[SKW_RESP_MAX_SECRET];
};

struct skw_resp_source;   /* token bucket per source address */
struct skw_resp_session;  /* replay window and last answer per (address, port, session) */

struct skw_responder {
    struct skw_resp_key keys[SKW_RESP_MAX_KEYS];
    int nkeys;
    int require_auth;
    int64_t max_age_ns;        /* < 0: no staleness check */
    double rate_per_s, burst;  /* rate 0: no rate limit */
    int64_t tx_wait_ns;
    const struct skw_page *page;   /* the node's skewed clock; NULL: CLOCK_REALTIME */
    struct skw_resp_source *sources;
    int nsources, max_sources;
    struct skw_resp_session *sessions;
    int nsessions, max_sessions;
    uint64_t tick;             /* recency, for evicting the least recent */
    struct skw_resp_stats st;
};

/* 0 or -ENOMEM. */
int skw_resp_init(struct skw_responder *r, int max_sources, int max_sessions);
void skw_resp_free(struct skw_responder *r);
/* -EINVAL for a bad id, -ENOSPC past SKW_RESP_MAX_KEYS. */
int skw_resp_add_key(struct skw_responder *r, uint32_t id, const void *secret, size_t len);

/* The skw_tsock_hook: 1 when the datagram was a request and is dealt with
 * (answered or dropped and counted), 0 when it is not a request, or one
 * stamped by a NIC, and the caller should have it. */
int skw_resp_hook(void *responder, struct skw_tsock *s, const unsigned char *buf, size_t n,
                  const struct sockaddr_storage *from, socklen_t fromlen,
                  const struct skw_stamp *rx);

#endif
