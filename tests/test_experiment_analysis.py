"""Per-skew results from span tables, checked on synthetic traces whose
latencies and offsets are known exactly."""
import numpy as np
import pyarrow as pa
import pytest

from skewd.experiment.analysis import GUARD_NS, Phase, analyse, edge_samples
from skewd.schema import SPAN_SCHEMA

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def _plan(skews, slot=50 * MS, rounds=20, drift=None):
    plan = [Phase("warmup", T0, T0 + 100 * MS)]
    t = plan[-1].end_ns
    for _ in range(rounds):
        for s in skews:
            plan.append(Phase("skew", t, t + slot, s))
            t += slot
    if drift is not None:
        plan.append(Phase("drift", t, t + 2000 * MS, 0, drift))
    return plan


def _offset(plan, t):
    for p in plan:
        if p.start_ns <= t < p.end_ns:
            return int(p.offset_at(t))
    return 0


def _spans(plan, n_per_ms=2, seed=0, record_offsets=True):
    """source->preprocess->model->postprocess spans: model is skewed by the
    plan; one-way latencies are 40us + exponential(60us)."""
    rng = np.random.default_rng(seed)
    rows = {f.name: [] for f in SPAN_SCHEMA}
    sid = [1]

    def add(kind, stage, start, send, parent, inj):
        sid[0] += 1
        rows["trace_id"].append(trace[0].to_bytes(16, "little"))
        rows["span_id"].append(sid[0].to_bytes(8, "little"))
        rows["parent_id"].append(parent)
        rows["name"].append(f"{kind} {stage}")
        rows["kind"].append(kind)
        rows["node"].append(stage)
        rows["stage"].append(stage)
        rows["start_ns"].append(int(start))
        rows["end_ns"].append(int(start) + 1000)
        rows["send_ns"].append(int(send))
        rows["clock"].append("skewed:realtime")
        rows["injected_offset_ns"].append(inj if record_offsets else None)
        rows["est_offset_ns"].append(None)
        rows["est_uncertainty_ns"].append(None)
        return rows["span_id"][-1]

    trace = [0]
    t = plan[0].start_ns
    end = plan[-1].end_ns
    step = 1_000_000 // n_per_ms
    lat = []
    while t < end - 20 * MS:
        l_in = 40_000 + int(rng.exponential(60_000))
        l_out = 40_000 + int(rng.exponential(60_000))
        trace[0] += 1
        t_in = t + l_in                     # model receives (true time)
        s_in = _offset(plan, t_in)
        p = add("producer", "preprocess", t - 100, t, None, 0)
        add("consumer", "model", t_in + s_in, t, p, s_in)
        t_send = t_in + 300_000             # model sends (true time)
        s_out = _offset(plan, t_send)
        p = add("producer", "model", t_send + s_out - 100, t_send + s_out, None, s_out)
        add("consumer", "postprocess", t_send + l_out, t_send + s_out, p, 0)
        lat.append((l_in, l_out))
        t += step
    return pa.Table.from_pydict(rows, schema=SPAN_SCHEMA), np.array(lat)


def _expected_rate(skew):
    # P(40us + Exp(60us) < s) on the out-edge for s > 0, on the in-edge for s < 0
    x = abs(skew) - 40_000
    return 0.0 if x <= 0 else 1 - np.exp(-x / 60_000)


