"""Tests for skewd.tracer: spans, parents, propagation, threads, fork."""
import os
import threading
import time
import warnings

import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import skewd
from skewd import spanlog
from skewd.errors import UsageError
from skewd.skewclock import SkewedClock
from skewd.statepage import Measurement, Segment, StatePage
from skewd.tracer import (FRAME_MARKER, SpanContext, TraceContextWarning, Tracer,
                          extract_frames, extract_headers, inject_frames, inject_headers,
                          malformed_count, parse_traceparent)


@pytest.fixture
def tracer(tmp_path):
    t = Tracer(node="model", stage="model", log_dir=tmp_path / "logs")
    try:
        yield t
    finally:
        t.close()


def rows(t):
    return t.table().to_pylist()


def test_exported_from_package():
    assert skewd.Tracer is Tracer
    assert skewd.SpanContext is SpanContext


def test_span_records_times_ids_and_nesting(tracer):
    before = time.time_ns()
    with tracer.span("outer", kind="server") as outer:
        with tracer.span("inner") as inner:
            pass
    after = time.time_ns()
    assert inner.context.trace_id == outer.context.trace_id
    assert inner.parent_id == outer.span_id
    assert outer.parent_id is None
    r = {x["name"]: x for x in rows(tracer)}
    assert set(r) == {"outer", "inner"}
    o, i = r["outer"], r["inner"]
    assert o["kind"] == "server" and i["kind"] == "internal"
    assert before <= o["start_ns"] <= i["start_ns"] <= i["end_ns"] <= o["end_ns"] <= after
    assert i["parent_id"] == o["span_id"] and o["parent_id"] is None
    assert o["trace_id"] == outer.context.trace_id and len(o["trace_id"]) == 16
    assert o["node"] == "model" and o["stage"] == "model"
    assert o["clock"] == "skewed:realtime"
    assert o["injected_offset_ns"] is None and o["est_offset_ns"] is None


def test_sequential_spans_are_separate_traces_and_parent_false(tracer):
    with tracer.span("a") as a:
        with tracer.span("b", parent=False) as b:
            pass
    with tracer.span("c") as c:
        pass
    assert b.context.trace_id != a.context.trace_id and b.parent_id is None
    assert c.context.trace_id != a.context.trace_id and c.parent_id is None


def test_explicit_parent_context_and_span(tracer):
    ctx = SpanContext(bytes(range(1, 17)), bytes(range(1, 9)), True)
    with tracer.span("child", kind="consumer", parent=ctx, send_ns=123) as s:
        with tracer.span("grandchild", parent=s) as g:
            pass
    assert s.context.trace_id == ctx.trace_id and s.parent_id == ctx.span_id
    assert g.parent_id == s.span_id
    r = {x["name"]: x for x in rows(tracer)}
    assert r["child"]["send_ns"] == 123 and r["child"]["kind"] == "consumer"
    assert r["child"]["parent_id"] == bytes(range(1, 9))


def test_bad_kind_name_and_parent_raise(tracer):
    with pytest.raises(ValueError, match="kind"):
        tracer.span("x", kind="sideways")
    with pytest.raises(TypeError):
        tracer.span(42)
    with pytest.raises(TypeError, match="parent"):
        tracer.span("x", parent="00-abc")


def test_producer_mark_send_and_set_send(tracer):
    with tracer.span("send", kind="producer") as p:
        t = p.mark_send()
    with tracer.span("send2", kind="producer") as p2:
        p2.set_send_ns(77)
    assert p.start_ns <= t <= p.end_ns and p.send_ns == t
    r = {x["name"]: x for x in rows(tracer)}
    assert r["send"]["send_ns"] == t and r["send2"]["send_ns"] == 77


