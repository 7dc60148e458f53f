"""The tracer: spans stamped with the node's skewed clock, recorded in C rings
and drained to Arrow span logs, with W3C trace-context propagation through
Kafka headers and ZeroMQ frames.

    tracer = Tracer(node="model", stage="model", log_dir="/var/log/skewd")
    with tracer.span("infer", kind="consumer", parent=ctx, send_ns=sent) as span:
        ...
    tracer.close()

A span costs a few hundred nanoseconds: the handle is a C object, its ids
come from a per-thread generator in C, both timestamps are read through the
clock-state page in C, and exit appends one fixed-size record to this
thread's ring. A drain thread copies what the rings hold into Arrow column
buffers and writes them to the log as record batches, one writev() each,
without pyarrow (skewd.spanwriter), every flush interval
(50 ms) while spans arrive, or at once when a ring is half full; it waits
in C without the GIL and takes it only when there is something to write, so
an idle tracer costs its process only a C wake-up per interval. A full ring
drops the span and counts it (stats()["dropped"]); Tracer(block=True)
waits for room instead, for tests that need every span.

Parents: parent=ctx (a SpanContext, e.g. from extract_headers) or a Span;
parent=None makes the span a child of this thread's current span (the
innermost one entered and not yet exited), or the root of a new trace;
parent=False always starts a new trace.

Propagation, Kafka (a list of (key, value) header tuples):
    inject_headers(span.context, headers, send_ns)   adds
        ("traceparent", b"00-<32 hex trace id>-<16 hex span id>-<2 hex flags>")
        ("skewd-send-ns", b"<decimal int ns>")
    ctx, send_ns = extract_headers(msg.headers())

Propagation, ZeroMQ multipart messages. inject_frames puts three frames in
front of the payload frames:
    frame 0: b"skewd-tc/1"               marker and layout version
    frame 1: traceparent, ASCII          (empty when there is no context)
    frame 2: send_ns, decimal ASCII      (empty when there is none)
    frame 3...: the payload frames, unchanged
extract_frames(frames) -> (ctx, send_ns, payload_frames); a message without
the marker comes back whole with ctx and send_ns None.

A malformed traceparent or send time never raises: extract gives None for
it, counts it (malformed_count()) and warns with a TraceContextWarning that
names the header and its value.

Threads and processes: every thread appends to its own ring without locks.
After fork() the child gets fresh rings, a fresh id generator, its own drain
thread and its own log file (named with its pid); the parent's unwritten
spans stay the parent's.
"""
from __future__ import annotations

import atexit
import functools
import inspect
import os
import re
import socket
import threading
import warnings
import weakref
from time import thread_time as _thread_time
from typing import Callable, Sequence

from skewd import _ring, spanwriter
from skewd.errors import HostError, UsageError
from skewd.skewclock import SkewedClock
from skewd.statepage import validate_node

SpanContext = _ring.SpanContext
Span = _ring.Span
_parse_tp_fast = _ring.parse_traceparent_fast
_parse_ns_fast = _ring.parse_ns_fast
_format_ns = _ring.format_ns
_extract_list_fast = _ring.extract_list_fast
_headers_fast = _ring.headers_fast
current_context = _ring.current_context
KINDS = _ring.KINDS

TRACEPARENT = "traceparent"
SEND_NS_HEADER = "skewd-send-ns"
FRAME_MARKER = b"skewd-tc/1"

_TP_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z", re.S)
_INT_RE = re.compile(r"-?[0-9]{1,19}\Z")


class TraceContextWarning(UserWarning):
    """A trace-context header or frame was malformed and ignored."""


_malformed = 0


def malformed_count() -> int:
    """How many malformed trace-context values extraction has ignored."""
    return _malformed


def _malformed_value(what: str, value, why: str) -> None:
    global _malformed
    _malformed += 1
    warnings.warn(f"ignored malformed {what} {value!r}: {why}", TraceContextWarning,
                  stacklevel=3)


def format_traceparent(ctx: SpanContext) -> str:
    return ctx.traceparent


