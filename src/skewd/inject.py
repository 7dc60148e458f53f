"""Skew injection: schedules (step, ramp, sine, seeded random walk) turned
into linear segments on a node's clock-state page, each within a stated
maximum error of the schedule's exact offset."""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Iterator


from skewd.errors import UsageError
from skewd.statepage import INT64_MAX, NO_SEGMENT, Segment, StatePage
from skewd.units import parse_duration, parse_rate


class Schedule:
    """An injected offset as a function of base-clock time t (ns)."""
    #: True when two segments describe it forever (no feeder needed)
    linear = True
    #: largest |segment offset - exact offset| the segments allow, in ns
    max_error_ns = 0.0

    def offset_at(self, t: int) -> float:
        raise NotImplementedError

    def segments(self, start_ns: int) -> Iterator[Segment]:
        """Consecutive segments from start_ns on (forever for non-linear)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Step(Schedule):
    """Offset jumps to offset_ns (then drifts at drift_ppb) at time at_ns;
    before that it is `before_ns`."""
    offset_ns: int
    at_ns: int = 0
    drift_ppb: float = 0.0
    before_ns: int = 0

    def offset_at(self, t: int) -> float:
        if t < self.at_ns:
            return self.before_ns
        return self.offset_ns + self.drift_ppb * (t - self.at_ns) / 1e9

    def segments(self, start_ns: int) -> Iterator[Segment]:
        if start_ns < self.at_ns:
            yield Segment(start_ns, self.before_ns, 0, start_ns)
        yield Segment(max(start_ns, self.at_ns), self.offset_ns, round(self.drift_ppb), self.at_ns)


@dataclass(frozen=True)
class Ramp(Schedule):
    """Offset grows at drift_ppb from offset_ns at start_ns."""
    drift_ppb: float
    offset_ns: int = 0
    start_ns: int = 0

    def offset_at(self, t: int) -> float:
        return self.offset_ns + self.drift_ppb * (t - self.start_ns) / 1e9

    def segments(self, start_ns: int) -> Iterator[Segment]:
        yield Segment(start_ns, self.offset_ns, round(self.drift_ppb), self.start_ns)


@dataclass(frozen=True)
class Sine(Schedule):
    """offset_ns + amplitude_ns·sin(2π(t − start)/period), as chords whose
    length keeps the chord error ≤ max_error_ns (A·ω²·h²/8)."""
    amplitude_ns: int
    period_ns: int
    offset_ns: int = 0
    start_ns: int = 0
    max_error: float = 1000.0
    linear = False

    def __post_init__(self):
        if self.period_ns <= 0:
            raise UsageError("sine period must be positive")
        if self.max_error <= 0:
            raise UsageError("sine max error must be positive")

    @property
    def max_error_ns(self) -> float:  # chord error + drift rounding to 1 ppb
        return self.max_error + 1.5 + 0.5 * self.step_ns / 1e9  # + offset/drift rounding

    @property
    def step_ns(self) -> int:
        w = 2 * math.pi / (self.period_ns / 1e9)
        a = abs(self.amplitude_ns)
        h = math.sqrt(8 * self.max_error / (a * w * w)) * 1e9 if a else self.period_ns
        return int(max(1_000_000, min(h, self.period_ns / 8)))

    def offset_at(self, t: int) -> float:
        return self.offset_ns + self.amplitude_ns * math.sin(
            2 * math.pi * (t - self.start_ns) / self.period_ns)

    def segments(self, start_ns: int) -> Iterator[Segment]:
        h = self.step_ns
        t = start_ns
        while True:
            a, b = self.offset_at(t), self.offset_at(t + h)
            yield Segment(t, round(a), round((b - a) * 1e9 / h), t)
            t += h


@dataclass(frozen=True)
class RandomWalk(Schedule):
    """A seeded Gaussian random walk: knots every step_ns with increments of
    standard deviation sigma_ns·sqrt(step/1s), joined linearly. The segments
    are the schedule, so the only error is drift rounding to 1 ppb."""
    sigma_ns: float
    step_ns: int
    seed: int = 0
    offset_ns: int = 0
    start_ns: int = 0
    linear = False

    def __post_init__(self):
        if self.step_ns < 1_000_000:
            raise UsageError("random-walk step must be at least 1ms")

    @property
    def max_error_ns(self) -> float:
        return 0.5 * self.step_ns / 1e9

    def _knots(self) -> Iterator[float]:
        import numpy as np  # only here: the daemon imports this module
        rng = np.random.default_rng(self.seed)
        scale = self.sigma_ns * math.sqrt(self.step_ns / 1e9)
        v = float(self.offset_ns)
        while True:
            yield v
            for inc in rng.normal(0.0, scale, 1024):
                v += float(inc)
                yield v

    def offset_at(self, t: int) -> float:
        if t <= self.start_ns:
            return float(self.offset_ns)
        k, frac = divmod(t - self.start_ns, self.step_ns)
        knots = self._knots()
        for _ in range(k):
            next(knots)
        a = next(knots)
        b = next(knots)
        return a + (b - a) * frac / self.step_ns

    def segments(self, start_ns: int) -> Iterator[Segment]:
        knots = self._knots()
        k0 = max(0, (start_ns - self.start_ns) // self.step_ns)
        a = next(knots)
        for _ in range(k0):
            a = next(knots)
        t = self.start_ns + k0 * self.step_ns
        for b in knots:
            yield Segment(max(t, start_ns), round(a), round((b - a) * 1e9 / self.step_ns), t)
            a = b
            t += self.step_ns


def _kv(spec: str, body: str) -> dict[str, str]:
    out = {}
    for part in filter(None, body.split(",")):
        if "=" not in part:
            raise UsageError(f"schedule {spec!r}: {part!r} should be key=value")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


SCHEDULE_HELP = """\
step:offset=5ms[,at=+10s][,drift=20ppm]   jump to an offset now or after a delay
ramp:drift=100ppm[,offset=0]              offset grows steadily (a frequency error)
sine:amplitude=1ms,period=60s[,error=1us] offset swings; error bounds the chords
walk:sigma=20us,step=1s[,seed=1]          seeded random walk (sigma per sqrt(second))"""


def parse_schedule(spec: str, now_ns: int) -> Schedule:
    """Parse a --schedule string (see SCHEDULE_HELP); times like at=+10s are
    relative to now_ns."""
    kind, _, body = spec.partition(":")
    kv = _kv(spec, body)

    def take(key, parse, default=None, required=False):
        if key in kv:
            try:
                return parse(kv.pop(key))
            except UsageError as e:
                raise UsageError(f"schedule {spec!r}: {key}: {e}") from None
        if required:
            raise UsageError(f"schedule {spec!r} needs {key}=...")
        return default

    rel = lambda v: now_ns + parse_duration(v.lstrip("+"))
    kind = kind.strip().lower()
    if kind == "step":
        s = Step(offset_ns=take("offset", parse_duration, required=True),
                 at_ns=take("at", rel, now_ns), drift_ppb=take("drift", parse_rate, 0.0))
    elif kind == "ramp":
        s = Ramp(drift_ppb=take("drift", parse_rate, required=True),
                 offset_ns=take("offset", parse_duration, 0), start_ns=now_ns)
    elif kind == "sine":
        s = Sine(amplitude_ns=take("amplitude", parse_duration, required=True),
                 period_ns=take("period", parse_duration, required=True),
                 offset_ns=take("offset", parse_duration, 0), start_ns=now_ns,
                 max_error=take("error", parse_duration, 1000))
    elif kind in ("walk", "randomwalk", "random-walk"):
        s = RandomWalk(sigma_ns=take("sigma", parse_duration, required=True),
                       step_ns=take("step", parse_duration, 1_000_000_000),
                       seed=take("seed", int, 0), offset_ns=take("offset", parse_duration, 0),
                       start_ns=now_ns)
    else:
        raise UsageError(f"unknown schedule kind {kind!r} in {spec!r}; one of:\n{SCHEDULE_HELP}")
    if kv:
        raise UsageError(f"schedule {spec!r}: unknown key(s) {', '.join(sorted(kv))}")
    return s


class Injector:
    """Writes a schedule's segments to a page: once for a linear schedule;
    for a non-linear one `run()` keeps the next segment in place ahead of time."""

    def __init__(self, page: StatePage, schedule: Schedule, base_now=None):
        from skewd import clocks
        self.page = page
        self.schedule = schedule
        self._now = base_now or clocks.realtime_ns
        self._segs: Iterator[Segment] | None = None
        self._cur: Segment | None = None
        self._next: Segment | None = None

    def start(self) -> None:
        self._segs = self.schedule.segments(self._now())
        self._cur = next(self._segs)
        self._next = next(self._segs, None)
        self.page.set_injection(self._cur, self._next or NO_SEGMENT)

    def advance(self) -> bool:
        """Move one segment on if the current one has ended; True if it did."""
        if self._next is None or self._now() < self._next.start_ns:
            return False
        self._cur, self._next = self._next, next(self._segs, None)
        self.page.set_injection(self._cur, self._next or NO_SEGMENT)
        return True

    def next_change_ns(self) -> int:
        return self._next.start_ns if self._next else INT64_MAX

    def run(self, stop: threading.Event, until_ns: int | None = None) -> None:
        """Feed segments until stop is set or until_ns passes."""
        if self._segs is None:
            self.start()
        while not stop.is_set():
            now = self._now()
            if until_ns is not None and now >= until_ns:
                return
            self.advance()
            wake = min(self.next_change_ns(), until_ns or INT64_MAX)
            stop.wait(max(0.0, min(1.0, (wake - self._now()) / 1e9)))
