"""The Kafka parts of `skewd experiment`: --transport kafka and both,
--local-kafka, --bootstrap, --kafka-set, --broker-restart. cli.py hands
these runs here; the library does the work (runner, report, compare, outage).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import replace

from skewd.errors import UsageError
from skewd.units import parse_duration

#: the study's sweep over Kafka
KAFKA_SKEWS = "0,1ms,2ms,3ms,4ms,5ms,10ms"
#: both transports: ZeroMQ's microseconds and Kafka's milliseconds
BOTH_SKEWS = "0,10us,30us,100us,300us,1ms,2ms,3ms,4ms,5ms,10ms"
#: a skew is held this long when --slot is not given: Kafka delays reach
#: milliseconds, so short slots would mix messages sent under the previous skew
KAFKA_SLOT = "500ms"
#: the broker's JIT, and the producers' idempotence handshake, settle in this
KAFKA_WARMUP_NS = 3_000_000_000
BOTH_FILES = ("report.html", "comparison.json", "rate_vs_skew_transports.png")


def add_args(p) -> None:
    g = p.add_argument_group("Kafka (--transport kafka, or both for ZeroMQ and Kafka in one report)")
    g.add_argument("--local-kafka", action="store_true",
                   help="start a local Apache Kafka broker for the run (scripts/kafka: a single "
                        "KRaft node on 127.0.0.1; jars fetched once with Maven; needs Java 17+)")
    g.add_argument("--bootstrap", metavar="HOST:PORT",
                   help="use your own Kafka cluster instead (topics skewd.<run>.* are created)")
    g.add_argument("--kafka-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a Kafka transport setting, recorded in the results: linger.ms, "
                        "batch.size, fetch.wait.max.ms, fetch.min.bytes, partitions, ... "
                        "(repeatable; default: a stock librdkafka client's, linger.ms=5)")
    g.add_argument("--broker-restart", nargs="?", const="50%", metavar="AT",
                   help="with --local-kafka: stop the broker cleanly AT of the way through "
                        "the run (default 50%%) and start it again; the report checks the sink "
                        "for lost or duplicated outputs and shows the pause")
    g.add_argument("--broker-down", default="2s",
                   help="how long the restarted broker stays away (default 2s)")


def wants_kafka(args) -> bool:
    return getattr(args, "transport", None) in ("kafka", "both")


def _setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--kafka-set {text!r}: write KEY=VALUE, e.g. linger.ms=0")
    value = value.strip()
    try:
        return key.strip(), int(value)
    except ValueError:
        return key.strip(), value


def check_args(args) -> None:
    """UsageError for Kafka flags that do not fit together."""
    local, boot = getattr(args, "local_kafka", False), getattr(args, "bootstrap", None)
    if not wants_kafka(args):
        used = [f for f, v in (("--local-kafka", local), ("--bootstrap", boot),
                               ("--kafka-set", getattr(args, "kafka_set", None)),
                               ("--broker-restart", getattr(args, "broker_restart", None))) if v]
        if used:
            raise UsageError(f"{', '.join(used)} only apply with --transport kafka or both")
        return
    if local and boot:
        raise UsageError("give either --local-kafka or --bootstrap HOST:PORT, not both")
    if not local and not boot:
        raise UsageError(f"--transport {args.transport} needs a Kafka broker: --local-kafka "
                         "starts one on this machine, --bootstrap HOST:PORT uses yours")
    if boot:
        from skewd.kafkabroker import check_bootstrap
        check_bootstrap(boot)
    if args.broker_restart is not None:
        if not local:
            raise UsageError("--broker-restart restarts the broker skewd started: use it "
                             "with --local-kafka")
        if args.transport != "kafka":
            raise UsageError("--broker-restart goes with --transport kafka")
        restart_at(args.broker_restart)
        parse_duration(args.broker_down)
    if getattr(args, "hosts", "local") != "local":
        raise UsageError("Kafka runs with --hosts local: the broker listens on 127.0.0.1, "
                         "which nodes in namespaces of their own cannot reach")


def restart_at(text: str) -> float:
    t = text.strip()
    try:
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise UsageError(f"--broker-restart {text!r}: give a point of the run such as 50%") from None
    if not 0 < v < 1:
        raise UsageError(f"--broker-restart {text!r} must lie strictly inside the run (0%..100%)")
    return v


def adjust_config(args, cfg):
    """The experiment config with Kafka's defaults where the user gave none."""
    check_args(args)
    if not wants_kafka(args):
        return cfg
    from skewd.experiment import runner
    changes = {}
    if args.skews is None and cfg.skews_ns is not None:
        changes["skews_ns"] = runner.parse_skews(KAFKA_SKEWS if args.transport == "kafka"
                                                 else BOTH_SKEWS)
    if args.slot is None:
        changes["slot_ns"] = parse_duration(KAFKA_SLOT)
    changes["warmup_ns"] = max(cfg.warmup_ns, KAFKA_WARMUP_NS)
    settings = dict(cfg.transport_settings)
    settings.update(_setting(s) for s in args.kafka_set)
    # a bad setting fails here, before a broker or any stage starts
    from skewd.experiment.transports.kafka import resolve_settings
    resolve_settings({**settings, "bootstrap.servers": args.bootstrap or "127.0.0.1:9092"})
    changes["transport_settings"] = settings
    if args.transport == "both":
        changes["transport"] = "zmq"     # the first of the two; see run_both
    return replace(cfg, **changes)


