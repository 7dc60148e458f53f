"""Kafka transport (confluent-kafka, i.e. librdkafka) between pipeline stages.

One topic per edge, named from the run id ("skewd.<run_id>.preprocess-model"),
one partition so an edge keeps its order. Messages carry the trace context and
the send time in Kafka headers. Producers are idempotent (acks=all), so a
broker restart neither loses nor duplicates what they sent. Receivers read
their partition by assignment from its beginning, without a consumer group,
so no rebalance can rewind or skip them when the broker comes back.

The settings that shape latency are TransportSpec.settings and are recorded
with the results:

    linger.ms          how long a producer waits to fill a batch (librdkafka
                       and Kafka 4 clients default to 5 ms: it sets the floor)
    batch.size         the most bytes in one batch
    fetch.wait.max.ms  how long the broker may hold a fetch with no new data
    fetch.min.bytes    how much data a fetch waits for

`bootstrap.servers` (HOST:PORT) is required. Anything that goes wrong (the
broker unreachable, a topic refused, a delivery failed, a message with missing
or garbled headers) is counted in stats() and logged with what and where; a
broker that cannot be reached at the start is a PeerError, not a hang.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter

from skewd.errors import PeerError, UsageError
from skewd.experiment.transports.base import (Headers, Message, Receiver, Sender, Transport,
                                              TransportSpec)

log = logging.getLogger(__name__)
#: librdkafka's own log lines go to Python logging, not straight to stderr
_client_log = logging.getLogger("skewd.kafka.client")

#: the latency-shaping settings and their defaults (a stock librdkafka client's)
LATENCY_SETTINGS: dict[str, int] = {
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "fetch.wait.max.ms": 500,
    "fetch.min.bytes": 1,
}
#: other settings this transport understands
OTHER_SETTINGS: dict[str, object] = {
    "bootstrap.servers": None,
    "partitions": 1,
    "replication.factor": 1,
    "topic.prefix": "skewd",
    # how long a message may wait for the broker before it counts as failed
    "message.timeout.ms": 120_000,
    # the longest wait between tries to reach a broker that went away
    # (librdkafka's default, 10 s, leaves a restarted broker idle for seconds)
    "reconnect.backoff.max.ms": 500,
    # how long opening a sender or receiver waits for the broker
    "connect.timeout.s": 15.0,
    # headers every message must carry; a message lacking one is counted
    "required.headers": (),
}
_PRODUCER_KEYS = ("linger.ms", "batch.size", "message.timeout.ms", "reconnect.backoff.max.ms")
_CONSUMER_KEYS = ("fetch.wait.max.ms", "fetch.min.bytes", "reconnect.backoff.max.ms")

_TOPIC_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def topic_name(prefix: str, run_id: str, edge: str) -> str:
    """The topic of an edge "a->b" in a run: "<prefix>.<run_id>.a-b"."""
    if "->" not in edge:
        raise UsageError(f"edge {edge!r} is not of the form 'from->to'")
    src, dst = edge.split("->", 1)
    name = ".".join(_TOPIC_CHARS.sub("_", part) for part in (prefix, run_id, f"{src}-{dst}"))
    if len(name) > 249:
        raise UsageError(f"topic name for edge {edge!r} in run {run_id!r} is longer than "
                         f"Kafka's 249 characters")
    return name


def resolve_settings(settings: dict) -> dict:
    """The transport's settings with defaults filled in; unknown keys and bad
    values are a UsageError naming them."""
    out = {**LATENCY_SETTINGS, **OTHER_SETTINGS}
    for key, value in settings.items():
        if key not in out:
            known = ", ".join(sorted(out))
            raise UsageError(f"Kafka transport: unknown setting {key!r} (known: {known})")
        out[key] = value
    for key in (*LATENCY_SETTINGS, "partitions", "replication.factor", "message.timeout.ms",
                "reconnect.backoff.max.ms"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise UsageError(f"Kafka transport: {key} must be a whole number >= 0, not {v!r}")
    if out["partitions"] < 1 or out["replication.factor"] < 1:
        raise UsageError("Kafka transport: partitions and replication.factor must be at least 1")
    if not out["bootstrap.servers"]:
        raise UsageError("Kafka transport: bootstrap.servers (HOST:PORT) is required: "
                         "give --bootstrap HOST:PORT or --local-kafka")
    from skewd.kafkabroker import check_bootstrap
    check_bootstrap(str(out["bootstrap.servers"]))
    out["required.headers"] = tuple(out["required.headers"])
    return out


def _err_text(err) -> str:
    return err.str() if hasattr(err, "str") else str(err)


class KafkaTransport(Transport):
    def __init__(self, spec: TransportSpec):
        super().__init__(spec)
        self.conf = resolve_settings(spec.settings)
        self.bootstrap = str(self.conf["bootstrap.servers"])
        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        self._admin = None
        self._topics: dict[str, str] = {}
        self._opened: list = []

    # --- bookkeeping -------------------------------------------------------------
    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def stats(self) -> dict:
        """What happened on this process's edges: sent, delivered,
        delivery_failed, undelivered, received, bad_headers, consumer_errors,
        queue_full_waits, topic_errors, broker_unreachable."""
        with self._lock:
            return dict(self.counts)

    def settings(self) -> dict:
        import confluent_kafka
        s = {k: self.conf[k] for k in (*LATENCY_SETTINGS, "bootstrap.servers", "partitions",
                                       "message.timeout.ms", "reconnect.backoff.max.ms")}
        s.update({"enable.idempotence": True, "acks": "all",
                  "client": f"confluent-kafka {confluent_kafka.__version__} "
                            f"(librdkafka {confluent_kafka.libversion()[0]})",
                  "topics": dict(self._topics)})
        return s

    # --- topics ----------------------------------------------------------------------
    def _admin_client(self):
        if self._admin is None:
            from confluent_kafka.admin import AdminClient
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap,
                                       "logger": _client_log})
        return self._admin

    def _check_reachable(self) -> None:
        from confluent_kafka import KafkaException
        timeout = float(self.conf["connect.timeout.s"])
        try:
            md = self._admin_client().list_topics(timeout=timeout)
        except KafkaException as e:
            self.count("broker_unreachable")
            raise PeerError(f"Kafka broker {self.bootstrap} unreachable: {_err_text(e.args[0])} "
                            f"(waited {timeout:g}s; is it running? --local-kafka starts one)") from None
        if not md.brokers:
            self.count("broker_unreachable")
            raise PeerError(f"Kafka broker {self.bootstrap} answered with no brokers")

    def topic(self, edge: str) -> str:
        """The edge's topic, created if it does not exist yet."""
        if edge in self._topics:
            return self._topics[edge]
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic
        name = topic_name(str(self.conf["topic.prefix"]), self.spec.run_id, edge)
        self._check_reachable()
        timeout = float(self.conf["connect.timeout.s"])
        fut = self._admin_client().create_topics(
            [NewTopic(name, int(self.conf["partitions"]), int(self.conf["replication.factor"]))],
            operation_timeout=timeout, request_timeout=timeout)[name]
        try:
            fut.result(timeout=timeout + 5)
        except KafkaException as e:
            err = e.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                self.count("topic_errors")
                raise PeerError(f"Kafka broker {self.bootstrap} refused to create topic {name!r} "
                                f"for edge {edge}: {_err_text(err)}") from None
        except Exception as e:  # a future that timed out
            self.count("topic_errors")
            raise PeerError(f"Kafka broker {self.bootstrap}: creating topic {name!r} for edge "
                            f"{edge} got no answer ({e or type(e).__name__})") from None
        self._wait_partitions(name, timeout)
        self._topics[edge] = name
        return name

    def _wait_partitions(self, name: str, timeout: float) -> None:
        # a new topic's leader takes a moment to appear in metadata
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            md = self._admin_client().list_topics(topic=name, timeout=timeout)
            t = md.topics.get(name)
            if t is not None and t.error is None and len(t.partitions) >= 1 and all(
                    p.leader >= 0 for p in t.partitions.values()):
                return
            time.sleep(0.05)
        self.count("topic_errors")
        raise PeerError(f"Kafka topic {name!r} on {self.bootstrap} has no leader after {timeout:g}s")

    # --- ends --------------------------------------------------------------------------
    def sender(self, edge: str) -> Sender:
        s = KafkaSender(self, edge, self.topic(edge))
        self._opened.append(s)
        return s

    def receiver(self, edge: str) -> Receiver:
        r = KafkaReceiver(self, edge, self.topic(edge))
        self._opened.append(r)
        return r

    def close(self) -> None:
        for end in reversed(self._opened):
            end.close()
        self._opened.clear()


