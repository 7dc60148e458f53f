# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# distutils: sources = csrc/spancheck.c csrc/strcodes.c
# distutils: include_dirs = csrc
"""Thin wrappers over csrc/spancheck.c and csrc/strcodes.c: string columns
to integer codes, the parent join and the edge checks. Each call checks its
arrays (dtype, contiguity, length), then runs without the GIL, so callers
split row ranges over threads. The user-facing API is skewd.check."""
from libc.errno cimport E2BIG, EINVAL, ENOSPC
from libc.stdint cimport int64_t, int32_t, int8_t, uint8_t, uint64_t, uintptr_t
from skewd.cstrcodes cimport *
from skewd.cspancheck cimport *

import numpy as np

NO_PARENT = SKW_SPANCHECK_NO_PARENT
ELSEWHERE = SKW_SPANCHECK_ELSEWHERE


cdef uintptr_t _addr(object a, object dtype, Py_ssize_t n, str what) except? 0:
    """Address of a C-contiguous numpy array of dtype with at least n items."""
    if a.dtype != dtype or not a.flags.c_contiguous or a.size < n:
        raise ValueError(f"{what}: need a contiguous {np.dtype(dtype).name} array of at least "
                         f"{n} items, got {a.dtype.name} {a.shape}")
    return <uintptr_t>a.ctypes.data


cdef uintptr_t _opt(object a, object dtype, Py_ssize_t n, str what) except? 0:
    return 0 if a is None else _addr(a, dtype, n, what)


