"""The Kafka transport through a real broker: headers, order, counts, a
broker restart mid-stream, and bad input counted without a crash."""
import logging
import threading
import time
import uuid

import pytest
from hypothesis import given, strategies as st

from skewd.errors import PeerError, UsageError
from skewd.experiment.transports import kafka as kt
from skewd.experiment.transports.base import Message, TransportSpec, open_transport


def _spec(broker, **settings):
    return TransportSpec("kafka", f"t{uuid.uuid4().hex[:10]}",
                         {"bootstrap.servers": broker.bootstrap, **settings})


# --- without a broker ------------------------------------------------------------

def test_topic_name_per_run_and_edge():
    assert kt.topic_name("skewd", "run1", "preprocess->model") == "skewd.run1.preprocess-model"
    assert kt.topic_name("skewd", "a b/c", "x->y") == "skewd.a_b_c.x-y"
    with pytest.raises(UsageError, match="from->to"):
        kt.topic_name("skewd", "r", "nope")
    with pytest.raises(UsageError, match="249"):
        kt.topic_name("skewd", "r" * 300, "a->b")


@given(st.text(max_size=40), st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_topic_names_are_legal_kafka_names(run_id, a, b):
    name = kt.topic_name("skewd", run_id, f"{a.replace('->', '')}->{b}")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)


def test_settings_defaults_and_checks():
    s = kt.resolve_settings({"bootstrap.servers": "127.0.0.1:9092"})
    assert s["linger.ms"] == 5 and s["fetch.min.bytes"] == 1 and s["partitions"] == 1
    with pytest.raises(UsageError, match="unknown setting 'linger'"):
        kt.resolve_settings({"bootstrap.servers": "h:1", "linger": 1})
    with pytest.raises(UsageError, match="linger.ms must be a whole number"):
        kt.resolve_settings({"bootstrap.servers": "h:1", "linger.ms": -1})
    with pytest.raises(UsageError, match="--local-kafka"):
        kt.resolve_settings({})
    with pytest.raises(UsageError, match="HOST:PORT"):
        kt.resolve_settings({"bootstrap.servers": "nope"})


def test_unreachable_broker_is_a_clear_counted_error():
    t = open_transport(TransportSpec("kafka", "r", {"bootstrap.servers": "127.0.0.1:1",
                                                    "connect.timeout.s": 1.0}))
    with pytest.raises(PeerError, match=r"127.0.0.1:1 unreachable.*--local-kafka"):
        t.sender("a->b")
    assert t.stats()["broker_unreachable"] == 1


# --- through the broker ---------------------------------------------------------------

def test_messages_arrive_in_order_with_headers_and_settings_recorded(kafka_broker):
    spec = _spec(kafka_broker, **{"linger.ms": 0, "fetch.wait.max.ms": 100})
    tx, rx = open_transport(spec), open_transport(spec)
    try:
        s, r = tx.sender("model->postprocess"), rx.receiver("model->postprocess")
        n = 200
        for i in range(n):
            s.send(Message(f"payload {i}".encode() * 3,
                           [("traceparent", f"00-{i:032x}-{i:016x}-01".encode()),
                            ("send_ns", str(time.time_ns()).encode()), ("i", str(i).encode())]))
        s.flush(10)
        got = []
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            m = r.recv(1.0)
            if m is not None:
                got.append(m)
        assert [int(m.header("i")) for m in got] == list(range(n))
        assert all(m.payload == f"payload {i}".encode() * 3 for i, m in enumerate(got))
        assert got[7].header("traceparent") == f"00-{7:032x}-{7:016x}-01".encode()
        assert r.recv(0.3) is None
        assert tx.stats()["sent"] == n and tx.stats()["delivered"] == n
        assert rx.stats() == {"received": n}
        rec = tx.settings()
        assert rec["linger.ms"] == 0 and rec["fetch.wait.max.ms"] == 100
        assert rec["enable.idempotence"] is True and rec["acks"] == "all"
        assert rec["topics"] == {"model->postprocess": f"skewd.{spec.run_id}.model-postprocess"}
        assert "librdkafka" in rec["client"]
    finally:
        tx.close()
        rx.close()


def test_broker_restart_loses_and_duplicates_nothing(kafka_broker):
    """A sender keeps sending through a broker restart; the receiver gets
    every id exactly once and in order."""
    spec = _spec(kafka_broker, **{"linger.ms": 1})
    tx, rx = open_transport(spec), open_transport(spec)
    n = 600
    got: list[int] = []
    errors: list[BaseException] = []

    def send():
        try:
            s = tx.sender("a->b")
            for i in range(n):
                s.send(Message(b"x" * 100, [("i", str(i).encode())]))
                time.sleep(0.005)
            s.close(timeout_s=60)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    try:
        r = rx.receiver("a->b")
        th = threading.Thread(target=send, daemon=True)
        th.start()
        while len(got) < 100:
            m = r.recv(5.0)
            assert m is not None, "nothing arrived before the restart"
            got.append(int(m.header("i")))
        kafka_broker.restart(down_s=1.0)
        deadline = time.monotonic() + 90
        while len(got) < n and time.monotonic() < deadline:
            m = r.recv(1.0)
            if m is not None:
                got.append(int(m.header("i")))
        th.join(60)
        assert not errors, errors
        assert got == list(range(n)), (len(got), len(set(got)))
        assert r.recv(0.5) is None, "a duplicate arrived after the last id"
        st_ = tx.stats()
        assert st_["sent"] == n and st_["delivered"] == n
        assert "delivery_failed" not in st_ and "undelivered" not in st_
    finally:
        tx.close()
        rx.close()


def test_topic_creation_refused_is_a_clear_counted_error(kafka_broker):
    # one broker cannot hold three replicas: the broker itself refuses
    t = open_transport(_spec(kafka_broker, **{"replication.factor": 3}))
    with pytest.raises(PeerError, match=r"refused to create topic 'skewd\.t\w+\.a-b' for edge a->b"):
        t.receiver("a->b")
    assert t.stats()["topic_errors"] == 1


def test_missing_and_garbled_headers_are_counted_not_dropped(kafka_broker, caplog):
    from confluent_kafka import Producer
    spec = _spec(kafka_broker, **{"required.headers": ["traceparent", "send_ns"]})
    rx = open_transport(spec)
    try:
        r = rx.receiver("a->b")
        p = Producer({"bootstrap.servers": kafka_broker.bootstrap})
        topic = kt.topic_name("skewd", spec.run_id, "a->b")
        p.produce(topic, b"no headers at all")
        p.produce(topic, b"a null value", headers=[("traceparent", None), ("send_ns", b"1")])
        p.produce(topic, b"fine", headers=[("traceparent", b"00-ab-cd-01"), ("send_ns", b"1")])
        assert p.flush(10) == 0
        caplog.set_level(logging.WARNING, logger="skewd.experiment.transports.kafka")
        got = [r.recv(10.0) for _ in range(3)]
        assert [m.payload for m in got] == [b"no headers at all", b"a null value", b"fine"]
        assert got[0].headers == [] and got[1].headers == [("send_ns", b"1")]
        assert rx.stats() == {"received": 3, "bad_headers": 2}
        text = caplog.text
        assert "traceparent missing" in text and "traceparent has no value" in text
        assert f"{topic}[0]@0" in text
    finally:
        rx.close()
