"""The experiment end to end on short runs: a sweep over ZeroMQ with skew
at the model stage, a drift run, a node that dies, and bad input."""
import os

import pytest

from conftest import processes_of, tracks_prediction
from skewd.errors import HostError, UsageError
from skewd.experiment import report, runner

US = 1_000
MS = 1_000_000


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sweep") / "out")
    # without daemons: their column stays empty (test_experiment_daemons runs with them)
    cfg = runner.ExperimentConfig(out_dir=out, duration_ns=2500 * MS, rate=400, daemons=False)
    res = runner.run(cfg)
    files = report.write(res)
    return res, files, out


def test_sweep_completes_and_keeps_everything(sweep):
    res, files, out = sweep
    assert res.complete, (res.problems, res.missing)
    assert not processes_of(out)
    for key in ("json", "html", "rate", "throughput"):
        assert os.path.getsize(files[key]) > 1000
    html = open(files["html"]).read()
    assert "data:image/png;base64," in html and "<table>" in html
    logs = os.listdir(os.path.join(out, "logs"))
    for stage in ("source", "preprocess", "model", "postprocess", "sink"):
        assert any(f.startswith(f"spans-{stage}-") for f in logs), stage
    assert [s.skew_ns for s in res.analysis.skews] == list(runner.parse_skews(runner.DEFAULT_SKEWS))
    assert "n/a" in report.format_table(res)   # no daemon: its column says so


def test_no_violations_at_zero_or_well_below_the_floor(sweep):
    res, _, _ = sweep
    floor = min(b.floor_ns for b in res.analysis.baseline)
    below = [s for s in res.analysis.skews if s.skew_ns <= floor / 2]
    assert [s.skew_ns for s in below][:2] == [0, 10 * US]
    for s in below:
        assert s.rate == 0, (s.skew_ns, s.rate)
        assert sum(e.negative for e in s.edges) == 0


def test_violations_appear_past_the_floor_and_track_the_prediction(sweep):
    res, _, _ = sweep
    sk = res.analysis.skews
    floor = min(b.floor_ns for b in res.analysis.baseline)
    assert all(s.rate > 0 for s in sk if s.skew_ns > 2 * floor)
    assert sk[-1].rate > 0.5
    assert all(b.rate >= a.rate - 0.05 for a, b in zip(sk, sk[1:]))   # rises with skew
    for s in res.analysis.skews:
        assert s.rate is not None and s.predicted_rate is not None
        assert tracks_prediction(s), (s.skew_ns, s.rate, s.predicted_rate, s.rate_error_sd)
        # a skew at the model clock shows on the edge out of it
        assert s.edges[0].negative == 0
        assert s.edges[1].messages > 500


def test_throughput_steady_and_every_output_correct(sweep):
    res, _, _ = sweep
    tps = [s.throughput_rps for s in res.analysis.skews]
    assert max(tps) <= 1.05 * min(tps), tps
    assert min(tps) > 0.9 * 400
    for s in res.analysis.skews:
        assert s.sent > 0 and s.correct == s.sent, (s.skew_ns, s.sent, s.correct)
        assert s.correctness == 1.0
        assert 0 < s.latency_p50_ns <= s.latency_p99_ns


def test_trace_estimated_skew_follows_the_injected_one(sweep):
    res, _, _ = sweep
    for s in res.analysis.skews:
        assert s.est_low_ns <= s.skew_ns <= s.est_high_ns, s
        assert s.daemon_offset_ns is None


def test_a_saturated_run_is_paced_by_short_queues(tmp_path):
    cfg = runner.ExperimentConfig(out_dir=str(tmp_path / "max"), rate=0, daemons=False,
                                  duration_ns=1500 * MS, skews_ns=runner.parse_skews("0"))
    res = runner.run(cfg)
    assert res.complete, (res.problems, res.missing)
    # the source waits on full queues of 64, not 10000 (which it would fill
    # far beyond what the sink could check before the run ends)
    assert res.transport["hwm"] == 64
    (s,) = res.analysis.skews
    assert s.correctness == 1.0 and s.received == s.sent > 500
    assert s.latency_p50_ns < 2e9


