"""What the run's daemons measured of the skewed stage, from their offset
logs (skewd.offsetlog), set beside the injection plan.

The skewed stage's offset changes every slot (20 ms by default), far faster
than any daemon's estimator follows: an estimate is a fit over seconds of
exchanges. So the figures here come from the daemons' *exchanges*, each one
an instantaneous measurement of the stage's clock against the measuring
node's (exact to the stamps' precision, microseconds on loopback):

- per skew: the median offset of every exchange of another node with the
  skewed stage that lies wholly (t1..t4, with GUARD_NS to spare at both ends)
  inside a slot of that skew;
- drift runs: the daemon's own estimator (skewd.estimate.Estimator, as the
  daemon runs it) fed, per measuring node, the exchanges that lie inside the
  ramp's slots, in order; its offset and drift at a window's end are what a
  daemon watching only the drifting clock would have reported there, and
  the run's measured drift is the median over the measuring nodes.

Exchanges are timed by the measuring node's clock, which is unskewed: the
plan's slots are in that clock too. Only other nodes' measurements of the
skewed stage are used (that stage's own stamps of its peers are skewed, so
its view of time does not place an exchange in a slot).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from skewd.estimate import Estimator, Sample

#: an exchange must keep this far from a change of skew at both ends: the
#: responder puts its receive stamp on the skewed clock when it handles the
#: datagram, which may be a little after the stamp was taken
GUARD_NS = 2_000_000


@dataclass(frozen=True)
class Exchanges:
    """Other nodes' exchanges with the skewed stage, in time order."""
    node: np.ndarray             # measuring node (str objects)
    t1: np.ndarray
    t2: np.ndarray
    t3: np.ndarray
    t4: np.ndarray
    offset: np.ndarray           # the stage's clock minus the measuring node's (ns)
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.t1)


def exchanges_of(table, stage: str) -> Exchanges:
    """The exchanges in an offset-log table (skewd.offsetlog.read) of other
    nodes with `stage`."""
    import pyarrow.compute as pc
    if table is None or table.num_rows == 0:
        z = np.zeros(0, dtype=np.int64)
        return Exchanges(z.astype(object), z, z, z, z, z.astype(float), z.astype(object))
    m = pc.and_(pc.and_(pc.equal(table.column("record"), "exchange"),
                        pc.equal(table.column("peer"), stage)),
                pc.not_equal(table.column("node"), stage))
    for c in ("t1", "t2", "t3", "t4"):
        m = pc.and_(m, pc.is_valid(table.column(c)))
    t = table.filter(m)
    t = t.take(pc.sort_indices(t, sort_keys=[("t1", "ascending")]))

    def col(name, dtype=None):
        a = t.column(name).to_numpy(zero_copy_only=False)
        return a.astype(dtype) if dtype else a
    return Exchanges(col("node").astype(object), col("t1", np.int64), col("t2", np.int64),
                     col("t3", np.int64), col("t4", np.int64), col("offset_ns", float),
                     col("source").astype(object))


def phase_of(ex: Exchanges, plan, guard_ns: int = GUARD_NS) -> np.ndarray:
    """Index into the plan of the phase each exchange lies wholly inside
    (guard_ns clear of both ends), -1 for none, a warmup or a late slot."""
    if len(ex) == 0 or not plan:
        return np.zeros(len(ex), dtype=np.int64) - 1
    starts = np.array([p.start_ns for p in plan], dtype=np.int64)
    ends = np.array([p.end_ns for p in plan], dtype=np.int64)
    bad = np.array([p.kind not in ("skew", "drift") for p in plan])
    k = np.clip(np.searchsorted(starts, ex.t1, side="right") - 1, 0, len(plan) - 1)
    ok = (ex.t1 >= starts[k] + guard_ns) & (ex.t4 <= ends[k] - guard_ns) & ~bad[k] \
        & (ex.t1 >= starts[0])
    return np.where(ok, k, -1)


@dataclass(frozen=True)
class SkewMeasure:
    """The stage's offset at one injected skew, from single exchanges."""
    skew_ns: int
    offset_ns: float             # median
    exchanges: int
    p10_ns: float
    p90_ns: float


