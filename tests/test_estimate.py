"""The per-peer estimator: exchange maths, filters, causality, runs-test
window, and the interval it reports."""
import math

import numpy as np
import pytest

from skewd.estimate import Estimator, Sample, runs_critical, worst_source

BASE = 1_700_000_000_000_000_000


def ex(t_s, offset_ns, fwd=20_000, back=20_000, turn=10_000, drift_ppm=0.0):
    """An exact exchange at our time t_s with the peer `offset_ns` ahead."""
    t1 = BASE + round(t_s * 1e9)
    off = round(offset_ns + drift_ppm * 1000 * t_s)   # integers: exact at 1.7e18
    t2 = t1 + fwd + off
    t3 = t2 + turn
    t4 = t3 - off + back
    return Sample(t1, t2, t3, t4)


def test_sample_maths():
    s = Sample(1000, 6000, 7000, 4000)
    assert s.offset_ns == ((6000 - 1000) + (7000 - 4000)) / 2
    assert s.delay_ns == (4000 - 1000) - (7000 - 6000)
    assert s.time_ns == 2500
    assert worst_source("kernel", "hardware", "user") == "user"
    assert worst_source("hardware", "kernel") == "kernel"


def test_exact_offset_and_drift():
    est = Estimator()
    for k in range(40):
        e = est.add(ex(k * 0.5, 5_000_000, drift_ppm=25.0))
    truth = 5_000_000 + 25_000 * 39 * 0.5
    assert abs(e.offset_ns - truth) < 5
    assert abs(e.drift_ppm - 25.0) < 0.01
    assert e.delay_ns == 40_000 and e.samples >= 6 and e.verdict == "accepted"
    assert e.contains(truth)
    # and extrapolated
    later = est.estimate_at(e.time_ns + 2_000_000_000)
    assert abs(later.offset_ns - (truth + 50_000)) < 50
    assert later.uncertainty_ns > e.uncertainty_ns  # dispersion grows with time


def test_delay_filter_rejects_queued_samples():
    est = Estimator()
    for k in range(10):
        est.add(ex(k, 1_000_000))
    e = est.add(ex(10, 1_000_000, fwd=200_000))  # 180us of queueing one way
    assert e.verdict == "delay" and est.stats.rejected_delay == 1
    assert abs(e.offset_ns - 1_000_000) < 100  # the biased sample did not move it
    assert est.stats.accepted == 10


def test_invalid_samples_are_refused():
    est = Estimator()
    assert est.add(Sample(1000, 5000, 4000, 9000)) is None   # t3 < t2
    assert est.add(Sample(9000, 5000, 6000, 1000)) is None   # t4 < t1
    assert est.stats.rejected_invalid == 2 and not est.ready


def test_causality_failures_are_counted_then_a_step_restarts():
    est = Estimator(step_after=3)
    for k in range(20):
        est.add(ex(k, 2_000_000))
    # the peer's stamps jump 1 ms: its receive would precede our send
    e = est.add(ex(20, 1_000_000))
    assert e.verdict == "causality" and est.stats.causality_failures == 1
    assert abs(e.offset_ns - 2_000_000) < 100
    est.add(ex(21, 1_000_000))
    e = est.add(ex(22, 1_000_000))
    assert e.verdict == "step" and est.stats.steps == 1
    assert abs(e.offset_ns - 1_000_000) < 100
    # a single outlier that is causal but far off is not a causality failure
    e = est.add(ex(23, 1_000_000, fwd=60_000, back=60_000))
    assert est.stats.causality_failures == 3


def test_causality_check_uses_the_uncertainty():
    est = Estimator()
    for k in range(20):
        est.add(ex(k, 0))
    # shifted by less than the half-delay: still consistent with the estimate
    e = est.add(ex(20, 15_000))
    assert e.verdict in ("accepted", "delay") and est.stats.causality_failures == 0


def test_runs_test_shrinks_the_window_after_a_frequency_change():
    est = Estimator(max_samples=64)
    rng = np.random.default_rng(3)
    for k in range(64):  # 40 ppm, then the frequency changes to 0
        est.add(ex(k, 40_000 * min(k, 32) + rng.normal(0, 50)))
    assert est.window < 48
    e = est.estimate_at(est._fit.last_time)
    assert abs(e.drift_ppm) < 2.0  # the new frequency, not the mix


def test_white_noise_keeps_a_long_window():
    rng = np.random.default_rng(7)
    windows = []
    for trial in range(10):
        est = Estimator(max_samples=64)
        for k in range(64):
            est.add(ex(k, 1000 + rng.normal(0, 300)))
        windows.append(est.window)
    assert np.median(windows) >= 48


def test_runs_critical():
    # 10 + 10: mean runs 11, variance 10·9/19
    assert runs_critical(10, 10) == pytest.approx(11 - 1.645 * math.sqrt(90 / 19))
    assert runs_critical(0, 12) == 1.0
    assert runs_critical(5, 5) < runs_critical(20, 20)


def test_asymmetric_path_is_biased_but_contained():
    est = Estimator()
    for k in range(50):
        e = est.add(ex(k, 3_000_000, fwd=60_000, back=20_000))
    assert abs(e.offset_ns - 3_020_000) < 10     # biased by half the asymmetry
    assert not abs(e.offset_ns - 3_000_000) < 10_000
    assert e.contains(3_000_000)                # but the interval holds the truth


def test_bad_parameters():
    with pytest.raises(ValueError):
        Estimator(max_samples=1)
