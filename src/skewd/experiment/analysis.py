"""From a run's span logs and the source's and sink's records to per-skew
results.

The skewed stage X has an edge in (A→X) and an edge out (X→B). On each, the
consumer span records the send time it carried, so the recorded one-way delay
is d = consumer.start − consumer.send_ns, and a negative d is a violation.
With X's clock ahead by s, d_in = L_in + s and d_out = L_out − s, so the rate
expected at skew s is F_in(−s) on the way in and F_out(s) on the way out,
where F(x) is the fraction of one-way delays measured at skew 0 that are
below x. The headline rate adds the two: negative spans per request crossing
X (only one of the two can be negative for one request when the other nodes
share a clock).

Each message is placed in time by the timestamp taken on the unskewed side
(the producer's send time coming in, the consumer's start going out), and its
injected offset is the run plan's ground truth at that time; messages within
GUARD_NS of a change of skew are left out, since they may straddle it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from skewd.experiment.stages import STAGES, edges_of
from skewd.statepage import Segment

GUARD_NS = 5_000_000


@dataclass(frozen=True)
class Phase:
    """A stretch of the run with one injection segment at the skewed stage."""
    kind: str                    # "warmup" | "skew" | "drift"
    start_ns: int
    end_ns: int
    offset_ns: int = 0           # at start_ns
    drift_ppb: int = 0

    def segment(self) -> Segment:
        return Segment(self.start_ns, self.offset_ns, self.drift_ppb, self.start_ns)

    def offset_at(self, t):
        return self.offset_ns + self.drift_ppb * (np.asarray(t) - self.start_ns) / 1e9

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass(frozen=True)
class EdgeSamples:
    """One edge's messages: recorded delay d, unskewed time t, offset s."""
    edge: str
    d: np.ndarray
    t: np.ndarray
    offset: np.ndarray
    phase: np.ndarray            # index into the plan, -1 where left out


@dataclass(frozen=True)
class EdgeStats:
    edge: str
    messages: int
    negative: int
    rate: float | None
    predicted: float | None
    min_delay_ns: int | None


@dataclass(frozen=True)
class SkewResult:
    skew_ns: int
    seconds: float
    injected_offset_ns: int
    daemon_offset_ns: int | None
    est_skew_ns: float | None
    est_low_ns: float | None
    est_high_ns: float | None
    rate: float | None
    predicted_rate: float | None
    edges: tuple[EdgeStats, ...]
    sent: int
    received: int
    correct: int
    correctness: float | None
    throughput_rps: float | None  # completed / s, of the requests sent at this skew
    latency_p50_ns: float | None
    latency_p99_ns: float | None
    #: the daemons' single exchanges with the stage inside this skew's slots
    #: (daemon_offset_ns is their median; measured.py says why exchanges)
    daemon_exchanges: int = 0
    #: the standard error of rate − predicted_rate from sampling alone: the
    #: messages counted at this skew and the skew-0 messages the prediction
    #: comes from (binomial, per edge, summed); None without both
    rate_error_sd: float | None = None


@dataclass(frozen=True)
class DriftWindow:
    t_s: float                   # window middle, seconds since the ramp began
    offset_ns: float             # injected (ground truth) at the middle
    est_skew_ns: float | None
    rate: float | None
    predicted_rate: float | None
    messages: int
    throughput_rps: float | None
    #: the daemons' estimate of the stage's offset at the middle and its
    #: drift, and the rate F(measured offset) predicts from it
    daemon_offset_ns: float | None = None
    daemon_drift_ppm: float | None = None
    daemon_predicted_rate: float | None = None


@dataclass(frozen=True)
class Baseline:
    """One-way delay on each of the skewed stage's edges at skew 0."""
    edge: str
    messages: int
    floor_ns: int | None
    p50_ns: float | None
    p99_ns: float | None


@dataclass(frozen=True)
class Analysis:
    skews: tuple[SkewResult, ...]
    drift: tuple[DriftWindow, ...]
    baseline: tuple[Baseline, ...]
    estimator: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: (skew_ns, predicted rate) on a fine grid, for plotting F as a curve
    curve: tuple[tuple[int, float], ...] = ()
    #: drift runs: the stage's drift as the daemons measured it over the
    #: whole ramp (median over the measuring nodes) and how many measured it
    daemon_drift_ppm: float | None = None
    daemon_drift_nodes: int = 0


def _col(table, name):
    return table.column(name).to_numpy(zero_copy_only=False)


def _u64(col) -> np.ndarray:
    """8-byte ids as uint64 (nulls come out as 0; mask them yourself)."""
    import pyarrow as pa
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if len(arr) == 0:
        return np.zeros(0, dtype=np.uint64)
    buf = arr.buffers()[1]
    return np.frombuffer(buf, dtype=np.uint64, count=len(arr), offset=arr.offset * 8).copy()