def test_every_other_window_traced(tmp_path):
    """trace_windows_ns: the source traces the requests of every other window,
    the stages pass untraced ones on untraced; the sink says which was which."""
    from skewd import spanlog
    out = str(tmp_path / "win")
    cfg = runner.ExperimentConfig(out_dir=out, skews_ns=(0,), duration_ns=2000 * MS, rate=500,
                                  daemons=False, trace_windows_ns=250 * MS)
    res = runner.run(cfg)
    assert res.complete, (res.problems, res.missing)
    s = res.analysis.skews[0]
    assert s.correct == s.sent > 0
    sink = runner.read_records(os.path.join(out, "nodes", "sink.arrow"))
    rows = sorted(zip(sink.column("t_sink_ns").to_pylist(), sink.column("traced").to_pylist(),
                      sink.column("req_id").to_pylist()))
    flags = [t for _, t, _ in rows]
    switches = sum(a != b for a, b in zip(flags, flags[1:]))
    assert switches >= 6 and 0.3 < sum(flags) / len(flags) < 0.7, (switches, sum(flags))
    traced_ids = {r for _, t, r in rows if t}
    spans = spanlog.read(os.path.join(out, "logs"))
    # one consumer span per traced request at the model, none for the others
    model = [r for r in spans.to_pylist() if r["stage"] == "model" and r["kind"] == "consumer"]
    assert len(model) == len(traced_ids)
    assert len({r["trace_id"] for r in model}) == len(traced_ids)


def test_drift_run_rate_rises_with_the_offset(tmp_path):
    out = str(tmp_path / "drift")
    cfg = runner.ExperimentConfig(out_dir=out, skews_ns=None, drift_ppb=100_000,
                                  duration_ns=8000 * MS, rate=400, drift_windows=8)
    res = runner.run(cfg)
    files = report.write(res)
    assert res.complete, (res.problems, res.missing)
    assert "drift" in files and os.path.getsize(files["drift"]) > 1000
    d = res.analysis.drift
    assert len(d) == 8
    assert [w.offset_ns for w in d] == sorted(w.offset_ns for w in d)
    assert d[0].rate < d[-1].rate and d[-1].rate > 0.5
    assert all(w.messages > 100 for w in d)
    # over the whole ramp the rate is what the skew-0 delays predict; window by
    # window too, but a one-second window can hold a stall of this busy host
    n = sum(w.messages for w in d)
    measured = sum(w.rate * w.messages for w in d) / n
    predicted = sum(w.predicted_rate * w.messages for w in d) / n
    assert abs(measured - predicted) <= 0.05, (measured, predicted)
    close = [w for w in d if abs(w.rate - w.predicted_rate) <= 0.2]
    assert len(close) >= len(d) // 2, d
    assert [s.skew_ns for s in res.analysis.skews] == [0]   # the baseline
    assert not processes_of(out)


def test_a_node_that_dies_ends_the_run_cleanly(tmp_path):
    out = str(tmp_path / "dies")
    cfg = runner.ExperimentConfig(out_dir=out, skews_ns=(0, 1 * MS), duration_ns=3000 * MS,
                                  rate=400, fault="model:after=700")
    res = runner.run(cfg)
    files = report.write(res)
    assert not res.complete
    assert any("node model exited with status 17" in p for p in res.problems)
    assert any("recorded" in m for m in res.missing)          # which skews fell short
    assert not processes_of(out)
    # what was recorded is kept and analysed
    model = [n for n in res.nodes if n.node == "model"][0]
    assert model.exit_code == 17 and model.end == "died"
    assert all(n.exit_code is not None for n in res.nodes)
    assert os.listdir(os.path.join(out, "logs"))
    assert sum(s.sent for s in res.analysis.skews) > 0
    text = report.format_table(res)
    assert "INCOMPLETE RUN" in text and "model" in text
    assert "Incomplete run" in open(files["html"]).read()


