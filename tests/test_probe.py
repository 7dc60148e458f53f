"""The probe protocol: layout against the doc, codec, keys, authentication,
replay and rate limits, interleaved exchanges over loopback, the NTP client,
and fuzzed packets (property-based)."""
import json
import os
import re
import socket
import struct
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skewd import probe
from skewd.errors import InputFileError, UsageError
from skewd.probe import (FLAG_INTERLEAVED, Packet, ProbeClient, ProbeServer,
                         ProtocolError, TYPE_REQUEST, TYPE_RESPONSE, decode, encode, parse_keys)
from skewd.statepage import Segment, StatePage
from skewd.tsock import Datagram, Stamp, StampSource, TimestampedSocket

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "probe-protocol.md")
KEY_TEXT = "1 HMAC-SHA256 HEX:" + "11" * 32 + "\n7 SHA256 ASCII:a-long-enough-secret\n"


def doc_table(heading_field: str) -> list[tuple[int, int, str]]:
    """Rows (offset, size, field) of the first doc table whose first row names heading_field."""
    rows = []
    for line in open(DOC, encoding="utf-8"):
        m = re.match(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*([a-z0-9_]+)\s*\|", line)
        if m:
            rows.append((int(m.group(1)), int(m.group(2)), m.group(3)))
        elif rows and rows[0][2] == heading_field:
            return rows
        elif rows:
            rows = []
    return rows


def test_doc_table_matches_the_code():
    assert doc_table("magic") == probe.field_layout()
    assert probe.PACKET_LEN == 104 == sum(s for _, s, _ in probe.field_layout())
    assert f"{probe.PACKET_LEN} bytes" in open(DOC).read()
    ntp = [(o, s, n) for o, s, n in doc_table("li_vn_mode")]
    off, expect = 0, []
    for name, size in probe.NTP_FIELDS:
        expect.append((off, size, name))
        off += size
    assert ntp == expect and off == probe.NTP_LEN == 48


# --- codec ----------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
i64 = st.integers(-2**63, 2**63 - 1)
src = st.integers(0, 3).flatmap(lambda a: st.integers(0, 3).map(lambda b: (a << 4) | b))


@given(typ=st.sampled_from([TYPE_REQUEST, TYPE_RESPONSE]), seq=u32, session=st.integers(0, 2**64 - 1),
       t1=i64, t2=i64, t3=i64, inter=st.booleans(), sources=src, prev_seq=u32,
       prev_sources=src, p2=i64, p3=i64, keyed=st.booleans())
def test_round_trip(typ, seq, session, t1, t2, t3, inter, sources, prev_seq, prev_sources, p2, p3,
                    keyed):
    ring = parse_keys(KEY_TEXT)
    key = ring[1] if keyed else None
    p = Packet(typ, seq, session, t1, t2, t3, FLAG_INTERLEAVED if inter else 0, 0, sources,
               prev_seq, prev_sources, p2, p3)
    data = encode(p, key)
    assert len(data) == probe.PACKET_LEN
    q = decode(data)
    assert (q.type, q.seq, q.session, q.t1, q.t2, q.t3, q.interleaved, q.sources, q.prev_seq,
            q.prev_sources, q.prev_t2, q.prev_t3) == (typ, seq, session, t1, t2, t3, inter,
                                                      sources, prev_seq, prev_sources, p2, p3)
    assert q.authenticated == keyed
    assert probe.verify(data, q, ring, keyed) == key


@given(st.binary(max_size=300))
def test_decode_never_crashes_on_garbage(data):
    try:
        decode(data)
    except ProtocolError as e:
        assert e.kind in ("malformed", "version")


@given(st.data())
def test_decode_of_mutated_packets(data):
    good = bytearray(encode(Packet(TYPE_REQUEST, 5, 99, t1=123), parse_keys(KEY_TEXT)[1]))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(good) - 1))
        good[i] = data.draw(st.integers(0, 255))
    try:
        p = decode(bytes(good))
        ring = parse_keys(KEY_TEXT)
        try:
            probe.verify(bytes(good), p, ring, True)
        except ProtocolError as e:
            assert e.kind == "unauthenticated"
    except ProtocolError as e:
        assert e.kind in ("malformed", "version")