def parse_traceparent(value: str | bytes) -> SpanContext:
    """Parse a W3C traceparent; ValueError saying why when it is malformed."""
    ctx = _parse_tp_fast(value)  # the canonical form, in C; None: look closer
    if ctx is not None:
        return ctx
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("not ASCII") from None
    if not isinstance(value, str):
        raise ValueError(f"a {type(value).__name__}, not text")
    v = value.strip(" \t")
    m = _TP_RE.match(v)
    if m is None:
        raise ValueError("not version-traceid-parentid-flags in lowercase hex")
    version, trace, span, flags, rest = m.groups()
    if version == "ff":
        raise ValueError("version ff is invalid")
    if version == "00" and rest:
        raise ValueError("version 00 has exactly four fields")
    if trace == "0" * 32:
        raise ValueError("all-zero trace id")
    if span == "0" * 16:
        raise ValueError("all-zero parent id")
    return SpanContext(bytes.fromhex(trace), bytes.fromhex(span), bool(int(flags, 16) & 1))


def _tp_of(ctx) -> bytes | None:
    """The traceparent bytes of a SpanContext or Span (None for None)."""
    t = type(ctx)
    if t is Span or t is SpanContext:
        return ctx.traceparent_bytes
    return None if ctx is None else _ctx_of(ctx).traceparent_bytes


def _ns_bytes(send_ns) -> bytes:
    if type(send_ns) is int and -2**63 < send_ns < 2**63:
        return _format_ns(send_ns)
    return str(int(send_ns)).encode()


def _ctx_of(ctx) -> SpanContext | None:
    if ctx is None or isinstance(ctx, SpanContext):
        return ctx
    if isinstance(ctx, Span):
        return ctx.context
    raise UsageError(f"expected a SpanContext or Span, got {type(ctx).__name__}")


def _text(v) -> str:
    if isinstance(v, str):
        return v
    return bytes(v).decode("ascii")


def _parse_send(value, what: str) -> int | None:
    n = _parse_ns_fast(value)  # plain decimal bytes, in C
    if n is not None:
        return n
    try:
        s = _text(value).strip()
        if not _INT_RE.match(s):
            raise ValueError
        n = int(s)
        if not -2**63 < n < 2**63:
            raise ValueError
        return n
    except (ValueError, TypeError, UnicodeDecodeError):
        _malformed_value(what, value, "not a decimal integer of ns")
        return None


def inject_headers(ctx, headers: list | None, send_ns: int | None = None) -> list:
    """Add traceparent (and skewd-send-ns when send_ns is given) to a Kafka
    header list, replacing any already there; returns the list."""
    if not headers:
        fresh = _headers_fast(ctx, send_ns)  # the usual case, in C
        if fresh is not None:
            if headers is None:
                return fresh
            headers.extend(fresh)
            return headers
    tp = _tp_of(ctx)
    if headers is None:
        headers = []
    elif headers:
        drop = {TRACEPARENT} if tp is not None else set()
        if send_ns is not None:
            drop.add(SEND_NS_HEADER)
        if drop:
            headers[:] = [h for h in headers if h[0] not in drop]
    if tp is not None:
        headers.append((TRACEPARENT, tp))
    if send_ns is not None:
        headers.append((SEND_NS_HEADER, _ns_bytes(send_ns)))
    return headers


def extract_headers(headers) -> tuple[SpanContext | None, int | None]:
    """(context, send_ns) from Kafka headers (list of tuples, a dict, or None).
    Malformed values give None and a counted TraceContextWarning."""
    ctx = send = None
    if not headers:
        return None, None
    fast = _extract_list_fast(headers)  # what inject_headers writes, in C
    if fast is not None:
        return fast
    items = headers.items() if isinstance(headers, dict) else headers
    seen_tp = seen_send = False
    for item in items:
        try:
            key, value = item
        except (TypeError, ValueError):
            continue
        if key == TRACEPARENT or key == SEND_NS_HEADER:
            k = key  # as inject_headers writes them: no case folding
        else:
            if isinstance(key, (bytes, bytearray)):
                key = bytes(key).decode("latin-1")
            if not isinstance(key, str):
                continue
            k = key.lower()
        if k == TRACEPARENT and not seen_tp:
            seen_tp = True
            try:
                ctx = parse_traceparent(value)  # the C parser first
            except (ValueError, TypeError) as e:
                _malformed_value("traceparent header", value, str(e))
        elif k == SEND_NS_HEADER and not seen_send:
            seen_send = True
            if value is not None:
                send = _parse_send(value, f"{SEND_NS_HEADER} header")
    return ctx, send


