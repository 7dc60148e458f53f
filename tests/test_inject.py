import threading
import time

import numpy as np
import pytest

from skewd.errors import UsageError
from skewd.inject import Injector, RandomWalk, Ramp, Sine, Step, parse_schedule
from skewd.skewclock import SkewedClock
from skewd.statepage import StatePage

NOW = 1_700_000_000_000_000_000


def seg_offset_at(segs, t):
    cur = [s for s in segs if s.start_ns <= t][-1]
    return cur.offset_at(t)


def test_step_now_and_later():
    s = Step(5_000_000, NOW)
    segs = list(s.segments(NOW))
    assert len(segs) == 1 and segs[0].offset_at(NOW + 10**9) == 5_000_000
    later = Step(5_000_000, NOW + 10**9)
    segs = list(later.segments(NOW))
    assert seg_offset_at(segs, NOW + 10**9 - 1) == 0
    assert seg_offset_at(segs, NOW + 10**9) == 5_000_000


def test_ramp_is_drift():
    segs = list(Ramp(200_000, 1_000, NOW).segments(NOW))
    assert segs[0].offset_at(NOW + 10 * 10**9) == 1_000 + 2_000_000   # 200 ppm × 10 s


@pytest.mark.parametrize("amp,period,err", [(1_000_000, 60 * 10**9, 1_000),
                                            (5_000_000, 10 * 10**9, 500),
                                            (100_000, 2 * 10**9, 100)])
def test_sine_segments_within_stated_error(amp, period, err):
    s = Sine(amp, period, 0, NOW, max_error=err)
    assert not s.linear
    it = s.segments(NOW)
    segs = [next(it) for _ in range(int(period / s.step_ns) + 2)]
    ts = np.linspace(NOW, NOW + period, 5001).astype(np.int64)
    worst = max(abs(seg_offset_at(segs, int(t)) - s.offset_at(int(t))) for t in ts)
    assert worst <= s.max_error_ns + 1
    # and not absurdly finer than needed: the error budget is actually used
    assert worst > s.max_error / 10


def test_random_walk_is_seeded_and_continuous():
    w1 = RandomWalk(20_000, 10**9, seed=7, start_ns=NOW)
    w2 = RandomWalk(20_000, 10**9, seed=7, start_ns=NOW)
    w3 = RandomWalk(20_000, 10**9, seed=8, start_ns=NOW)
    it1, it2, it3 = w1.segments(NOW), w2.segments(NOW), w3.segments(NOW)
    s1 = [next(it1) for _ in range(50)]
    s2 = [next(it2) for _ in range(50)]
    s3 = [next(it3) for _ in range(50)]
    assert s1 == s2 and s1 != s3
    for x, y in zip(s1, s1[1:]):       # segments join end to end
        assert abs(x.offset_at(y.start_ns) - y.offset_ns) <= 1 + w1.max_error_ns
    for k in (0, 3, 17):
        t = NOW + k * 10**9 + 250_000_000
        assert abs(seg_offset_at(s1, t) - w1.offset_at(t)) <= 2
    steps = np.diff([s.offset_ns for s in s1])
    assert 5_000 < np.std(steps) < 60_000      # sigma 20 µs per sqrt(s)


def test_random_walk_resumes_mid_schedule():
    w = RandomWalk(20_000, 10**9, seed=3, start_ns=NOW)
    full = w.segments(NOW)
    segs = [next(full) for _ in range(10)]
    late = next(w.segments(NOW + 5 * 10**9 + 10))
    assert late.epoch_ns == segs[5].epoch_ns and late.offset_ns == segs[5].offset_ns


@pytest.mark.parametrize("spec,cls", [
    ("step:offset=5ms", Step), ("step:offset=5ms,at=+10s,drift=20ppm", Step),
    ("ramp:drift=100ppm", Ramp), ("sine:amplitude=1ms,period=60s,error=2us", Sine),
    ("walk:sigma=20us,step=1s,seed=4", RandomWalk)])
def test_parse_schedule(spec, cls):
    s = parse_schedule(spec, NOW)
    assert isinstance(s, cls)


def test_parse_schedule_values():
    s = parse_schedule("step:offset=5ms,at=+10s,drift=20ppm", NOW)
    assert (s.offset_ns, s.at_ns, s.drift_ppb) == (5_000_000, NOW + 10**10, 20_000)


@pytest.mark.parametrize("spec,msg", [
    ("wobble:x=1", "unknown schedule kind"), ("step:", "needs offset"),
    ("step:offset=5", "no unit"), ("ramp:drift=5ms", "ppm"),
    ("sine:amplitude=1ms", "needs period"), ("step:offset=5ms,color=red", "unknown key"),
    ("step:offset", "key=value"), ("walk:sigma=1us,step=10us", "at least 1ms")])
def test_parse_schedule_errors(spec, msg):
    with pytest.raises(UsageError, match=msg):
        parse_schedule(spec, NOW)


def test_injector_feeds_sine_segments_live():
    page = StatePage("n", writable=True)
    clock = SkewedClock("n")
    now = time.time_ns()
    sched = Sine(1_000_000, 400_000_000, 0, now, max_error=5_000)  # fast: 0.4 s period
    inj = Injector(page, sched)
    inj.start()
    stop = threading.Event()
    th = threading.Thread(target=inj.run, args=(stop, now + 600_000_000))
    th.start()
    errs = []
    try:
        while time.time_ns() < now + 500_000_000:
            t, off = clock.now_with_offset()
            errs.append(abs(off - sched.offset_at(t - off)))
            time.sleep(0.002)
    finally:
        stop.set()
        th.join(5)
    assert len(errs) > 50
    assert max(errs) <= sched.max_error_ns + 2_000   # + feeder lateness margin
    assert page.snapshot().generation > 10
