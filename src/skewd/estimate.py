"""Offset and drift of one peer's clock, from four-timestamp exchanges.

    from skewd.estimate import Estimator, Sample
    est = Estimator()
    e = est.add(Sample(t1, t2, t3, t4, source="kernel"))
    e.offset_ns, e.drift_ppm, e.delay_ns, e.uncertainty_ns, e.samples, e.jitter_ns
    est.estimate_at(now_ns)        # the same, extrapolated to another moment

An exchange: we send at t1 (our clock), the peer receives at t2 and answers at
t3 (its clock), we receive at t4. Its offset is θ = ((t2−t1)+(t3−t4))/2 (peer
minus us) and its delay δ = (t4−t1)−(t3−t2). Whatever the path's asymmetry,
the true offset lies within θ ± δ/2.

Per sample, in order:
1. validity: t4 ≥ t1, t3 ≥ t2 and δ ≥ 0, else rejected as "invalid";
2. causality under the current estimate θ̂ ± U: the peer's receive must follow
   our send and our receive its send, i.e. t3−t4 ≤ θ ≤ t2−t1 must overlap
   θ̂ ± U. A failure is counted and the sample rejected; `step_after`
   failures in a row mean the peer's clock stepped, and the estimator
   restarts from the new samples (counted in `steps`);
3. min-delay filter: rejected as "delay" when δ exceeds the smallest delay of
   the last `delay_window` exchanges by more than max(delay_margin_ns,
   delay_ratio·δmin) (queueing made it, so its offset is unreliable);
4. the accepted samples (the newest `max_samples`) are fitted by weighted
   least squares, offset against time: weights fall with the sample's delay
   excess. The window is the longest run of newest samples whose residuals
   pass a runs test (too few sign runs means the line does not fit: the
   frequency changed, so the oldest samples are dropped), as chrony does.
   The runs test is repeated every `window_every` accepted samples; between
   sizings the window keeps its oldest sample and takes in each new one.
   The fit and the runs test run in C (csrc/regress.c) on samples kept in
   fixed buffers: a refit costs a few microseconds, not numpy's per-call
   overheads.

The estimate is an interval (as Meta's fbclock reports it): uncertainty =
mean δ/2 of the window + 3σ of the fitted offset + dispersion that grows from
the last good sample at the fit's drift error plus `wander_ppb`.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from skewd import _regress
from skewd._regress import Series

#: stamp quality, worst first; a sample's source is the worst of its four
SOURCE_ORDER = ("missing", "user", "kernel", "hardware")


_RANK = {s: i for i, s in enumerate(SOURCE_ORDER)}


def _rank(source: str) -> int:
    return _RANK.get(source, 0)


def worst_source(*sources: str) -> str:
    """The worst of the sources (an unknown one counts as "missing")."""
    first = sources[0]
    if sources.count(first) == len(sources):  # the usual case, per exchange
        return first
    return min(sources, key=_rank)


@dataclass(slots=True)  # read-only; made per exchange, so not frozen (see tsock.Stamp)
class Sample:
    """One exchange: t1, t4 on our clock, t2, t3 on the peer's (ns)."""
    t1: int
    t2: int
    t3: int
    t4: int
    source: str = "kernel"
    seq: int = 0

    @property
    def offset_ns(self) -> float:
        return ((self.t2 - self.t1) + (self.t3 - self.t4)) / 2

    @property
    def delay_ns(self) -> int:
        return (self.t4 - self.t1) - (self.t3 - self.t2)

    @property
    def time_ns(self) -> int:
        """When (on our clock) the exchange measured: the midpoint."""
        return (self.t1 + self.t4) // 2


@dataclass(slots=True)  # read-only; made per exchange, so not frozen (see tsock.Stamp)
class Estimate:
    """The peer's clock minus ours at time_ns (our clock), as an interval."""
    offset_ns: float
    drift_ppm: float
    delay_ns: float
    uncertainty_ns: float
    samples: int
    jitter_ns: float
    stamp_source: str
    time_ns: int
    #: what happened to the sample just added: accepted, delay, causality,
    #: invalid, step (accepted as the first of a new timescale)
    verdict: str = "accepted"

    @property
    def low_ns(self) -> float:
        return self.offset_ns - self.uncertainty_ns

    @property
    def high_ns(self) -> float:
        return self.offset_ns + self.uncertainty_ns

    def contains(self, offset_ns: float) -> bool:
        return self.low_ns <= offset_ns <= self.high_ns


@dataclass
class EstimatorStats:
    added: int = 0
    accepted: int = 0
    rejected_delay: int = 0
    rejected_invalid: int = 0
    causality_failures: int = 0
    steps: int = 0


class _Fit(NamedTuple):   # a tuple: built after every accepted sample
    t_ref: int          # x = (t - t_ref) / 1e9
    a: float            # offset at t_ref, ns
    b: float            # ns per s (= ppb)
    var_a: float
    var_b: float
    cov_ab: float
    n: int
    jitter: float
    mean_delay: float
    min_delay: float
    last_time: int
    source: str


#: fewest sign runs a random residual sequence shows (Wald–Wolfowitz, normal
#: approximation): the window sizing's formula, in C
runs_critical = _regress.runs_critical


