import errno
import os
import time

import numpy as np
import pytest

from skewd import _clock, clocks
from skewd.errors import HostError, UsageError


@pytest.mark.parametrize("name", list(clocks.CLOCK_IDS))
def test_every_clock_reads_and_has_resolution(name):
    a = clocks.read(name)
    b = clocks.read(name)
    assert b >= a if name != "realtime" else abs(b - a) < 1_000_000_000
    res = clocks.resolution(name)
    assert 0 < res <= 1_000_000


def test_realtime_agrees_with_python():
    for fn in (clocks.realtime_ns, lambda: clocks.read("realtime")):
        a = time.time_ns()
        v = fn()
        b = time.time_ns()
        assert a <= v <= b


def test_monotonic_clocks_agree_with_python():
    a = time.monotonic_ns()
    v = clocks.monotonic_ns()
    b = time.monotonic_ns()
    assert a <= v <= b
    assert abs(clocks.monotonic_raw_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)) < 50_000_000


def test_unknown_clock_names_the_value_and_choices():
    with pytest.raises(UsageError, match="'sundial'.*realtime"):
        clocks.read("sundial")


def test_batch_fills_buffer_monotonically():
    buf = clocks.batch("monotonic_raw", 10_000)
    assert buf.dtype == np.int64 and len(buf) == 10_000
    assert np.all(np.diff(buf) >= 0)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
    out = np.zeros(100, dtype=np.int64)
    assert clocks.batch("monotonic_raw", out) is out
    assert out[0] >= before and np.all(out > 0)


def test_batch_rejects_wrong_buffer():
    with pytest.raises(UsageError, match="int64"):
        clocks.batch("realtime", np.zeros(10, dtype=np.float64))
    with pytest.raises(UsageError):
        clocks.batch("realtime", np.zeros(20, dtype=np.int64)[::2])


def test_read_cost_is_plausible():
    c = clocks.read_cost_ns("monotonic", 2000, 5)
    assert 1 < c < 5000


def test_missing_phc_error_is_plain(tmp_path):
    if clocks.find_phcs():
        pytest.skip("this host has a PHC; the missing-device path is tested where there is none")
    with pytest.raises(HostError, match=r"/dev/ptp0 does not exist.*no PTP hardware clock"):
        clocks.PHC("/dev/ptp0")


def test_non_phc_path_is_refused(tmp_path):
    f = tmp_path / "notaclock"
    f.write_text("x")
    with pytest.raises(HostError, match="not a PTP hardware clock"):
        clocks.PHC(str(f))
    with pytest.raises(HostError, match="not a PTP hardware clock"):
        clocks.PHC("/dev/null")


def test_phc_clockid_encoding_matches_kernel_macro():
    # FD_TO_CLOCKID(fd) = ((~(clockid_t)(fd) << 3) | CLOCKFD), CLOCKFD = 3
    for fd in (0, 3, 17, 1000):
        want = ((~fd) << 3 | 3)
        want = (want + 2**31) % 2**32 - 2**31  # as a signed 32-bit clockid_t
        assert _clock.phc_clockid(fd) == want


def test_cross_timestamp_picks_narrowest_window():
    triples = np.array([
        [100, 150, 220],      # width 120
        [300, 345, 390],      # width 90  <- narrowest
        [500, 560, 700],      # width 200
        [900, 950, 800],      # negative: system clock stepped, ignored
    ])
    x = clocks.pick_narrowest(triples)
    assert (x.sys_before_ns, x.phc_ns, x.sys_after_ns) == (300, 345, 390)
    assert x.window_ns == 90 and x.samples == 4
    assert x.offset_ns == 0


def test_cross_timestamp_all_negative_windows_refused():
    with pytest.raises(UsageError, match="stepped"):
        clocks.pick_narrowest(np.array([[10, 5, 0]]))


def test_cross_timestamp_on_a_non_phc_fd_fails_cleanly(tmp_path):
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            _clock.phc_cross(fd, 5)
        assert e.value.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP)
        with pytest.raises(OSError):
            _clock.phc_cross(fd, 0)  # n out of range
    finally:
        os.close(fd)


def test_tsc_invariance_reported_with_reason():
    ok, why = clocks.tsc_invariant()
    assert isinstance(ok, bool) and why
    if not ok:
        with pytest.raises(HostError, match="refusing to use the TSC"):
            clocks.TSC()


@pytest.fixture(scope="module")
def tsc():
    ok, why = clocks.tsc_invariant()
    if not ok:
        pytest.skip(f"TSC not invariant on this host: {why}")
    return clocks.TSC(1_000_000_000)


def test_tsc_calibration_sane(tsc):
    assert 1e8 < tsc.hz < 1e10
    assert tsc.shift == 32 and tsc.mult > 0
    raw = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
    assert abs(tsc.now_ns() - raw) < 100_000
    buf = tsc.batch(1000)
    assert np.all(np.diff(buf) >= 0)
    assert tsc.read_cost_ns(2000, 5) < 1000


def test_tsc_conversion_is_linear(tsc):
    t = tsc.raw()
    a, b = tsc.to_ns(t), tsc.to_ns(t + int(tsc.hz))   # one second of cycles
    assert abs((b - a) - 1_000_000_000) < 10


def test_tsc_tracks_monotonic_raw_over_ten_seconds(tsc):
    """After calibration the TSC stays within 1 µs of MONOTONIC_RAW over 10 s."""
    def diff():
        best = None
        for _ in range(64):
            a = clocks.monotonic_raw_ns(); t = tsc.now_ns(); b = clocks.monotonic_raw_ns()
            if best is None or b - a < best[0]:
                best = (b - a, t - (a + b) // 2)
        return best[1]
    d0 = diff()
    worst = 0
    end = time.monotonic() + 10
    while time.monotonic() < end:
        time.sleep(0.25)
        worst = max(worst, abs(diff() - d0))
    assert worst < 1000, f"TSC diverged {worst} ns from MONOTONIC_RAW"


def test_survey_has_everything():
    s = clocks.survey(tsc_calibration_ns=50_000_000)
    assert [c.name for c in s["clocks"]] == list(clocks.CLOCK_IDS)
    assert all(c.read_cost_ns and c.resolution_ns for c in s["clocks"])
    assert "invariant" in s["tsc"]
    assert isinstance(s["phcs"], list)
