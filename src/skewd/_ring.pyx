# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# distutils: sources = csrc/ring.c csrc/statepage.c csrc/clock.c csrc/tracectx.c
# distutils: include_dirs = csrc
"""Thin wrappers over csrc/ring.c: the span handle, the span context and the
per-tracer core, and the trace context's wire forms (csrc/tracectx.c). The
user-facing API is skewd.tracer."""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport ENOBUFS, ENOMEM, ENOSPC, EPIPE, ETIMEDOUT
from libc.stdint cimport int64_t, uint64_t, uint32_t, uint8_t, int8_t, int32_t
from libc.string cimport memcmp, memcpy, memset
from skewd.cstatepage cimport skw_page, skw_page_map, skw_page_unmap
from skewd.cring cimport *
from skewd.ctracectx cimport *

import os
import threading

import numpy as np

NULL_NS = SKW_RING_NULL
MAX_RING_SIZE = SKW_RING_MAX_SIZE
KINDS = ("internal", "producer", "consumer", "client", "server")
cdef dict _KIND = {k: i for i, k in enumerate(KINDS)}
DEF KIND_PRODUCER = 1
DEF KIND_CONSUMER = 2
# a producer waits at most this long for room in blocking mode, then drops
cdef int64_t BLOCK_TIMEOUT_NS = 10_000_000_000


cdef inline uint64_t _be64(bytes b, Py_ssize_t at):
    cdef const unsigned char *p = b
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v = (v << 8) | p[at + i]
    return v


cdef inline bytes _to_bytes(uint64_t v):
    return v.to_bytes(8, "big")


cdef inline bytes _tp_bytes(uint64_t hi, uint64_t lo, uint64_t sid, bint sampled):
    cdef bytes b = PyBytes_FromStringAndSize(NULL, SKW_TRACECTX_TP_LEN)
    skw_tracectx_format(PyBytes_AS_STRING(b), hi, lo, sid, 1 if sampled else 0)
    return b


cdef class SpanContext:
    """What a span hands to its children and to the messages it sends: a
    16-byte trace id, an 8-byte span id and the sampled flag (W3C trace
    context). Immutable and hashable."""
    cdef readonly uint64_t _hi, _lo, _sid
    cdef readonly bint sampled

    def __init__(self, bytes trace_id, bytes span_id, bint sampled=True):
        if len(trace_id) != 16 or len(span_id) != 8:
            raise ValueError(f"trace_id must be 16 bytes and span_id 8 bytes, got "
                             f"{len(trace_id)} and {len(span_id)}")
        self._hi = _be64(trace_id, 0)
        self._lo = _be64(trace_id, 8)
        self._sid = _be64(span_id, 0)
        if (self._hi == 0 and self._lo == 0) or self._sid == 0:
            raise ValueError("an all-zero trace id or span id is invalid (W3C trace context)")
        self.sampled = sampled

    @property
    def trace_id(self) -> bytes:
        return _to_bytes(self._hi) + _to_bytes(self._lo)

    @property
    def span_id(self) -> bytes:
        return _to_bytes(self._sid)

    @property
    def traceparent(self) -> str:
        """The W3C traceparent value: 00-<trace id>-<span id>-<flags>."""
        return _tp_bytes(self._hi, self._lo, self._sid, self.sampled).decode("ascii")

    @property
    def traceparent_bytes(self) -> bytes:
        """The W3C traceparent value as 55 ASCII bytes (what headers carry)."""
        return _tp_bytes(self._hi, self._lo, self._sid, self.sampled)

    def __eq__(self, other):
        if not isinstance(other, SpanContext):
            return NotImplemented
        cdef SpanContext o = other
        return (self._hi == o._hi and self._lo == o._lo and self._sid == o._sid
                and self.sampled == o.sampled)

    def __hash__(self):
        return hash((self._hi, self._lo, self._sid, self.sampled))

    def __repr__(self):
        return (f"SpanContext(trace_id={self.trace_id.hex()}, span_id={self.span_id.hex()}, "
                f"sampled={bool(self.sampled)})")

    def __reduce__(self):
        return (SpanContext, (self.trace_id, self.span_id, bool(self.sampled)))


cdef inline SpanContext _ctx(uint64_t hi, uint64_t lo, uint64_t sid, bint sampled):
    cdef SpanContext c = SpanContext.__new__(SpanContext)
    c._hi = hi
    c._lo = lo
    c._sid = sid
    c.sampled = sampled
    return c