def _spans_of(spans, kind: str, stage: str):
    import pyarrow.compute as pc
    k = pc.cast(spans.column("kind"), "string")
    return spans.filter(pc.and_(pc.equal(k, kind), pc.equal(spans.column("stage"), stage)))


def _injected(table) -> np.ndarray:
    """injected_offset_ns as floats, NaN where the tracer recorded none."""
    col = table.column("injected_offset_ns")
    return col.to_numpy(zero_copy_only=False).astype(float) if col.null_count == 0 else \
        np.array([np.nan if v is None else float(v) for v in col.to_pylist()])


def edge_samples(spans, stage: str, plan: list[Phase]) -> list[EdgeSamples]:
    """The consumer spans on the skewed stage's edges, with the offset that
    was injected at the skewed end of each: the injected_offset_ns the tracer
    recorded there (the consumer span itself on the way in, the producer
    span it names as parent on the way out), or, where none was recorded,
    the plan's offset at the message's time with GUARD_NS kept clear of
    every change."""
    import pyarrow.compute as pc
    into, out = edges_of(stage)
    i = STAGES.index(stage)
    starts = np.array([p.start_ns for p in plan], dtype=np.int64)
    ends = np.array([p.end_ns for p in plan], dtype=np.int64)
    bad = np.array([p.kind in ("warmup", "late") for p in plan])
    off0 = np.array([p.offset_ns for p in plan], dtype=float)
    drift = np.array([p.drift_ppb for p in plan], dtype=float)
    have = spans is not None and spans.num_rows > 0
    producers = None
    result = []
    for edge, consumer_stage, inbound in ((into, stage, True),
                                          (out, STAGES[min(i + 1, len(STAGES) - 1)], False)):
        if edge is None:
            continue
        sel = _spans_of(spans, "consumer", consumer_stage) if have else None
        if sel is not None:
            sel = sel.filter(pc.is_valid(sel.column("send_ns")))
        if sel is None or sel.num_rows == 0:
            z = np.zeros(0, dtype=np.int64)
            result.append(EdgeSamples(edge, z, z, z.astype(float), z))
            continue
        start = _col(sel, "start_ns").astype(np.int64)
        send = _col(sel, "send_ns").astype(np.int64)
        t = send if inbound else start
        if inbound:
            recorded = _injected(sel)
        else:
            if producers is None:
                ps = _spans_of(spans, "producer", stage)
                pid = _u64(ps.column("span_id"))
                order = np.argsort(pid)
                producers = (pid[order], _injected(ps)[order])
            pid, pinj = producers
            parent = _u64(sel.column("parent_id"))
            valid = sel.column("parent_id").is_valid().to_numpy(zero_copy_only=False)
            j = np.clip(np.searchsorted(pid, parent), 0, max(0, len(pid) - 1))
            hit = valid & (len(pid) > 0) & (pid[j] == parent if len(pid) else False)
            recorded = np.where(hit, pinj[j] if len(pid) else np.nan, np.nan)
        k = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(plan) - 1)
        ok = (t >= starts[0]) & (t < ends[k]) & ~bad[k]
        planned = off0[k] + drift[k] * (t - starts[k]) / 1e9
        known = ~np.isnan(recorded)
        # without a recorded offset, keep clear of the plan's changes
        ok &= known | ((t - starts[k] >= GUARD_NS) & (ends[k] - t >= GUARD_NS))
        offset = np.where(known, recorded, planned)
        phase = np.where(ok, k, -1)
        result.append(EdgeSamples(edge, start - send, t, offset, phase))
    return result


class _CDF:
    def __init__(self, d: np.ndarray):
        self.d = np.sort(d)

    def __call__(self, x) -> np.ndarray:
        if len(self.d) == 0:
            return np.full(np.shape(x), np.nan)
        return np.searchsorted(self.d, x, side="left") / len(self.d)


def _edge_stats(es: EdgeSamples, sel: np.ndarray, cdf: _CDF, inbound: bool) -> EdgeStats:
    d = es.d[sel]
    n = int(len(d))
    if n == 0:
        return EdgeStats(es.edge, 0, 0, None, None, None)
    neg = int((d < 0).sum())
    x = -es.offset[sel] if inbound else es.offset[sel]
    pred = cdf(x)
    return EdgeStats(es.edge, n, neg, neg / n,
                     None if np.isnan(pred).any() else float(pred.mean()), int(d.min()))