def test_decode_refusals():
    ok = encode(Packet(TYPE_REQUEST, 1, 2))
    cases = {
        "magic": b"XKWD" + ok[4:],
        "version": ok[:4] + b"\x02" + ok[5:],
        "type": ok[:5] + b"\x07" + ok[6:],
        "flags": ok[:6] + b"\x80" + ok[7:],
        "source": ok[:7] + b"\x90" + ok[8:],
        "keyid": ok[:8] + b"\0\0\0\x05" + ok[12:],
        "reserved": ok[:53] + b"\x01" + ok[54:],
        "mac": ok[:72] + b"\x01" * 32,
        "short": ok[:-1],
        "long": ok + b"\0",
    }
    for name, data in cases.items():
        with pytest.raises(ProtocolError) as ei:
            decode(data)
        assert ei.value.kind == ("version" if name == "version" else "malformed"), name


# --- keys -----------------------------------------------------------------------------

def test_keys_file(tmp_path):
    ring = parse_keys("# comment\n\n" + KEY_TEXT)
    assert sorted(ring) == [1, 7]
    assert ring[1].secret == bytes([0x11]) * 32 and ring[7].secret == b"a-long-enough-secret"
    p = tmp_path / "keys"
    p.write_text(KEY_TEXT)
    os.chmod(p, 0o600)
    assert sorted(probe.load_keys(str(p))) == [1, 7]
    with pytest.raises(UsageError, match="key id 3 is not in the key file"):
        ring.get_key(3)


@pytest.mark.parametrize("text,msg", [
    ("1 HMAC-SHA256", "line 1: expected 'ID ALGORITHM KEY'"),
    ("x HMAC-SHA256 HEX:" + "00" * 16, "key id 'x' is not an integer"),
    ("0 HMAC-SHA256 HEX:" + "00" * 16, "must be 1..4294967295"),
    ("1 MD5 HEX:" + "00" * 16, "algorithm 'MD5' is not supported"),
    ("1 HMAC-SHA256 HEX:zz" + "00" * 16, "bad hex"),
    ("1 HMAC-SHA256 short", "is 5 bytes"),
    ("\n1 SHA256 HEX:" + "00" * 16 + "\n1 SHA256 HEX:" + "00" * 16, "line 3: key id 1 appears twice"),
])
def test_keys_file_errors(text, msg):
    with pytest.raises(InputFileError, match=re.escape(msg)):
        parse_keys(text, "keys")