@cython.freelist(64)
@cython.final
cdef class Span:
    """One span: created by Tracer.span(), timed by `with` (or start()/end()).
    Its times are read from the node's skewed clock in C."""
    cdef Core core
    cdef skw_ring *ring
    cdef uint64_t hi, lo, sid, pid
    cdef uint64_t prev_hi, prev_lo, prev_sid
    cdef uint8_t prev_valid, prev_sampled, kcode, flags, state
    cdef uint32_t name_id
    cdef int64_t t_start, t_end, t_send, inj
    cdef int64_t est[2]

    def __enter__(self):
        self._start()
        return self

    cdef int _start(self) except -1:
        cdef int err = 0
        cdef skw_ring *r
        if self.state != 0:
            raise RuntimeError("a span can be entered once")
        r = skw_ring_get(self.core.t, &err)
        if r == NULL:
            self.core._ring_error(err)
            self.state = 3  # not recorded; its context still propagates
            return 0
        if skw_ring_now(r, &self.t_start, &self.inj, self.est) != 0:
            self.core._clock_error()
        self.ring = r
        self.prev_hi = skw_ring_current.trace_hi
        self.prev_lo = skw_ring_current.trace_lo
        self.prev_sid = skw_ring_current.span_id
        self.prev_valid = skw_ring_current.valid
        self.prev_sampled = skw_ring_current.sampled
        skw_ring_current.trace_hi = self.hi
        skw_ring_current.trace_lo = self.lo
        skw_ring_current.span_id = self.sid
        skw_ring_current.valid = 1
        skw_ring_current.sampled = self.flags & SKW_RING_F_SAMPLED
        self.state = 1
        return 0

    def __exit__(self, exc_type, exc, tb):
        self._finish()
        return False

    cdef int _finish(self) except -1:
        cdef int err = 0, rc
        cdef skw_ring *r
        cdef skw_span_rec rec
        cdef Core core = self.core
        if self.state != 1:
            if self.state == 3:
                self.state = 2
                return 0
            raise RuntimeError("span ended twice or never started")
        self.state = 2
        r = skw_ring_get(core.t, &err)
        if r == NULL:
            core._ring_error(err)
            return 0
        if skw_ring_now(r, &self.t_end, NULL, NULL) != 0:
            core._clock_error()
        if r == self.ring:  # same thread: restore its current span
            skw_ring_current.trace_hi = self.prev_hi
            skw_ring_current.trace_lo = self.prev_lo
            skw_ring_current.span_id = self.prev_sid
            skw_ring_current.valid = self.prev_valid
            skw_ring_current.sampled = self.prev_sampled
        rec.trace_hi = self.hi
        rec.trace_lo = self.lo
        rec.span_id = self.sid
        rec.parent_id = self.pid
        rec.start_ns = self.t_start
        rec.end_ns = self.t_end
        rec.send_ns = self.t_send
        rec.injected_offset_ns = self.inj
        rec.est_offset_ns = self.est[0]
        rec.est_uncertainty_ns = self.est[1]
        rec.name_id = self.name_id
        rec.kind = self.kcode
        rec.flags = self.flags
        if core.block:
            rc = skw_ring_append(r, &rec, 0)
            while rc == -ENOBUFS:
                with nogil:
                    rc = skw_ring_wait_space(r, BLOCK_TIMEOUT_NS)
                if rc == 0:
                    rc = skw_ring_append(r, &rec, 0)
                elif rc == -ETIMEDOUT:
                    rc = skw_ring_append(r, &rec, 1)  # counts the drop
                    core.block_timeouts += 1
                    break
        else:
            skw_ring_append(r, &rec, 1)
        return 0

    def start(self):
        """Start the span now (what `with` does on entry); returns it."""
        self._start()
        return self

    def end(self):
        """End the span now and record it (what `with` does on exit)."""
        self._finish()

    def set_send_ns(self, int64_t t):
        """Producer: the skewed-clock time the message left. Consumer: the
        send time the message carried."""
        self.t_send = t

    def mark_send(self):
        """Stamp send_ns with the skewed clock now and return it (int ns)."""
        cdef int err = 0
        cdef int64_t t = 0
        cdef skw_ring *r = skw_ring_get(self.core.t, &err)
        if r == NULL or skw_ring_now(r, &t, NULL, NULL) != 0:
            t = self.core.now_ns()
        self.t_send = t
        return t

    @property
    def context(self) -> SpanContext:
        return _ctx(self.hi, self.lo, self.sid, self.flags & SKW_RING_F_SAMPLED)

    @property
    def traceparent_bytes(self) -> bytes:
        """This span's context as a W3C traceparent, 55 ASCII bytes."""
        return _tp_bytes(self.hi, self.lo, self.sid, self.flags & SKW_RING_F_SAMPLED)

    @property
    def trace_id(self) -> bytes:
        return _to_bytes(self.hi) + _to_bytes(self.lo)

    @property
    def span_id(self) -> bytes:
        return _to_bytes(self.sid)

    @property
    def parent_id(self):
        return _to_bytes(self.pid) if self.pid else None

    @property
    def kind(self) -> str:
        return KINDS[self.kcode]

    @property
    def name(self) -> str:
        return self.core.name_list[self.name_id]

    @property
    def start_ns(self):
        return self.t_start if self.state in (1, 2) else None

    @property
    def end_ns(self):
        return self.t_end if self.state == 2 and self.ring != NULL else None

    @property
    def send_ns(self):
        return None if self.t_send == SKW_RING_NULL else self.t_send

    @property
    def injected_offset_ns(self):
        return None if self.state == 0 or self.inj == SKW_RING_NULL else self.inj

    @property
    def recording(self) -> bool:
        return self.state == 1

    def __repr__(self):
        return (f"<Span {self.name!r} {KINDS[self.kcode]} trace={self.trace_id.hex()} "
                f"span={self.span_id.hex()}>")


