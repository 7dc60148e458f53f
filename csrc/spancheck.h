/*
 * spancheck.h - the two hot loops of `skewd check`: joining each span to its
 * parent's row, and checking every parent/child edge for causality
 * violations. The Python side (skewd.check) owns the meaning; these loops are
 * its column-at-a-time code written as one pass over the rows, so that a
 * table of tens of millions of spans is read once per step, without
 * temporaries, and row ranges can run on several threads (nothing here takes
 * a lock or writes outside the caller's range and buffers).
 *
 * Span kinds are the codes of skewd.schema.KINDS (0 internal, 1 producer,
 * 2 consumer, 3 client, 4 server). Arithmetic on times wraps like numpy's
 * int64 (two's complement), never undefined.
 *
 * Every function returns 0 (or a count) or a negative errno; nothing prints
 * or allocates.
 */
#ifndef SKW_SPANCHECK_H
#define SKW_SPANCHECK_H

#include <stdint.h>

#define SKW_SPANCHECK_NO_PARENT (-1)   /* a root, or a span whose parent was not found */
#define SKW_SPANCHECK_ELSEWHERE (-2)   /* parent not found near the span: join in general */
#define SKW_SPANCHECK_INF ((int64_t)1 << 62)

enum { SKW_SPANCHECK_NEG_TRANSPORT, SKW_SPANCHECK_BEFORE_PARENT, SKW_SPANCHECK_ENDS_AFTER };
enum { SKW_SPANCHECK_E_MSG, SKW_SPANCHECK_E_SYNC, SKW_SPANCHECK_E_START };

/* out[i] = 1 where bit bit0 + i of an Arrow validity bitmap is set, else 0,
 * for i in [0, n): the loops below read flags as bytes. */
void skw_spancheck_bits(const uint8_t *bitmap, int64_t bit0, int64_t n, uint8_t *out);

/* Parent rows of spans [lo, hi) of a table grouped by trace (rows of one
 * trace adjacent, in start order: a span's parent is then the row before it
 * or one of that row's ancestors). trace: two words per row; has_parent: 1
 * where parent_id is set. Each row's parent is looked for in its own group
 * of adjacent rows with the same trace id: up the ancestor chain of the row
 * before it (at most 64 steps), then the whole group when it has at most
 * scan_max rows, else the next 4 rows. prow[i] gets the parent's row,
 * SKW_SPANCHECK_NO_PARENT at a root or where a span names itself, or
 * SKW_SPANCHECK_ELSEWHERE. Rows before lo are never read. Returns the
 * number of ELSEWHERE rows; *self_parent gets the number of spans that
 * name themselves. */
int64_t skw_spancheck_join(const uint64_t *trace, const uint64_t *span, const uint64_t *parent,
                           const uint8_t *has_parent, int64_t lo, int64_t hi, int32_t scan_max,
                           int64_t *prow, int64_t *self_parent);

/* the span table, one entry per row (optional arrays may be NULL) */
struct skw_spancheck_cols {
    const int64_t *prow;       /* parent row or < 0 */
    const int8_t *kind;
    const int32_t *node;       /* codes in [0, nnodes) */
    const int32_t *stage;      /* optional, codes in [0, nstages) */
    const int64_t *start;
    const int64_t *end;
    const int64_t *send;       /* meaningful where has_send */
    const uint8_t *has_send;
    const int64_t *unc;        /* optional: each span's uncertainty (ns) */
    const int64_t *node_unc;   /* optional, per node, used when unc is NULL */
    const int64_t *res_node;   /* per node: clock resolution (ns, >= 1) */
    int32_t nnodes;
    int32_t nstages;
};

struct skw_spancheck_opts {
    int64_t min_msg_ns;        /* least true latency of a message */
    int64_t min_rpc_ns;        /* least true latency of an RPC leg */
    int64_t tmin;              /* start of window 0 */
    int64_t window_ns;         /* width of a window, >= 1 */
    int32_t nwin;              /* windows, >= 1 */
    int32_t keep_edges;        /* write the cross-node non-message edges */
};

/* What one range yields. Violations go to three regions of the v_* arrays,
 * one per kind in the order before-parent, negative transport, ends after
 * (region k starts at v_base[k] and holds v_cap[k]); cross-node message
 * edges to m_* (node pair, one-way delay) and, when keep_edges, as bounds to
 * me_*; other cross-node edges, when keep_edges, to o_*. The counts v_n,
 * m_n, o_n are complete even when a region overflows, so a first run with
 * no room (caps 0) counts what a second run writes into exactly sized
 * arrays. Histograms are added to (the caller zeroes them): pair_* (nnodes^2,
 * parent node x child node), stage_* (nstages^2, when stage), win_* (nwin,
 * cross-node edges). */
struct skw_spancheck_out {
    int64_t *v_child, *v_parent, *v_mag;
    int8_t *v_kind;
    uint8_t *v_definite, *v_same;
    int64_t v_base[3], v_cap[3], v_n[3];
    int64_t *m_pair, *m_d;
    int32_t *me_a, *me_b;
    int64_t *me_t, *me_u, *me_l;
    int8_t *me_type;
    int64_t m_cap, m_n;
    int32_t *o_a, *o_b;
    int64_t *o_t, *o_u, *o_l;
    int8_t *o_type;
    int64_t o_cap, o_n;
    int64_t *pair_edges, *pair_viol, *stage_edges, *stage_viol, *win_edges, *win_viol;
    int64_t n_edges, n_msg, n_sync;
};

/* Check every edge whose child is in rows [lo, hi) (see skewd.check for the
 * rules). Returns 0, or -ENOSPC when a region was too small (the caller
 * sizes them from the counts and runs the range again), -EINVAL on a code
 * out of range. */
int skw_spancheck_edges(const struct skw_spancheck_cols *c, const struct skw_spancheck_opts *o,
                        int64_t lo, int64_t hi, struct skw_spancheck_out *out);

#endif
