"""A deterministic simulator for the estimator, far faster than real time.

    from skewd.simulate import ClockModel, PathModel, Scenario, simulate
    r = simulate(Scenario(peer=ClockModel(offset_ns=5e6, freq_ppm=20),
                          path=PathModel(base_ns=50_000, jitter_ns=20_000),
                          count=2000, interval_s=1.0, seed=1))
    r.rms_error_ns, r.max_error_ns, r.freq_error_ppm, r.converge_s, r.contained

Clocks have an offset, a frequency error, a frequency wander (a random walk of
the frequency, ppb per √s) and steps; paths a base one-way delay, a fixed
asymmetry, exponential queueing jitter (its mean may differ each way) and
loss. Both sides' stamps carry Gaussian noise. Everything derives from one
seeded numpy Generator, so a scenario always gives the same numbers.

Truth is known exactly: the offset (peer − local) at the true midpoint of each
exchange and the frequency difference. Results are judged after `settle_s`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from skewd.estimate import Estimate, Estimator, Sample

#: sample times sit on a realistic epoch; the models work relative to it
BASE_NS = 1_700_000_000_000_000_000


@dataclass(frozen=True)
class ClockModel:
    offset_ns: float = 0.0
    freq_ppm: float = 0.0
    #: standard deviation of the frequency's random walk, ppb per sqrt(second)
    wander_ppb: float = 0.0
    #: (at_s, step_ns): the clock jumps by step_ns at true time at_s
    steps: tuple[tuple[float, float], ...] = ()
    #: Gaussian noise on each stamp this clock takes, ns
    stamp_noise_ns: float = 0.0


@dataclass(frozen=True)
class PathModel:
    base_ns: float = 20_000.0
    #: forward minus backward fixed delay (forward = base + asym/2)
    asymmetry_ns: float = 0.0
    #: mean of the exponential queueing delay, forward (and back unless given)
    jitter_ns: float = 0.0
    jitter_back_ns: float | None = None
    loss: float = 0.0


@dataclass(frozen=True)
class Scenario:
    peer: ClockModel = field(default_factory=ClockModel)
    local: ClockModel = field(default_factory=ClockModel)
    path: PathModel = field(default_factory=PathModel)
    count: int = 1000
    interval_s: float = 1.0
    turnaround_ns: float = 20_000.0
    seed: int = 0
    settle_s: float = 0.0


@dataclass
class SimResult:
    scenario: Scenario
    times_s: np.ndarray           # true time of each estimate
    errors_ns: np.ndarray         # estimate − truth
    uncertainty_ns: np.ndarray
    freq_errors_ppm: np.ndarray
    raw_errors_ns: np.ndarray     # per-exchange θ − truth, every delivered exchange
    estimates: list[Estimate]
    stats: dict
    lost: int
    wall_s: float

    def _after(self, a: np.ndarray) -> np.ndarray:
        return a[self.times_s >= self.scenario.settle_s]

    @property
    def rms_error_ns(self) -> float:
        e = self._after(self.errors_ns)
        return float(np.sqrt(np.mean(e * e))) if len(e) else math.nan

    @property
    def max_error_ns(self) -> float:
        e = self._after(self.errors_ns)
        return float(np.max(np.abs(e))) if len(e) else math.nan

    @property
    def mean_error_ns(self) -> float:
        e = self._after(self.errors_ns)
        return float(np.mean(e)) if len(e) else math.nan

    @property
    def freq_error_ppm(self) -> float:
        """RMS frequency error after settling."""
        e = self._after(self.freq_errors_ppm)
        return float(np.sqrt(np.mean(e * e))) if len(e) else math.nan

    @property
    def contained(self) -> float:
        """Share of estimates (after settling) whose interval holds the truth."""
        e = self._after(self.errors_ns)
        u = self._after(self.uncertainty_ns)
        return float(np.mean(np.abs(e) <= u)) if len(e) else math.nan

    def converge_s(self, bound_ns: float) -> float:
        """True time from which every estimate stays within bound_ns
        (inf if it never does)."""
        bad = np.nonzero(np.abs(self.errors_ns) > bound_ns)[0]
        if len(bad) == 0:
            return float(self.times_s[0]) if len(self.times_s) else math.inf
        if bad[-1] == len(self.errors_ns) - 1:
            return math.inf
        return float(self.times_s[bad[-1] + 1])

    @property
    def simulated_s(self) -> float:
        return self.scenario.count * self.scenario.interval_s

    @property
    def speedup(self) -> float:
        return self.simulated_s / max(self.wall_s, 1e-9)


class _Clock:
    """A clock model's offset (clock − true time) at the exchange times."""

    def __init__(self, m: ClockModel, times_s: np.ndarray, rng: np.random.Generator):
        n = len(times_s)
        dt = np.diff(times_s, prepend=times_s[0])
        walk = rng.normal(0.0, 1.0, n) * m.wander_ppb * np.sqrt(dt)
        self.freq_ppb = m.freq_ppm * 1000.0 + np.cumsum(walk)   # at each exchange
        # offset accumulates the frequency between exchanges
        inc = np.concatenate([[0.0], self.freq_ppb[:-1] * dt[1:]])  # ppb*s = ns
        self.off_ns = m.offset_ns + np.cumsum(inc)
        self.times_s = times_s
        self.steps = sorted(m.steps)
        self.noise = m.stamp_noise_ns

    def offset(self, k: int, t_s: float) -> float:
        """Offset at true time t_s, close to exchange k's start."""
        o = self.off_ns[k] + self.freq_ppb[k] * (t_s - self.times_s[k])
        for at, step in self.steps:
            if t_s >= at:
                o += step
        return o


