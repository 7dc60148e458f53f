"""ZeroMQ between pipeline stages: one PUSH/PULL pair per edge, no broker.

The receiving stage binds the edge's endpoint and the sending stage connects
to it, so a port in use shows up on the stage that owns it. A message is two
frames, the headers packed into the first so that carrying a trace context
costs no extra frames:

    frame 0     b"SKW2", then per header: key length (1 byte), value length
                (2 bytes, little-endian), key (UTF-8), value
    frame 1     payload

A traced message (Message.trace set, no other headers) has instead a trace
frame as frame 0: 32 bytes, trace id (16) and span id (8) as in a
traceparent, then the send time as a little-endian uint64 whose top bit is
the sampled flag (skewd._ring.trace_frame / parse_trace_frame, one C call
each). ZeroMQ keeps a frame of up to 32 bytes inside the message itself; the
same context as a header block (85 bytes) costs the receiving process a
buffer allocation per message, about 4 µs of CPU. A trace frame never begins
with b"SKW2" (such a context, or a send time outside 0 .. 2**63, goes as the
header block traceparent + skewd-send-ns instead, written in one C call too).

Settings (TransportSpec.settings):
    endpoints   {edge: "tcp://HOST:PORT"}   required, one per edge
    bind        {edge: "tcp://ADDR:PORT"}   where the receiver binds, when it
                                            differs from the endpoint
    hwm         high-water mark per socket (messages queued; default 10000)
    linger_ms   how long close() waits for queued messages (default 2000)
    send_timeout_ms  how long send() may block on a full queue before it
                fails with PeerError (default 5000)
"""
from __future__ import annotations

import errno
import socket
import struct

import zmq

from skewd._ring import (TRACE_FRAME_LEN, header_block, parse_header_block, parse_trace_frame,
                         trace_frame)
from skewd.errors import HostError, PeerError, UsageError
from skewd.experiment.transports.base import (Headers, Message, Receiver, Sender,
                                              Transport, TransportSpec)

MAGIC = b"SKW2"
_LENS = struct.Struct("<BH")
# the few header keys a pipeline uses, and the lengths of their values, come
# back with every message: their packed prefixes and decoded keys are kept
_prefixes: dict[tuple[str, int], bytes] = {}
_keys: dict[bytes, str] = {}
_CACHE_MAX = 256


def _prefix(k: str, vlen: int) -> bytes:
    p = _prefixes.get((k, vlen))
    if p is None:
        kb = k.encode()
        if len(kb) > 255 or vlen > 65535:
            raise UsageError(f"header {k[:40]!r}: keys are at most 255 bytes and values "
                             f"at most 65535")
        p = _LENS.pack(len(kb), vlen) + kb
        if len(_prefixes) < _CACHE_MAX:
            _prefixes[(k, vlen)] = p
    return p


def encode(msg: Message) -> list[bytes]:
    """A message as ZeroMQ frames (see the module docstring)."""
    if msg.trace is not None and not msg.others:
        head = trace_frame(msg.trace[0], msg.trace[1])  # the usual case, in C
        if head is None:
            head = header_block(MAGIC, msg.trace[0], msg.trace[1])
        if head is not None:
            return [head, msg.payload]
    headers = msg.headers
    if not headers:
        return [MAGIC, msg.payload]
    parts = [MAGIC]
    for k, v in headers:
        parts += (_prefix(k, len(v)), v)
    return [b"".join(parts), msg.payload]


def _key(kb: bytes) -> str:
    k = _keys.get(kb)
    if k is None:
        k = kb.decode()
        if len(_keys) < _CACHE_MAX:
            _keys[kb] = k
    return k


def decode(frames: list[bytes]) -> Message | None:
    """The message in `frames`, or None when they are not one of ours."""
    if len(frames) != 2:
        return None
    head = bytes(frames[0])
    if head[:4] != MAGIC:
        if len(head) == TRACE_FRAME_LEN:
            trace = parse_trace_frame(head)
            if trace is not None:
                return Message(bytes(frames[1]), None, trace)
        return None
    trace = parse_header_block(head, 4)  # what encode writes for a traced message, in C
    if trace is not None:
        return Message(bytes(frames[1]), None, trace)
    headers: Headers = []
    i, n = 4, len(head)
    try:
        while i < n:
            kl, vl = _LENS.unpack_from(head, i)
            i += 3
            if i + kl + vl > n:
                return None
            headers.append((_key(head[i:i + kl]), head[i + kl:i + kl + vl]))
            i += kl + vl
    except (struct.error, UnicodeDecodeError):
        return None
    return Message(payload=bytes(frames[1]), headers=headers)


