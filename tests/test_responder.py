"""The C probe responder (csrc/responder.c, ProbeServer(native=True)) against
the Python one: the same datagrams to both, the same verdicts, counters and
answers; its HMAC-SHA256 against hashlib's; a flood never holds its caller."""
import hashlib
import hmac
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skewd import _tsock, probe
from skewd.probe import (FLAG_INTERLEAVED, Packet, ProbeServer, TYPE_REQUEST, decode, encode,
                         parse_keys)
from skewd.tsock import TimestampedSocket

KEYS = parse_keys("1 HMAC-SHA256 HEX:" + "11" * 32 + "\n"
                  "7 SHA256 ASCII:" + "a-secret-longer-than-one-block-" * 3 + "\n")
WRONG = probe.Key(1, "HMAC-SHA256", b"\x22" * 32)
UNKNOWN = probe.Key(9, "HMAC-SHA256", b"\x33" * 32)


@settings(max_examples=200)
@given(st.binary(max_size=150), st.binary(max_size=300))
def test_hmac_sha256_is_hashlibs(key, msg):
    assert _tsock.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


class Pair:
    """A Python and a C responder on loopback, fed the same datagrams from
    one client socket."""

    def __init__(self, **kw):
        self.socks = [TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) for _ in range(2)]
        self.py = ProbeServer(self.socks[0], KEYS, native=False, **kw)
        self.c = ProbeServer(self.socks[1], KEYS, native=True, **kw)
        assert self.c.native is not None and self.py.native is None
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))
        self.client.settimeout(0.5)

    def send(self, data: bytes) -> tuple:
        """The answers of both (None for none), in the order python, c."""
        for s in self.socks:
            self.client.sendto(data, ("127.0.0.1", s.port))
        self.py.poll(0)
        self.c.poll(0)     # answered inside recv, in C: poll returns 0
        got = {}
        self.client.settimeout(0.05)
        try:
            while len(got) < 2:
                d, (_, port) = self.client.recvfrom(2048)
                got[port] = d
        except socket.timeout:
            pass
        return tuple(got.get(s.port) for s in self.socks)

    def counters(self):
        return self.py.counters, self.c.counters

    def close(self):
        for s in self.socks:
            s.close()
        self.client.close()


@pytest.fixture
def pair():
    p = Pair(rate=0)
    yield p
    p.close()


def _same_answer(a: bytes, b: bytes) -> None:
    pa, pb = decode(a), decode(b)
    for f in ("type", "seq", "session", "t1", "flags", "key_id", "sources", "prev_seq",
              "prev_sources"):
        assert getattr(pa, f) == getattr(pb, f), f
    # t2, t3 and the previous exchange's are each side's own stamps
    assert abs(pa.t2 - pb.t2) < 2_000_000_000 and abs(pa.t3 - pb.t3) < 2_000_000_000
    assert pb.t2 <= pb.t3 + 1_000_000
    assert probe.verify(b, pb, KEYS, False) == probe.verify(a, pa, KEYS, False)


_op = st.tuples(
    st.integers(1, 12),                                   # seq: repeats are replays
    st.sampled_from([5, 6]),                              # session
    st.sampled_from([None, KEYS[1], KEYS[7], WRONG, UNKNOWN]),
    st.booleans(),                                        # interleaved
    st.sampled_from([0, -3_600_000_000_000]),             # t1 now, or an hour off
    st.one_of(st.none(), st.tuples(st.integers(0, 103), st.integers(1, 255)),
              st.integers(0, 103)))                       # flip a byte, or cut the packet


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_op, min_size=1, max_size=25))
def test_c_and_python_give_the_same_verdicts_and_answers(pair, ops):
    before = [vars(c).copy() for c in pair.counters()]
    for seq, session, key, inter, dt, mutate in ops:
        data = bytearray(encode(Packet(TYPE_REQUEST, seq, session, t1=time.time_ns() + dt,
                                       flags=FLAG_INTERLEAVED if inter else 0), key))
        if isinstance(mutate, tuple):
            data[mutate[0]] ^= mutate[1]
        elif isinstance(mutate, int):
            data = data[:mutate]
        if len(data) > 5 and data[5] != TYPE_REQUEST:
            continue  # not a request: a daemon hands those to the client side
        a, b = pair.send(bytes(data))
        assert (a is None) == (b is None), (seq, session, key, inter, dt, mutate)
        if a is not None:
            _same_answer(a, b)
    after = [vars(c).copy() for c in pair.counters()]
    py, c = ({k: v - b[k] for k, v in a.items()} for a, b in zip(after, before))
    py.pop("warmups"), c.pop("warmups")
    assert py == c


def test_rate_limit_and_skewed_clock_in_c(state_dir):
    from skewd.skewclock import SkewedClock
    from skewd.statepage import Segment, StatePage
    page = StatePage("cresp", writable=True)
    page.set_injection(Segment(0, 5_000_000, 0, time.time_ns()))
    p = Pair(rate=10, burst=5, clock=SkewedClock("cresp"))
    try:
        # 15 at once (a millisecond refills a hundredth of a token): 5 pass
        for s in range(1, 16):
            data = encode(Packet(TYPE_REQUEST, s, 1, t1=time.time_ns()), KEYS[1])
            for sock in p.socks:
                p.client.sendto(data, ("127.0.0.1", sock.port))
        p.py.poll(0)
        p.c.poll(0)
        got = {sock.port: [] for sock in p.socks}
        p.client.settimeout(0.5)
        try:
            while sum(map(len, got.values())) < 10:
                d, (_, port) = p.client.recvfrom(2048)
                got[port].append(d)
        except socket.timeout:
            pass
        py, c = p.counters()
        assert py.answered == c.answered == 5 and py.rate_limited == c.rate_limited == 10
        both = list(zip(*(got[sock.port] for sock in p.socks)))
        assert len(both) == 5
        for a, b in both:
            _same_answer(a, b)
            # stamped with the node's skewed clock: 5 ms ahead
            rb = decode(b)
            assert 5_000_000 <= rb.t2 - rb.t1 < 1_000_000_000
            assert abs(rb.t2 - decode(a).t2) < 2_000_000_000
    finally:
        p.close()


def test_a_flood_hands_control_back():
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as s:
        srv = ProbeServer(s, rate=0, native=True)
        cl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for seq in range(1, 301):
            cl.sendto(encode(Packet(TYPE_REQUEST, seq, 1, t1=time.time_ns())),
                      ("127.0.0.1", s.port))
        t0 = time.monotonic()
        assert s.recv(2048, 5_000_000_000) is None   # back after a burst, not 5 s later
        assert time.monotonic() - t0 < 2.0
        assert 0 < srv.counters.answered <= 256   # csrc/tsock.h: SKW_TSOCK_HOOK_BURST
        cl.close()


def test_hardware_or_foreign_clocks_stay_in_python():
    class OffsetClock:   # not a node's skewed clock: C cannot read it
        def now_ns(self):
            return time.time_ns() + 1000
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as s:
        assert ProbeServer(s, clock=OffsetClock(), native=True).native is None