NULLABLE = ("parent_id", "send_ns", "injected_offset_ns", "est_offset_ns",
            "est_uncertainty_ns")


cdef class Columns:
    """Reusable column buffers a drain fills (numpy arrays, `size` rows),
    laid out as Arrow buffers: fixed-size ids, int64 columns, validity
    bitmaps with null counts, and the name column as string offsets + data."""
    cdef skw_cols c
    cdef readonly Py_ssize_t size
    cdef readonly object trace_id, span_id, parent_id, name_id, kind
    cdef readonly object start_ns, end_ns, send_ns, injected_offset_ns
    cdef readonly object est_offset_ns, est_uncertainty_ns
    cdef readonly object valid, null_counts, name_offsets, name_data
    cdef object _names_blob, _names_offsets
    cdef Py_ssize_t _names_len

    def __init__(self, Py_ssize_t size):
        cdef uint8_t[::1] u8
        cdef uint32_t[::1] u32
        cdef int8_t[::1] i8
        cdef int64_t[::1] i64
        cdef int32_t[::1] i32
        cdef int i
        if size < 1:
            raise ValueError("size must be positive")
        self.size = size
        self.trace_id = np.zeros(size * 16, dtype=np.uint8)
        self.span_id = np.zeros(size * 8, dtype=np.uint8)
        self.parent_id = np.zeros(size * 8, dtype=np.uint8)
        self.name_id = np.zeros(size, dtype=np.uint32)
        self.kind = np.zeros(size, dtype=np.int8)
        self.start_ns = np.zeros(size, dtype=np.int64)
        self.end_ns = np.zeros(size, dtype=np.int64)
        self.send_ns = np.zeros(size, dtype=np.int64)
        self.injected_offset_ns = np.zeros(size, dtype=np.int64)
        self.est_offset_ns = np.zeros(size, dtype=np.int64)
        self.est_uncertainty_ns = np.zeros(size, dtype=np.int64)
        self.valid = [np.zeros((size + 7) // 8, dtype=np.uint8) for _ in NULLABLE]
        self.null_counts = np.zeros(len(NULLABLE), dtype=np.int64)
        self.name_offsets = np.zeros(size + 1, dtype=np.int32)
        u8 = self.trace_id; self.c.trace_id = &u8[0]
        u8 = self.span_id; self.c.span_id = &u8[0]
        u8 = self.parent_id; self.c.parent_id = &u8[0]
        u32 = self.name_id; self.c.name_id = &u32[0]
        i8 = self.kind; self.c.kind = &i8[0]
        i64 = self.start_ns; self.c.start_ns = &i64[0]
        i64 = self.end_ns; self.c.end_ns = &i64[0]
        i64 = self.send_ns; self.c.send_ns = &i64[0]
        i64 = self.injected_offset_ns; self.c.injected_offset_ns = &i64[0]
        i64 = self.est_offset_ns; self.c.est_offset_ns = &i64[0]
        i64 = self.est_uncertainty_ns; self.c.est_uncertainty_ns = &i64[0]
        for i in range(SKW_COL_NULLABLE):
            u8 = self.valid[i]
            self.c.valid[i] = &u8[0]
        i32 = self.name_offsets; self.c.name_offsets = &i32[0]
        self._names_len = -1
        self.set_names([])

    def set_names(self, list names):
        """Give the drain the tracer's name table (only rebuilt when it grew)."""
        cdef Py_ssize_t n = len(names)
        cdef int32_t[::1] i32
        cdef uint8_t[::1] u8
        if n == self._names_len:
            return
        enc = [s.encode() for s in names[:n]]
        offs = np.zeros(n + 1, dtype=np.int32)
        if n:
            offs[1:] = np.cumsum([len(b) for b in enc])
        blob = np.frombuffer(b"".join(enc) + b"\0", dtype=np.uint8).copy()
        longest = max([len(b) for b in enc] + [1])
        cap = longest * self.size
        if self.name_data is None or len(self.name_data) < cap:
            self.name_data = np.zeros(cap, dtype=np.uint8)
            u8 = self.name_data
            self.c.name_data = <char *>&u8[0]
            self.c.name_data_cap = cap
        self._names_blob, self._names_offsets = blob, offs
        u8 = blob
        self.c.names_blob = <const char *>&u8[0]
        i32 = offs
        self.c.names_offsets = &i32[0]
        self.c.names_count = <uint32_t>n
        self._names_len = n

    def nulls(self):
        """Null counts of the nullable columns of the last drain, by name."""
        return dict(zip(NULLABLE, self.null_counts.tolist()))

    cdef void _store_counts(self):
        cdef int i
        for i in range(SKW_COL_NULLABLE):
            self.null_counts[i] = self.c.null_count[i]


cdef class Core:
    """The C side of one Tracer: its rings, its clock page and its name table."""
    cdef skw_tracer *t
    cdef skw_page *page
    cdef readonly object page_path
    cdef readonly bint block
    cdef readonly bint closed
    cdef readonly dict names
    cdef readonly list name_list
    cdef object _names_lock
    cdef public uint64_t ring_errors, clock_errors, block_timeouts

    def __cinit__(self):
        self.t = NULL
        self.page = NULL

    def __init__(self, page_path=None, uint32_t ring_size=65536, bint block=False):
        cdef int rc, version = 0
        cdef bytes pb
        self.page_path = page_path
        self.block = block
        self.names = {}
        self.name_list = []
        self._names_lock = threading.Lock()
        if ring_size < 1 or ring_size > SKW_RING_MAX_SIZE:
            raise ValueError(f"ring_size must be 1..{SKW_RING_MAX_SIZE}, got {ring_size}")
        if page_path is not None:
            pb = os.fsencode(page_path)
            rc = skw_page_map(pb, 0, &self.page, &version)
            if rc:
                self.page = NULL
                raise OSError(-rc, os.strerror(-rc), page_path)
        rc = skw_tracer_new(self.page, ring_size, &self.t)
        if rc:
            raise OSError(-rc, os.strerror(-rc))

    def __dealloc__(self):
        if self.t != NULL:
            skw_tracer_free(self.t)
            self.t = NULL
        if self.page != NULL:
            skw_page_unmap(self.page)
            self.page = NULL

    @property
    def ring_size(self) -> int:
        return skw_tracer_ring_size(self.t)

    cdef void _ring_error(self, int err):
        self.ring_errors += 1

    cdef void _clock_error(self):
        self.clock_errors += 1

    cdef uint32_t _name_id(self, name) except? 0xFFFFFFFF:
        cdef object v = self.names.get(name)
        if v is not None:
            return <uint32_t>v
        if type(name) is not str:
            raise TypeError(f"span name must be a str, got {type(name).__name__}")
        with self._names_lock:
            v = self.names.get(name)
            if v is None:
                v = len(self.name_list)
                self.name_list.append(name)
                self.names[name] = v
        return <uint32_t>v

    def span(self, name, kind="internal", parent=None, send_ns=None):
        """A new span (not started): with parent=None it is a child of this
        thread's current span, or the root of a new trace; parent=False
        always starts a new trace."""
        cdef object k
        if kind == "internal":
            return self._new(name, 0, parent, send_ns)
        k = _KIND.get(kind)
        if k is None:
            raise ValueError(f"span kind {kind!r} is not one of {', '.join(KINDS)}")
        return self._new(name, <uint8_t>k, parent, send_ns)

    def consumer(self, name, parent, send_ns):
        """span(name, "consumer", parent, send_ns), started: a message's
        receipt in one call. End it with .end()."""
        cdef Span s = self._new(name, KIND_CONSUMER, parent, send_ns)
        s._start()
        return s

    def producer(self, name, parent=None):
        """span(name, "producer", parent), started: a message's sending in
        one call. Stamp the send with .mark_send(), end it with .end()."""
        cdef Span s = self._new(name, KIND_PRODUCER, parent, None)
        s._start()
        return s

    cdef Span _new(self, name, uint8_t kcode, parent, send_ns):
        cdef Span s = Span.__new__(Span)
        cdef SpanContext pc
        cdef Span ps
        s.core = self
        s.name_id = self._name_id(name)
        s.kcode = kcode
        if parent is None:
            if skw_ring_current.valid:
                s.hi = skw_ring_current.trace_hi
                s.lo = skw_ring_current.trace_lo
                s.pid = skw_ring_current.span_id
                s.flags = skw_ring_current.sampled
            else:
                s.hi = skw_ring_rand64()
                s.lo = skw_ring_rand64()
                s.pid = 0
                s.flags = SKW_RING_F_SAMPLED
        elif type(parent) is SpanContext:
            pc = <SpanContext>parent
            s.hi = pc._hi
            s.lo = pc._lo
            s.pid = pc._sid
            s.flags = SKW_RING_F_SAMPLED if pc.sampled else 0
        elif type(parent) is Span:
            ps = <Span>parent
            s.hi = ps.hi
            s.lo = ps.lo
            s.pid = ps.sid
            s.flags = ps.flags
        elif parent is False:
            s.hi = skw_ring_rand64()
            s.lo = skw_ring_rand64()
            s.pid = 0
            s.flags = SKW_RING_F_SAMPLED
        else:
            raise TypeError(f"parent must be a SpanContext, a Span, None or False, "
                            f"got {type(parent).__name__}")
        s.sid = skw_ring_rand64()
        s.t_send = SKW_RING_NULL if send_ns is None else <int64_t>send_ns
        s.inj = SKW_RING_NULL
        s.est[0] = SKW_RING_NULL
        s.est[1] = SKW_RING_NULL
        return s

    def now_ns(self):
        """The skewed clock this tracer stamps spans with."""
        cdef int err = 0
        cdef int64_t t
        cdef skw_ring *r = skw_ring_get(self.t, &err)
        if r == NULL:
            raise OSError(-err, os.strerror(-err))
        rc = skw_ring_now(r, &t, NULL, NULL)
        if rc:
            raise OSError(-rc, os.strerror(-rc))
        return t

    def drain(self, Columns cols, Py_ssize_t limit=-1):
        """Copy waiting records into cols; returns how many."""
        cdef size_t n = 0
        cdef size_t mx = cols.size if limit < 0 or limit > cols.size else limit
        if self.t == NULL:
            return 0
        cols.set_names(self.name_list)
        # with the GIL held: copying even a full batch takes well under a
        # millisecond, while giving the GIL up would make the drain win it
        # back from a busy thread (a switch interval) for every batch
        skw_tracer_drain(self.t, &cols.c, mx, &n)
        cols._store_counts()
        return n

    def wait(self, double timeout_s):
        """Sleep until a writer kicks the drainer or timeout_s passes."""
        cdef int64_t ns = <int64_t>(timeout_s * 1e9)
        with nogil:
            skw_tracer_wait(self.t, ns)

    def wait_work(self, double interval_s, double limit_s):
        """Sleep until a drain is due (see skw_tracer_wait_work): 1 kicked,
        0 records waiting and interval_s passed, negative: idle until limit_s."""
        cdef int64_t ins = <int64_t>(interval_s * 1e9)
        cdef int64_t lns = <int64_t>(limit_s * 1e9)
        cdef int rc
        with nogil:
            rc = skw_tracer_wait_work(self.t, ins, lns)
        return rc

    def pending(self) -> bool:
        """Whether any ring holds records not drained yet."""
        cdef int p
        if self.t == NULL or self.closed:
            return False
        with nogil:
            p = skw_tracer_pending(self.t)
        return p != 0

    def kick(self):
        skw_tracer_kick(self.t)

    def stats(self) -> dict:
        cdef skw_ring_stats st
        skw_tracer_stats(self.t, &st)
        return {"recorded": st.recorded, "dropped": st.dropped, "drained": st.drained,
                "rings": st.rings, "pending": st.pending,
                "ring_errors": self.ring_errors, "clock_errors": self.clock_errors,
                "block_timeouts": self.block_timeouts}

    def close(self):
        """Stop recording and free the rings (drain them first)."""
        if not self.closed:
            self.closed = True
            with nogil:
                skw_tracer_close(self.t)

    def prefork(self):
        with nogil:
            skw_tracer_prefork(self.t)

    def postfork_parent(self):
        skw_tracer_postfork_parent(self.t)

    def postfork_child(self):
        skw_tracer_postfork_child(self.t)

    def fill(self, size_t n, name="synthetic"):
        """Append n synthetic spans to this thread's ring (benchmarks, tests);
        returns how many fitted."""
        cdef int err = 0
        cdef uint32_t nid = self._name_id(name)
        cdef skw_ring *r = skw_ring_get(self.t, &err)
        cdef size_t got
        if r == NULL:
            raise OSError(-err, os.strerror(-err))
        with nogil:
            got = skw_ring_fill(r, n, nid)
        return got


def current_context():
    """This thread's current span context, or None."""
    if not skw_ring_current.valid:
        return None
    return _ctx(skw_ring_current.trace_hi, skw_ring_current.trace_lo,
                skw_ring_current.span_id, skw_ring_current.sampled)


def rand64():
    return skw_ring_rand64()


def parse_traceparent_fast(value):
    """The SpanContext of a canonical version-00 traceparent given as bytes,
    or None for anything else (skewd.tracer's general parser decides)."""
    cdef uint64_t hi, lo, sid
    cdef uint8_t fl
    if type(value) is not bytes:
        return None
    if skw_tracectx_parse(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value),
                          &hi, &lo, &sid, &fl) != 0:
        return None
    return _ctx(hi, lo, sid, fl & 1)


def parse_ns_fast(value):
    """A send time given as plain decimal bytes ("-?[0-9]{1,19}", in int64
    range), or None for anything else (the general parser decides)."""
    cdef int64_t v
    if type(value) is not bytes:
        return None
    if skw_tracectx_parse_ns(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), &v) != 0:
        return None
    return v