def test_bad_configuration_is_refused_before_anything_starts(tmp_path):
    out = str(tmp_path / "o")
    for kw, msg in [(dict(skew_stage="gpu"), "stage 'gpu' does not exist"),
                    (dict(transport="carrier-pigeon"), "not available"),
                    (dict(hosts="cloud"), "--hosts"),
                    (dict(rate=-1), "--rate"),
                    (dict(skews_ns=None), "nothing to run"),
                    (dict(slot_ns=MS), "--slot"),
                    (dict(fault="model:soon"), "NODE:after=N"),
                    (dict(trace_windows_ns=-1), "trace windows"),
                    (dict(trace_windows_ns=MS, instrumented=False), "instrumented run")]:
        with pytest.raises(UsageError, match=msg):
            runner.run(runner.ExperimentConfig(out_dir=out, **kw))
    assert not os.path.exists(out)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    with pytest.raises(UsageError, match="not a skewd experiment's"):
        runner.run(runner.ExperimentConfig(out_dir=str(tmp_path / "busy"), skews_ns=(0,)))


def test_parse_skews_and_stage():
    assert runner.parse_skews("0,10us,1ms,-5ms") == (0, 10 * US, MS, -5 * MS)
    for bad, msg in [("0,,1ms", "empty item"), ("1ms,1ms", "twice"), ("5", "no unit"),
                     ("10xs", "unknown unit")]:
        with pytest.raises(UsageError, match=msg):
            runner.parse_skews(bad)
    with pytest.raises(UsageError, match="source, preprocess, model, postprocess, sink"):
        runner.parse_stage("Model")
    assert "zmq" in runner.transport_names()


def test_plan_interleaves_every_skew_with_the_baseline():
    cfg = runner.ExperimentConfig(out_dir="x", skews_ns=(10 * US, MS), duration_ns=500 * MS,
                                  slot_ns=50 * MS, drift_ppb=100_000)
    plan = runner.make_plan(cfg, 0)
    assert plan[0].kind == "warmup"
    skew = [p for p in plan if p.kind == "skew"]
    assert {p.offset_ns for p in skew} == {0, 10 * US, MS}      # 0 added as baseline
    for v in (10 * US, MS):
        assert sum(p.seconds for p in skew if p.offset_ns == v) == pytest.approx(0.5)
    drift_from = min(p.start_ns for p in plan if p.kind == "drift")
    assert sum(p.seconds for p in skew if p.offset_ns == 0 and p.end_ns <= drift_from) \
        == pytest.approx(1.0)
    assert all(a.end_ns == b.start_ns for a, b in zip(plan, plan[1:]))
    ramp = [p for p in plan if p.kind == "drift"]
    assert len(ramp) == 5 and all(p.drift_ppb == 100_000 for p in ramp)
    r0 = ramp[0].start_ns
    for p in ramp:   # every ramp slot continues one line: 100 ppm since r0
        assert p.offset_at(p.end_ns) == pytest.approx((p.end_ns - r0) * 1e-4, abs=1)
    assert plan[-1].end_ns - r0 == 500 * MS


def test_netns_needs_root(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(HostError, match="needs root"):
        runner.run(runner.ExperimentConfig(out_dir=str(tmp_path / "n"), hosts="netns",
                                           skews_ns=(0,)))


from hypothesis import given, strategies as st  # noqa: E402


@given(st.lists(st.integers(-10**10, 10**10), min_size=1, max_size=12, unique=True),
       st.sampled_from(["ns", "us", "ms"]))
def test_parse_skews_round_trips(values, unit):
    scale = {"ns": 1, "us": 1_000, "ms": 1_000_000}[unit]
    vals = [v // scale for v in values]
    if len(set(vals)) != len(vals) or any(abs(v * scale) > 10**10 for v in vals):
        return
    text = ",".join("0" if v == 0 else f"{v}{unit}" for v in vals)
    assert runner.parse_skews(text) == tuple(v * scale for v in vals)


@given(st.text(max_size=30))
def test_parse_skews_gives_usage_errors_only(text):
    try:
        runner.parse_skews(text)
    except UsageError:
        pass