class KafkaSender(Sender):
    def __init__(self, transport: KafkaTransport, edge: str, topic: str):
        from confluent_kafka import Producer
        self.t = transport
        self.edge = edge
        self.topic = topic
        self._fatal: str | None = None
        self._closed = False
        conf = {"bootstrap.servers": transport.bootstrap,
                "enable.idempotence": True, "acks": "all",
                "client.id": f"skewd-{edge}", "logger": _client_log}
        conf.update({k: transport.conf[k] for k in _PRODUCER_KEYS})
        self._p = Producer(conf)

    def _delivered(self, err, msg) -> None:
        if err is None:
            self.t.count("delivered")
            return
        self.t.count("delivery_failed")
        log.error("Kafka edge %s: a message to %s was not delivered: %s",
                  self.edge, self.topic, _err_text(err))
        if err.fatal():
            self._fatal = _err_text(err)

    def send(self, msg: Message) -> None:
        if self._fatal:
            raise PeerError(f"Kafka edge {self.edge}: the producer failed for good "
                            f"({self._fatal}); no more messages can be sent")
        deadline = time.monotonic() + 30.0
        while True:
            try:
                self._p.produce(self.topic, value=msg.payload, headers=list(msg.headers),
                                on_delivery=self._delivered)
                break
            except BufferError:
                # the local queue is full: the broker has been away a while
                self.t.count("queue_full_waits")
                if time.monotonic() > deadline:
                    raise PeerError(f"Kafka edge {self.edge}: the producer's queue stayed "
                                    f"full for 30s; is the broker {self.t.bootstrap} down?") from None
                self._p.poll(0.1)
        self.t.count("sent")
        self._p.poll(0)

    def flush(self, timeout_s: float = 5.0) -> None:
        left = self._p.flush(timeout_s)
        if left:
            log.warning("Kafka edge %s: %d messages still queued after %.1fs",
                        self.edge, left, timeout_s)

    def close(self, timeout_s: float = 60.0) -> None:
        if self._closed:
            return
        self._closed = True
        left = self._p.flush(timeout_s)
        if left:
            # never silently: say how many never reached the broker
            self.t.count("undelivered", left)
            log.error("Kafka edge %s: %d messages never reached %s (waited %.0fs)",
                      self.edge, left, self.t.bootstrap, timeout_s)