def format_ns(int64_t v):
    """v in decimal ASCII bytes."""
    cdef char buf[SKW_TRACECTX_NS_MAX_LEN]
    cdef size_t n = skw_tracectx_format_ns(buf, v)
    return PyBytes_FromStringAndSize(buf, <Py_ssize_t>n)


cdef str _TP_KEY = "traceparent"
cdef str _NS_KEY = "skewd-send-ns"


def extract_list_fast(headers):
    """(context, send_ns) from a list of (str, bytes) header tuples whose
    keys are exactly "traceparent" and "skewd-send-ns" with canonical values
    (what inject_headers writes), or None for anything else: other keys,
    types or forms go to skewd.tracer's general extract_headers."""
    cdef Py_ssize_t i, n
    cdef object item, key, value, ctx = None, send = None
    cdef bint seen_tp = False, seen_ns = False
    cdef uint64_t hi, lo, sid
    cdef uint8_t fl
    cdef int64_t v
    if type(headers) is not list:
        return None
    n = len(<list>headers)
    for i in range(n):
        item = (<list>headers)[i]
        if type(item) is not tuple or len(<tuple>item) != 2:
            return None
        key = (<tuple>item)[0]
        value = (<tuple>item)[1]
        if type(key) is not str or type(value) is not bytes:
            return None
        if key == _TP_KEY:
            if seen_tp:
                continue  # the first one counts, as in the general path
            seen_tp = True
            if skw_tracectx_parse(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value),
                                  &hi, &lo, &sid, &fl) != 0:
                return None
            ctx = _ctx(hi, lo, sid, fl & 1)
        elif key == _NS_KEY:
            if seen_ns:
                continue
            seen_ns = True
            if skw_tracectx_parse_ns(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value),
                                     &v) != 0:
                return None
            send = v
        else:
            return None
    return ctx, send


