/*
 * spancheck.c - the parent join and the edge checks of `skewd check`
 * (see spancheck.h).
 */
#include "spancheck.h"

#include <errno.h>
#include <string.h>

enum { INTERNAL, PRODUCER, CONSUMER, CLIENT, SERVER };

/* int64 arithmetic that wraps like numpy's */
static inline int64_t sub(int64_t a, int64_t b)
{
    return (int64_t)((uint64_t)a - (uint64_t)b);
}

static inline int64_t add(int64_t a, int64_t b)
{
    return (int64_t)((uint64_t)a + (uint64_t)b);
}

static inline int same_trace(const uint64_t *trace, int64_t i, int64_t j)
{
    return trace[2 * i] == trace[2 * j] && trace[2 * i + 1] == trace[2 * j + 1];
}

void skw_spancheck_bits(const uint8_t *bitmap, int64_t bit0, int64_t n, uint8_t *out)
{
    int64_t i = 0;
    for (; i < n && ((bit0 + i) & 7); i++)
        out[i] = (bitmap[(bit0 + i) >> 3] >> ((bit0 + i) & 7)) & 1;
    const uint8_t *b = bitmap + ((bit0 + i) >> 3);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* a byte's 8 bits to 8 bytes: bit j isolated in byte j, then each
     * nonzero byte to 1 (adding 0x7f sets a byte's top bit, never carries) */
    for (; i + 8 <= n; i += 8, b++) {
        uint64_t t = (*b * 0x0101010101010101ull) & 0x8040201008040201ull;
        t = ((t + 0x7f7f7f7f7f7f7f7full) & 0x8080808080808080ull) >> 7;
        memcpy(out + i, &t, 8);
    }
#endif
    for (int64_t j = 0; i < n; i++, j++)
        out[i] = (b[j >> 3] >> (j & 7)) & 1;
}

int64_t skw_spancheck_join(const uint64_t *trace, const uint64_t *span, const uint64_t *parent,
                           const uint8_t *has_parent, int64_t lo, int64_t hi, int32_t scan_max,
                           int64_t *prow, int64_t *self_parent)
{
    int64_t elsewhere = 0, selfp = 0;
    int64_t g0 = lo;
    while (g0 < hi) {
        int64_t g1 = g0 + 1;
        while (g1 < hi && same_trace(trace, g1, g0))
            g1++;
        const int scan = g1 - g0 <= scan_max;
        for (int64_t r = g0; r < g1; r++) {
            if (!has_parent[r]) {
                prow[r] = SKW_SPANCHECK_NO_PARENT;
                continue;
            }
            const uint64_t want = parent[r];
            int64_t found = -1;
            /* the row before, then its ancestors (rows before r only: their
             * parents are known) */
            int64_t a = r - 1;
            for (int steps = 0; a >= g0 && a < r && steps < 64; steps++) {
                if (span[a] == want) {
                    found = a;
                    break;
                }
                a = prow[a];
            }
            if (found < 0) {
                if (scan) {
                    for (int64_t j = g0; j < g1; j++) {
                        if (span[j] == want) {
                            found = j;
                            break;
                        }
                    }
                } else {
                    for (int64_t j = r + 1; j < g1 && j <= r + 4; j++) {
                        if (span[j] == want) {
                            found = j;
                            break;
                        }
                    }
                }
            }
            if (found == r) {
                selfp++;
                found = SKW_SPANCHECK_NO_PARENT;
            } else if (found < 0) {
                elsewhere++;
                found = SKW_SPANCHECK_ELSEWHERE;
            }
            prow[r] = found;
        }
        g0 = g1;
    }
    *self_parent = selfp;
    return elsewhere;
}

int skw_spancheck_edges(const struct skw_spancheck_cols *c, const struct skw_spancheck_opts *o,
                        int64_t lo, int64_t hi, struct skw_spancheck_out *out)
{
    const int32_t K = c->nnodes, S = c->nstages;
    if (K < 1 || o->nwin < 1 || o->window_ns < 1 || (c->stage && S < 1))
        return -EINVAL;
    int64_t vn[3] = {out->v_n[0], out->v_n[1], out->v_n[2]};
    int64_t mn = out->m_n, on = out->o_n;
    int64_t n_edges = 0, n_msg = 0, n_sync = 0;
    for (int64_t ci = lo; ci < hi; ci++) {
        const int64_t p = c->prow[ci];
        if (p < 0)
            continue;
        const int kc = c->kind[ci], kp = c->kind[p];
        const int32_t nc = c->node[ci], np = c->node[p];
        if (nc < 0 || nc >= K || np < 0 || np >= K)
            return -EINVAL;
        const int64_t sc = c->start[ci], sp = c->start[p];
        const int64_t rc = c->res_node[nc], rp = c->res_node[np];
        const int64_t thr = rc > rp ? rc : rp;
        const int is_msg = kp == PRODUCER && kc == CONSUMER;
        const int is_sync = (kc == INTERNAL || kc == CLIENT || kc == SERVER) && kp != PRODUCER;
        const int cross = nc != np;
        n_edges++;
        n_msg += is_msg;
        n_sync += is_sync;

        /* up to two violations per edge: [kind, magnitude] */
        int nv = 0, vk[2];
        int64_t vm[2];
        int64_t d = 0;
        if (is_msg) {
            /* negative transport: the consumer starts before the send */
            int64_t sendv = c->has_send[p] ? c->send[p] : c->has_send[ci] ? c->send[ci] : sp;
            d = sub(sc, sendv);
            int64_t mag = sub(0, d);
            if (mag >= thr) {
                vk[nv] = SKW_SPANCHECK_NEG_TRANSPORT;
                vm[nv++] = mag;
            }
        } else {
            int64_t mag = sub(sp, sc);
            if (mag >= thr) {
                vk[nv] = SKW_SPANCHECK_BEFORE_PARENT;
                vm[nv++] = mag;
            }
        }
        int64_t de = 0;
        if (is_sync) {
            de = sub(c->end[ci], c->end[p]);
            if (de >= thr) {
                vk[nv] = SKW_SPANCHECK_ENDS_AFTER;
                vm[nv++] = de;
            }
        }
        for (int k = 0; k < nv; k++) {
            /* region order: before parent, negative transport, ends after */
            const int reg = vk[k] == SKW_SPANCHECK_BEFORE_PARENT ? 0
                          : vk[k] == SKW_SPANCHECK_NEG_TRANSPORT ? 1 : 2;
            const int64_t at = vn[reg]++;
            if (at < out->v_cap[reg]) {
                const int64_t w = out->v_base[reg] + at;
                int64_t u;
                if (c->unc)
                    u = add(c->unc[ci], c->unc[p]);
                else if (c->node_unc)
                    u = add(c->node_unc[nc], c->node_unc[np]);
                else
                    u = 0;
                out->v_child[w] = ci;
                out->v_parent[w] = p;
                out->v_kind[w] = (int8_t)vk[k];
                out->v_mag[w] = vm[k];
                out->v_same[w] = !cross;
                out->v_definite[w] = !cross || vm[k] > u;
            }
        }
        const int viol = nv > 0;
        const int64_t pair = (int64_t)np * K + nc;
        out->pair_edges[pair]++;
        out->pair_viol[pair] += viol;
        if (c->stage) {
            const int32_t a = c->stage[p], b = c->stage[ci];
            if (a < 0 || a >= S || b < 0 || b >= S)
                return -EINVAL;
            const int64_t sq = (int64_t)a * S + b;
            out->stage_edges[sq]++;
            out->stage_viol[sq] += viol;
        }
        if (!cross)
            continue;
        int64_t q = sub(sc, o->tmin);
        int64_t wi;
        if (q < 0)
            wi = 0;
        else {
            wi = q / o->window_ns;
            if (wi > o->nwin - 1)
                wi = o->nwin - 1;
        }
        out->win_edges[wi]++;
        out->win_viol[wi] += viol;
        if (is_msg) {
            const int64_t at = mn++;
            if (at < out->m_cap) {
                out->m_pair[at] = pair;
                out->m_d[at] = d;
                if (o->keep_edges) {
                    out->me_a[at] = np;
                    out->me_b[at] = nc;
                    out->me_t[at] = sc;
                    out->me_u[at] = sub(d, o->min_msg_ns);
                    out->me_l[at] = -SKW_SPANCHECK_INF;
                    out->me_type[at] = SKW_SPANCHECK_E_MSG;
                }
            }
        } else if (o->keep_edges) {
            const int64_t at = on++;
            if (at < out->o_cap) {
                out->o_a[at] = np;
                out->o_b[at] = nc;
                out->o_t[at] = sc;
                if (is_sync) {
                    out->o_u[at] = sub(sub(sc, sp), o->min_rpc_ns);
                    out->o_l[at] = add(de, o->min_rpc_ns);
                    out->o_type[at] = SKW_SPANCHECK_E_SYNC;
                } else {
                    out->o_u[at] = sub(sc, sp);
                    out->o_l[at] = -SKW_SPANCHECK_INF;
                    out->o_type[at] = SKW_SPANCHECK_E_START;
                }
            }
        }
    }
    int over = mn > out->m_cap || on > out->o_cap;
    for (int k = 0; k < 3; k++) {
        over |= vn[k] > out->v_cap[k];
        out->v_n[k] = vn[k];
    }
    out->m_n = mn;
    out->o_n = on;
    out->n_edges += n_edges;
    out->n_msg += n_msg;
    out->n_sync += n_sync;
    return over ? -ENOSPC : 0;
}