def inject_frames(ctx, frames: Sequence, send_ns: int | None = None) -> list:
    """ZeroMQ: [marker, traceparent, send_ns] + frames (layout above)."""
    tp = _tp_of(ctx)
    return [FRAME_MARKER, tp if tp is not None else b"",
            _ns_bytes(send_ns) if send_ns is not None else b"", *frames]


def _frame_bytes(f) -> bytes:
    b = getattr(f, "bytes", None)  # a zmq.Frame
    return b if isinstance(b, bytes) else bytes(f)


def extract_frames(frames: Sequence) -> tuple[SpanContext | None, int | None, list]:
    """(context, send_ns, payload frames) from a ZeroMQ multipart message."""
    frames = list(frames)
    try:
        marked = len(frames) >= 3 and _frame_bytes(frames[0]) == FRAME_MARKER
    except TypeError:
        marked = False
    if not marked:
        return None, None, frames
    ctx = send = None
    tp = _frame_bytes(frames[1])
    if tp:
        try:
            ctx = parse_traceparent(tp)
        except ValueError as e:
            _malformed_value("traceparent frame", tp, str(e))
    sn = _frame_bytes(frames[2])
    if sn:
        send = _parse_send(sn, "send_ns frame")
    return ctx, send, frames[3:]


# --- the tracer ----------------------------------------------------------------------------

_CLOCK_NAMES = {0: "realtime", 1: "monotonic", 4: "monotonic_raw", 7: "boottime", 11: "tai"}
_live: "weakref.WeakSet[Tracer]" = weakref.WeakSet()
_live_lock = threading.Lock()