cdef inline bint _ids_of(object ctx, uint64_t *hi, uint64_t *lo, uint64_t *sid,
                        bint *sampled):
    """A Span's or SpanContext's ids and sampled flag; False for any other type."""
    cdef Span s
    cdef SpanContext c
    if type(ctx) is Span:
        s = <Span>ctx
        hi[0], lo[0], sid[0], sampled[0] = s.hi, s.lo, s.sid, s.flags & SKW_RING_F_SAMPLED
        return True
    if type(ctx) is SpanContext:
        c = <SpanContext>ctx
        hi[0], lo[0], sid[0], sampled[0] = c._hi, c._lo, c._sid, c.sampled
        return True
    return False


cdef inline bint _int64(object v):
    return type(v) is int and -2**63 < v < 2**63


def headers_fast(ctx, send_ns):
    """[("traceparent", ...), ("skewd-send-ns", ...)] for a Span or
    SpanContext and an int send time (either may be None), or None when
    either is of another type (the general inject_headers handles it)."""
    cdef list out = []
    cdef uint64_t hi, lo, sid
    cdef bint sampled
    cdef char buf[SKW_TRACECTX_NS_MAX_LEN]
    cdef size_t k
    cdef int64_t v
    if _ids_of(ctx, &hi, &lo, &sid, &sampled):
        out.append((_TP_KEY, _tp_bytes(hi, lo, sid, sampled)))
    elif ctx is not None:
        return None
    if send_ns is not None:
        if not _int64(send_ns):
            return None
        v = send_ns
        k = skw_tracectx_format_ns(buf, v)
        out.append((_NS_KEY, PyBytes_FromStringAndSize(buf, <Py_ssize_t>k)))
    return out


