"""The estimator's regression in C (csrc/regress.c through skewd._regress)
against the numpy implementation it replaced, kept here as the reference:
the fit to ~1e-9, the window and the runs test exactly, on random and
degenerate inputs, and the estimator on the simulator."""
import math
from array import array
from collections import deque

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from skewd import _regress
from skewd.estimate import Estimator, _Fit, runs_critical
from skewd.simulate import ClockModel, PathModel, Scenario, simulate

# --- the numpy reference (the estimator's code before the C port) -------------------


def ref_inputs(t_ns, delay, noise_floor):
    x = (np.array(t_ns, dtype=np.int64) - t_ns[-1]) / 1e9
    dl = np.array(delay, dtype=float)
    sig = noise_floor + (dl - dl.min()) / 2
    return x, 1.0 / (sig * sig), bool(np.ptp(x) == 0)


def ref_fit(x, y, w):
    """(a, b, var_a, var_b, cov_ab, jitter), and (sw, swx, swxx, det)."""
    m = len(x)
    sw, swx, swy = w.sum(), (w * x).sum(), (w * y).sum()
    swxx, swxy = (w * x * x).sum(), (w * x * y).sum()
    det = sw * swxx - swx * swx
    if det <= 0:
        b = 0.0
        a = swy / sw
    else:
        b = (sw * swxy - swx * swy) / det
        a = (swy - b * swx) / sw
    r = y - (a + b * x)
    if m > 2 and det > 0:
        s2 = float((w * r * r).sum() / (m - 2))
        var_a, var_b, cov = s2 * swxx / det, s2 * sw / det, -s2 * swx / det
    else:
        var_a = float((1.0 / w).mean())
        var_b = var_a / max(np.ptp(x) ** 2, 1e-9)
        cov = 0.0
    jitter = float(math.sqrt((r * r).mean())) if m > 1 else 0.0
    return (float(a), float(b), float(var_a), float(var_b), float(cov), jitter), \
        (sw, swx, swxx, det)


def ref_window_start(x, y, w, min_window, z):
    n = len(x)
    last = n - min_window

    def suffix(v):
        return np.cumsum(v[::-1])[::-1]
    sw, swx, swy = suffix(w), suffix(w * x), suffix(w * y)
    swxx, swxy = suffix(w * x * x), suffix(w * x * y)
    starts = np.arange(0, last + 1)
    det = sw[starts] * swxx[starts] - swx[starts] ** 2
    safe = np.where(det > 0, det, 1.0)
    b = np.where(det > 0, (sw[starts] * swxy[starts] - swx[starts] * swy[starts]) / safe, 0.0)
    a = (swy[starts] - b * swx[starts]) / sw[starts]
    res = y[None, :] - (a[:, None] + b[:, None] * x[None, :])
    idx = np.arange(n)
    mask = idx[None, :] >= starts[:, None]
    sign = res >= 0
    npos = (sign & mask).sum(axis=1)
    nneg = mask.sum(axis=1) - npos
    change = (sign[:, 1:] != sign[:, :-1]) & mask[:, :-1]
    runs = change.sum(axis=1) + 1
    for k, s in enumerate(starts):
        if runs[k] >= runs_critical(int(npos[k]), int(nneg[k]), z):
            return int(s)
    return int(last)