class Tracer:
    """Records spans for one pipeline stage on one node.

    node: the node whose skewed clock stamps the spans (its clock-state
      page); None uses the plain CLOCK_REALTIME and the host name as node.
    stage: the pipeline stage, recorded with every span.
    log_dir: where span logs go; None drains and counts without writing.
    clock: a SkewedClock to use instead of SkewedClock(node).
    ring_size: records per thread ring (rounded up to a power of two);
      memory is about 96 bytes x ring_size x threads that record.
    block: wait for room when a ring is full instead of dropping.
    flush_interval: seconds between drains (at most 0.1).
    max_bytes, max_age: rotate the log file past this size (bytes) or age (s).
    """

    def __init__(self, node: str | None = None, stage: str | None = None,
                 log_dir: str | os.PathLike | None = None, clock: SkewedClock | None = None,
                 ring_size: int = 65536, block: bool = False, *,
                 flush_interval: float = 0.05, max_bytes: int = 64 << 20,
                 max_age: float = 600.0, batch_size: int | None = None):
        if not 0 < flush_interval <= 0.1:
            raise UsageError(f"flush_interval must be in (0, 0.1] s, got {flush_interval}")
        if not 1 <= int(ring_size) <= _ring.MAX_RING_SIZE:
            raise UsageError(f"ring_size must be 1..{_ring.MAX_RING_SIZE}, got {ring_size}")
        if clock is None:
            if node is not None:
                validate_node(node)
            clock = SkewedClock(node)
        elif not isinstance(clock, SkewedClock):
            raise UsageError(f"clock must be a skewd.SkewedClock, got {type(clock).__name__}")
        if node is None:
            node = clock.node
        page = getattr(clock, "_page", None)
        page_path = page.path if page is not None else None
        base = page.snapshot().base_clock if page is not None else 0
        base_name = _CLOCK_NAMES.get(base, f"clock{base}")
        self.clock = clock
        self.node = node if node is not None else socket.gethostname()
        self.stage = stage
        self.clock_name = f"skewed:{base_name}" if page_path else base_name
        self.block = bool(block)
        self.flush_interval = float(flush_interval)
        try:
            self._core = _ring.Core(page_path, int(ring_size), self.block)
        except OSError as e:
            raise HostError(f"tracer for node {node}: cannot map its clock-state page "
                            f"{page_path}: {e.strerror}") from None
        #: the hot path, bound once: tracer.span(name, kind=, parent=, send_ns=)
        self.span = self._core.span
        self.consumer = self._core.consumer
        self.producer = self._core.producer
        self.now_ns = self._core.now_ns
        self._batch_size = int(batch_size or min(self._core.ring_size, 32768))
        self._log_args = dict(node=self.node, stage=stage, clock=self.clock_name,
                              max_bytes=max_bytes, max_age_s=max_age)
        self.log_dir = os.fspath(log_dir) if log_dir is not None else None
        self._log = (spanwriter.SpanLogWriter(self.log_dir, **self._log_args)
                     if self.log_dir is not None else None)
        self._cols = _ring.Columns(self._batch_size)
        self._closed = False
        self._start_drainer()
        # a tracer dropped without close() still drains and closes its log
        self._finalizer = weakref.finalize(self, _finalize, self._core, self._cols, self._log)
        self._finalizer.atexit = False  # at exit _close_all closes it properly
        with _live_lock:
            _live.add(self)

    # --- recording ----------------------------------------------------------------------

    def span(self, name: str, kind: str = "internal", parent=None,
             send_ns: int | None = None) -> Span:  # replaced per instance by the C method
        """A new span; use it with `with` (or .start()/.end())."""
        return self._core.span(name, kind, parent, send_ns)

    def consumer(self, name: str, parent, send_ns: int | None) -> Span:
        """span(name, "consumer", parent, send_ns), started, in one C call:
        the receipt of a message (parent and send time from its headers).
        End it with .end(). Replaced per instance by the C method."""
        return self._core.consumer(name, parent, send_ns)

    def producer(self, name: str, parent=None) -> Span:
        """span(name, "producer", parent), started, in one C call: the
        sending of a message. Stamp the send with .mark_send() and end it
        with .end(). Replaced per instance by the C method."""
        return self._core.producer(name, parent)

    def start_span(self, name: str, kind: str = "internal", parent=None,
                   send_ns: int | None = None) -> Span:
        """A started span; call .end() on it."""
        return self._core.span(name, kind, parent, send_ns).start()

    def traced(self, name: str | Callable | None = None, kind: str = "internal"):
        """Decorator: run the function inside a span named `name` (default:
        its qualified name). Works on plain and async functions."""
        if callable(name):
            return self.traced(None, kind)(name)

        def deco(fn):
            label = name or fn.__qualname__
            make = self._core.span
            if inspect.iscoroutinefunction(fn):
                @functools.wraps(fn)
                async def awrapper(*args, **kwargs):
                    with make(label, kind):
                        return await fn(*args, **kwargs)
                return awrapper

            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                with make(label, kind):
                    return fn(*args, **kwargs)
            return wrapper
        return deco

    def current_context(self) -> SpanContext | None:
        """This thread's current span context (any tracer's), or None."""
        return _ring.current_context()

    # --- draining ------------------------------------------------------------------------

    def _start_drainer(self) -> None:
        self._lock = threading.Lock()
        self._stop = False
        self._batches = 0
        self._written = 0
        self._drain_cpu = 0.0
        self._errors = 0
        self._last_error: str | None = None
        ref = weakref.ref(self)
        self._thread = threading.Thread(target=_drain_loop, args=(ref, self._core),
                                        name=f"skewd-drain-{self.node}", daemon=True)
        self._thread.start()

    def _drain(self) -> int:
        """Move everything waiting in the rings to the log. Caller holds no lock."""
        total = 0
        with self._lock:
            cpu0 = _thread_time()
            cols, core = self._cols, self._core
            while True:
                n = core.drain(cols)
                if n == 0:
                    break
                if self._log is not None:
                    try:
                        self._log.write_ring(cols, n)
                    except OSError as e:
                        self._errors += 1
                        self._last_error = f"writing span log: {e}"
                        continue
                self._batches += 1
                self._written += n
                total += n
                if n < cols.size:
                    break
            if self._log is not None:
                try:
                    self._log.maybe_rotate()
                except OSError as e:
                    self._errors += 1
                    self._last_error = f"rotating span log: {e}"
            self._drain_cpu += _thread_time() - cpu0
        return total

    def flush(self) -> int:
        """Write every finished span to the log now; returns how many."""
        if self._closed:
            return 0
        return self._drain()

    def rotate(self) -> None:
        """Close the current log file (footer, fsync); the next span opens a new one."""
        with self._lock:
            if self._log is not None:
                self._log.rotate()

    def close(self) -> None:
        """Drain every span, write the footer, fsync and close the log."""
        if self._closed:
            return
        self._closed = True
        self._stop = True
        self._finalizer.detach()
        self._core.kick()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._drain()
        self._core.close()
        with self._lock:
            if self._log is not None:
                self._log.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict:
        """spans (recorded), dropped (ring full), batches and written (to the
        log), pending (in rings), files, errors, and drain_cpu_s: the CPU
        time (of whichever thread drained) that turning records into Arrow
        batches and writing them has taken so far."""
        st = self._core.stats()
        ls = self._log.stats if self._log is not None else None
        return {
            "spans": st["recorded"],
            "dropped": st["dropped"],
            "batches": self._batches,
            "written": self._written,
            "drain_cpu_s": self._drain_cpu,
            "pending": st["pending"],
            "rings": st["rings"],
            "files": list(ls.files) if ls else [],
            "bytes": ls.bytes if ls else 0,
            "errors": self._errors + st["ring_errors"] + st["clock_errors"],
            "last_error": self._last_error,
            "block_timeouts": st["block_timeouts"],
        }

    def files(self) -> list[str]:
        return list(self._log.stats.files) if self._log is not None else []

    def table(self):
        """Flush, then read back everything this tracer (this process) wrote
        (a pyarrow Table; imports pyarrow)."""
        from skewd import spanlog
        self.flush()
        with warnings.catch_warnings():
            # the file being written has no footer yet: that is expected here
            warnings.simplefilter("ignore", spanlog.IncompleteLogWarning)
            return spanlog.read(self.files())

    # --- fork ------------------------------------------------------------------------------

    def _prefork(self) -> None:
        self._lock.acquire()
        self._core.prefork()

    def _postfork_parent(self) -> None:
        self._core.postfork_parent()
        self._lock.release()

    def _postfork_child(self) -> None:
        self._core.postfork_child()
        if self._log is not None:
            self._log.abandon()
        if self._closed:
            self._lock = threading.Lock()
            return
        self._start_drainer()

    def __enter__(self) -> "Tracer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Tracer(node={self.node!r}, stage={self.stage!r}, log_dir={self.log_dir!r}, "
                f"clock={self.clock_name!r}{', closed' if self._closed else ''})")


