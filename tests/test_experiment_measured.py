"""What the daemons measured, set beside the plan (experiment/measured.py),
on synthetic offset logs whose truth is known."""
import random

import numpy as np
import pytest

from skewd.experiment import measured
from skewd.experiment.analysis import Phase
from skewd.offsetlog import batch_from_rows

US = 1_000
MS = 1_000_000
T0 = 1_700_000_000 * 10**9


def _exchange(node, peer, t1, offset, delay=40 * US, turn=20 * US, source="kernel"):
    """A symmetric exchange whose offset (peer minus node) is `offset`."""
    t2 = t1 + delay // 2 + offset
    t3 = t2 + turn
    t4 = t1 + delay + turn
    return dict(time_ns=(t1 + t4) // 2, node=node, peer=peer, record="exchange",
                t1=t1, t2=t2, t3=t3, t4=t4, offset_ns=float(offset),
                delay_ns=float(delay), source=source, verdict="accepted")


def _table(rows):
    import pyarrow as pa
    return pa.Table.from_batches([batch_from_rows(rows)])


def _sweep_plan(skews, slot=20 * MS, rounds=30, seed=3):
    plan = [Phase("warmup", T0, T0 + 100 * MS)]
    t = plan[-1].end_ns
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(skews)
        rng.shuffle(order)
        for s in order:
            plan.append(Phase("skew", t, t + slot, s))
            t += slot
    return plan


def _offset_at(plan, t):
    for p in plan:
        if p.start_ns <= t < p.end_ns:
            return int(p.offset_at(t)) if p.kind != "warmup" else 0
    return 0


def test_per_skew_median_of_exchanges_inside_the_slots():
    skews = [0, 100 * US, 1 * MS, 5 * MS]
    plan = _sweep_plan(skews)
    rows = []
    t = T0
    rng = random.Random(1)
    while t < plan[-1].end_ns:
        for node in ("source", "preprocess", "postprocess"):
            t1 = t + rng.randrange(3 * MS)
            rows.append(_exchange(node, "model", t1, _offset_at(plan, t1 + 20 * US)))
        # the model's own view of the others is skewed: it must not count
        rows.append(_exchange("model", "source", t + 1, -_offset_at(plan, t) + 777 * US))
        t += 7 * MS
    # an exchange straddling a change of skew, with a made-up offset
    p = plan[5]
    rows.append(_exchange("sink", "model", p.end_ns - 30 * US, 123 * US))
    view = measured.measure(_table(rows), "model", plan)
    assert set(view.per_skew) == set(skews)
    for s in skews:
        m = view.per_skew[s]
        assert m.offset_ns == s, (s, m)
        assert m.exchanges > 20
    assert "model" not in view.measuring and "source" in view.measuring
    assert view.track is None


def test_a_run_that_stopped_early_counts_exchanges_up_to_the_stop_only():
    # a node died 10 ms into the 1 ms slots: the injection stopped following
    # the plan there (here: back to 0) while the daemons measured on
    plan = [Phase("skew", T0, T0 + 20 * MS, 0), Phase("skew", T0 + 20 * MS, T0 + 40 * MS, 1 * MS),
            Phase("skew", T0 + 40 * MS, T0 + 60 * MS, 1 * MS)]
    stop = T0 + 30 * MS
    rows = [_exchange("source", "model", T0 + 5 * MS, 0),
            _exchange("source", "model", T0 + 23 * MS, 1 * MS)]   # before the stop
    rows += [_exchange("source", "model", T0 + t * MS, 0) for t in (31, 35, 42, 47, 55)]
    table = _table(rows)
    assert measured.measure(table, "model", plan).per_skew[1 * MS].offset_ns == 0   # misled
    view = measured.measure(table, "model", plan, end_ns=stop)
    assert view.per_skew[1 * MS].offset_ns == 1 * MS and view.per_skew[1 * MS].exchanges == 1
    assert view.per_skew[0].exchanges == 1


def test_guard_keeps_exchanges_away_from_changes():
    plan = [Phase("warmup", T0, T0 + 10 * MS), Phase("skew", T0 + 10 * MS, T0 + 30 * MS, 0),
            Phase("skew", T0 + 30 * MS, T0 + 50 * MS, 1 * MS)]
    rows = [_exchange("source", "model", T0 + 5 * MS, 0),                  # warmup
            _exchange("source", "model", T0 + 11 * MS, 0),                 # too near the start
            _exchange("source", "model", T0 + 20 * MS, 0),                 # inside
            _exchange("source", "model", T0 + 29 * MS, 0),                 # too near the end
            _exchange("source", "model", T0 + 40 * MS, 1 * MS)]            # inside
    ex = measured.exchanges_of(_table(rows), "model")
    assert measured.phase_of(ex, plan).tolist() == [-1, -1, 1, -1, 2]
    assert measured.phase_of(ex, plan, guard_ns=0).tolist() == [-1, 1, 1, 1, 2]


def test_drift_from_the_ramp_slots_only():
    ppb = 100_000                        # 100 ppm
    plan = [Phase("warmup", T0, T0 + 100 * MS)]
    t, r0, on = plan[-1].end_ns, plan[-1].end_ns, True
    while t < r0 + 6000 * MS:
        plan.append(Phase("drift", t, t + 20 * MS, round(ppb * (t - r0) / 1e9), ppb) if on
                    else Phase("skew", t, t + 20 * MS, 0))
        t, on = t + 20 * MS, not on
    rng = random.Random(2)
    rows = []
    t = T0
    while t < plan[-1].end_ns:
        for node in ("source", "preprocess", "postprocess", "sink"):
            t1 = t + rng.randrange(100 * MS)
            noise = int(rng.gauss(0, 2 * US))
            rows.append(_exchange(node, "model", t1, _offset_at(plan, t1 + 20 * US) + noise,
                                  delay=40 * US + rng.randrange(5 * US)))
        t += 100 * MS
    view = measured.measure(_table(rows), "model", plan)
    assert view.track is not None
    drift, spread, nodes = view.track.final()
    assert nodes == 4
    assert drift == pytest.approx(100.0, rel=0.03)
    bounds = [(r0 + i * 1000 * MS, r0 + (i + 1) * 1000 * MS) for i in range(6)]
    ws = view.track.windows(bounds)
    for (a, b), w in zip(bounds[1:], ws[1:]):
        truth = ppb * ((a + b) / 2 - r0) / 1e9
        assert w is not None and abs(w.offset_ns - truth) < 15 * US, (truth, w)
        assert w.exchanges > 5


def test_no_logs_no_figures():
    plan = _sweep_plan([0, MS], rounds=2)
    view = measured.measure(None, "model", plan)
    assert view.per_skew == {} and view.track is None and view.exchanges == 0
    ex = measured.exchanges_of(None, "model")
    assert len(ex) == 0 and len(measured.phase_of(ex, plan)) == 0
    assert np.asarray(ex.offset).dtype == float
