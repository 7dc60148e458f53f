"""The probe protocol: four-timestamp exchanges over timestamped UDP, and an
NTP (RFC 5905 mode 3) client on the same sockets. Byte layout: docs/probe-protocol.md.

Server side (the daemon embeds it; `skewd serve` runs it alone):

    sock = TimestampedSocket("ipv4", bind=("0.0.0.0", PORT), stamps="software")
    server = ProbeServer(sock, keys=load_keys("/etc/skewd/keys"), clock=SkewedClock(node))
    server.poll(timeout_ns=0)     # non-blocking: answer what is queued, return how many
    server.handle_one(timeout_ns) # at most one datagram
    server.counters               # ServerCounters: answered, malformed, unauthenticated, ...
    server.serve(stop_event)      # loop until stop is set

Client side, one ProbeClient per socket, state per peer inside:

    client = ProbeClient(sock, keys=keys, key_id=1, clock=SkewedClock(node))
    r = client.exchange(("10.0.0.2", PORT), timeout_ns=200_000_000)  # ProbeResult | None
    r.sample          # estimate.Sample with the best stamps available
    client.request(peer); client.handle(datagram)   # the same, non-blocking

Stamps: a responder's t2/t3 and a requester's t1/t4 are kernel (or NIC) stamps
put on the node's skewed clock: stamp + injected offset at the stamp's time, so
a peer measures exactly what was injected. In interleaved mode (the default)
each response also carries the responder's kernel TX stamp of its previous
response to the same session, so exchange n−1 completes with four kernel stamps
when response n arrives; the first exchange of a session has only the
responder's user-space t3.

Every packet that is malformed, of another version, unauthenticated, stale,
replayed or over its source's rate is dropped and counted; nothing a peer sends
raises out of `handle_datagram` / `handle`. A response is never larger than the
request it answers.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, fields, replace

from skewd.errors import InputFileError, PeerError, UsageError
from skewd.estimate import Estimate, Sample, worst_source
from skewd.tsock import Datagram, Stamp, StampSource, TimestampedSocket

log = logging.getLogger(__name__)

DEFAULT_PORT = 7319
NTP_PORT = 123
MAGIC = b"SKWD"
VERSION = 1
TYPE_REQUEST = 1
TYPE_RESPONSE = 2
TYPE_WARMUP = 3
FLAG_AUTH = 0x01
FLAG_INTERLEAVED = 0x02
FLAGS_KNOWN = FLAG_AUTH | FLAG_INTERLEAVED

#: the packet, field by field (name, struct code); network byte order, no
#: padding. docs/probe-protocol.md lists the same table (a test compares them).
FIELDS: list[tuple[str, str]] = [
    ("magic", "4s"),
    ("version", "B"),
    ("type", "B"),
    ("flags", "B"),
    ("sources", "B"),
    ("key_id", "I"),
    ("seq", "I"),
    ("session", "Q"),
    ("t1", "q"),
    ("t2", "q"),
    ("t3", "q"),
    ("prev_seq", "I"),
    ("prev_sources", "B"),
    ("reserved", "3s"),
    ("prev_t2", "q"),
    ("prev_t3", "q"),
    ("mac", "32s"),
]
FORMAT = "!" + "".join(code for _, code in FIELDS)
_STRUCT = struct.Struct(FORMAT)
PACKET_LEN = _STRUCT.size
MAC_LEN = 32
MAC_OFFSET = PACKET_LEN - MAC_LEN
ZERO_MAC = bytes(MAC_LEN)


#: a warm-up packet: sent shortly before a request along the same path so
#: that the request does not pay for a path gone cold (caches, an idle CPU's
#: wake-up), which makes requests slower than the responses that follow them
#: and biases the offset; receivers count it and drop it
WARMUP = MAGIC + bytes([VERSION, TYPE_WARMUP, 0, 0])


def field_layout() -> list[tuple[int, int, str]]:
    """(offset, size, name) of every field, as the docs table lists them."""
    out, off = [], 0
    for name, code in FIELDS:
        size = struct.calcsize("!" + code)
        out.append((off, size, name))
        off += size
    return out


# --- sources --------------------------------------------------------------------

_SRC_LABEL = {int(s): s.label for s in StampSource}


def _pack_sources(a: StampSource, b: StampSource) -> int:
    return (int(a) << 4) | int(b)


def _unpack_sources(v: int) -> tuple[str, str]:
    return _SRC_LABEL[v >> 4], _SRC_LABEL[v & 0xF]


# --- errors ---------------------------------------------------------------------

class ProtocolError(PeerError):
    """A packet skewd refuses; .kind names the counter it goes to."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# --- keys -----------------------------------------------------------------------