def _finalize(core, cols, log) -> None:
    try:
        while True:
            n = core.drain(cols)
            if n == 0:
                break
            if log is not None:
                log.write_ring(cols, n)
        core.close()
        if log is not None:
            log.close()
    except Exception:  # a finalizer has no one to report to
        pass


#: an idle tracer's drain thread looks at its log (rotation by age) this often
IDLE_WAKE_S = 1.0


def _drain_loop(ref, core) -> None:
    while True:
        t = ref()
        if t is None or t._stop:
            return
        interval = t.flush_interval
        del t
        # in C without the GIL: back one interval after records arrived, at
        # once when kicked, and not at all while every ring stays empty
        core.wait_work(interval, IDLE_WAKE_S)
        t = ref()
        if t is None or t._stop:
            return
        try:
            t._drain()
        except Exception as e:  # keep draining; stats() reports it
            t._errors += 1
            t._last_error = f"drain: {e!r}"
        del t


_forking: list = []


def _before_fork() -> None:
    _forking[:] = [t for t in list(_live) if not t._closed]
    for t in _forking:
        t._prefork()


def _after_fork_parent() -> None:
    for t in _forking:
        t._postfork_parent()
    _forking.clear()


def _after_fork_child() -> None:
    global _live_lock
    _live_lock = threading.Lock()
    for t in _forking:
        t._postfork_child()
    _forking.clear()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent,
                    after_in_child=_after_fork_child)


@atexit.register
def _close_all() -> None:
    for t in list(_live):
        try:
            t.close()
        except Exception:
            pass


__all__ = ["Tracer", "Span", "SpanContext", "inject_headers", "extract_headers",
           "inject_frames", "extract_frames", "parse_traceparent", "format_traceparent",
           "current_context", "malformed_count", "TraceContextWarning", "KINDS",
           "TRACEPARENT", "SEND_NS_HEADER", "FRAME_MARKER"]
