# cython: language_level=3, boundscheck=False, wraparound=False
# distutils: sources = csrc/statepage.c csrc/clock.c
# distutils: include_dirs = csrc
"""Thin wrappers over csrc/statepage.c. The user-facing API is skewd.statepage."""
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from skewd.cstatepage cimport *
import os

cdef extern from "<sys/file.h>" nogil:
    int flock(int fd, int operation)
    enum:
        LOCK_EX
        LOCK_UN

PAGE_VERSION = SKW_PAGE_VERSION
HEADER_SIZE = SKW_PAGE_HEADER_SIZE
FILE_SIZE = SKW_PAGE_FILE_SIZE
NODE_LEN = SKW_PAGE_NODE_LEN
F_INJECT = SKW_PAGE_F_INJECT
F_MEASURED = SKW_PAGE_F_MEASURED
INT64_MAX = 0x7FFFFFFFFFFFFFFF


cdef inline _raise(int rc, extra=None):
    raise OSError(-rc, os.strerror(-rc), extra)


def create(path, node, int base_clock):
    cdef bytes p = os.fsencode(path)
    cdef bytes n = node.encode()
    cdef int rc = skw_page_create(p, n, base_clock)
    if rc:
        _raise(rc, path)


cdef class Page:
    """A mapped clock-state page. Reads are lock-free; writes must hold the
    writer lock (skewd.statepage takes it)."""
    cdef skw_page *p
    cdef readonly bint writable
    cdef readonly object path
    # a private zero page for clocks that have no node
    cdef skw_page anon

    def __cinit__(self):
        self.p = NULL

    def __init__(self, path=None, bint writable=False, int base_clock=0):
        cdef int version = 0
        cdef int rc
        cdef bytes pb
        self.path = path
        self.writable = writable
        if path is None:
            self.anon.base_clock = base_clock
            self.anon.cur.start_ns = 0
            self.anon.next.start_ns = INT64_MAX
            self.p = &self.anon
            return
        pb = os.fsencode(path)
        rc = skw_page_map(pb, writable, &self.p, &version)
        if rc:
            self.p = NULL
            err = OSError(-rc, os.strerror(-rc), path)
            err.layout_version = version
            raise err

    def __dealloc__(self):
        if self.p != NULL and self.p != &self.anon:
            skw_page_unmap(self.p)
        self.p = NULL

    cdef inline void _check(self) except *:
        if self.p == NULL:
            raise ValueError("page is closed")

    @property
    def address(self):
        """Where the page is mapped, for C code in another extension (the
        probe responder); valid while this object is open."""
        self._check()
        return <uintptr_t>self.p

    def close(self):
        if self.p != NULL and self.p != &self.anon:
            skw_page_unmap(self.p)
        self.p = NULL

    def now_ns(self):
        cdef int64_t v
        if self.p == NULL:
            raise ValueError("page is closed")
        cdef int rc = skw_page_now(self.p, &v, NULL)
        if rc:
            _raise(rc, self.path)
        return v

    def now_with_offset(self):
        cdef int64_t v, off
        self._check()
        cdef int rc = skw_page_now(self.p, &v, &off)
        if rc:
            _raise(rc, self.path)
        return v, off

    def offset_at(self, int64_t t):
        """The injected offset at base-clock time t (0 when none is set)."""
        cdef skw_page_state s
        cdef int rc
        self._check()
        rc = skw_page_read(self.p, &s)
        if rc:
            _raise(rc, self.path)
        if not (s.flags & SKW_PAGE_F_INJECT):
            return 0
        return skw_segment_offset(&s.cur, &s.next, t)

    def batch(self, int64_t[::1] buf):
        cdef int rc = 0
        cdef size_t n = buf.shape[0]
        self._check()
        if n == 0:
            return
        with nogil:
            rc = skw_page_batch(self.p, &buf[0], n)
        if rc:
            _raise(rc, self.path)

    def cost_ns(self, size_t n=10000, int rounds=21):
        cdef double v
        cdef int rc
        self._check()
        with nogil:
            rc = skw_page_cost(self.p, n, rounds, &v)
        if rc:
            _raise(rc, self.path)
        return v

    def read(self):
        """Consistent snapshot as a tuple:
        (flags, base_clock, generation, cur(4), next(4), meas(4))."""
        cdef skw_page_state s
        cdef int rc
        self._check()
        with nogil:
            rc = skw_page_read(self.p, &s)
        if rc:
            _raise(rc, self.path)
        return (s.flags, s.base_clock, s.generation,
                (s.cur.start_ns, s.cur.offset_ns, s.cur.drift_ppb, s.cur.epoch_ns),
                (s.next.start_ns, s.next.offset_ns, s.next.drift_ppb, s.next.epoch_ns),
                (s.meas_offset_ns, s.meas_uncertainty_ns, s.meas_drift_ppb, s.meas_time_ns))

    def write(self, unsigned int flags, int base_clock, cur, nxt, meas):
        cdef skw_page_state s
        self._check()
        if not self.writable:
            raise PermissionError("page %s is mapped read-only" % (self.path,))
        s.flags = flags
        s.base_clock = base_clock
        s.generation = 0
        s.cur.start_ns, s.cur.offset_ns, s.cur.drift_ppb, s.cur.epoch_ns = cur
        s.next.start_ns, s.next.offset_ns, s.next.drift_ppb, s.next.epoch_ns = nxt
        (s.meas_offset_ns, s.meas_uncertainty_ns, s.meas_drift_ppb,
         s.meas_time_ns) = meas
        with nogil:
            skw_page_write(self.p, &s)

    def repair(self):
        self._check()
        return bool(skw_page_repair(self.p))

    @property
    def seq(self):
        self._check()
        return self.p.seq

    @property
    def node(self):
        self._check()
        return self.p.node.decode(errors="replace")

    def stress_write(self, int64_t n, int64_t start=1, int lock_fd=-1):
        """Rewrite the page n times as fast as the real write path allows
        (flock on lock_fd, seqlocked write, unlock), with every field a
        function of one counter k (for the torn-read test)."""
        cdef skw_page_state s
        cdef int64_t k
        self._check()
        with nogil:
            for k in range(start, start + n):
                if lock_fd >= 0:
                    flock(lock_fd, LOCK_EX)
                s.flags = 1
                s.base_clock = 0
                s.cur.start_ns = k
                s.cur.offset_ns = -k
                s.cur.drift_ppb = 2 * k
                s.cur.epoch_ns = 3 * k
                s.next.start_ns = 4 * k
                s.next.offset_ns = 5 * k
                s.next.drift_ppb = 6 * k
                s.next.epoch_ns = 7 * k
                s.meas_offset_ns = 8 * k
                s.meas_uncertainty_ns = 9 * k
                s.meas_drift_ppb = 10 * k
                s.meas_time_ns = 11 * k
                skw_page_write(self.p, &s)
                if lock_fd >= 0:
                    flock(lock_fd, LOCK_UN)

    def stress_read(self, int64_t n):
        """Read n snapshots; count those where the fields disagree about k.
        Returns (bad, distinct_changes)."""
        cdef skw_page_state s
        cdef int64_t i, k, bad = 0, changes = 0, last = -1
        cdef int rc
        self._check()
        with nogil:
            for i in range(n):
                rc = skw_page_read(self.p, &s)
                if rc:
                    break
                k = s.cur.start_ns
                if (s.cur.offset_ns != -k or s.cur.drift_ppb != 2 * k or
                        s.cur.epoch_ns != 3 * k or s.next.start_ns != 4 * k or
                        s.next.offset_ns != 5 * k or s.next.drift_ppb != 6 * k or
                        s.next.epoch_ns != 7 * k or s.meas_offset_ns != 8 * k or
                        s.meas_uncertainty_ns != 9 * k or s.meas_drift_ppb != 10 * k or
                        s.meas_time_ns != 11 * k):
                    bad += 1
                if k != last:
                    changes += 1
                    last = k
        if rc:
            _raise(rc, self.path)
        return bad, changes


def stress_read_unlocked(Page page, int64_t n):
    """The same check as Page.stress_read without the seqlock: a control that
    shows the invariant check does catch torn reads."""
    cdef const skw_page *p = page.p
    cdef int64_t i, k, bad = 0
    cdef volatile int64_t *f
    if p == NULL:
        raise ValueError("page is closed")
    f = <volatile int64_t *>&p.cur
    with nogil:
        for i in range(n):
            k = f[0]
            if (f[1] != -k or f[2] != 2 * k or f[3] != 3 * k or f[4] != 4 * k or
                    f[5] != 5 * k or f[6] != 6 * k or f[7] != 7 * k or
                    f[8] != 8 * k or f[9] != 9 * k or f[10] != 10 * k or f[11] != 11 * k):
                bad += 1
    return bad


def segment_offset(cur, nxt, int64_t t):
    cdef skw_segment c, x
    c.start_ns, c.offset_ns, c.drift_ppb, c.epoch_ns = cur
    x.start_ns, x.offset_ns, x.drift_ppb, x.epoch_ns = nxt
    return skw_segment_offset(&c, &x, t)