class KafkaReceiver(Receiver):
    def __init__(self, transport: KafkaTransport, edge: str, topic: str):
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
        self.t = transport
        self.edge = edge
        self.topic = topic
        self._required = transport.conf["required.headers"]
        conf = {"bootstrap.servers": transport.bootstrap,
                # no group membership is used (partitions are assigned), but
                # librdkafka wants a group id; offsets are never committed
                "group.id": f"skewd.{transport.spec.run_id}.{edge.replace('->', '-')}",
                "enable.auto.commit": False, "enable.auto.offset.store": False,
                "client.id": f"skewd-{edge}", "logger": _client_log}
        conf.update({k: transport.conf[k] for k in _CONSUMER_KEYS})
        self._c = Consumer(conf)
        self._c.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                        for p in range(int(transport.conf["partitions"]))])
        self._closed = False

    def _headers(self, m) -> Headers:
        try:
            raw = m.headers()
        except (UnicodeDecodeError, ValueError) as e:
            self.t.count("bad_headers")
            log.warning("Kafka edge %s: message at %s[%d]@%d has unreadable headers (%s)",
                        self.edge, m.topic(), m.partition(), m.offset(), e)
            return []
        out: Headers = []
        bad = []
        for k, v in raw or []:
            if v is None:
                bad.append(f"{k} has no value")
                continue
            out.append((k, bytes(v)))
        keys = {k for k, _ in out}
        bad += [f"{k} missing" for k in self._required if k not in keys]
        if bad:
            self.t.count("bad_headers")
            log.warning("Kafka edge %s: message at %s[%d]@%d: %s",
                        self.edge, m.topic(), m.partition(), m.offset(), "; ".join(bad))
        return out

    def recv(self, timeout_s: float) -> Message | None:
        from confluent_kafka import KafkaError
        deadline = time.monotonic() + timeout_s
        while True:
            m = self._c.poll(max(0.0, deadline - time.monotonic()))
            if m is None:
                return None
            err = m.error()
            if err is None:
                self.t.count("received")
                return Message(payload=m.value() or b"", headers=self._headers(m))
            if err.code() != KafkaError._PARTITION_EOF:
                # transport hiccups (a broker restart) are retried by librdkafka
                self.t.count("consumer_errors")
                log.warning("Kafka edge %s: %s", self.edge, _err_text(err))
                if err.fatal():
                    raise PeerError(f"Kafka edge {self.edge}: the consumer failed for good: "
                                    f"{_err_text(err)}")
            if time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._c.close()


def plan_settings(edges, receivers, port, local=True) -> dict:
    """The runner's hook: the settings a run starts from, so that the ones
    shaping latency are recorded with its results even when left at their
    defaults (the user's own settings are laid over these)."""
    return {**LATENCY_SETTINGS, "partitions": OTHER_SETTINGS["partitions"]}


def make_transport(spec: TransportSpec) -> Transport:
    return KafkaTransport(spec)