class ZmqSender(Sender):
    def __init__(self, sock: zmq.Socket, edge: str, linger_ms: int):
        self._sock = sock
        self._edge = edge
        self._linger = linger_ms

    def send(self, msg: Message) -> None:
        try:
            self._sock.send_multipart(encode(msg), copy=True)
        except zmq.Again:
            raise PeerError(f"edge {self._edge}: the receiving stage took nothing for "
                            f"{self._sock.getsockopt(zmq.SNDTIMEO)} ms") from None

    def flush(self, timeout_s: float = 5.0) -> None:
        # ZeroMQ has no flush: close() with a linger waits for the queue instead.
        self._linger = int(timeout_s * 1000)

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.close(linger=self._linger)


class ZmqReceiver(Receiver):
    def __init__(self, sock: zmq.Socket):
        self._sock = sock
        #: messages dropped because their frames were not a skewd message
        self.malformed = 0

    def recv(self, timeout_s: float) -> Message | None:
        deadline_ms = max(0, int(timeout_s * 1000))
        while True:
            if not self._sock.poll(deadline_ms, zmq.POLLIN):
                return None
            msg = decode(self._sock.recv_multipart(copy=True))
            if msg is not None:
                return msg
            self.malformed += 1
            deadline_ms = 0 if deadline_ms == 0 else max(1, deadline_ms // 2)

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.close(linger=0)


def _port_of(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[-1]


class ZmqTransport(Transport):
    def __init__(self, spec: TransportSpec):
        super().__init__(spec)
        s = spec.settings
        if not isinstance(s.get("endpoints"), dict) or not s["endpoints"]:
            raise UsageError("the zmq transport needs settings['endpoints'] = {edge: 'tcp://host:port'}")
        self._endpoints: dict[str, str] = dict(s["endpoints"])
        self._bind: dict[str, str] = dict(s.get("bind") or {})
        self._hwm = int(s.get("hwm", 10000))
        self._linger = int(s.get("linger_ms", 2000))
        self._send_timeout = int(s.get("send_timeout_ms", 5000))
        self._ctx = zmq.Context(io_threads=1)
        self._socks: list = []

    def _endpoint(self, edge: str) -> str:
        try:
            return self._endpoints[edge]
        except KeyError:
            raise UsageError(f"zmq transport: no endpoint for edge {edge!r} "
                             f"(known: {', '.join(sorted(self._endpoints))})") from None

    def sender(self, edge: str) -> Sender:
        ep = self._endpoint(edge)
        sock = self._ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        sock.setsockopt(zmq.SNDTIMEO, self._send_timeout)
        sock.connect(ep)
        s = ZmqSender(sock, edge, self._linger)
        self._socks.append(s)
        return s

    def receiver(self, edge: str) -> Receiver:
        ep = self._bind.get(edge) or self._endpoint(edge)
        sock = self._ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, self._hwm)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(ep)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            if e.errno == errno.EADDRINUSE:
                raise HostError(
                    f"port {_port_of(ep)} is in use ({ep}, edge {edge}): choose another "
                    f"--port or stop what holds it") from None
            raise HostError(f"cannot bind {ep} for edge {edge}: {e.strerror}") from None
        r = ZmqReceiver(sock)
        self._socks.append(r)
        return r

    def settings(self) -> dict:
        return {"hwm": self._hwm, "linger_ms": self._linger,
                "send_timeout_ms": self._send_timeout,
                "socket": "PUSH/PULL over TCP", "zmq": zmq.zmq_version(),
                "pyzmq": zmq.__version__}

    def close(self) -> None:
        for s in self._socks:
            s.close()
        self._socks.clear()
        self._ctx.term()


def make_transport(spec: TransportSpec) -> Transport:
    return ZmqTransport(spec)


def _check_free(addr: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((addr, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise HostError(f"port {port} on {addr} is in use: choose another --port "
                                f"(or --port 0 to pick free ports)") from None
            raise HostError(f"cannot bind {addr}:{port}: {e.strerror}") from None


def _free_ports(addr: str, n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((addr, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


#: settings for a run as fast as the pipeline takes requests (--rate max):
#: the source is held back by full queues of 64, not 10000 (at 2500
#: requests/s four edges of those are half a minute behind)
SATURATED_SETTINGS = {"hwm": 64}


def plan_settings(edges: list[str], receivers: dict[str, str], port: int = 0,
                  local: bool = True) -> dict:
    """Endpoints for a run: edge i is received at tcp://<its receiver's
    address>:<port + i>. With local=True (every node on this host's network)
    port 0 picks free ports and a given port is checked now, so a port in use
    is reported before any stage starts; in namespaces the run made, ports
    are free by construction (default 5550 + i)."""
    if not 0 <= port <= 65535 - len(edges):
        raise UsageError(f"--port {port} is out of range (0 picks free ports; "
                         f"at most {65535 - len(edges)})")
    if local:
        addr = receivers[edges[0]]
        if port == 0:
            ports = _free_ports(addr, len(edges))
        else:
            ports = [port + i for i in range(len(edges))]
            for p in ports:
                _check_free(addr, p)
    else:
        base = port or 5550
        ports = [base + i for i in range(len(edges))]
    return {"endpoints": {e: f"tcp://{receivers[e]}:{p}" for e, p in zip(edges, ports)}}