def test_one_call_hop_spans_match_with_spans(tracer):
    """tracer.producer / tracer.consumer: started spans in one call, each the
    same record as the `with tracer.span(...)` form, the current context set
    while they run and put back by .end() (also when the work raises)."""
    with tracer.span("outer") as outer:
        p = tracer.producer("send a->b", False)      # parent False: a new trace
        assert tracer.current_context() == p.context
        t = p.mark_send()
        p.end()
        assert tracer.current_context() == outer.context
        q = tracer.producer("send again")            # no parent: the current span's child
        q.end()
    c = tracer.consumer("recv a->b", p.context, t)
    assert tracer.current_context() == c.context
    with pytest.raises(ZeroDivisionError):
        try:
            1 / 0
        finally:
            c.end()
    assert tracer.current_context() is None
    with pytest.raises(RuntimeError):
        c.end()
    with pytest.raises(TypeError, match="parent"):
        tracer.consumer("recv", "00-abc", 1)
    with pytest.raises(TypeError):
        tracer.producer(42, None)
    assert p.parent_id is None and p.context.trace_id != outer.context.trace_id
    assert q.parent_id == outer.span_id
    assert c.context.trace_id == p.context.trace_id and c.parent_id == p.span_id
    r = {x["name"]: x for x in rows(tracer)}
    assert r["send a->b"]["kind"] == "producer" and r["send a->b"]["send_ns"] == t
    assert r["send again"]["kind"] == "producer" and r["send again"]["send_ns"] is None
    assert r["recv a->b"]["kind"] == "consumer" and r["recv a->b"]["send_ns"] == t
    assert r["recv a->b"]["parent_id"] == p.span_id
    assert r["send a->b"]["start_ns"] <= t <= r["send a->b"]["end_ns"]
    assert r["recv a->b"]["start_ns"] <= r["recv a->b"]["end_ns"]


def test_injected_offset_and_measurement_are_recorded(tmp_path):
    page = StatePage("skewed", writable=True)
    page.set_injection(Segment(0, 5_000_000, 0, 0))
    page.set_measurement(Measurement(offset_ns=1234, uncertainty_ns=56, drift_ppb=0,
                                     time_ns=1))
    t = Tracer(node="skewed", log_dir=tmp_path)
    try:
        real = time.time_ns()
        with t.span("s"):
            pass
        r = rows(t)[0]
        assert r["injected_offset_ns"] == 5_000_000
        assert r["est_offset_ns"] == 1234 and r["est_uncertainty_ns"] == 56
        assert 4_000_000 < r["start_ns"] - real < 1_000_000_000
        # a new page generation is seen by the next span
        page.clear_injection()
        page.set_measurement(None)
        with t.span("s2"):
            pass
        r2 = [x for x in rows(t) if x["name"] == "s2"][0]
        assert r2["injected_offset_ns"] is None and r2["est_offset_ns"] is None
        assert abs(r2["start_ns"] - time.time_ns()) < 1_000_000_000
    finally:
        t.close()
        page.close()


def test_clock_argument_and_plain_realtime(tmp_path):
    t = Tracer(clock=SkewedClock(None), log_dir=tmp_path)
    try:
        with t.span("x"):
            pass
        r = rows(t)[0]
        assert r["clock"] == "realtime" and r["node"]
    finally:
        t.close()
    with pytest.raises(UsageError):
        Tracer(clock=object())
    with pytest.raises(UsageError):
        Tracer(node="bad/name")
    with pytest.raises(UsageError):
        Tracer(flush_interval=0.5)


def test_decorator(tracer):
    @tracer.traced("work")
    def work(x):
        return x * 2

    @tracer.traced
    def other():
        raise KeyError("boom")

    assert work(21) == 42
    with pytest.raises(KeyError):
        other()
    names = sorted(x["name"] for x in rows(tracer))
    assert names == ["test_decorator.<locals>.other", "work"]


def test_ring_full_drops_and_counts(tmp_path):
    t = Tracer(log_dir=tmp_path, ring_size=16, flush_interval=0.1)
    try:
        with t._lock:  # hold the drainer off
            for _ in range(100):
                with t.span("x"):
                    pass
            st = t.stats()
        assert st["spans"] == 16 and st["dropped"] == 84
        t.flush()
        assert len(rows(t)) == 16
    finally:
        t.close()


def test_block_mode_keeps_every_span(tmp_path):
    t = Tracer(log_dir=tmp_path, ring_size=16, block=True)
    try:
        for _ in range(2000):
            with t.span("x"):
                pass
        t.close()
        st = t.stats()
        assert st["dropped"] == 0 and st["spans"] == 2000 and st["written"] == 2000
        assert spanlog.read(tmp_path).num_rows == 2000
    finally:
        t.close()