@dataclass(frozen=True)
class WindowMeasure:
    """The estimator's view at the end of a drift window, at its middle."""
    offset_ns: float             # at the window's middle
    drift_ppm: float
    #: exchanges of the ramp inside the window (all measuring nodes)
    exchanges: int


@dataclass(frozen=True)
class DriftTrack:
    """Per measuring node, the ramp's exchanges as estimator samples."""
    samples: dict[str, list[Sample]]

    def _run(self, points: list[tuple[int, int]]) -> dict[str, list]:
        """Feed each node's estimator in time order; at each (checkpoint,
        t) its estimate at t after every sample timed before the checkpoint
        (None while it has none)."""
        out = {}
        for node, ss in self.samples.items():
            est = Estimator()
            got, i = [], 0
            for cp, t in points:
                while i < len(ss) and ss[i].time_ns < cp:
                    est.add(ss[i])
                    i += 1
                got.append(est.estimate_at(t))
            out[node] = got
        return out

    def windows(self, bounds: list[tuple[int, int]]) -> list[WindowMeasure | None]:
        """For windows [a, b): the median over measuring nodes of the
        estimate each node's estimator gives at the window's middle after
        taking every ramp exchange timed before b."""
        states = self._run([(b, (a + b) // 2) for a, b in bounds])
        out = []
        for w, (a, b) in enumerate(bounds):
            ests = [st[w] for st in states.values() if st[w] is not None]
            n = sum(1 for ss in self.samples.values() for s in ss if a <= s.time_ns < b)
            if not ests:
                out.append(None)
                continue
            out.append(WindowMeasure(float(np.median([e.offset_ns for e in ests])),
                                     float(np.median([e.drift_ppm for e in ests])), n))
        return out

    def final(self) -> tuple[float, float, int] | None:
        """(median drift ppm, its spread across nodes as max − min, nodes)
        from each node's estimator after the whole ramp."""
        end = max((ss[-1].time_ns + 1 for ss in self.samples.values() if ss), default=None)
        if end is None:
            return None
        states = self._run([(end, end)])
        drifts = [st[0].drift_ppm for st in states.values() if st[0] is not None]
        if not drifts:
            return None
        return float(np.median(drifts)), float(max(drifts) - min(drifts)), len(drifts)


@dataclass(frozen=True)
class DaemonView:
    """Everything the analysis takes from the daemons."""
    per_skew: dict[int, SkewMeasure] = field(default_factory=dict)
    track: DriftTrack | None = None
    exchanges: int = 0
    measuring: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


def measure(table, stage: str, plan, guard_ns: int = GUARD_NS,
            end_ns: int | None = None) -> DaemonView:
    """The daemons' view of `stage` over the run's plan; end_ns: where the
    run stopped early (the injection stopped following the plan there, while
    the daemons measured on until they were stopped)."""
    if end_ns is not None:
        plan = [replace(p, end_ns=min(p.end_ns, end_ns)) for p in plan if p.start_ns < end_ns]
    ex = exchanges_of(table, stage)
    k = phase_of(ex, plan, guard_ns)
    per = {}
    skew_values = sorted({p.offset_ns for p in plan if p.kind == "skew"})
    kinds = np.array([p.kind for p in plan] + ["-"], dtype=object)
    offs = np.array([p.offset_ns for p in plan] + [0], dtype=np.int64)
    in_skew = (k >= 0) & (kinds[k] == "skew")
    for s in skew_values:
        sel = in_skew & (offs[k] == s)
        o = ex.offset[sel]
        if len(o):
            per[s] = SkewMeasure(s, float(np.median(o)), int(len(o)),
                                 float(np.percentile(o, 10)), float(np.percentile(o, 90)))
    track = None
    ramp = (k >= 0) & (kinds[k] == "drift")
    if ramp.any():
        samples: dict[str, list[Sample]] = {}
        for i in np.flatnonzero(ramp):
            samples.setdefault(ex.node[i], []).append(
                Sample(int(ex.t1[i]), int(ex.t2[i]), int(ex.t3[i]), int(ex.t4[i]),
                       str(ex.source[i] or "kernel")))
        for ss in samples.values():
            ss.sort(key=lambda s: s.time_ns)
        track = DriftTrack(samples)
    return DaemonView(per, track, int(len(ex)), tuple(sorted(set(ex.node.tolist()))),
                      tuple(sorted({str(s) for s in ex.source.tolist() if s})))
