import multiprocessing as mp
import time

import numpy as np

from skewd import _page
from skewd.skewclock import SkewedClock
from skewd.statepage import Segment, StatePage


def test_plain_clock_is_realtime():
    c = SkewedClock()
    a = time.time_ns(); v = c.now_ns(); b = time.time_ns()
    assert a <= v <= b
    assert c.offset_ns() == 0 and c.measurement() is None


def test_node_without_injection_reads_realtime():
    c = SkewedClock("fresh")
    a = time.time_ns(); v = c.now_ns(); b = time.time_ns()
    assert a <= v <= b


def test_offset_and_drift_from_page():
    page = StatePage("model", writable=True)
    clock = SkewedClock("model")   # opened before the injection: sees it live
    epoch = time.time_ns() - 10_000_000_000          # drift running for 10 s
    page.set_injection(Segment(0, 5_000_000, 100_000, epoch))  # 5 ms + 100 ppm
    a = time.time_ns(); v, off = clock.now_with_offset(); b = time.time_ns()
    expect_lo = 5_000_000 + 100_000 * (a - epoch) // 10**9
    expect_hi = 5_000_000 + 100_000 * (b - epoch) // 10**9 + 1
    assert expect_lo <= off <= expect_hi        # ≈ 6 ms: 5 ms + 100 ppm × 10 s
    assert a + off - 1 <= v <= b + off
    assert 5_990_000 < off < 6_010_000


def test_next_segment_takes_over_at_its_start():
    page = StatePage("model", writable=True)
    clock = SkewedClock("model")
    now = time.time_ns()
    page.set_injection(Segment(0, 1_000, 0, 0), Segment(now + 200_000_000, 9_000, 0, now))
    assert clock.offset_ns() == 1_000
    time.sleep(0.25)
    assert clock.offset_ns() == 9_000


def test_negative_drift_and_segment_math_match_python():
    cur = (0, -2_000, -50_000, 1_000_000_000)
    nxt = (2**63 - 1, 0, 0, 0)
    for t in (0, 999_999_999, 1_000_000_000, 5_000_000_000, 10**18):
        want = -2_000 + int(-50_000 * (t - 1_000_000_000) / 1e9)
        assert abs(_page.segment_offset(cur, nxt, t) - want) <= 1
        assert Segment(*cur).offset_at(t) == _page.segment_offset(cur, nxt, t)


def test_batch_applies_offset():
    StatePage("b", writable=True).set_injection(Segment(0, -3_000_000, 0, 0))
    c = SkewedClock("b")
    a = time.time_ns()
    buf = c.batch(1000)
    assert np.all(np.diff(buf) >= 0)
    assert buf[0] >= a - 3_000_000 and buf[-1] <= time.time_ns() - 3_000_000


def _other_process(node, directory, q):
    import os
    os.environ["SKEWD_STATE_DIR"] = directory
    c = SkewedClock(node)
    q.put(c.offset_ns())


def test_injection_is_seen_by_other_processes(state_dir):
    StatePage("shared", writable=True).set_injection(Segment(0, 42_000, 0, 0))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_other_process, args=("shared", state_dir, q))
    p.start()
    assert q.get(timeout=30) == 42_000
    p.join(10)