def test_threads_each_record_all_their_spans(tmp_path):
    t = Tracer(log_dir=tmp_path, block=True, ring_size=256)
    n, k = 8, 3000

    def work(i):
        with t.span(f"root{i}") as r:
            for _ in range(k):
                with t.span("leaf"):
                    pass
        ids.append(r.context.trace_id)

    ids = []
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    t.close()
    tab = spanlog.read(tmp_path)
    assert tab.num_rows == n * (k + 1)
    assert pc.count_distinct(tab["span_id"]).as_py() == n * (k + 1)
    assert pc.count_distinct(tab["trace_id"]).as_py() == n
    # every leaf is a child of its own thread's root
    roots = {r["span_id"]: r["trace_id"] for r in tab.filter(
        pc.starts_with(tab["name"], "root")).to_pylist()}
    leaves = tab.filter(pc.equal(tab["name"], "leaf"))
    for pid, tid in zip(leaves["parent_id"].to_pylist(), leaves["trace_id"].to_pylist()):
        assert roots[pid] == tid
    assert t.stats()["rings"] == 0  # freed at close


def test_rings_of_finished_threads_are_freed(tmp_path):
    t = Tracer(log_dir=tmp_path)
    try:
        for _ in range(20):
            th = threading.Thread(target=lambda: t.span("x").start().end())
            th.start()
            th.join()
        # a thread's ring is freed once its pthread has exited (a moment
        # after join() returns) and its records are drained
        deadline = time.monotonic() + 5
        while t.stats()["rings"] and time.monotonic() < deadline:
            t.flush()
            time.sleep(0.01)
        st = t.stats()
        assert st["rings"] == 0 and st["spans"] == 20 and st["written"] == 20
    finally:
        t.close()


def test_fork_child_gets_own_ring_and_file(tmp_path):
    t = Tracer(node="forky", log_dir=tmp_path)
    try:
        with t.span("before-fork"):
            pass
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                with t.span("in-child"):
                    pass
                st = t.stats()
                t.close()
                code = 0 if st["spans"] == 1 else 3
            finally:
                os._exit(code)
        with t.span("in-parent"):
            pass
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        t.close()
        tab = spanlog.read(tmp_path)
        names = sorted(tab["name"].to_pylist())
        assert names == ["before-fork", "in-child", "in-parent"]
        files = {os.path.basename(f) for f in os.listdir(tmp_path)}
        assert any(f"-{pid}-" in f for f in files)
        assert any(f"-{os.getpid()}-" in f for f in files)
        a = spanlog.read([os.path.join(tmp_path, f) for f in files if f"-{pid}-" in f])
        assert a["name"].to_pylist() == ["in-child"]
    finally:
        t.close()


def test_fork_child_ids_differ_from_parent(tmp_path):
    t = Tracer(log_dir=None)
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.write(w, t.span("c").span_id)
            finally:
                os._exit(0)
        os.close(w)
        child_id = os.read(r, 8)
        os.close(r)
        os.waitpid(pid, 0)
        assert child_id != t.span("p").span_id and len(child_id) == 8
    finally:
        t.close()


def test_close_is_idempotent_and_spans_after_close_are_noops(tmp_path):
    t = Tracer(log_dir=tmp_path)
    with t.span("x"):
        pass
    t.close()
    t.close()
    with t.span("after") as s:
        pass
    assert s.context.trace_id
    assert [r["name"] for r in spanlog.read(tmp_path).to_pylist()] == ["x"]


def test_flush_bound_without_explicit_flush(tmp_path):
    t = Tracer(log_dir=tmp_path, flush_interval=0.05)
    try:
        with t.span("x"):
            pass
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and t.stats()["written"] == 0:
            time.sleep(0.01)
        assert t.stats()["written"] == 1
        # written to the file (readable while the writer is still open)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            assert spanlog.read(tmp_path).num_rows == 1
    finally:
        t.close()


def test_drain_cpu_is_counted_only_when_there_is_something_to_drain(tmp_path):
    t = Tracer(log_dir=tmp_path, flush_interval=0.05)
    try:
        assert t.stats()["drain_cpu_s"] == 0.0
        t.flush()  # nothing recorded: the drain still runs, and costs a little
        idle = t.stats()["drain_cpu_s"]
        for _ in range(20000):
            with t.span("x"):
                pass
        t.flush()
        st = t.stats()
        assert st["written"] == 20000
        # 20000 spans take measurably longer to drain than none
        assert st["drain_cpu_s"] > idle
        assert st["drain_cpu_s"] < 5.0
    finally:
        t.close()


# --- propagation --------------------------------------------------------------------

CTX = SpanContext(bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736"),
                  bytes.fromhex("00f067aa0ba902b7"), True)