# --- trace frames ----------------------------------------------------------------------
# A trace frame is the trace context and send time of a message in 32 bytes,
# for a transport that carries them in a frame of their own (ZeroMQ): trace id
# (16 bytes) and span id (8 bytes) as in a traceparent, then the send time as
# a little-endian uint64 whose top bit is the sampled flag. 32 bytes is the
# most ZeroMQ keeps inside the message itself: a longer frame costs the
# receiving process a buffer allocation per message (~4 µs of its CPU).

TRACE_FRAME_LEN = 32
# b"SKW2", how a header block begins, as a trace id's first 4 bytes
DEF BLOCK_MAGIC_BE32 = 0x534B5732


cdef inline void _put_be64(char *p, uint64_t v):
    cdef int i
    for i in range(8):
        p[i] = <char>((v >> (56 - 8 * i)) & 0xff)


def trace_frame(ctx, send_ns):
    """The 32-byte trace frame of ctx (a Span or SpanContext) and send_ns (an
    int, 0 <= send_ns < 2**63); None when either is of another type or out of
    range, or when the frame would begin like a header block (b"SKW2"): the
    caller then writes a header block instead."""
    cdef uint64_t hi, lo, sid, v
    cdef bint sampled
    cdef int i
    if (not _ids_of(ctx, &hi, &lo, &sid, &sampled) or type(send_ns) is not int
            or not 0 <= send_ns < 2**63):
        return None
    if hi >> 32 == BLOCK_MAGIC_BE32:
        return None
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    cdef char *p = PyBytes_AS_STRING(out)
    _put_be64(p, hi)
    _put_be64(p + 8, lo)
    _put_be64(p + 16, sid)
    v = <uint64_t>(<int64_t>send_ns) | ((<uint64_t>1 << 63) if sampled else 0)
    for i in range(8):
        p[24 + i] = <char>((v >> (8 * i)) & 0xff)
    return out


