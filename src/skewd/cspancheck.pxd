# Declarations of csrc/spancheck.h.
from libc.stdint cimport int64_t, int32_t, int8_t, uint8_t, uint64_t

cdef extern from "spancheck.h" nogil:
    int64_t SKW_SPANCHECK_NO_PARENT
    int64_t SKW_SPANCHECK_ELSEWHERE

    struct skw_spancheck_cols:
        const int64_t *prow
        const int8_t *kind
        const int32_t *node
        const int32_t *stage
        const int64_t *start
        const int64_t *end
        const int64_t *send
        const uint8_t *has_send
        const int64_t *unc
        const int64_t *node_unc
        const int64_t *res_node
        int32_t nnodes
        int32_t nstages

    struct skw_spancheck_opts:
        int64_t min_msg_ns
        int64_t min_rpc_ns
        int64_t tmin
        int64_t window_ns
        int32_t nwin
        int32_t keep_edges

    struct skw_spancheck_out:
        int64_t *v_child
        int64_t *v_parent
        int64_t *v_mag
        int8_t *v_kind
        uint8_t *v_definite
        uint8_t *v_same
        int64_t v_base[3]
        int64_t v_cap[3]
        int64_t v_n[3]
        int64_t *m_pair
        int64_t *m_d
        int32_t *me_a
        int32_t *me_b
        int64_t *me_t
        int64_t *me_u
        int64_t *me_l
        int8_t *me_type
        int64_t m_cap
        int64_t m_n
        int32_t *o_a
        int32_t *o_b
        int64_t *o_t
        int64_t *o_u
        int64_t *o_l
        int8_t *o_type
        int64_t o_cap
        int64_t o_n
        int64_t *pair_edges
        int64_t *pair_viol
        int64_t *stage_edges
        int64_t *stage_viol
        int64_t *win_edges
        int64_t *win_viol
        int64_t n_edges
        int64_t n_msg
        int64_t n_sync

    void skw_spancheck_bits(const uint8_t *bitmap, int64_t bit0, int64_t n, uint8_t *out)
    int64_t skw_spancheck_join(const uint64_t *trace, const uint64_t *span, const uint64_t *parent,
                               const uint8_t *has_parent, int64_t lo, int64_t hi, int32_t scan_max,
                               int64_t *prow, int64_t *self_parent)
    int skw_spancheck_edges(const skw_spancheck_cols *c, const skw_spancheck_opts *o,
                            int64_t lo, int64_t hi, skw_spancheck_out *out)