def test_idle_tracer_drain_thread_stays_out_of_python(tmp_path):
    t = Tracer(stage="idle", log_dir=tmp_path / "logs", flush_interval=0.02)
    calls = []
    drain = t._drain

    def counting():
        calls.append(time.monotonic())
        return drain()
    t._drain = counting
    try:
        time.sleep(0.4)          # 20 flush intervals with nothing to write
        assert calls == []
        with t.span("one"):
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and t.stats()["written"] < 1:
            time.sleep(0.01)
        assert t.stats()["written"] == 1 and len(calls) >= 1
    finally:
        t.close()


def test_traceparent_w3c_example():
    assert CTX.traceparent == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_traceparent(CTX.traceparent) == CTX
    c = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
    assert not c.sampled
    # a future version may carry more fields
    assert parse_traceparent(
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").trace_id == CTX.trace_id


@pytest.mark.parametrize("bad", [
    "", "00", "garbage", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
    b"\xff\xfe", None, 12,
])
def test_malformed_traceparent_gives_none_and_counted_warning(bad):
    before = malformed_count()
    with pytest.warns(TraceContextWarning, match="traceparent"):
        ctx, send = extract_headers([("traceparent", bad), ("skewd-send-ns", b"5")])
    assert ctx is None and send == 5
    assert malformed_count() == before + 1


def test_headers_round_trip_and_replace():
    h = [("key", b"v"), ("traceparent", b"old")]
    inject_headers(CTX, h, send_ns=1234567890123)
    assert h[0] == ("key", b"v")
    assert ("traceparent", CTX.traceparent.encode()) in h
    assert ("skewd-send-ns", b"1234567890123") in h
    assert sum(1 for k, _ in h if k == "traceparent") == 1
    assert extract_headers(h) == (CTX, 1234567890123)
    assert extract_headers(None) == (None, None)
    assert extract_headers([]) == (None, None)
    assert extract_headers({"traceparent": CTX.traceparent}) == (CTX, None)
    with pytest.warns(TraceContextWarning, match="skewd-send-ns"):
        assert extract_headers([("skewd-send-ns", b"12x")]) == (None, None)


def test_frames_round_trip():
    frames = inject_frames(CTX, [b"payload", b"more"], 42)
    assert frames[0] == FRAME_MARKER and len(frames) == 5
    assert extract_frames(frames) == (CTX, 42, [b"payload", b"more"])
    assert extract_frames([b"plain"]) == (None, None, [b"plain"])
    assert extract_frames(inject_frames(None, [b"p"], None)) == (None, None, [b"p"])
    with pytest.warns(TraceContextWarning, match="traceparent frame"):
        ctx, send, payload = extract_frames([FRAME_MARKER, b"junk", b"7", b"p"])
    assert ctx is None and send == 7 and payload == [b"p"]


def test_frames_with_real_zmq_frames():
    zmq = pytest.importorskip("zmq")
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://skewd-frames")
        b.connect("inproc://skewd-frames")
        a.send_multipart(inject_frames(CTX, [b"x"], 9))
        got = b.recv_multipart(copy=False)
        c, s, payload = extract_frames(got)
        assert c == CTX and s == 9 and bytes(payload[0]) == b"x"
    finally:
        a.close(0)
        b.close(0)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.binary(max_size=80),
                 st.from_regex(r"[0-9a-f]{2}-[0-9a-fA-F]{30,34}-[0-9a-f]{15,17}-[0-9a-f]{2}.{0,3}",
                               fullmatch=True)))
def test_traceparent_parser_never_raises_unexpectedly(value):
    try:
        ctx = parse_traceparent(value)
    except ValueError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert extract_headers([("traceparent", value)]) == (None, None)
        return
    # whatever parses formats back to the same ids
    again = parse_traceparent(ctx.traceparent)
    assert again == ctx
    assert ctx.traceparent[3:52] == (value if isinstance(value, str) else
                                     value.decode()).strip(" \t")[3:52]


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8), st.booleans())
def test_context_traceparent_round_trip(tid, sid, sampled):
    if not any(tid) or not any(sid):
        with pytest.raises(ValueError):
            SpanContext(tid, sid, sampled)
        return
    c = SpanContext(tid, sid, sampled)
    assert parse_traceparent(c.traceparent) == c
    assert c.trace_id == tid and c.span_id == sid


def test_dropped_tracer_still_writes_its_spans(tmp_path):
    import gc
    t = Tracer(log_dir=tmp_path, flush_interval=0.1)
    with t.span("kept"):
        pass
    th = t._thread
    del t
    gc.collect()
    th.join(timeout=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tab = spanlog.read(tmp_path)  # complete: footer written
    assert tab["name"].to_pylist() == ["kept"]