class NumpyEstimator(Estimator):
    """The estimator with the reference regression in place of the C one."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._cols = tuple(deque(maxlen=self.max_samples) for _ in range(3))

    def reset(self):
        super().reset()
        for c in self._cols:
            c.clear()

    def _accept(self, s):
        for c, v in zip(self._cols, (s.time_ns, s.offset_ns, s.delay_ns)):
            c.append(v)
        super()._accept(s)

    def _regress(self):
        ct, cy, cd = self._cols
        n, t_ref, src = len(ct), ct[-1], self._last.source
        x, w, same = ref_inputs(ct, cd, self.noise_floor_ns)
        y, dl = np.array(cy, dtype=float), np.array(cd, dtype=float)
        if n == 1 or same:
            i = int(np.argmin(dl))
            sig = self.noise_floor_ns + (dl[i] - dl.min()) / 2
            self.window = 1
            var_b = (self.max_drift_ppm * 1000.0 / 3) ** 2
            return _Fit(t_ref, float(y[i]), 0.0, float(sig ** 2), var_b, 0.0, 1, 0.0,
                        float(dl[i]), float(dl[i]), t_ref, src)
        if n < self.min_window:
            start = 0
        elif self._since_sizing == 0 or self._since_sizing >= self.window_every:
            start = ref_window_start(x, y, w, self.min_window, self.runs_z)
            self._since_sizing = 0
        else:
            start = max(0, n - (self.window + 1))
        self._since_sizing += 1
        (a, b, var_a, var_b, cov, jitter), _ = ref_fit(x[start:], y[start:], w[start:])
        self.window = m = n - start
        return _Fit(t_ref, a, b, var_a, var_b, cov, m, jitter, float(dl[start:].mean()),
                    float(dl[start:].min()), t_ref, src)


# --- inputs ------------------------------------------------------------------------

RTOL = 1e-9
BASE = 1_700_000_000_000_000_000


def close(c, r, scale=0.0, rtol=RTOL):
    return abs(c - r) <= rtol * max(abs(r), scale)


@st.composite
def samples(draw, max_n=300, min_n=1):
    """Estimator-like columns: times (ns, oldest first), offsets, delays.
    Degenerate cases come up on purpose: identical times, equal delays
    (equal weights), offsets exactly on a line (residuals all zero)."""
    n = draw(st.integers(min_n, max_n))
    kind = draw(st.sampled_from(["random", "same_time", "exact_line", "equal_delay"]))
    if kind == "same_time":
        t = [BASE + draw(st.integers(0, 10**12))] * n
    else:
        gaps = draw(st.lists(st.integers(0, 10**10), min_size=n, max_size=n))
        t = list(np.cumsum([BASE] + gaps[1:]).tolist()) if n > 1 else [BASE]
    if kind == "exact_line":
        a, b = draw(st.integers(-10**6, 10**6)), draw(st.integers(-1000, 1000))
        y = [float(a + b * k) for k in range(n)]
    else:
        big = draw(st.floats(-1e7, 1e7, allow_nan=False))
        noise = draw(st.lists(st.floats(-1e5, 1e5, allow_nan=False), min_size=n, max_size=n))
        y = [big + v for v in noise]
    if kind == "equal_delay":
        d = [float(draw(st.integers(0, 10**6)))] * n
    else:
        base = draw(st.integers(0, 10**6))
        d = [float(base + v) for v in
             draw(st.lists(st.integers(0, 20_000), min_size=n, max_size=n))]
    return t, y, d


def columns(t, y, d, floor=100.0):
    x, w, same = _regress.inputs(array("q", t), array("d", d), floor)
    return x, array("d", y), w, same


# --- the parts ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(samples(), st.sampled_from([1.0, 100.0, 1000.0]))
def test_inputs_are_bit_identical(cols, floor):
    t, y, d = cols
    x, w, same = _regress.inputs(array("q", t), array("d", d), floor)
    rx, rw, rsame = ref_inputs(t, d, floor)
    assert np.array_equal(np.asarray(x), rx) and np.array_equal(np.asarray(w), rw)
    assert same == rsame == (len(set(t)) == 1)


@settings(max_examples=400, deadline=None)
@given(samples())
def test_fit_matches_the_numpy_reference(cols):
    x, y, w, _ = columns(*cols)
    got = _regress.fit(x, y, w)
    rx, ry, rw = np.asarray(x), np.asarray(y), np.asarray(w)
    (a, b, var_a, var_b, cov, jitter), (sw, swx, swxx, det) = ref_fit(rx, ry, rw)
    # the sums differ in order (numpy adds pairwise), so compare to the data's
    # scale: y for a and the residuals, y per x-span for b, and for the
    # variances what they would be with residuals as large as y
    yscale = float(np.abs(ry).max()) or 1.0
    span = float(np.ptp(rx)) or 1.0
    vscale = float(rw.max()) * yscale ** 2 / det if det > 0 else 0.0
    assert close(got[0], a, yscale)
    assert close(got[1], b, yscale / span)
    assert close(got[2], var_a, vscale * swxx)
    assert close(got[3], var_b, vscale * sw)
    assert close(got[4], cov, vscale * abs(swx))
    assert close(got[5], jitter, yscale)


@settings(max_examples=400, deadline=None)
@given(samples(min_n=3), st.integers(3, 12), st.sampled_from([1.0, 1.645, 2.326]))
def test_window_start_is_identical_to_the_reference(cols, min_window, z):
    x, y, w, _ = columns(*cols)
    assume(min_window <= len(x))
    got = _regress.window_start(x, y, w, min_window, z)
    assert got == ref_window_start(np.asarray(x), np.asarray(y), np.asarray(w), min_window, z)
    assert 0 <= got <= len(x) - min_window


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 400), st.integers(0, 400), st.floats(0, 4, allow_nan=False))
def test_runs_critical_is_the_python_formula(n_pos, n_neg, z):
    assert _regress.runs_critical(n_pos, n_neg, z) == runs_critical(n_pos, n_neg, z)


def test_degenerate_fits():
    one = array("d", [0.0]), array("d", [5.0]), array("d", [0.25])
    a, b, var_a, var_b, cov, jitter = _regress.fit(*one)
    assert (a, b, var_a, var_b, cov, jitter) == (5.0, 0.0, 4.0, 4.0 / 1e-9, 0.0, 0.0)
    # identical times: no slope, the weighted mean
    x, y, w = array("d", [-1.0] * 3), array("d", [1.0, 2.0, 6.0]), array("d", [1.0, 1.0, 2.0])
    a, b, *_ = _regress.fit(x, y, w)
    assert b == 0.0 and a == pytest.approx(15 / 4)
    # an exact line: zero residuals, all one sign, so the window keeps everything
    x = array("d", [-3.0, -2.0, -1.0, 0.0])
    y = array("d", [1.0, 3.0, 5.0, 7.0])
    w = array("d", [1.0] * 4)
    a, b, var_a, var_b, cov, jitter = _regress.fit(x, y, w)
    assert (a, b, var_a, var_b, cov, jitter) == (7.0, 2.0, 0.0, 0.0, 0.0, 0.0)
    assert _regress.window_start(x, y, w, 3, 1.645) == 0
    # two points: the weights give the errors
    a, b, var_a, var_b, cov, _ = _regress.fit(x[:2], y[:2], array("d", [4.0, 4.0]))
    assert (a, b, var_a, var_b, cov) == (7.0, 2.0, 0.25, 0.25, 0.0)


def test_a_zero_residual_counts_as_positive():
    # the fit over all ten is y = 100 exactly (the pattern has no mean and no
    # trend), so the residuals are the pattern, zeros included; as positive,
    # the zeros leave too few runs and the oldest sample goes (as negative,
    # they would not)
    x = np.arange(-9.0, 1.0)
    y = 100 + np.array([-1, -1, 1, 1, 0, 0, 1, 1, -1, -1], float)
    w = np.ones(10)
    assert _regress.fit(x, y, w)[:2] == (100.0, 0.0)
    assert _regress.window_start(x, y, w, 3, 1.645) == 1 == ref_window_start(x, y, w, 3, 1.645)
    assert ref_window_start(x, -y, w, 3, 1.645) == 0


def test_a_bend_shrinks_the_window():
    # a line that bends halfway: residuals of one fit run in three long runs
    x = np.arange(-39.0, 1.0)
    y = np.where(x < -20, 0.0, 40.0 * (x + 20)) + np.tile([0.5, -0.5], 20)
    w = np.ones(40)
    start = _regress.window_start(x, y, w, 6, 1.645)
    assert start >= 15 and start == ref_window_start(x, y, w, 6, 1.645)


def test_bad_arguments():
    one = array("d", [1.0])
    with pytest.raises(ValueError):
        _regress.fit(one, one, array("d", [1.0, 2.0]))
    with pytest.raises(ValueError):
        _regress.fit(array("d"), array("d"), array("d"))
    with pytest.raises(ValueError):
        _regress.window_start(one, one, one, 2, 1.645)   # min_window > n
    with pytest.raises(ValueError):
        _regress.window_start(one, one, one, 0, 1.645)
    with pytest.raises(ValueError):
        _regress.Series(0)
    s = _regress.Series(4)
    with pytest.raises(ValueError):
        s.least_delayed()
    with pytest.raises(ValueError):
        s.prepare(100.0)
    with pytest.raises(ValueError):
        s.fit(0)


def test_series_keeps_the_newest():
    s = _regress.Series(3)
    for k in range(5):
        s.push(BASE + k * 1_000_000_000, float(10 * k), float(100 + k))
    assert len(s) == 3
    assert s.prepare(100.0) is False
    assert s.least_delayed() == (20.0, 102.0)      # samples 2, 3, 4 remain
    a, b, var_a, var_b, cov, jitter, mean_d, min_d = s.fit(0)
    assert a == pytest.approx(40.0) and b == pytest.approx(10.0)
    assert (mean_d, min_d) == (103.0, 102.0)
    s.clear()
    assert len(s) == 0


# --- the estimator -----------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(samples(max_n=150), st.integers(3, 8), st.integers(1, 8))
def test_the_estimator_matches_the_reference_sample_by_sample(cols, min_window, every):
    from skewd.estimate import Sample
    t, y, d = cols
    kw = dict(max_samples=32, min_window=min_window, window_every=every,
              delay_margin_ns=1e12, step_after=10**9)
    new, ref = Estimator(**kw), NumpyEstimator(**kw)
    for ti, yi, di in zip(t, y, d):
        # an exchange with this time, (integer) offset and delay
        off, dl = round(yi), int(di)
        s = Sample(ti - dl // 2, ti + off, ti + off, ti - dl // 2 + dl)
        e, r = new.add(s), ref.add(s)
        assert new.window == ref.window and (e is None) == (r is None)
        if r is not None:
            assert e.verdict == r.verdict and e.samples == r.samples
            # to 1e-9 relative, or 1e-2 ns and 1e-5 ns where the values are at
            # rounding level (offsets of 1e7 ns fitted exactly, say)
            assert close(e.offset_ns, r.offset_ns, 1e7)
            assert close(e.uncertainty_ns, r.uncertainty_ns, 1e4)
    assert vars(new.stats) == vars(ref.stats)


SCENARIOS = {
    "jittery": Scenario(peer=ClockModel(offset_ns=5e6, freq_ppm=20, stamp_noise_ns=50),
                        path=PathModel(base_ns=30_000, jitter_ns=20_000), count=1500,
                        settle_s=100, seed=1),
    "fast_200ppm": Scenario(peer=ClockModel(offset_ns=0, freq_ppm=200, stamp_noise_ns=100),
                            path=PathModel(base_ns=10_000, jitter_ns=3_000), count=1000,
                            interval_s=0.01, settle_s=2.0, seed=4),
    "wander": Scenario(peer=ClockModel(offset_ns=-2e6, freq_ppm=-15, wander_ppb=5,
                                       stamp_noise_ns=50),
                       path=PathModel(base_ns=30_000, jitter_ns=20_000), count=1500,
                       settle_s=100, seed=2),
    "loss_and_step": Scenario(peer=ClockModel(offset_ns=1e6, freq_ppm=5, steps=((300.0, 2e6),),
                                              stamp_noise_ns=50),
                              path=PathModel(base_ns=30_000, jitter_ns=5_000, loss=0.2),
                              count=600, settle_s=50, seed=5),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_simulated_accuracy_is_unchanged(name):
    sc = SCENARIOS[name]
    new, ref = simulate(sc, Estimator()), simulate(sc, NumpyEstimator())
    assert new.stats == ref.stats
    assert [e.verdict for e in new.estimates] == [e.verdict for e in ref.estimates]
    assert [e.samples for e in new.estimates] == [e.samples for e in ref.estimates]
    # offsets ~5e6 ns: agreement to well under a nanosecond
    assert np.allclose(new.errors_ns, ref.errors_ns, rtol=0, atol=1e-3)
    assert new.rms_error_ns == pytest.approx(ref.rms_error_ns, rel=1e-9)
    assert new.max_error_ns == pytest.approx(ref.max_error_ns, rel=1e-9)
    assert new.freq_error_ppm == pytest.approx(ref.freq_error_ppm, rel=1e-6, abs=1e-9)
    assert new.contained == ref.contained
    assert new.converge_s(15_000) == ref.converge_s(15_000)