def test_keys_file_missing_or_empty(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        probe.load_keys(str(tmp_path / "nope"))
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(InputFileError, match="holds no keys"):
        probe.load_keys(str(tmp_path / "empty"))


# --- server logic, datagrams fed directly ----------------------------------------------

class FakeSock:
    """Stands in for a TimestampedSocket: records what the server sends."""
    mode = "software"

    def __init__(self):
        self.out = []

    def send(self, data, addr):
        self.out.append((data, addr))
        from skewd.tsock import Sent
        return Sent(len(data), len(self.out), time.time_ns())

    def tx_stamp(self, sent, timeout_ns=None):
        return Stamp(sent.user_ns + 1000, StampSource.KERNEL)


def dgram(data, ip="10.0.0.1", port=4000):
    return Datagram(bytes(data), ip, port, Stamp(time.time_ns(), StampSource.KERNEL))


def request(seq=1, session=42, key=None, t1=None, inter=True):
    return encode(Packet(TYPE_REQUEST, seq, session, t1=time.time_ns() if t1 is None else t1,
                         flags=FLAG_INTERLEAVED if inter else 0), key)


def test_server_answers_and_interleaves():
    srv = ProbeServer(FakeSock())
    r1 = decode(srv.handle_datagram(dgram(request(1))))
    assert r1.type == TYPE_RESPONSE and r1.seq == 1 and r1.session == 42 and not r1.interleaved
    r2 = decode(srv.handle_datagram(dgram(request(2))))
    assert r2.interleaved and r2.prev_seq == 1 and r2.prev_t2 == r1.t2
    assert r2.prev_sources == (StampSource.KERNEL << 4) | StampSource.KERNEL
    # another session from the same address has its own interleaving
    r3 = decode(srv.handle_datagram(dgram(request(1, session=43))))
    assert not r3.interleaved
    assert srv.counters.answered == 3 and srv.counters.dropped == 0


def test_server_refuses_and_counts():
    ring = parse_keys(KEY_TEXT)
    wrong = parse_keys("1 HMAC-SHA256 HEX:" + "22" * 32)[1]
    srv = ProbeServer(FakeSock(), keys=ring)
    c = srv.counters
    assert srv.handle_datagram(dgram(request(1))) is None                    # no MAC
    assert srv.handle_datagram(dgram(request(2, key=wrong))) is None         # wrong key
    unknown = probe.Key(9, "HMAC-SHA256", b"x" * 32)
    assert srv.handle_datagram(dgram(request(3, key=unknown))) is None       # unknown id
    assert c.unauthenticated == 3
    good = request(4, key=ring[1])
    resp = srv.handle_datagram(dgram(good))
    assert resp is not None and len(resp) <= len(good)
    assert probe.verify(resp, decode(resp), ring, True) == ring[1]           # answered signed
    assert srv.handle_datagram(dgram(good)) is None                          # replay
    assert c.replayed == 1
    old = request(5, key=ring[1], t1=time.time_ns() - 3_600_000_000_000)
    assert srv.handle_datagram(dgram(old)) is None and c.stale == 1
    assert srv.handle_datagram(dgram(b"\0" * 104)) is None and c.malformed == 1
    resp_pkt = encode(Packet(TYPE_RESPONSE, 6, 42), ring[1])
    assert srv.handle_datagram(dgram(resp_pkt)) is None and c.wrong_type == 1
    v2 = bytearray(request(7)); v2[4] = 2
    assert srv.handle_datagram(dgram(v2)) is None and c.bad_version == 1
    assert c.received == 9 and c.answered == 1 and c.dropped == 8


def test_warmup_packets_are_counted_never_answered():
    srv = ProbeServer(FakeSock(), rate=0)
    assert srv.handle_datagram(dgram(probe.WARMUP)) is None
    assert srv.handle_datagram(dgram(probe.WARMUP)) is None
    c = srv.counters
    assert c.warmups == 2 and c.received == 0 and c.dropped == 0 and srv.sock.out == []
    # only the exact 8 bytes are a warm-up: anything like one is malformed
    for near in (probe.WARMUP + b"\0", probe.WARMUP[:-1] + b"\1", b"SKWD\x02\x03\0\0"):
        assert srv.handle_datagram(dgram(near)) is None
    assert c.warmups == 2 and c.received == 3 and c.dropped == 3
    # a warm-up does not disturb the exchanges around it
    assert decode(srv.handle_datagram(dgram(request(1)))).seq == 1
    srv.handle_datagram(dgram(probe.WARMUP))
    r2 = decode(srv.handle_datagram(dgram(request(2))))
    assert r2.interleaved and r2.prev_seq == 1


def test_replay_window():
    w = probe.ReplayWindow()
    assert all(w.accept(s) for s in (5, 3, 4, 70))
    assert not w.accept(5) and not w.accept(70) and not w.accept(6)  # 6 is 64 below 70
    assert w.accept(7) and not w.accept(7)
    assert w.accept(1000) and not w.accept(999 - 64)


def test_rate_limit_per_source():
    t = [0]
    rl = probe.RateLimiter(rate=10, burst=5, now=lambda: t[0])
    assert sum(rl.allow("a") for _ in range(50)) == 5
    assert rl.allow("b")                    # another source has its own bucket
    t[0] += 1_000_000_000                   # a second later: 10 more
    assert sum(rl.allow("a") for _ in range(50)) == 5  # capped at the burst
    srv = ProbeServer(FakeSock(), rate=10, burst=5)
    for s in range(1, 41):
        srv.handle_datagram(dgram(request(s)))
    assert srv.counters.rate_limited >= 30 and srv.counters.answered <= 10


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=200), st.binary(min_size=104, max_size=104)),
                max_size=20))
def test_server_survives_fuzz_and_counts_everything(packets):
    srv = ProbeServer(FakeSock(), keys=parse_keys(KEY_TEXT), rate=0)
    for p in packets:
        assert srv.handle_datagram(dgram(p)) is None
    c = srv.counters
    assert c.received == len(packets) == c.dropped


@given(st.lists(st.binary(max_size=200), max_size=10))
def test_client_survives_fuzz(packets):
    cl = ProbeClient(FakeSock())
    for p in packets:
        assert cl.handle(dgram(p)) is None
    assert cl.counters.dropped == len(packets)


