"""What a pipeline transport provides. Stages run in separate processes, so a
transport is rebuilt in each from a picklable TransportSpec.

Headers carry the trace context and the send time: (key, value) pairs with
str keys and bytes values, the shape Kafka headers have; the ZeroMQ transport
carries them in frames of its own.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

Headers = list[tuple[str, bytes]]


class Message:
    """A payload and its headers.

    trace: (context, send_ns) — a Span or SpanContext and an int — given
    apart from the headers, so that a transport can write them, and read
    them back, in one C call instead of as a header list (the ZeroMQ
    transport does: skewd._ring.trace_frame). `headers` then still lists
    them, as traceparent and skewd-send-ns after the others, built when
    asked for; `others` are the headers besides them."""
    __slots__ = ("payload", "others", "trace")

    def __init__(self, payload: bytes, headers: Headers | None = None,
                 trace: tuple | None = None):
        self.payload = payload
        self.others: Headers = headers if headers is not None else []
        self.trace = trace

    @property
    def headers(self) -> Headers:
        if self.trace is None:
            return self.others
        from skewd.tracer import inject_headers
        return inject_headers(self.trace[0], list(self.others), self.trace[1])

    def header(self, key: str) -> bytes | None:
        for k, v in (self.headers if self.trace is not None and key in _TRACE_KEYS
                     else self.others):
            if k == key:
                return v
        return None

    def __eq__(self, other) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.payload == other.payload and self.headers == other.headers

    __hash__ = None

    def __repr__(self) -> str:
        return f"Message(payload={self.payload!r}, headers={self.headers!r})"


_TRACE_KEYS = ("traceparent", "skewd-send-ns")


@dataclass(frozen=True)
class TransportSpec:
    """Which transport and its settings; `kind` selects the module
    (skewd.experiment.transports.<kind>), `settings` are its own knobs
    (recorded in the results), `run_id` keeps concurrent runs apart."""
    kind: str
    run_id: str
    settings: dict = field(default_factory=dict)


class Sender(ABC):
    @abstractmethod
    def send(self, msg: Message) -> None:
        """Queue or send one message; never blocks for long."""

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until queued messages have left (or timeout)."""

    @abstractmethod
    def close(self) -> None: ...


class Receiver(ABC):
    @abstractmethod
    def recv(self, timeout_s: float) -> Message | None:
        """The next message, or None after timeout_s."""

    @abstractmethod
    def close(self) -> None: ...


class Transport(ABC):
    """One per stage process. An edge is named "<from>-><to>" (e.g.
    "preprocess->model"); each edge has exactly one sender and one receiver."""

    def __init__(self, spec: TransportSpec):
        self.spec = spec

    @abstractmethod
    def sender(self, edge: str) -> Sender: ...

    @abstractmethod
    def receiver(self, edge: str) -> Receiver: ...

    def settings(self) -> dict:
        """The settings that shape latency, for the results."""
        return dict(self.spec.settings)

    def close(self) -> None:
        pass


def open_transport(spec: TransportSpec) -> Transport:
    import importlib
    try:
        mod = importlib.import_module(f"skewd.experiment.transports.{spec.kind}")
    except ImportError as e:
        from skewd.errors import UsageError
        raise UsageError(f"unknown transport {spec.kind!r} ({e})") from None
    return mod.make_transport(spec)
