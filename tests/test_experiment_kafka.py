"""`skewd experiment` over a real Kafka broker: the sweep, a broker restart
mid-run, a drift run, --transport both, and the Kafka flags."""
import json

import pytest

from conftest import tracks_prediction
from skewd import cli, kafkacli
from skewd.errors import UsageError
from skewd.experiment import compare, outage, runner
from skewd.experiment.runner import ExperimentConfig, parse_skews

MS = 1_000_000


def _cfg(tmp_path, broker, name, **kw):
    base = dict(out_dir=str(tmp_path / name), transport="kafka", rate=200.0,
                slot_ns=500 * MS, warmup_ns=3000 * MS,
                transport_settings={"bootstrap.servers": broker.bootstrap})
    base.update(kw)
    return ExperimentConfig(**base)


def test_sweep_over_kafka_matches_the_prediction(tmp_path, kafka_broker):
    cfg = _cfg(tmp_path, kafka_broker, "sweep", skews_ns=parse_skews("0,1ms,5ms,30ms"),
               duration_ns=3000 * MS)
    r = runner.run(cfg)
    assert r.complete, (r.problems, r.missing)
    by = {s.skew_ns: s for s in r.analysis.skews}
    assert by[0].rate == 0.0, "violations with no skew"
    # past the whole latency distribution nearly every request is negative
    assert by[30 * MS].rate > 0.5
    th = compare.threshold(r)
    assert th.floor_ns is not None and th.floor_ns > 100_000, "Kafka's floor is not µs"
    assert th.first_violation_ns is not None
    # The floor is the fastest of a few hundred skew-0 messages, an estimate
    # of the true minimum: a later slot can hold a message or two faster than
    # it (seen: one at 1 ms against a 1.29 ms floor, and one of 301 at 1 ms
    # against a 2.05 ms floor). Well below the floor at most one message on
    # the skewed stage's edges is negative; just below it only that thin tail.
    for s in r.analysis.skews:
        if 0 < s.skew_ns <= th.floor_ns / 2:
            assert sum(e.negative for e in s.edges) <= 1, (s.skew_ns, s.rate, th.floor_ns)
        elif s.skew_ns < th.floor_ns:
            assert s.rate < compare.CLEAR_RATE, (s.skew_ns, s.rate, th.floor_ns)
    assert th.first_clear_ns is not None and th.first_clear_ns >= th.floor_ns
    for s in r.analysis.skews:
        assert s.correctness == 1.0, s
        assert tracks_prediction(s), (s.skew_ns, s.rate, s.predicted_rate, s.rate_error_sd)
        offered = s.sent / s.seconds
        assert abs(s.throughput_rps / offered - 1) <= 0.05, (s.skew_ns, s.throughput_rps, offered)
    # the settings that shape latency are recorded with the results
    assert r.transport["linger.ms"] == 5 and r.transport["fetch.wait.max.ms"] == 500
    assert r.transport["kind"] == "kafka"


def test_broker_restart_mid_run_loses_and_duplicates_nothing(tmp_path, kafka_broker):
    cfg = _cfg(tmp_path, kafka_broker, "restart", skews_ns=parse_skews("0,5ms"),
               duration_ns=3000 * MS, warmup_ns=2000 * MS)
    restart = outage.BrokerRestart(kafka_broker, at=0.4, down_s=1.0)
    r = runner.run(cfg, progress=restart.progress())
    o = restart.outage()
    assert o.error is None and o.seconds >= 1.0
    rep = outage.restart_report_for(r, o)
    a = rep.audit
    assert a.sent > 500 and a.received == a.sent, a
    assert a.missing == 0 and a.duplicated == 0 and a.wrong == 0, a
    # the pause shows: no output for at least the time the broker was down
    assert rep.pause_s is not None and rep.pause_s >= 1.0
    t_stop = (o.stopped_ns - r.started_ns) / 1e9
    t_back = (o.back_ns - r.started_ns) / 1e9
    during = [w for w in rep.windows if t_stop + 0.3 < w.t_s and w.t_s + rep.window_s < t_back]
    assert during and all(w.arrivals == 0 for w in during)
    assert rep.latency_max_ns > 1e9 > rep.latency_p50_ns
    from skewd.experiment import report
    report.write(r)
    outage.add_to_report(rep, r.out_dir)
    data = json.loads((tmp_path / "restart" / "results.json").read_text())
    assert data["broker_restart"]["audit"]["ok"] is True
    assert "Broker restart" in (tmp_path / "restart" / "report.html").read_text()
    assert "every id exactly once" in outage.format_restart(rep)