class Estimator:
    """Per-peer offset/drift estimator (see the module docstring)."""

    def __init__(self, *, max_samples: int = 64, min_window: int = 6,
                 delay_window: int = 32, delay_margin_ns: float = 1000.0,
                 delay_ratio: float = 0.25, noise_floor_ns: float = 100.0,
                 wander_ppb: float = 50.0, step_after: int = 3, runs_z: float = 1.645,
                 max_drift_ppm: float = 1000.0, window_every: int = 8):
        if max_samples < 2 or min_window < 3:
            raise ValueError("max_samples must be >= 2 and min_window >= 3")
        self.max_samples = max_samples
        self.min_window = min_window
        self.delay_margin_ns = delay_margin_ns
        self.delay_ratio = delay_ratio
        self.noise_floor_ns = noise_floor_ns
        self.wander_ppb = wander_ppb
        self.step_after = step_after
        self.runs_z = runs_z
        #: drift assumed possible before two samples have measured it
        self.max_drift_ppm = max_drift_ppm
        self.stats = EstimatorStats()
        self._delays: deque[int] = deque(maxlen=delay_window)
        # the accepted samples' time, offset and delay (the newest
        # max_samples), in C buffers ready for the fit
        self._series = Series(max_samples)
        self._last: Sample | None = None   # the newest accepted sample
        self._fit: _Fit | None = None
        self._causal_run = 0
        self.window = 0  # samples in the fitted window
        #: the runs test sizes the window every `window_every` accepted
        #: samples; in between the window keeps its oldest sample and grows
        self.window_every = window_every
        self._since_sizing = 0

    # --- public -----------------------------------------------------------------

    def reset(self) -> None:
        self._delays.clear()
        self._series.clear()
        self._last = None
        self._fit = None
        self._causal_run = 0
        self.window = 0
        self._since_sizing = 0

    def add(self, s: Sample) -> Estimate | None:
        """Take one exchange; the estimate at its time (None until the first
        sample is accepted)."""
        self.stats.added += 1
        d = s.delay_ns
        if s.t4 < s.t1 or s.t3 < s.t2 or d < 0:
            self.stats.rejected_invalid += 1
            return self._report(s.time_ns, "invalid")
        if self._fit is not None and not self._causal(s):
            self.stats.causality_failures += 1
            self._causal_run += 1
            if self._causal_run < self.step_after:
                return self._report(s.time_ns, "causality")
            # the peer's clock (or ours) stepped: start over from here
            self.stats.steps += 1
            self.reset()
            self._delays.append(d)
            self._accept(s)
            return self._report(s.time_ns, "step")
        self._causal_run = 0
        self._delays.append(d)
        dmin = min(self._delays)
        if d > dmin + max(self.delay_margin_ns, self.delay_ratio * dmin):
            self.stats.rejected_delay += 1
            return self._report(s.time_ns, "delay")
        self._accept(s)
        return self._report(s.time_ns, "accepted")

    def estimate_at(self, t_ns: int) -> Estimate | None:
        return self._report(t_ns, "accepted") if self._fit else None

    @property
    def ready(self) -> bool:
        return self._fit is not None

    # --- internals --------------------------------------------------------------

    def _causal(self, s: Sample) -> bool:
        off, unc = self._predict(s.time_ns)
        lo, hi = s.t3 - s.t4, s.t2 - s.t1   # the offsets causality allows
        return off - unc <= hi and off + unc >= lo

    def _accept(self, s: Sample) -> None:
        self.stats.accepted += 1
        self._last = s
        self._series.push(s.time_ns, s.offset_ns, s.delay_ns)
        self._fit = self._regress()

    def _predict(self, t: int) -> tuple[float, float]:
        f = self._fit
        x = (t - f.t_ref) / 1e9
        off = f.a + f.b * x
        var = max(f.var_a + x * x * f.var_b + 2 * x * f.cov_ab, 0.0)
        drift_err = 3 * math.sqrt(f.var_b) + self.wander_ppb
        disp = drift_err * max(0, t - f.last_time) / 1e9
        return off, f.mean_delay / 2 + 3 * math.sqrt(var) + disp

    def _report(self, t: int, verdict: str) -> Estimate | None:
        f = self._fit
        if f is None:
            return None
        off, unc = self._predict(t)
        return Estimate(offset_ns=off, drift_ppm=f.b / 1000.0, delay_ns=f.min_delay,
                        uncertainty_ns=unc, samples=f.n, jitter_ns=f.jitter,
                        stamp_source=f.source, time_ns=t, verdict=verdict)

    def _regress(self) -> _Fit:
        ser = self._series
        n = len(ser)
        t_ref = self._last.time_ns   # x = 0 at the newest sample
        src = self._last.source
        if ser.prepare(self.noise_floor_ns) or n == 1:
            # no slope to fit: the least delayed sample, any drift possible
            y, d = ser.least_delayed()
            self.window = 1
            var_b = (self.max_drift_ppm * 1000.0 / 3) ** 2
            return _Fit(t_ref, y, 0.0, float(self.noise_floor_ns) ** 2, var_b, 0.0, 1, 0.0,
                        d, d, t_ref, src)
        if n < self.min_window:
            start = 0
        elif self._since_sizing == 0 or self._since_sizing >= self.window_every:
            start = ser.window_start(self.min_window, self.runs_z)
            self._since_sizing = 0
        else:
            start = max(0, n - (self.window + 1))   # the same oldest sample, one newer
        self._since_sizing += 1
        a, b, var_a, var_b, cov, jitter, mean_delay, min_delay = ser.fit(start)
        self.window = m = n - start
        return _Fit(t_ref, a, b, var_a, var_b, cov, m, jitter, mean_delay, min_delay,
                    t_ref, src)