def _bounds(stats, inbound: list[bool]) -> tuple:
    """Skew of the stage from its edges' least delays: θ ≤ min d_in and
    θ ≥ −min d_out; the estimate is the middle where both exist, else the
    one bound there is."""
    lo = hi = None
    for e, into in zip(stats, inbound):
        if e.min_delay_ns is None:
            continue
        if into:
            hi = float(e.min_delay_ns)
        else:
            lo = -float(e.min_delay_ns)
    if lo is not None and hi is not None:
        return (lo + hi) / 2, lo, hi
    return (hi if hi is not None else lo), lo, hi


def _pct(x: np.ndarray, q: float) -> float | None:
    return float(np.percentile(x, q)) if len(x) else None


def _in_phases(t: np.ndarray, phases: list[Phase]) -> np.ndarray:
    m = np.zeros(len(t), dtype=bool)
    for p in phases:
        m |= (t >= p.start_ns) & (t < p.end_ns)
    return m


def analyse(spans, source, sink, stage: str, plan: list[Phase],
            daemon_offsets: dict[int, int | None] | None = None,
            drift_windows: int = 10, end_ns: int | None = None,
            daemon=None) -> Analysis:
    """spans: the span table (or None); source: table (req_id, t_source_ns);
    sink: table (req_id, t_source_ns, t_sink_ns, correct); end_ns: where the
    data stops when the run ended early (phases after it are partial);
    daemon: what the run's daemons measured (measured.DaemonView), which
    fills the daemon columns (daemon_offsets: per-skew offsets given
    directly, where there is no view)."""
    notes = []
    samples = edge_samples(spans, stage, plan)
    inbound_first = edges_of(stage)[0] is not None
    inbound = [inbound_first and i == 0 for i in range(len(samples))]

    sweep_idx = [i for i, p in enumerate(plan) if p.kind == "skew"]
    cdfs, baseline = [], []
    for es in samples:
        d0 = es.d[np.isin(es.phase, sweep_idx) & (es.offset == 0)]
        cdfs.append(_CDF(d0))
        baseline.append(Baseline(es.edge, int(len(d0)), int(d0.min()) if len(d0) else None,
                                 _pct(d0, 50), _pct(d0, 99)))
    if not any(b.messages for b in baseline):
        notes.append("no skew-0 messages: predicted rates are unavailable")

    src_t = _col(source, "t_source_ns") if source is not None else np.zeros(0, np.int64)
    sink_src = _col(sink, "t_source_ns") if sink is not None else np.zeros(0, np.int64)
    sink_t = _col(sink, "t_sink_ns") if sink is not None else np.zeros(0, np.int64)
    sink_ok = _col(sink, "correct").astype(bool) if sink is not None else np.zeros(0, bool)

    def group(skew: int, phases: list[Phase]):
        stats = []
        for j, es in enumerate(samples):
            sel = np.isin(es.phase, sweep_idx) & (es.offset == skew)
            stats.append(_edge_stats(es, sel, cdfs[j], inbound[j]))
        stats = tuple(stats)
        rates = [e.rate for e in stats]
        preds = [e.predicted for e in stats]
        rate = None if any(r is None for r in rates) else float(sum(rates))
        pred = None if any(p is None for p in preds) else float(sum(preds))
        var = 0.0
        for e, b in zip(stats, baseline):
            if e.rate is None or e.predicted is None or not b.messages:
                var = None
                break
            var += (e.rate * (1 - e.rate) / e.messages
                    + e.predicted * (1 - e.predicted) / b.messages)
        est, lo, hi = _bounds(stats, inbound)
        sent_m = _in_phases(src_t, phases)
        recv_m = _in_phases(sink_src, phases)
        secs = sum(p.seconds for p in phases)
        if end_ns is not None:
            secs = sum(max(0.0, (min(p.end_ns, end_ns) - p.start_ns) / 1e9) for p in phases)
        # completed requests among those sent while this skew held: with slots
        # of tens of ms, counting arrivals instead would move requests that
        # cross a slot boundary into the neighbouring skew
        arrivals = int(recv_m.sum())
        lat = (sink_t - sink_src)[recv_m]
        sent = int(sent_m.sum())
        correct = int(sink_ok[recv_m].sum())
        return dict(stats=stats, rate=rate, pred=pred, sd=None if var is None else var ** 0.5,
                    est=est, lo=lo, hi=hi, sent=sent,
                    received=int(recv_m.sum()), correct=correct,
                    correctness=(correct / sent) if sent else None,
                    throughput=(arrivals / secs) if secs > 0 else None,
                    p50=_pct(lat, 50), p99=_pct(lat, 99), secs=secs)

    skews = []
    values = sorted({p.offset_ns for p in plan if p.kind == "skew"})
    per_skew = daemon.per_skew if daemon is not None else {}
    for s in values:
        g = group(s, [p for p in plan if p.kind == "skew" and p.offset_ns == s])
        dm = per_skew.get(s)
        skews.append(SkewResult(
            skew_ns=s, seconds=g["secs"], injected_offset_ns=s,
            daemon_offset_ns=round(dm.offset_ns) if dm else (daemon_offsets or {}).get(s),
            daemon_exchanges=dm.exchanges if dm else 0,
            est_skew_ns=g["est"], est_low_ns=g["lo"], est_high_ns=g["hi"],
            rate=g["rate"], predicted_rate=g["pred"], rate_error_sd=g["sd"], edges=g["stats"],
            sent=g["sent"], received=g["received"], correct=g["correct"],
            correctness=g["correctness"], throughput_rps=g["throughput"],
            latency_p50_ns=g["p50"], latency_p99_ns=g["p99"]))

    drift = []
    ramp_idx = [i for i, p in enumerate(plan) if p.kind == "drift"]
    if ramp_idx:
        # ramp slots alternate with skew-0 slots; every ramp slot continues one
        # line, offset = drift·(t − r0), so a window's offset is that line's
        first, last = plan[ramp_idx[0]], plan[ramp_idx[-1]]
        ppb = first.drift_ppb
        r0 = first.start_ns - round(first.offset_ns * 1e9 / ppb) if ppb else first.start_ns
        span_end = last.end_ns
        ramps = [plan[i] for i in ramp_idx]
        n = max(1, drift_windows)
        width = (span_end - first.start_ns) // n
        bounds = [(first.start_ns + w * width, first.start_ns + (w + 1) * width)
                  for w in range(n)]
        track = daemon.track if daemon is not None else None
        seen = track.windows(bounds) if track is not None else [None] * n
        for w, (a, b) in enumerate(bounds):
            if end_ns is not None and a >= end_ns:
                break
            inside = [Phase("drift", max(a, p.start_ns), min(b, p.end_ns))
                      for p in ramps if p.start_ns < b and p.end_ns > a]
            stats = []
            for j, es in enumerate(samples):
                sel = np.isin(es.phase, ramp_idx) & (es.t >= a) & (es.t < b)
                stats.append(_edge_stats(es, sel, cdfs[j], inbound[j]))
            rates = [e.rate for e in stats]
            preds = [e.predicted for e in stats]
            est, _, _ = _bounds(stats, inbound)
            secs = sum(p.seconds for p in inside)
            arrivals = int(_in_phases(sink_src, inside).sum())
            mid = (a + b) / 2
            dw, dpred = seen[w], None
            if dw is not None:
                # F(measured offset): each message at the daemons' line
                # through the window, offset + drift·(t − middle)
                parts = []
                for j, es in enumerate(samples):
                    sel = np.isin(es.phase, ramp_idx) & (es.t >= a) & (es.t < b)
                    if not sel.any():
                        continue
                    x = dw.offset_ns + dw.drift_ppm * 1e3 * (es.t[sel] - mid) / 1e9
                    parts.append(float(cdfs[j](-x if inbound[j] else x).mean()))
                dpred = float(sum(parts)) if parts and not any(np.isnan(parts)) else None
            drift.append(DriftWindow(
                t_s=(mid - first.start_ns) / 1e9,
                offset_ns=ppb * (mid - r0) / 1e9, est_skew_ns=est,
                rate=None if any(r is None for r in rates) else float(sum(rates)),
                predicted_rate=None if any(p is None for p in preds) else float(sum(preds)),
                messages=sum(e.messages for e in stats),
                throughput_rps=arrivals / secs if secs > 0 else None,
                daemon_offset_ns=dw.offset_ns if dw else None,
                daemon_drift_ppm=dw.drift_ppm if dw else None,
                daemon_predicted_rate=dpred))

    curve = ()
    skew_values = [abs(s) for s in values if s]
    if skew_values and all(len(c.d) for c in cdfs):
        sign = -1 if all(s < 0 for s in values if s) else 1
        grid = np.unique(np.concatenate([[0], np.geomspace(
            min(skew_values) / 10, max(skew_values) * 1.5, 200)]).round().astype(np.int64))
        pred = sum(c(-sign * grid if into else sign * grid) for c, into in zip(cdfs, inbound))
        curve = tuple((int(sign * g), float(p)) for g, p in zip(grid, pred))

    estimator = ("min-delay bounds on the stage's two edges (θ ≤ min d_in, θ ≥ −min d_out; "
                 "its neighbours share one unskewed clock), middle of the interval")
    fin = daemon.track.final() if daemon is not None and daemon.track is not None else None
    return Analysis(tuple(skews), tuple(drift), tuple(baseline),
                    estimator=estimator,
                    notes=tuple(notes), curve=curve,
                    daemon_drift_ppm=fin[0] if fin else None,
                    daemon_drift_nodes=fin[2] if fin else 0)
