"""Tests for the C span ring (csrc/ring.c through skewd._ring)."""
import resource
import threading
import time

import numpy as np
import pytest

from skewd import _ring


def drain_all(core, size=4096):
    cols = _ring.Columns(size)
    out = {k: [] for k in ("start_ns", "span_id", "name_id", "kind", "parent_valid")}
    while True:
        n = core.drain(cols)
        if n == 0:
            break
        out["start_ns"].append(cols.start_ns[:n].copy())
        out["span_id"].append(cols.span_id[: 8 * n].reshape(n, 8).copy())
        out["name_id"].append(cols.name_id[:n].copy())
        out["kind"].append(cols.kind[:n].copy())
        out["parent_valid"].append(np.unpackbits(cols.valid[0], bitorder="little")[:n])
    return {k: (np.concatenate(v) if v else np.array([])) for k, v in out.items()}


def test_ring_size_rounds_up_and_is_checked():
    assert _ring.Core(None, 100).ring_size == 128
    assert _ring.Core(None, 1).ring_size == 16
    with pytest.raises(ValueError):
        _ring.Core(None, 0)
    with pytest.raises((ValueError, OverflowError)):
        _ring.Core(None, _ring.MAX_RING_SIZE + 1)


def test_fill_drain_in_order_across_wraparound():
    core = _ring.Core(None, 16)
    assert core.fill(10) == 10
    d = drain_all(core, size=7)
    assert list(d["start_ns"]) == [i * 1000 for i in range(10)]
    # head is now at 10: the next 16 records wrap around the end
    assert core.fill(40) == 16
    d = drain_all(core, size=5)
    assert list(d["start_ns"]) == [i * 1000 for i in range(16)]
    assert list(d["kind"]) == [i % 5 for i in range(16)]
    assert list(d["parent_valid"]) == [i & 1 for i in range(16)]
    st = core.stats()
    assert st["recorded"] == 26 and st["drained"] == 26 and st["pending"] == 0
    assert st["dropped"] == 0  # fill does not count its own overflow


def test_full_ring_drops_and_counts():
    core = _ring.Core(None, 16)
    for _ in range(50):
        with core.span("x"):
            pass
    st = core.stats()
    assert st["recorded"] == 16 and st["dropped"] == 34 and st["pending"] == 16
    assert len(drain_all(core)["start_ns"]) == 16
    with core.span("y"):
        pass
    assert core.stats()["recorded"] == 17


def test_ids_are_written_big_endian_as_the_context_shows_them():
    core = _ring.Core(None, 64)
    spans = []
    for _ in range(5):
        with core.span("x") as s:
            pass
        spans.append(s)
    cols = _ring.Columns(16)
    n = core.drain(cols)
    assert n == 5
    assert [bytes(cols.span_id[8 * i: 8 * i + 8]) for i in range(n)] == [s.span_id for s in spans]
    assert [bytes(cols.trace_id[16 * i: 16 * i + 16]) for i in range(n)] == \
        [s.context.trace_id for s in spans]
    assert all(s.context.traceparent[3:35] == s.trace_id.hex() for s in spans)


def test_times_and_nulls():
    core = _ring.Core(None, 64)
    with core.span("a", kind="producer", send_ns=99) as s:
        pass
    with core.span("b"):
        pass
    cols = _ring.Columns(4)
    assert core.drain(cols) == 2
    assert cols.start_ns[0] == s.start_ns and cols.end_ns[0] == s.end_ns
    assert s.start_ns <= s.end_ns
    assert cols.send_ns[0] == 99 and cols.send_ns[1] == _ring.NULL_NS
    assert cols.injected_offset_ns[0] == _ring.NULL_NS  # no page: no injection
    assert cols.est_offset_ns[0] == _ring.NULL_NS
    assert list(cols.kind[:2]) == [1, 0]
    assert list(cols.name_id[:2]) == [0, 1] and core.name_list[:2] == ["a", "b"]
    assert list(cols.name_offsets[:3]) == [0, 1, 2] and bytes(cols.name_data[:2]) == b"ab"
    assert cols.nulls() == {"parent_id": 2, "send_ns": 1, "injected_offset_ns": 2,
                            "est_offset_ns": 2, "est_uncertainty_ns": 2}
    assert np.unpackbits(cols.valid[1], bitorder="little")[:2].tolist() == [1, 0]


def test_names_longer_than_the_buffer_wait_for_the_next_drain():
    core = _ring.Core(None, 64)
    for name in ("a", "b" * 50, "c"):
        with core.span(name):
            pass
    cols = _ring.Columns(4)  # room for 4 names as long as the longest: 200 bytes
    assert core.drain(cols) == 3
    end = cols.name_offsets[3]
    assert bytes(cols.name_data[:end]) == b"a" + b"b" * 50 + b"c"