@pytest.mark.parametrize("record", [True, False])
def test_rates_track_the_distribution_and_prediction(record):
    skews = [0, 10_000, 100_000, 300_000, -100_000]
    plan = _plan(skews)
    spans, _ = _spans(plan, record_offsets=record)
    a = analyse(spans, None, None, "model", plan)
    by = {s.skew_ns: s for s in a.skews}
    assert set(by) == set(skews)
    assert by[0].rate == 0 and by[10_000].rate == 0
    for s in skews:
        r = by[s]
        assert r.rate == pytest.approx(_expected_rate(s), abs=0.06), s
        assert r.predicted_rate == pytest.approx(r.rate, abs=0.06), s
    # positive skew breaks the edge out of the stage, negative the edge in
    assert by[300_000].edges[0].negative == 0 and by[300_000].edges[1].negative > 0
    # the sampling error of rate − prediction: binomial on both counts, per edge
    r = by[100_000]
    n0 = {b.edge: b.messages for b in a.baseline}
    want = sum(e.rate * (1 - e.rate) / e.messages + e.predicted * (1 - e.predicted) / n0[e.edge]
               for e in r.edges) ** 0.5
    assert r.rate_error_sd == pytest.approx(want) and 0.005 < want < 0.05
    assert by[0].rate_error_sd == 0   # nothing negative, nothing predicted: no spread
    assert by[-100_000].edges[0].negative > 0 and by[-100_000].edges[1].negative == 0
    # the trace-estimated skew lies between the bounds and near the truth
    for s in skews:
        r = by[s]
        assert r.est_low_ns <= r.est_skew_ns <= r.est_high_ns
        assert abs(r.est_skew_ns - s) < 20_000, (s, r.est_skew_ns)
    floor = {b.edge: b.floor_ns for b in a.baseline}
    assert all(40_000 <= f < 45_000 for f in floor.values()), floor
    assert a.curve and a.curve[0][0] <= 0


def test_plan_placement_keeps_clear_of_changes_without_recorded_offsets():
    plan = _plan([0, 1 * MS], rounds=4)
    spans, _ = _spans(plan, record_offsets=False)
    for es in edge_samples(spans, "model", plan):
        kept = es.phase >= 0
        starts = np.array([plan[k].start_ns for k in es.phase[kept]])
        ends = np.array([plan[k].end_ns for k in es.phase[kept]])
        assert np.all(es.t[kept] - starts >= GUARD_NS)
        assert np.all(ends - es.t[kept] >= GUARD_NS)
        assert not np.any(es.phase == 0)  # the warmup is never counted


def test_drift_windows_follow_the_ramp():
    plan = _plan([0], rounds=20, drift=200_000)  # 200 ppm: 0 -> 400us over 2 s
    spans, _ = _spans(plan)
    a = analyse(spans, None, None, "model", plan, drift_windows=8)
    assert len(a.drift) == 8
    offs = [w.offset_ns for w in a.drift]
    assert offs == sorted(offs) and offs[-1] == pytest.approx(375_000, rel=0.01)
    assert a.drift[0].rate < 0.05 and a.drift[-1].rate > 0.9
    for w in a.drift:
        assert w.predicted_rate == pytest.approx(w.rate, abs=0.12)


def test_sink_and_source_records_give_throughput_correctness_latency():
    plan = _plan([0, 1 * MS], rounds=10)
    t = np.arange(plan[1].start_ns, plan[-1].end_ns, 2_500_000)  # 400/s
    src = pa.table({"req_id": np.arange(len(t)), "t_source_ns": t})
    ok = np.ones(len(t), bool)
    ok[5] = False
    lost = np.ones(len(t), bool)
    lost[7] = False
    sink = pa.table({"req_id": np.arange(len(t))[lost], "t_source_ns": t[lost],
                     "t_sink_ns": t[lost] + 2 * MS, "correct": ok[lost]})
    a = analyse(None, src, sink, "model", plan)
    total = sum(s.sent for s in a.skews)
    assert total == len(t)
    assert sum(s.correct for s in a.skews) == len(t) - 2
    for s in a.skews:
        assert s.throughput_rps == pytest.approx(400, rel=0.05)
        assert s.latency_p50_ns == pytest.approx(2 * MS)
        assert s.rate is None and s.predicted_rate is None   # no spans, no rates


def test_no_spans_at_all_is_not_an_error():
    plan = _plan([0, 1 * MS], rounds=2)
    a = analyse(None, None, None, "model", plan)
    assert [s.rate for s in a.skews] == [None, None]
    assert "predicted rates are unavailable" in a.notes[0]
