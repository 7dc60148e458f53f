"""The tracing-cost benchmark's window analysis (skewd.benchmarks.experiment):
traced windows against the untraced ones beside them."""
import numpy as np
import pytest

from skewd.benchmarks.experiment import window_overheads


def _windows(rates, n=400, start=0):
    """Sink times of consecutive windows, n requests each, alternating
    traced/untraced from the first, at the given rates (requests/s)."""
    t, traced, now = [], [], start
    for i, r in enumerate(rates):
        step = int(1e9 / r)
        t += [now + k * step for k in range(n)]
        traced += [i % 2 == 0] * n
        now += n * step
    return np.array(t, dtype=np.int64), np.array(traced)


def test_a_slower_traced_window_shows_its_loss():
    # traced windows 3 % slower; the first and last windows (filling, draining) left out
    rates = [500, 1000, 970, 1000, 970, 1000, 970, 1000, 2000]
    t, traced = _windows(rates)
    got = window_overheads(t, traced)
    assert len(got) == 3
    assert got == pytest.approx([0.03] * 3, abs=1e-3)
    # the order the sink wrote them in does not matter
    perm = np.random.default_rng(1).permutation(len(t))
    assert window_overheads(t[perm], traced[perm]) == pytest.approx(got)


def test_uneven_neighbours_are_averaged_and_short_windows_skipped():
    t, traced = _windows([1, 1000, 950, 900, 1])  # 950 against (1000 + 900) / 2
    assert window_overheads(t, traced) == pytest.approx([0.0], abs=2e-3)
    t, traced = _windows([1000, 1000, 900, 1000, 1000], n=20)  # under min_n each
    assert window_overheads(t, traced) == []
    t, traced = _windows([1000])
    assert window_overheads(t, traced) == []
    assert window_overheads(np.zeros(0, np.int64), np.zeros(0, bool)) == []