ALGORITHMS = {"HMAC-SHA256": "sha256", "SHA256": "sha256"}
MIN_KEY_BYTES = 16


@dataclass(frozen=True)
class Key:
    id: int
    algorithm: str
    secret: bytes = field(repr=False)

    def mac(self, data: bytes) -> bytes:
        return hmac.new(self.secret, data, hashlib.sha256).digest()


class KeyRing(dict):
    """Keys by id."""

    def get_key(self, key_id: int) -> Key:
        try:
            return self[key_id]
        except KeyError:
            raise UsageError(f"key id {key_id} is not in the key file "
                             f"(it has {', '.join(map(str, sorted(self))) or 'no keys'})") from None


def parse_keys(text: str, where: str = "keys") -> KeyRing:
    """Parse a keys file: one key per line, `ID ALGORITHM KEY`; ID an integer
    1..4294967295, ALGORITHM HMAC-SHA256 (or SHA256), KEY `HEX:<hex>`,
    `ASCII:<text>` or bare text; '#' starts a comment."""
    ring = KeyRing()
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3:
            raise InputFileError(f"{where} line {lineno}: expected 'ID ALGORITHM KEY', "
                                 f"got {len(parts)} field(s)")
        sid, alg, raw = parts
        try:
            kid = int(sid)
        except ValueError:
            raise InputFileError(f"{where} line {lineno}: key id {sid!r} is not an integer") from None
        if not 1 <= kid <= 0xFFFFFFFF:
            raise InputFileError(f"{where} line {lineno}: key id {kid} must be 1..4294967295")
        if alg.upper() not in ALGORITHMS:
            raise InputFileError(f"{where} line {lineno}: algorithm {alg!r} is not supported "
                                 f"(use HMAC-SHA256)")
        if raw.upper().startswith("HEX:"):
            try:
                secret = bytes.fromhex(raw[4:])
            except ValueError:
                raise InputFileError(f"{where} line {lineno}: key {kid}: bad hex") from None
        elif raw.upper().startswith("ASCII:"):
            secret = raw[6:].encode()
        else:
            secret = raw.encode()
        if len(secret) < MIN_KEY_BYTES:
            raise InputFileError(f"{where} line {lineno}: key {kid} is {len(secret)} bytes; "
                                 f"use at least {MIN_KEY_BYTES} (e.g. HEX: and 64 hex digits)")
        if kid in ring:
            raise InputFileError(f"{where} line {lineno}: key id {kid} appears twice")
        ring[kid] = Key(kid, "HMAC-SHA256", secret)
    return ring


