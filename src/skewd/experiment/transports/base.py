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


@dataclass(frozen=True)
class Message:
    payload: bytes
    headers: Headers = field(default_factory=list)

    def header(self, key: str) -> bytes | None:
        for k, v in self.headers:
            if k == key:
                return v
        return None


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