# --- real sockets on loopback ------------------------------------------------------------

@pytest.fixture(params=["python", "c"])
def loop_server(request):
    """A ProbeServer on loopback in a thread, answering in Python or in C
    (native: csrc/responder.c inside the socket's recv); yields (server, port)."""
    made = []

    def start(**kw):
        sock = TimestampedSocket("ipv4", bind=("127.0.0.1", 0))
        kw.setdefault("native", request.param == "c")
        srv = ProbeServer(sock, **kw)
        assert (srv.native is not None) == kw["native"]
        stop = threading.Event()
        th = threading.Thread(target=srv.serve, args=(stop,), daemon=True)
        th.start()
        made.append((sock, stop, th))
        return srv, sock.port
    yield start
    for sock, stop, th in made:
        stop.set()
        th.join(5)
        sock.close()


def test_loopback_exchanges_interleave_with_kernel_stamps(loop_server):
    srv, port = loop_server()
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as cs:
        cl = ProbeClient(cs)
        results = [cl.exchange(("127.0.0.1", port)) for _ in range(20)]
    assert all(results)
    assert not results[0].interleaved and results[0].sample.source == "user"
    assert all(r.interleaved and r.sample.source == "kernel" for r in results[1:])
    assert results[5].sample.seq == results[5].seq - 1
    for r in results[1:]:
        assert 0 <= r.sample.delay_ns < 5_000_000
        assert abs(r.sample.offset_ns) < 500_000  # same clock, both sides
    assert cl.counters.interleaved == 19 and srv.counters.tx_stamp_missing == 0


def test_basic_mode_uses_user_space_t3(loop_server):
    _, port = loop_server()
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as cs:
        cl = ProbeClient(cs, interleaved=False)
        rs = [cl.exchange(("127.0.0.1", port)) for _ in range(3)]
    assert all(r and not r.interleaved and r.sample.source == "user" for r in rs)


def test_injected_offset_is_what_a_peer_measures(loop_server, state_dir):
    from skewd.estimate import Estimator
    from skewd.skewclock import SkewedClock
    page = StatePage("resp", writable=True)
    page.set_injection(Segment(0, 5_000_000, 0, time.time_ns()))
    _, port = loop_server(clock=SkewedClock("resp"))
    est = Estimator()
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as cs:
        cl = ProbeClient(cs)
        for _ in range(60):
            r = cl.exchange(("127.0.0.1", port))
            e = est.add(r.sample)
    assert abs(e.offset_ns - 5_000_000) < 20_000
    assert e.contains(5_000_000)


def test_wrong_key_and_replayed_response_on_loopback(loop_server):
    ring = parse_keys(KEY_TEXT)
    srv, port = loop_server(keys=ring)
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as cs:
        bad = ProbeClient(cs, parse_keys("1 HMAC-SHA256 HEX:" + "33" * 32), key_id=1)
        assert bad.exchange(("127.0.0.1", port), timeout_ns=50_000_000) is None
        assert srv.counters.unauthenticated == 1 and bad.counters.timeouts == 1
        good = ProbeClient(cs, ring, key_id=7)
        r = good.exchange(("127.0.0.1", port))
        assert r is not None
        # a replayed response (the same bytes again) is refused by the client
        st = good.peers[("127.0.0.1", port)]
        again = encode(Packet(TYPE_RESPONSE, r.seq, st.session, t2=1, t3=2), ring[7])
        assert good.handle(dgram(again, "127.0.0.1", port)) is None
        assert good.counters.replayed == 1