def parse_trace_frame(bytes buf):
    """(context, send_ns) from a trace frame; None when buf is not one (not
    32 bytes, begins like a header block, or zero ids)."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(buf)
    cdef uint64_t hi, lo, sid, v = 0
    cdef int i
    if PyBytes_GET_SIZE(buf) != 32:
        return None
    hi = _be64(buf, 0)
    lo = _be64(buf, 8)
    sid = _be64(buf, 16)
    if hi >> 32 == BLOCK_MAGIC_BE32 or (hi == 0 and lo == 0) or sid == 0:
        return None
    for i in range(8):
        v |= (<uint64_t>p[24 + i]) << (8 * i)
    return _ctx(hi, lo, sid, v >> 63), <int64_t>(v & ~(<uint64_t>1 << 63))


# --- header blocks ---------------------------------------------------------------------
# A header block is what a transport without native headers (ZeroMQ) carries:
# per header, key length (1 byte), value length (2 bytes, little-endian), key,
# value. These two write and read the usual two headers, traceparent then
# skewd-send-ns, in one call, without a (key, value) list in between.

cdef bytes _TP_KEY_B = b"traceparent"
cdef bytes _NS_KEY_B = b"skewd-send-ns"
DEF TP_KLEN = 11
DEF NS_KLEN = 13


cdef inline char *_put_head(char *p, const char *key, int klen, int vlen):
    p[0] = <char>klen
    p[1] = <char>(vlen & 0xff)
    p[2] = <char>(vlen >> 8)
    memcpy(p + 3, key, klen)
    return p + 3 + klen


def header_block(bytes prefix, ctx, send_ns):
    """prefix + the block of the two headers (traceparent of ctx, a Span or
    SpanContext; skewd-send-ns of the int send_ns), or None when either is of
    another type (the caller encodes them the general way)."""
    cdef uint64_t hi, lo, sid
    cdef bint sampled
    cdef char nsbuf[SKW_TRACECTX_NS_MAX_LEN]
    cdef size_t k
    cdef int64_t v
    cdef Py_ssize_t plen = PyBytes_GET_SIZE(prefix)
    if not _ids_of(ctx, &hi, &lo, &sid, &sampled) or not _int64(send_ns):
        return None
    v = send_ns
    k = skw_tracectx_format_ns(nsbuf, v)
    cdef bytes out = PyBytes_FromStringAndSize(
        NULL, plen + 3 + TP_KLEN + SKW_TRACECTX_TP_LEN + 3 + NS_KLEN + <Py_ssize_t>k)
    cdef char *p = PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(prefix), plen)
    p = _put_head(p + plen, PyBytes_AS_STRING(_TP_KEY_B), TP_KLEN, SKW_TRACECTX_TP_LEN)
    skw_tracectx_format(p, hi, lo, sid, 1 if sampled else 0)
    p = _put_head(p + SKW_TRACECTX_TP_LEN, PyBytes_AS_STRING(_NS_KEY_B), NS_KLEN, <int>k)
    memcpy(p, nsbuf, k)
    return out


def parse_header_block(bytes buf, Py_ssize_t at):
    """(context, send_ns) when buf from `at` to its end is exactly the block
    header_block writes, in canonical form; None for anything else (the
    caller parses it the general way and decides)."""
    cdef const char *p = PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t i = at, vlen
    cdef uint64_t hi, lo, sid
    cdef uint8_t fl
    cdef int64_t v
    if n - i < 3 + TP_KLEN + SKW_TRACECTX_TP_LEN + 3 + NS_KLEN + 1:
        return None
    if (<unsigned char>p[i] != TP_KLEN or <unsigned char>p[i + 1] != SKW_TRACECTX_TP_LEN
            or p[i + 2] != 0 or memcmp(p + i + 3, PyBytes_AS_STRING(_TP_KEY_B), TP_KLEN) != 0):
        return None
    i += 3 + TP_KLEN
    if skw_tracectx_parse(p + i, SKW_TRACECTX_TP_LEN, &hi, &lo, &sid, &fl) != 0:
        return None
    i += SKW_TRACECTX_TP_LEN
    vlen = <unsigned char>p[i + 1] | (<Py_ssize_t>(<unsigned char>p[i + 2]) << 8)
    if (<unsigned char>p[i] != NS_KLEN or memcmp(p + i + 3, PyBytes_AS_STRING(_NS_KEY_B),
                                                 NS_KLEN) != 0):
        return None
    i += 3 + NS_KLEN
    if i + vlen != n or skw_tracectx_parse_ns(p + i, vlen, &v) != 0:
        return None
    return _ctx(hi, lo, sid, fl & 1), v