def test_drift_on_kafka_moves_the_rate(tmp_path, kafka_broker):
    # 2000 ppm over 8 s: the stage's offset climbs from 0 to 16 ms
    cfg = _cfg(tmp_path, kafka_broker, "drift", skews_ns=None, drift_ppb=2_000_000.0,
               duration_ns=8000 * MS, drift_windows=8)
    r = runner.run(cfg)
    assert r.complete, (r.problems, r.missing)
    w = r.analysis.drift
    assert len(w) == 8
    assert w[0].rate < 0.05 and w[-1].rate > 0.8
    assert w[-1].offset_ns > w[0].offset_ns
    import numpy as np
    rates = [x.rate for x in w]
    # the rate climbs with the offset (machine load makes single windows wobble)
    assert np.corrcoef(rates, [x.offset_ns for x in w])[0, 1] > 0.7, rates


def test_cli_both_transports_in_one_report(tmp_path, capsys):
    out = tmp_path / "both"
    code = cli.main(["experiment", "--transport", "both", "--local-kafka",
                     "--skews", "0,300us,20ms", "--duration", "1s", "--rate", "200",
                     "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "where violations start, per transport" in text
    assert "study (Kafka)" in text and "linger.ms=5" in text
    comp = json.loads((out / "comparison.json").read_text())
    th = {t["transport"]: t for t in comp["thresholds"]}
    assert set(th) == {"zmq", "kafka"}
    # ZeroMQ breaks at microseconds, Kafka only at milliseconds: its floor is higher
    assert th["zmq"]["floor_ns"] < th["kafka"]["floor_ns"]
    assert th["zmq"]["first_violation_ns"] <= th["kafka"]["first_violation_ns"]
    rate = {k: {s["skew_ns"]: s["rate"] for s in json.loads(
        (out / k / "results.json").read_text())["analysis"]["skews"]} for k in th}
    assert rate["zmq"][300_000] > rate["kafka"][300_000]
    # far past both floors: clear violations on both (Kafka's latency tail under
    # load keeps a share of its messages later than 20 ms)
    assert rate["zmq"][20_000_000] > 0.9 and rate["kafka"][20_000_000] > 0.5
    for kind in ("zmq", "kafka"):
        assert (out / kind / "report.html").is_file()
        assert json.loads((out / kind / "results.json").read_text())["transport"]["kind"] == kind
    assert (out / "rate_vs_skew_transports.png").stat().st_size > 1000
    assert "transports compared" in (out / "report.html").read_text()


@pytest.mark.parametrize("argv,match", [
    (["--transport", "kafka"], "needs a Kafka broker: --local-kafka"),
    (["--transport", "kafka", "--local-kafka", "--bootstrap", "h:1"], "not both"),
    (["--transport", "zmq", "--local-kafka"], "only apply with --transport kafka"),
    (["--transport", "kafka", "--bootstrap", "nohost"], "HOST:PORT"),
    (["--transport", "kafka", "--bootstrap", "h:1", "--broker-restart"], "with --local-kafka"),
    (["--transport", "kafka", "--local-kafka", "--broker-restart", "150%"], "strictly inside"),
    (["--transport", "kafka", "--local-kafka", "--kafka-set", "linger"], "KEY=VALUE"),
    (["--transport", "kafka", "--local-kafka", "--hosts", "netns"], "--hosts local"),
])
def test_kafka_flags_are_checked(tmp_path, argv, match):
    p = cli.build_parser()
    args = p.parse_args(["experiment", "--out", str(tmp_path / "x"), *argv])
    with pytest.raises(UsageError, match=match):
        cli.experiment_config(args)


def test_kafka_defaults_fill_in_only_what_was_not_given(tmp_path):
    p = cli.build_parser()
    args = p.parse_args(["experiment", "--transport", "kafka", "--bootstrap", "h:1",
                         "--kafka-set", "linger.ms=0", "--out", str(tmp_path / "x")])
    cfg = cli.experiment_config(args)
    assert cfg.skews_ns == parse_skews(kafkacli.KAFKA_SKEWS)
    assert cfg.slot_ns == 500 * MS and cfg.warmup_ns >= 3000 * MS
    assert cfg.transport_settings == {"linger.ms": 0}
    args = p.parse_args(["experiment", "--transport", "kafka", "--bootstrap", "h:1",
                         "--skews", "0,7ms", "--slot", "200ms", "--out", str(tmp_path / "x")])
    cfg = cli.experiment_config(args)
    assert cfg.skews_ns == (0, 7 * MS) and cfg.slot_ns == 200 * MS


def test_unknown_kafka_setting_fails_before_anything_starts(tmp_path, capsys):
    code = cli.main(["experiment", "--transport", "kafka", "--bootstrap", "127.0.0.1:1",
                     "--kafka-set", "lingr.ms=1", "--out", str(tmp_path / "x")])
    assert code != 0
    err = capsys.readouterr().err
    assert "unknown setting 'lingr.ms'" in err