def simulate(sc: Scenario, estimator: Estimator | None = None) -> SimResult:
    """Run the scenario through an estimator (a fresh default one if None)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(sc.seed)
    est = estimator or Estimator()
    n = sc.count
    times = np.arange(n) * sc.interval_s
    peer = _Clock(sc.peer, times, rng)
    local = _Clock(sc.local, times, rng)
    p = sc.path
    jb = p.jitter_ns if p.jitter_back_ns is None else p.jitter_back_ns
    fwd = p.base_ns + p.asymmetry_ns / 2 + (rng.exponential(p.jitter_ns, n) if p.jitter_ns > 0 else 0.0)
    back = p.base_ns - p.asymmetry_ns / 2 + (rng.exponential(jb, n) if jb > 0 else 0.0)
    fwd = np.maximum(np.broadcast_to(fwd, (n,)), 0.0)
    back = np.maximum(np.broadcast_to(back, (n,)), 0.0)
    lost = rng.random(n) < p.loss if p.loss > 0 else np.zeros(n, dtype=bool)
    noise = rng.normal(0.0, 1.0, (n, 4))

    ts, errs, uncs, ferrs, raw, ests = [], [], [], [], [], []
    for k in range(n):
        if lost[k]:
            continue
        T1 = times[k] * 1e9
        T2 = T1 + fwd[k]
        T3 = T2 + sc.turnaround_ns
        T4 = T3 + back[k]
        s = lambda c, T, j: T + c.offset(k, T / 1e9) + c.noise * noise[k, j]
        smp = Sample(BASE_NS + round(s(local, T1, 0)), BASE_NS + round(s(peer, T2, 1)),
                     BASE_NS + round(s(peer, T3, 2)), BASE_NS + round(s(local, T4, 3)),
                     source="kernel", seq=k)
        Tm = (T1 + T4) / 2 / 1e9
        truth = peer.offset(k, Tm) - local.offset(k, Tm)
        raw.append(smp.offset_ns - truth)
        e = est.add(smp)
        if e is None:
            continue
        # the estimate is for our clock's time_ns: map it back to true time
        Te = (e.time_ns - BASE_NS) / 1e9
        Te -= local.offset(k, Te) / 1e9
        truth_e = peer.offset(k, Te) - local.offset(k, Te)
        ts.append(Te)
        errs.append(e.offset_ns - truth_e)
        uncs.append(e.uncertainty_ns)
        ferrs.append(e.drift_ppm - (peer.freq_ppb[k] - local.freq_ppb[k]) / 1000.0)
        ests.append(e)
    st = est.stats
    return SimResult(sc, np.array(ts), np.array(errs), np.array(uncs), np.array(ferrs),
                     np.array(raw), ests,
                     dict(added=st.added, accepted=st.accepted, rejected_delay=st.rejected_delay,
                          rejected_invalid=st.rejected_invalid,
                          causality_failures=st.causality_failures, steps=st.steps),
                     int(lost.sum()), time.perf_counter() - t0)