@contextmanager
def broker(args):
    """(bootstrap, KafkaBroker or None) for the run's duration."""
    from skewd import kafkabroker
    if args.local_kafka:
        with kafkabroker.local_broker() as b:
            yield b.bootstrap, b
    else:
        kafkabroker.wait_answers(args.bootstrap, timeout_s=15.0)
        yield args.bootstrap, None


def _kafka_cfg(cfg, bootstrap: str, out_dir: str):
    from skewd.experiment.transports.kafka import resolve_settings
    settings = {**cfg.transport_settings, "bootstrap.servers": bootstrap}
    resolve_settings(settings)    # a bad --kafka-set fails here, before any process starts
    return replace(cfg, transport="kafka", out_dir=out_dir, transport_settings=settings)


def _prepare_top(path: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--out {path} exists and is not a directory")
    os.makedirs(path, exist_ok=True)
    foreign = [e for e in os.listdir(path) if e not in BOTH_FILES + ("zmq", "kafka")]
    if foreign:
        raise UsageError(f"--out {path} holds files that are not a skewd experiment's "
                         f"({', '.join(sorted(foreign)[:3])}...): give an empty or new directory")


def cmd_experiment(args, cfg, progress) -> int:
    """Run a Kafka experiment (or both transports) as the command line says."""
    from skewd.experiment import report, runner
    if args.transport == "kafka":
        with broker(args) as (bootstrap, b):
            kcfg = _kafka_cfg(cfg, bootstrap, cfg.out_dir)
            restart = None
            if args.broker_restart is not None:
                from skewd.experiment.outage import BrokerRestart
                restart = BrokerRestart(b, at=restart_at(args.broker_restart),
                                        down_s=parse_duration(args.broker_down) / 1e9)
            result = runner.run(kcfg, progress=restart.progress(progress("experiment (kafka)"))
                                if restart else progress("experiment (kafka)"))
            files = report.write(result)
            rr = None
            if restart is not None:
                from skewd.experiment import outage
                rr = outage.restart_report_for(result, restart.outage())
                outage.add_to_report(rr, result.out_dir)
        if args.json:
            with open(files["json"]) as f:
                print(f.read())
        else:
            print(report.format_table(result))
            if rr is not None:
                from skewd.experiment.outage import format_restart
                print("\n" + format_restart(rr))
            print(f"\nreport: {files['html']}\nresults: {files['json']}   span logs: "
                  f"{os.path.join(result.out_dir, 'logs')}")
        ok = result.complete and (rr is None or rr.ok)
    else:
        top = cfg.out_dir
        _prepare_top(top)
        results = {}
        zcfg = replace(cfg, transport="zmq", out_dir=os.path.join(top, "zmq"),
                       transport_settings={},
                       slot_ns=cfg.slot_ns if args.slot is not None else parse_duration("50ms"))
        results["zmq"] = runner.run(zcfg, progress=progress("experiment (zmq)"))
        report.write(results["zmq"])
        with broker(args) as (bootstrap, _):
            kcfg = _kafka_cfg(cfg, bootstrap, os.path.join(top, "kafka"))
            results["kafka"] = runner.run(kcfg, progress=progress("experiment (kafka)"))
        report.write(results["kafka"])
        from skewd.experiment import compare
        files = compare.write(results, top)
        if args.json:
            with open(files["json"]) as f:
                print(f.read())
        else:
            for kind, res in results.items():
                print(f"== {kind} ==")
                print(report.format_table(res))
                print()
            ths = [compare.threshold(r) for r in results.values()]
            print(compare.format_comparison(ths))
            print(f"\nreport: {files['html']}\ncomparison: {files['json']}   per transport: "
                  f"{os.path.join(top, 'zmq')}, {os.path.join(top, 'kafka')}")
        ok = all(r.complete for r in results.values())
    if not ok:
        print("skewd experiment: the run is incomplete (see above and the report)",
              file=sys.stderr)
        return 1
    return 0