def load_keys(path: str) -> KeyRing:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
            mode = os.fstat(f.fileno()).st_mode
    except FileNotFoundError:
        raise InputFileError(f"key file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(f"cannot read key file {path}: {e}") from None
    if mode & 0o077:
        log.warning("key file %s is readable by other users: chmod 600 it", path)
    ring = parse_keys(text, path)
    if not ring:
        raise InputFileError(f"key file {path} holds no keys")
    return ring


# --- packets --------------------------------------------------------------------

@dataclass(slots=True)  # read-only; not frozen: see tsock.Stamp
class Packet:
    type: int
    seq: int
    session: int
    t1: int = 0
    t2: int = 0
    t3: int = 0
    flags: int = 0
    key_id: int = 0
    sources: int = 0
    prev_seq: int = 0
    prev_sources: int = 0
    prev_t2: int = 0
    prev_t3: int = 0
    mac: bytes = ZERO_MAC

    @property
    def authenticated(self) -> bool:
        return bool(self.flags & FLAG_AUTH)

    @property
    def interleaved(self) -> bool:
        return bool(self.flags & FLAG_INTERLEAVED)


def encode(p: Packet, key: Key | None = None) -> bytes:
    """The packet's bytes; with a key, flagged authenticated and MACed."""
    flags = p.flags & ~FLAG_AUTH
    key_id = 0
    if key is not None:
        flags |= FLAG_AUTH
        key_id = key.id
    body = _STRUCT.pack(MAGIC, VERSION, p.type, flags, p.sources, key_id, p.seq, p.session,
                        p.t1, p.t2, p.t3, p.prev_seq, p.prev_sources, b"\0\0\0",
                        p.prev_t2, p.prev_t3, ZERO_MAC)
    if key is None:
        return body
    return body[:MAC_OFFSET] + key.mac(body[:MAC_OFFSET])


def decode(data: bytes) -> Packet:
    """Parse and check a packet's form (not its MAC): ProtocolError otherwise."""
    if len(data) != PACKET_LEN:
        raise ProtocolError("malformed", f"packet is {len(data)} bytes, expected {PACKET_LEN}")
    (magic, version, ptype, flags, sources, key_id, seq, session, t1, t2, t3, prev_seq,
     prev_sources, reserved, prev_t2, prev_t3, mac) = _STRUCT.unpack(data)
    if magic != MAGIC:
        raise ProtocolError("malformed", "not a skewd probe (bad magic)")
    if version != VERSION:
        raise ProtocolError("version", f"probe version {version}, this skewd speaks {VERSION}")
    if ptype not in (TYPE_REQUEST, TYPE_RESPONSE):
        raise ProtocolError("malformed", f"unknown packet type {ptype}")
    if flags & ~FLAGS_KNOWN:
        raise ProtocolError("malformed", f"unknown flags 0x{flags:02x}")
    if reserved != b"\0\0\0":
        raise ProtocolError("malformed", "reserved bytes are not zero")
    for v in (sources, prev_sources):
        if (v >> 4) > StampSource.HARDWARE or (v & 0xF) > StampSource.HARDWARE:
            raise ProtocolError("malformed", f"unknown stamp source 0x{v:02x}")
    if bool(flags & FLAG_AUTH) != (key_id != 0):
        raise ProtocolError("malformed", "key id and authentication flag disagree")
    if not flags & FLAG_AUTH and mac != ZERO_MAC:
        raise ProtocolError("malformed", "unauthenticated packet carries a MAC")
    return Packet(ptype, seq, session, t1, t2, t3, flags, key_id, sources, prev_seq,
                  prev_sources, prev_t2, prev_t3, mac)


def verify(data: bytes, p: Packet, keys: KeyRing | None, require: bool) -> Key | None:
    """The key that authenticates the packet (None if it is unauthenticated
    and that is allowed); ProtocolError('unauthenticated') otherwise."""
    if not p.authenticated:
        if require:
            raise ProtocolError("unauthenticated", "packet has no MAC and keys are required")
        return None
    key = (keys or {}).get(p.key_id)
    if key is None:
        raise ProtocolError("unauthenticated", f"unknown key id {p.key_id}")
    if not hmac.compare_digest(key.mac(data[:MAC_OFFSET]), p.mac):
        raise ProtocolError("unauthenticated", f"bad MAC (key id {p.key_id})")
    return key


# --- clocks ---------------------------------------------------------------------

class NodeTime:
    """Puts CLOCK_REALTIME stamps on a node's skewed clock: stamp + the
    injected offset at the stamp's time, read from the node's page."""

    def __init__(self, clock=None):
        self.clock = clock
        page = getattr(clock, "_page", None) if clock is not None else None
        self._page = page
        self.now_ns = clock.now_ns if clock is not None else time.time_ns

    def offset_at(self, t_ns: int) -> int:
        if self._page is None:
            return 0
        return self._page.injected_offset_at(t_ns)

    def stamp(self, s: Stamp) -> int:
        return s.ns + self.offset_at(s.ns)


# --- server ---------------------------------------------------------------------

@dataclass
class ServerCounters:
    received: int = 0
    answered: int = 0
    malformed: int = 0
    bad_version: int = 0
    wrong_type: int = 0
    unauthenticated: int = 0
    replayed: int = 0
    stale: int = 0
    rate_limited: int = 0
    oversize: int = 0
    send_errors: int = 0
    tx_stamp_missing: int = 0
    warmups: int = 0

    @property
    def dropped(self) -> int:
        return (self.malformed + self.bad_version + self.wrong_type + self.unauthenticated
                + self.replayed + self.stale + self.rate_limited + self.oversize)


class RateLimiter:
    """A token bucket per source address: `rate` packets per second, bursts of
    `burst`; at most `max_sources` buckets are kept (least recent out)."""

    def __init__(self, rate: float = 1000.0, burst: int = 200, max_sources: int = 4096,
                 now=time.monotonic_ns):
        self.rate, self.burst, self.max_sources, self._now = rate, burst, max_sources, now
        self._b: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def allow(self, source: str) -> bool:
        now = self._now()
        tokens, at = self._b.pop(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate / 1e9)
        ok = tokens >= 1.0
        self._b[source] = (tokens - 1.0 if ok else tokens, now)
        if len(self._b) > self.max_sources:
            self._b.popitem(last=False)
        return ok


class ReplayWindow:
    """Sequence numbers seen in one session: the highest and a 64-wide bitmap
    below it (as IPsec keeps). accept() is False for a repeat or one too old."""
    WIDTH = 64

    def __init__(self):
        self.top = -1
        self.bits = 0

    def accept(self, seq: int) -> bool:
        if seq > self.top:
            shift = seq - self.top
            self.bits = ((self.bits << shift) | 1) & ((1 << self.WIDTH) - 1) if shift < self.WIDTH else 1
            self.top = seq
            return True
        back = self.top - seq
        if back >= self.WIDTH or self.bits & (1 << back):
            return False
        self.bits |= 1 << back
        return True


@dataclass
class _Session:
    window: ReplayWindow = field(default_factory=ReplayWindow)
    prev: tuple[int, int, int, int] | None = None   # seq, t2, t3, sources


class ProbeServer:
    """Answers probe requests on a TimestampedSocket (see module docstring).

    keys: a KeyRing; when given, unauthenticated requests are refused unless
    require_auth=False. max_age_ns: an authenticated request whose t1 is
    further than this from our clock is refused as stale (None: no check)."""

    def __init__(self, sock: TimestampedSocket, keys: KeyRing | None = None, clock=None, *,
                 require_auth: bool | None = None, rate: float = 1000.0, burst: int = 200,
                 max_age_ns: int | None = 60_000_000_000, max_sessions: int = 4096,
                 tx_wait_ns: int = 1_000_000, native: bool = False):
        self.sock = sock
        self.keys = keys or KeyRing()
        self.require_auth = bool(keys) if require_auth is None else require_auth
        self.time = NodeTime(clock)
        self.limiter = RateLimiter(rate, burst) if rate else None
        self.max_age_ns = max_age_ns
        self.max_sessions = max_sessions
        self.tx_wait_ns = tx_wait_ns
        self._counters = ServerCounters()
        self._sessions: OrderedDict[tuple, _Session] = OrderedDict()
        # warm-ups are dropped in C where the socket can, never reaching Python
        self._discarding = hasattr(sock, "discard")
        if self._discarding:
            sock.discard(WARMUP)
        self.native = None
        if native:
            self.native = self._answer_in_c(clock, rate, burst)

    def _answer_in_c(self, clock, rate: float, burst: int):
        """From now on the socket's recv answers requests itself, in C
        (csrc/responder.c: the same checks, counters and answers as
        handle_datagram), so a daemon's Python does not wake for its peers'
        probes. Not with NIC stamps (Python converts their PHC timescale),
        nor with a clock that is not a node's skewed clock or the plain one;
        None then, and Python answers."""
        from skewd import _tsock
        page = None
        if clock is not None:
            sp = getattr(clock, "_page", None)
            if sp is None:
                return None
            page = sp.raw
        if not hasattr(self.sock, "set_responder") or self.sock.mode == "hardware":
            return None
        r = _tsock.Responder(
            keys=[(k.id, k.secret) for k in self.keys.values()], require_auth=self.require_auth,
            max_age_ns=self.max_age_ns, rate=rate or 0.0, burst=burst if rate else 0.0,
            max_sessions=self.max_sessions, tx_wait_ns=self.tx_wait_ns, page=page)
        self.sock.set_responder(r)
        return r

    @property
    def counters(self) -> ServerCounters:
        c = self._counters
        if self._discarding:
            c.warmups = self.sock.stats()["discarded"]
        if self.native is not None:
            c = replace(c, **{k: getattr(c, k) + v for k, v in self.native.stats().items()})
        return c

    def handle_one(self, timeout_ns: int = 0) -> bool:
        """Receive and answer at most one datagram; False when none came."""
        d = self.sock.recv(2048, timeout_ns)
        if d is None:
            return False
        self.handle_datagram(d)
        return True

    def poll(self, timeout_ns: int = 0, max_packets: int = 256) -> int:
        """Answer what is queued (waiting up to timeout_ns for the first)."""
        n = 0
        while n < max_packets and self.handle_one(timeout_ns if n == 0 else 0):
            n += 1
        return n

    def serve(self, stop: threading.Event, until_ns: int | None = None) -> None:
        while not stop.is_set():
            if until_ns is not None and time.monotonic_ns() >= until_ns:
                return
            self.poll(100_000_000)

    def _drop(self, kind: str) -> None:
        name = {"version": "bad_version"}.get(kind, kind)
        setattr(self._counters, name, getattr(self._counters, name) + 1)

    def handle_datagram(self, d: Datagram) -> bytes | None:
        """Check one datagram and answer it; the response sent, or None when
        it was dropped (and counted). Never raises for what a peer sent."""
        c = self._counters
        if d.data == WARMUP:
            c.warmups += 1      # not a request: neither answered nor dropped
            return None
        c.received += 1
        if self.limiter and not self.limiter.allow(d.ip):
            c.rate_limited += 1
            return None
        try:
            req = decode(d.data)
            if req.type != TYPE_REQUEST:
                raise ProtocolError("wrong_type", "a response sent to the server")
            key = verify(d.data, req, self.keys, self.require_auth)
            if key is not None and self.max_age_ns is not None:
                if abs(req.t1 - self.time.now_ns()) > self.max_age_ns:
                    raise ProtocolError("stale", "request time too far from ours")
        except ProtocolError as e:
            self._drop(e.kind)
            return None
        t2 = self.time.stamp(d.stamp)
        sid = (d.ip, d.port, req.session)
        sess = self._sessions.pop(sid, None) or _Session()
        self._sessions[sid] = sess
        if len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        if not sess.window.accept(req.seq):
            c.replayed += 1
            return None
        flags = 0
        prev = (0, 0, 0, 0)
        if req.interleaved and sess.prev is not None:
            flags |= FLAG_INTERLEAVED
            prev = sess.prev
        t3 = self.time.now_ns()
        resp = encode(Packet(TYPE_RESPONSE, req.seq, req.session, req.t1, t2, t3, flags, 0,
                             _pack_sources(d.stamp.source, StampSource.USER),
                             prev[0], prev[3], prev[1], prev[2]), key)
        if len(resp) > len(d.data):
            c.oversize += 1
            return None
        try:
            sent = self.sock.send(resp, (d.ip, d.port))
        except PeerError:
            c.send_errors += 1
            return None
        c.answered += 1
        tx = self.sock.tx_stamp(sent, self.tx_wait_ns)
        if tx.source == StampSource.USER and self.sock.mode != "none":
            c.tx_stamp_missing += 1
        sess.prev = (req.seq, t2, self.time.stamp(tx),
                     _pack_sources(d.stamp.source, tx.source))
        return resp


# --- client ---------------------------------------------------------------------

@dataclass
class ClientCounters:
    sent: int = 0
    answered: int = 0
    timeouts: int = 0
    malformed: int = 0
    bad_version: int = 0
    wrong_type: int = 0
    unauthenticated: int = 0
    replayed: int = 0
    unexpected: int = 0
    interleaved: int = 0
    kiss_of_death: int = 0
    unsynchronized: int = 0
    warmups: int = 0

    @property
    def dropped(self) -> int:
        return (self.malformed + self.bad_version + self.wrong_type + self.unauthenticated
                + self.replayed + self.unexpected + self.kiss_of_death + self.unsynchronized)


@dataclass(slots=True)  # read-only; not frozen: see tsock.Stamp
class ProbeResult:
    """One answered exchange: `sample` is the best the exchange gave (the
    interleaved completion of the previous exchange when there is one, else
    this exchange with the responder's user-space t3); `basic` is always
    this exchange's own."""
    seq: int
    sample: Sample
    basic: Sample
    interleaved: bool


@dataclass
class PeerState:
    session: int
    next_seq: int = 1
    #: seq -> our t1 (node time) and its source, for requests in flight
    pending: OrderedDict = field(default_factory=OrderedDict)
    #: seq -> (t1, t4, t1 source, t4 source) of answered exchanges, for
    #: completing them when the next response brings the peer's TX stamp
    done: OrderedDict = field(default_factory=OrderedDict)
    answered: int = 0


def parse_peer(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """HOST, HOST:PORT, [V6]:PORT or a bare IPv6 literal -> (ip, port);
    host names are resolved."""
    import socket as _socket
    host, port = text.strip(), default_port
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise UsageError(f"peer {text!r}: missing ']'")
        rest = host[end + 1:]
        host = host[1:end]
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"peer {text!r}: expected :PORT after ']'")
            port = rest[1:]
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        port = int(port)
    except ValueError:
        raise UsageError(f"peer {text!r}: port {port!r} is not a number") from None
    if not 0 < port < 65536:
        raise UsageError(f"peer {text!r}: port {port} must be 1..65535")
    if not host:
        raise UsageError(f"peer {text!r}: no host")
    try:
        infos = _socket.getaddrinfo(host, port, type=_socket.SOCK_DGRAM)
    except _socket.gaierror as e:
        raise UsageError(f"peer {text!r}: cannot resolve {host!r}: {e.strerror}") from None
    return infos[0][4][0], port


class ProbeClient:
    """Sends probe requests and turns responses into samples (module docstring)."""

    def __init__(self, sock: TimestampedSocket, keys: KeyRing | None = None,
                 key_id: int | None = None, clock=None, *, interleaved: bool = True,
                 max_pending: int = 64):
        self.sock = sock
        self.keys = keys or KeyRing()
        self.key = self.keys.get_key(key_id) if key_id is not None else None
        self.time = NodeTime(clock)
        self.interleaved = interleaved
        self.max_pending = max_pending
        self.counters = ClientCounters()
        self.peers: dict[tuple[str, int], PeerState] = {}

    def peer_state(self, peer: tuple[str, int]) -> PeerState:
        st = self.peers.get(peer)
        if st is None:
            st = self.peers[peer] = PeerState(session=secrets.randbits(64))
        return st

    def warm(self, peer: tuple[str, int]) -> None:
        """Send a warm-up packet (no TX stamp, no answer) to peer, to go
        shortly before a request: see WARMUP."""
        self.sock.send_unstamped(WARMUP, peer)
        self.counters.warmups += 1

    def request(self, peer: tuple[str, int]) -> int:
        """Send one request (non-blocking but for the bounded TX-stamp wait);
        returns its sequence number."""
        st = self.peer_state(peer)
        seq = st.next_seq
        st.next_seq = (seq + 1) & 0xFFFFFFFF or 1
        pkt = Packet(TYPE_REQUEST, seq, st.session, t1=self.time.now_ns(),
                     flags=FLAG_INTERLEAVED if self.interleaved else 0)
        sent = self.sock.send(encode(pkt, self.key), peer)
        tx = self.sock.tx_stamp(sent)
        st.pending[seq] = (self.time.stamp(tx), tx.source.label)
        while len(st.pending) > self.max_pending:
            st.pending.popitem(last=False)
            self.counters.timeouts += 1
        self.counters.sent += 1
        return seq

    def handle(self, d: Datagram) -> ProbeResult | None:
        """Check one response; the result, or None when it was dropped (and
        counted). Never raises for what a peer sent."""
        c = self.counters
        try:
            p = decode(d.data)
            if p.type != TYPE_RESPONSE:
                raise ProtocolError("wrong_type", "a request sent to the client")
            key = verify(d.data, p, self.keys, self.key is not None)
            if self.key is not None and key is not None and key.id != self.key.id:
                raise ProtocolError("unauthenticated", "answered with another key")
        except ProtocolError as e:
            name = {"version": "bad_version"}.get(e.kind, e.kind)
            setattr(c, name, getattr(c, name) + 1)
            return None
        st = self.peers.get((d.ip, d.port))
        if st is None or p.session != st.session:
            c.unexpected += 1
            return None
        got = st.pending.pop(p.seq, None)
        if got is None:
            if p.seq in st.done:
                c.replayed += 1    # answered already: a duplicate or a replay
            else:
                c.unexpected += 1  # never asked, or given up on
            return None
        t1, t1_src = got
        t4 = self.time.stamp(d.stamp)
        t2_src, t3_src = _unpack_sources(p.sources)
        basic = Sample(t1, p.t2, p.t3, t4, worst_source(t1_src, t2_src, t3_src,
                                                        d.stamp.source.label), p.seq)
        st.done[p.seq] = (t1, t4, t1_src, d.stamp.source.label)
        while len(st.done) > 16:
            st.done.popitem(last=False)
        st.answered += 1
        c.answered += 1
        best, inter = basic, False
        if p.interleaved and p.prev_seq in st.done and p.prev_seq != p.seq:
            pt1, pt4, s1, s4 = st.done[p.prev_seq]
            ps2, ps3 = _unpack_sources(p.prev_sources)
            best = Sample(pt1, p.prev_t2, p.prev_t3, pt4, worst_source(s1, ps2, ps3, s4),
                          p.prev_seq)
            inter = True
            c.interleaved += 1
        return ProbeResult(p.seq, best, basic, inter)

    def exchange(self, peer: tuple[str, int], timeout_ns: int = 200_000_000) -> ProbeResult | None:
        """One blocking exchange; None when no valid answer came in time."""
        seq = self.request(peer)
        deadline = time.monotonic_ns() + timeout_ns
        while True:
            left = deadline - time.monotonic_ns()
            if left <= 0:
                break
            d = self.sock.recv(2048, left)
            if d is None:
                break
            r = self.handle(d)
            if r is not None and r.seq == seq:
                return r
        st = self.peer_state(peer)
        if st.pending.pop(seq, None) is not None:
            self.counters.timeouts += 1
        return None


# --- NTP client (RFC 5905, mode 3) ---------------------------------------------

NTP_EPOCH_OFFSET = 2_208_988_800   # 1900-01-01 to 1970-01-01, seconds
NTP_FORMAT = "!BBbbII4sQQQQ"
NTP_LEN = struct.calcsize(NTP_FORMAT)   # 48
NTP_FIELDS = [("li_vn_mode", 1), ("stratum", 1), ("poll", 1), ("precision", 1),
              ("root_delay", 4), ("root_dispersion", 4), ("reference_id", 4),
              ("reference_ts", 8), ("origin_ts", 8), ("receive_ts", 8), ("transmit_ts", 8)]


def ntp_to_ns(v: int, near_ns: int) -> int:
    """An NTP 32.32 timestamp as Unix ns, in the NTP era nearest near_ns."""
    sec, frac = v >> 32, v & 0xFFFFFFFF
    ns = (sec - NTP_EPOCH_OFFSET) * 1_000_000_000 + ((frac * 1_000_000_000 + (1 << 31)) >> 32)
    era = (1 << 32) * 1_000_000_000
    while ns < near_ns - era // 2:
        ns += era
    while ns > near_ns + era // 2:
        ns -= era
    return ns


def ns_to_ntp(ns: int) -> int:
    sec, rem = divmod(ns, 1_000_000_000)
    return (((sec + NTP_EPOCH_OFFSET) & 0xFFFFFFFF) << 32) | ((rem << 32) // 1_000_000_000)


class NtpClient:
    """Measures against a standard NTP server, kernel stamps on our side. The
    transmit timestamp we send is a random nonce (the server echoes it as its
    origin), so nothing of our clock leaks and replies are matched exactly."""

    def __init__(self, sock: TimestampedSocket, clock=None):
        self.sock = sock
        self.time = NodeTime(clock)
        self.counters = ClientCounters()
        self._pending: OrderedDict[int, tuple[int, str, tuple[str, int]]] = OrderedDict()
        self._answered = 0

    def request(self, peer: tuple[str, int]) -> int:
        nonce = secrets.randbits(64)
        pkt = struct.pack(NTP_FORMAT, (0 << 6) | (4 << 3) | 3, 0, 0, 0, 0, 0, b"\0" * 4,
                          0, 0, 0, nonce)
        sent = self.sock.send(pkt, peer)
        tx = self.sock.tx_stamp(sent)
        self._pending[nonce] = (self.time.stamp(tx), tx.source.label, peer)
        while len(self._pending) > 64:
            self._pending.popitem(last=False)
            self.counters.timeouts += 1
        self.counters.sent += 1
        return nonce

    def handle(self, d: Datagram) -> ProbeResult | None:
        c = self.counters
        if len(d.data) < NTP_LEN:
            c.malformed += 1
            return None
        (lvm, stratum, _poll, _prec, _rd, _rdisp, refid, _ref, origin, recv,
         xmit) = struct.unpack_from(NTP_FORMAT, d.data)
        li, vn, mode = lvm >> 6, (lvm >> 3) & 7, lvm & 7
        if mode != 4 or vn not in (3, 4):
            c.malformed += 1
            return None
        got = self._pending.get(origin)
        if got is None or got[2] != (d.ip, d.port):
            c.unexpected += 1
            return None
        if stratum == 0:
            c.kiss_of_death += 1
            self._pending.pop(origin, None)
            return None
        if li == 3 or recv == 0 or xmit == 0:
            c.unsynchronized += 1
            self._pending.pop(origin, None)
            return None
        del self._pending[origin]
        t1, s1 = got[0], got[1]
        t4 = self.time.stamp(d.stamp)
        t2, t3 = ntp_to_ns(recv, t1), ntp_to_ns(xmit, t1)
        self._answered += 1
        s = Sample(t1, t2, t3, t4, worst_source(s1, d.stamp.source.label), self._answered)
        c.answered += 1
        return ProbeResult(self._answered, s, s, False)

    def exchange(self, peer: tuple[str, int], timeout_ns: int = 500_000_000) -> ProbeResult | None:
        self.request(peer)
        deadline = time.monotonic_ns() + timeout_ns
        while True:
            left = deadline - time.monotonic_ns()
            if left <= 0:
                break
            d = self.sock.recv(2048, left)
            if d is None:
                break
            r = self.handle(d)
            if r is not None:
                return r
        self.counters.timeouts += 1
        return None


@dataclass
class MeasureReport:
    """What `measure` saw: the final estimate, every exchange, the counters."""
    peer: tuple[str, int]
    estimate: "Estimate | None"
    exchanges: list[dict]
    counters: dict
    estimator: dict
    socket: dict
    wall_s: float

    def accepted_offsets(self) -> list[float]:
        return [x["offset_ns"] for x in self.exchanges if x["verdict"] == "accepted"]


def measure(client, peer: tuple[str, int], count: int, interval_ns: int,
            timeout_ns: int = 200_000_000, estimator=None, progress=None,
            presend_ns: int = 0) -> MeasureReport:
    """`count` exchanges with peer, one every interval_ns, through an
    estimator (a fresh one unless given). presend_ns > 0: a warm-up packet
    goes that long before each request (skewd peers only; see WARMUP)."""
    from dataclasses import asdict
    from skewd.estimate import Estimator
    est = estimator or Estimator()
    rows, e = [], None
    warm = presend_ns > 0 and isinstance(client, ProbeClient)
    t0 = time.monotonic_ns() + (presend_ns if warm else 0)   # the first one has its lead too
    for k in range(count):
        due = t0 + k * interval_ns
        if warm:
            wait = due - presend_ns - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            client.warm(peer)
        wait = due - time.monotonic_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        r = client.exchange(peer, timeout_ns)
        if r is not None:
            got = est.add(r.sample)
            e = got or e
            s = r.sample
            rows.append(dict(seq=s.seq, t1=s.t1, t2=s.t2, t3=s.t3, t4=s.t4,
                             offset_ns=s.offset_ns, delay_ns=s.delay_ns, source=s.source,
                             interleaved=r.interleaved,
                             verdict=got.verdict if got else "invalid"))
        if progress:
            progress((k + 1) / count)
    return MeasureReport(peer, est.estimate_at(e.time_ns) if e else None, rows,
                         counters_dict(client.counters), asdict(est.stats),
                         client.sock.stats(), (time.monotonic_ns() - t0) / 1e9)


def open_socket(peer_ip: str | None = None, *, bind: tuple[str, int] | None = None,
                stamps: str = "software", interface: str | None = None) -> TimestampedSocket:
    """A timestamped socket of the right family for peer_ip (or bind's ip)."""
    from skewd.tsock import family_of
    ip = peer_ip or (bind[0] if bind else "0.0.0.0")
    return TimestampedSocket(family_of(ip), bind=bind or (("::" if family_of(ip) == "ipv6"
                                                               else "0.0.0.0"), 0),
                             stamps=stamps, interface=interface)


#: counters of ServerCounters / ClientCounters that are not drops
NOT_DROPS = frozenset({"received", "answered", "sent", "dropped", "interleaved", "timeouts",
                       "warmups"})


def counters_dict(c) -> dict:
    d = {f.name: getattr(c, f.name) for f in fields(c)}
    d["dropped"] = c.dropped
    return d