def test_probe_cli_json(loop_server, capsys):
    from skewd.cli import main
    _, port = loop_server()
    assert main(["probe", f"127.0.0.1:{port}", "--count", "10", "--interval", "1ms", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["estimate"]["stamp_source"] == "kernel" and out["stamps"] == "software"
    assert len(out["exchanges"]) == 10 and out["counters"]["answered"] == 10
    assert abs(out["estimate"]["offset_ns"]) < 500_000
    assert main(["probe", f"127.0.0.1:{port}", "--count", "3", "--interval", "1ms"]) == 0
    text = capsys.readouterr().out
    assert "offset" in text and "drift" in text and "stamps       kernel" in text


def test_probe_cli_usage_errors(capsys):
    from skewd.cli import main
    assert main(["probe", "127.0.0.1", "--key-id", "1"]) == 2
    assert main(["probe", "127.0.0.1:notaport"]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["probe", "127.0.0.1", "--presend=-1us"]) == 2
    assert main(["probe", "127.0.0.1", "--interval", "1ms", "--presend", "2ms"]) == 2
    assert "shorter than --interval" in capsys.readouterr().err


def test_probe_sends_a_warmup_before_each_request(loop_server):
    srv, port = loop_server()
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as s:
        cl = ProbeClient(s)
        rep = probe.measure(cl, ("127.0.0.1", port), 5, 2_000_000, presend_ns=300_000)
        assert rep.counters["warmups"] == 5 and rep.counters["answered"] == 5
        assert rep.socket["sent_unstamped"] == 5 and rep.socket["tx_stale"] == 0
        assert srv.counters.warmups == 5 and srv.counters.received == 5
        rep = probe.measure(cl, ("127.0.0.1", port), 3, 2_000_000, presend_ns=0)
        assert rep.counters["warmups"] == 5      # 0: none


def test_parse_peer():
    assert probe.parse_peer("127.0.0.1") == ("127.0.0.1", probe.DEFAULT_PORT)
    assert probe.parse_peer("127.0.0.1:99") == ("127.0.0.1", 99)
    assert probe.parse_peer("[::1]:99") == ("::1", 99)
    assert probe.parse_peer("::1", 123) == ("::1", 123)
    for bad in ("127.0.0.1:0", "[::1", "[::1]x", ":5"):
        with pytest.raises(UsageError):
            probe.parse_peer(bad)


# --- NTP ---------------------------------------------------------------------------------

@given(st.integers(0, 2**62))
def test_ntp_timestamp_round_trip(ns):
    back = probe.ntp_to_ns(probe.ns_to_ntp(ns), ns)
    assert abs(back - ns) <= 1


class FakeNtpServer:
    """A tiny mode-4 responder on loopback: offset_ns ahead, optionally KoD."""

    def __init__(self, offset_ns=0, stratum=2, echo=True):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", 0))
        self.s.settimeout(0.05)
        self.port = self.s.getsockname()[1]
        self.offset, self.stratum, self.echo = offset_ns, stratum, echo
        self.stop = threading.Event()
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        while not self.stop.is_set():
            try:
                data, addr = self.s.recvfrom(512)
            except socket.timeout:
                continue
            t2 = time.time_ns() + self.offset
            xmit = struct.unpack("!Q", data[40:48])[0]
            t3 = time.time_ns() + self.offset
            pkt = struct.pack(probe.NTP_FORMAT, (0 << 6) | (4 << 3) | 4, self.stratum, 0, -20, 0, 0,
                              b"LOCL", 0, xmit if self.echo else xmit ^ 1,
                              probe.ns_to_ntp(t2), probe.ns_to_ntp(t3))
            self.s.sendto(pkt, addr)

    def close(self):
        self.stop.set()
        self.th.join(2)
        self.s.close()


def test_ntp_client_against_a_responder():
    srv = FakeNtpServer(offset_ns=3_000_000)
    try:
        with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as cs:
            cl = probe.NtpClient(cs)
            rs = [cl.exchange(("127.0.0.1", srv.port)) for _ in range(10)]
        assert all(rs)
        offs = sorted(r.sample.offset_ns for r in rs)
        assert abs(offs[len(offs) // 2] - 3_000_000) < 300_000
        assert rs[0].sample.source == "kernel"   # our side's stamps
        assert cl.counters.answered == 10
    finally:
        srv.close()


@pytest.mark.parametrize("kw,counter", [({"stratum": 0}, "kiss_of_death"), ({"echo": False}, "unexpected")])
def test_ntp_client_drops_bad_replies(kw, counter):
    srv = FakeNtpServer(**kw)
    try:
        with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as cs:
            cl = probe.NtpClient(cs)
            assert cl.exchange(("127.0.0.1", srv.port), timeout_ns=50_000_000) is None
        assert getattr(cl.counters, counter) == 1
    finally:
        srv.close()


@given(st.binary(max_size=100))
def test_ntp_client_survives_fuzz(data):
    cl = probe.NtpClient(FakeSock())
    assert cl.handle(dgram(data)) is None