def test_random_ids_nonzero_and_distinct():
    ids = [_ring.rand64() for _ in range(100_000)]
    assert 0 not in ids and len(set(ids)) == len(ids)


def test_span_state_errors():
    core = _ring.Core(None, 64)
    s = core.span("x")
    with pytest.raises(RuntimeError):
        s.end()
    s.start()
    with pytest.raises(RuntimeError):
        s.start()
    s.end()
    with pytest.raises(RuntimeError):
        s.end()
    assert core.stats()["recorded"] == 1


def test_current_context_nests_per_thread():
    core = _ring.Core(None, 64)
    assert _ring.current_context() is None
    with core.span("outer") as o:
        assert _ring.current_context() == o.context
        seen = []
        th = threading.Thread(target=lambda: seen.append(_ring.current_context()))
        th.start()
        th.join()
        assert seen == [None]  # other threads have their own current span
        with core.span("inner") as i:
            assert _ring.current_context() == i.context
        assert _ring.current_context() == o.context
    assert _ring.current_context() is None


def test_concurrent_writers_and_drainer_lose_nothing():
    core = _ring.Core(None, 1024)
    n_threads, per = 4, 50_000
    filled = [0] * n_threads
    stop = threading.Event()
    got = []

    def writer(k):
        left = per
        while left:
            left -= core.fill(min(left, 500), name=f"w{k}")  # nogil in C
            filled[k] = per - left

    def drainer():
        cols = _ring.Columns(512)
        while not stop.is_set() or core.stats()["pending"]:
            n = core.drain(cols)
            if n:
                got.append((cols.name_id[:n].copy(), cols.span_id[: 8 * n].copy()))

    d = threading.Thread(target=drainer)
    d.start()
    ws = [threading.Thread(target=writer, args=(k,)) for k in range(n_threads)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    stop.set()
    d.join()
    names = np.concatenate([g[0] for g in got])
    ids = np.concatenate([g[1] for g in got]).view(np.uint64)
    assert len(names) == n_threads * per
    assert len(np.unique(ids)) == len(ids)
    assert sorted(np.bincount(names).tolist()) == [per] * n_threads
    # writer threads exited: their rings go once their pthreads are gone
    deadline = time.monotonic() + 5
    while core.stats()["rings"] and time.monotonic() < deadline:
        assert core.drain(_ring.Columns(16)) == 0
        time.sleep(0.01)
    assert core.stats()["rings"] == 0


def test_blocking_append_waits_for_the_drainer():
    core = _ring.Core(None, 16, block=True)
    stop = threading.Event()
    drained = []

    def drainer():
        cols = _ring.Columns(64)
        while not stop.is_set():
            core.wait(0.01)
            drained.append(core.drain(cols))

    d = threading.Thread(target=drainer)
    d.start()
    try:
        for _ in range(1000):
            with core.span("x"):
                pass
    finally:
        stop.set()
        core.kick()
        d.join()
    drained.append(core.drain(_ring.Columns(64)))
    st = core.stats()
    assert st["dropped"] == 0 and st["recorded"] == 1000 and sum(drained) == 1000


def test_memory_stays_bounded_by_the_ring():
    core = _ring.Core(None, 4096)
    with core.span("warm"):
        pass
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(300_000):
        with core.span("x"):
            pass
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    st = core.stats()
    assert st["recorded"] == 4096 and st["dropped"] == 300_000 - 4095
    assert after - before < 8 * 1024  # KiB: nothing grows with the span count


def test_closed_core_records_nothing():
    core = _ring.Core(None, 64)
    core.close()
    with core.span("x") as s:
        pass
    assert s.context.trace_id and core.stats()["recorded"] == 0
    assert core.stats()["ring_errors"] == 1
    assert core.drain(_ring.Columns(4)) == 0


def test_wait_work_sleeps_through_idle_intervals_and_wakes_for_records():
    core = _ring.Core(None, 1024)
    try:
        t0 = time.monotonic()
        assert core.wait_work(0.01, 0.15) < 0          # idle: only the limit ends it
        assert time.monotonic() - t0 >= 0.14
        assert not core.pending()
        core.fill(3)
        assert core.pending()
        t0 = time.monotonic()
        assert core.wait_work(0.02, 5.0) == 0          # records: back after one interval
        assert 0.015 <= time.monotonic() - t0 < 2.0
        drain_all(core)
        assert not core.pending()
        threading.Timer(0.05, core.kick).start()
        t0 = time.monotonic()
        assert core.wait_work(10.0, 10.0) == 1         # a kick ends it at once
        assert time.monotonic() - t0 < 5.0
    finally:
        core.close()