cdef class StrCodes:
    """A dictionary of string values met so far (codes in order of first
    appearance; `first[code]` is the row where each was met, `null_code` the
    code of null or -1). One per thread."""
    cdef skw_strcodes d
    cdef readonly object first
    cdef object _slots

    def __init__(self, int cap=65536):
        if cap < 1:
            raise ValueError("cap must be positive")
        cdef int32_t nslots = 1
        while nslots < 2 * cap:
            nslots <<= 1
        self.first = np.zeros(cap, np.int64)
        self._slots = np.zeros(nslots * sizeof(skw_strcodes_slot) // 8, np.uint64)
        self.d.first = <int64_t *><uintptr_t>self.first.ctypes.data
        self.d.slots = <skw_strcodes_slot *><uintptr_t>self._slots.ctypes.data
        self.d.cap = cap
        self.d.nslots = nslots
        self.d.n = 0
        self.d.null_code = -1

    @property
    def n(self) -> int:
        return self.d.n

    @property
    def null_code(self) -> int:
        return self.d.null_code

    def encode(self, offsets, data, valid, int64_t valid_off, int64_t lo, int64_t hi, codes):
        """Codes of rows [lo, hi) into codes[0:hi-lo]; offsets int32 (n+1),
        data uint8, valid a uint8 bitmap or None. False when the column has
        more distinct values than cap."""
        if lo < 0 or hi < lo:
            raise ValueError("bad row range")
        cdef const int32_t *po = <const int32_t *>_addr(offsets, np.int32, hi + 1, "offsets")
        cdef const uint8_t *pd = <const uint8_t *>_addr(data, np.uint8, 0, "data")
        cdef int64_t nd = data.size
        cdef const uint8_t *pv = NULL
        if valid is not None:
            pv = <const uint8_t *>_addr(valid, np.uint8, (valid_off + hi + 7) // 8, "valid")
        cdef int32_t *pc = <int32_t *>_addr(codes, np.int32, hi - lo, "codes")
        cdef int rc
        with nogil:
            rc = skw_strcodes_encode(&self.d, po, pd, nd, pv, valid_off, lo, hi, pc)
        if rc == -E2BIG:
            return False
        if rc < 0:
            raise ValueError(f"string codes: error {-rc}")
        return True


def remap(codes, lut) -> None:
    """codes[i] = lut[codes[i]] in place (int32 arrays)."""
    cdef int32_t *pc = <int32_t *>_addr(codes, np.int32, codes.size, "codes")
    cdef const int32_t *pl = <const int32_t *>_addr(lut, np.int32, lut.size, "lut")
    cdef int64_t n = codes.size
    cdef int32_t nl = lut.size
    cdef int rc
    with nogil:
        rc = skw_strcodes_remap(pc, n, pl, nl)
    if rc < 0:
        raise ValueError("remap: a code is outside the lookup table")


def cross(a, b, int32_t na, int32_t nb, counts) -> None:
    """counts[a[i] * nb + b[i]] += 1 (int32 codes, int64 counts of na*nb)."""
    cdef int64_t n = a.size
    cdef const int32_t *pa_ = <const int32_t *>_addr(a, np.int32, n, "a")
    cdef const int32_t *pb = <const int32_t *>_addr(b, np.int32, n, "b")
    cdef int64_t *pc = <int64_t *>_addr(counts, np.int64, <Py_ssize_t>na * nb, "counts")
    cdef int rc
    with nogil:
        rc = skw_strcodes_cross(pa_, pb, n, na, nb, pc)
    if rc < 0:
        raise ValueError("cross: a code is out of range")


def bits(bitmap, int64_t bit0, out) -> None:
    """out[i] = bit bit0 + i of a validity bitmap (uint8), for every i of out
    (bool or uint8)."""
    cdef int64_t n = out.size
    if bit0 < 0:
        raise ValueError("bad bit offset")
    cdef const uint8_t *pb = <const uint8_t *>_addr(bitmap, np.uint8, (bit0 + n + 7) // 8, "bitmap")
    cdef uint8_t *po = <uint8_t *>_addr(out.view(np.uint8), np.uint8, n, "out")
    with nogil:
        skw_spancheck_bits(pb, bit0, n, po)


def join(trace, span, parent, has_parent, int64_t lo, int64_t hi, int32_t scan_max, prow):
    """Parent rows of spans [lo, hi) found near them (see spancheck.h);
    returns (rows left ELSEWHERE, spans that name themselves)."""
    cdef Py_ssize_t n = span.size
    if lo < 0 or hi < lo or hi > n:
        raise ValueError("bad row range")
    cdef const uint64_t *pt = <const uint64_t *>_addr(trace, np.uint64, 2 * n, "trace")
    cdef const uint64_t *ps = <const uint64_t *>_addr(span, np.uint64, n, "span")
    cdef const uint64_t *pp = <const uint64_t *>_addr(parent, np.uint64, n, "parent")
    cdef const uint8_t *ph = <const uint8_t *>_addr(has_parent.view(np.uint8), np.uint8, n,
                                                    "has_parent")
    cdef int64_t *pr = <int64_t *>_addr(prow, np.int64, n, "prow")
    cdef int64_t left, selfp = 0
    with nogil:
        left = skw_spancheck_join(pt, ps, pp, ph, lo, hi, scan_max, pr, &selfp)
    return int(left), int(selfp)


cdef class EdgeCheck:
    """The span columns and options of one detection; `run` checks a row
    range into the output arrays of a dict (see skewd.check._check_range)."""
    cdef skw_spancheck_cols c
    cdef skw_spancheck_opts o
    cdef object _keep
    cdef readonly int64_t n

    def __init__(self, prow, kind, node, stage, start, end, send, has_send, unc, node_unc,
                 res_node, int32_t nnodes, int32_t nstages, int64_t min_msg_ns,
                 int64_t min_rpc_ns, int64_t tmin, int64_t window_ns, int32_t nwin,
                 bint keep_edges):
        n = prow.size
        self.n = n
        hs = has_send.view(np.uint8)
        self._keep = (prow, kind, node, stage, start, end, send, hs, unc, node_unc, res_node)
        self.c.prow = <const int64_t *>_addr(prow, np.int64, n, "prow")
        self.c.kind = <const int8_t *>_addr(kind, np.int8, n, "kind")
        self.c.node = <const int32_t *>_addr(node, np.int32, n, "node")
        self.c.stage = <const int32_t *>_opt(stage, np.int32, n, "stage")
        self.c.start = <const int64_t *>_addr(start, np.int64, n, "start")
        self.c.end = <const int64_t *>_addr(end, np.int64, n, "end")
        self.c.send = <const int64_t *>_addr(send, np.int64, n, "send")
        self.c.has_send = <const uint8_t *>_addr(hs, np.uint8, n, "has_send")
        self.c.unc = <const int64_t *>_opt(unc, np.int64, n, "unc")
        self.c.node_unc = <const int64_t *>_opt(node_unc, np.int64, nnodes, "node_unc")
        self.c.res_node = <const int64_t *>_addr(res_node, np.int64, nnodes, "res_node")
        self.c.nnodes = nnodes
        self.c.nstages = nstages
        if nnodes < 1 or nwin < 1 or window_ns < 1 or (stage is not None and nstages < 1):
            raise ValueError("need nnodes, nwin, window_ns >= 1 (and nstages with stages)")
        self.o.min_msg_ns = min_msg_ns
        self.o.min_rpc_ns = min_rpc_ns
        self.o.tmin = tmin
        self.o.window_ns = window_ns
        self.o.nwin = nwin
        self.o.keep_edges = keep_edges

    def run(self, int64_t lo, int64_t hi, dict out):
        """Check the edges of children [lo, hi) into out's arrays (v_child,
        v_parent, v_mag, v_kind, v_definite, v_same with v_base/v_cap;
        m_pair, m_d and me_a, me_b, me_t, me_u, me_l, me_type with m_cap;
        o_a, o_b, o_t, o_u, o_l, o_type with o_cap; pair_edges, pair_viol,
        stage_edges, stage_viol, win_edges, win_viol). Returns (fits, v_n,
        m_n, o_n, n_edges, n_msg, n_sync)."""
        if lo < 0 or hi < lo or hi > self.n:
            raise ValueError("bad row range")
        cdef skw_spancheck_out r
        cdef int k
        cdef int64_t vt = 0
        for k in range(3):
            r.v_base[k] = out["v_base"][k]
            r.v_cap[k] = out["v_cap"][k]
            r.v_n[k] = 0
            vt = max(vt, r.v_base[k] + r.v_cap[k])
        r.v_child = <int64_t *>_addr(out["v_child"], np.int64, vt, "v_child")
        r.v_parent = <int64_t *>_addr(out["v_parent"], np.int64, vt, "v_parent")
        r.v_mag = <int64_t *>_addr(out["v_mag"], np.int64, vt, "v_mag")
        r.v_kind = <int8_t *>_addr(out["v_kind"], np.int8, vt, "v_kind")
        r.v_definite = <uint8_t *>_addr(out["v_definite"].view(np.uint8), np.uint8, vt,
                                        "v_definite")
        r.v_same = <uint8_t *>_addr(out["v_same"].view(np.uint8), np.uint8, vt, "v_same")
        r.m_cap = out["m_cap"]
        r.m_n = 0
        r.m_pair = <int64_t *>_addr(out["m_pair"], np.int64, r.m_cap, "m_pair")
        r.m_d = <int64_t *>_addr(out["m_d"], np.int64, r.m_cap, "m_d")
        cdef Py_ssize_t me = r.m_cap if self.o.keep_edges else 0
        r.me_a = <int32_t *>_addr(out["me_a"], np.int32, me, "me_a")
        r.me_b = <int32_t *>_addr(out["me_b"], np.int32, me, "me_b")
        r.me_t = <int64_t *>_addr(out["me_t"], np.int64, me, "me_t")
        r.me_u = <int64_t *>_addr(out["me_u"], np.int64, me, "me_u")
        r.me_l = <int64_t *>_addr(out["me_l"], np.int64, me, "me_l")
        r.me_type = <int8_t *>_addr(out["me_type"], np.int8, me, "me_type")
        r.o_cap = out["o_cap"]
        if r.o_cap and not self.o.keep_edges:
            raise ValueError("o_cap: other edges are only written when edges are kept")
        r.o_n = 0
        r.o_a = <int32_t *>_addr(out["o_a"], np.int32, r.o_cap, "o_a")
        r.o_b = <int32_t *>_addr(out["o_b"], np.int32, r.o_cap, "o_b")
        r.o_t = <int64_t *>_addr(out["o_t"], np.int64, r.o_cap, "o_t")
        r.o_u = <int64_t *>_addr(out["o_u"], np.int64, r.o_cap, "o_u")
        r.o_l = <int64_t *>_addr(out["o_l"], np.int64, r.o_cap, "o_l")
        r.o_type = <int8_t *>_addr(out["o_type"], np.int8, r.o_cap, "o_type")
        cdef Py_ssize_t kk = <Py_ssize_t>self.c.nnodes * self.c.nnodes
        cdef Py_ssize_t ss = <Py_ssize_t>self.c.nstages * self.c.nstages
        r.pair_edges = <int64_t *>_addr(out["pair_edges"], np.int64, kk, "pair_edges")
        r.pair_viol = <int64_t *>_addr(out["pair_viol"], np.int64, kk, "pair_viol")
        r.stage_edges = r.stage_viol = NULL
        if self.c.stage != NULL:
            r.stage_edges = <int64_t *>_addr(out["stage_edges"], np.int64, ss, "stage_edges")
            r.stage_viol = <int64_t *>_addr(out["stage_viol"], np.int64, ss, "stage_viol")
        r.win_edges = <int64_t *>_addr(out["win_edges"], np.int64, self.o.nwin, "win_edges")
        r.win_viol = <int64_t *>_addr(out["win_viol"], np.int64, self.o.nwin, "win_viol")
        r.n_edges = r.n_msg = r.n_sync = 0
        cdef int rc
        with nogil:
            rc = skw_spancheck_edges(&self.c, &self.o, lo, hi, &r)
        if rc < 0 and rc != -ENOSPC:
            raise ValueError("edge check: a node or stage code is out of range")
        return (rc == 0, (r.v_n[0], r.v_n[1], r.v_n[2]), r.m_n, r.o_n, r.n_edges, r.n_msg,
                r.n_sync)
