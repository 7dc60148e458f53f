"""The ZeroMQ transport: its frame layout, loopback delivery, and ports."""
import socket

import pytest
from hypothesis import given, settings, strategies as st

from skewd.errors import HostError, UsageError
from skewd.experiment.transports import zmq as zt
from skewd.experiment.transports.base import Message, TransportSpec, open_transport

headers = st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=40)), max_size=8)


@given(headers, st.binary(max_size=200))
def test_frames_round_trip(hs, payload):
    msg = Message(payload, hs)
    assert zt.decode(zt.encode(msg)) == msg


@given(st.lists(st.binary(max_size=12) | st.binary(min_size=32, max_size=32), max_size=8))
@settings(max_examples=300)
def test_decode_never_raises_on_foreign_frames(frames):
    m = zt.decode(frames)
    assert m is None or isinstance(m, Message)


def test_a_traced_message_crosses_in_a_32_byte_trace_frame_and_lists_its_headers():
    from skewd import Tracer
    from skewd.tracer import extract_headers
    with Tracer(node=None, stage="t") as tr:
        with tr.span("send a->b", kind="producer", parent=False) as p:
            sent = Message(b"payload", None, (p, 1234))
            frames = zt.encode(sent)
        got = zt.decode(frames)
    # trace id, span id, then the send time little-endian with the sampled bit on top
    assert frames == [p.trace_id + p.span_id + (1234 | 1 << 63).to_bytes(8, "little"),
                      b"payload"]
    assert len(frames[0]) == 32                          # inside a ZeroMQ message itself
    assert got.trace == (p.context, 1234) and got.others == []      # read in C
    assert got.headers == sent.headers == [("traceparent", p.traceparent_bytes),
                                           ("skewd-send-ns", b"1234")]
    assert got == sent and extract_headers(got.headers) == (p.context, 1234)
    assert got.header("traceparent") == p.traceparent_bytes and got.header("x") is None
    # the same headers written the general way make the same message
    assert zt.decode(zt.encode(Message(b"payload", sent.headers))) == got
    # with other headers too: the general way, still the same message
    mixed = Message(b"p", [("k", b"v")], (p.context, 7))
    back = zt.decode(zt.encode(mixed))
    assert back.trace is None and back == mixed and back.header("k") == b"v"
    assert extract_headers(back.headers) == (p.context, 7)


def test_what_a_trace_frame_cannot_hold_goes_as_a_header_block():
    from skewd.tracer import SpanContext
    unsampled = SpanContext(bytes(range(1, 17)), bytes(range(1, 9)), False)
    f = zt.encode(Message(b"x", None, (unsampled, 0)))[0]
    assert f == bytes(range(1, 17)) + bytes(range(1, 9)) + bytes(8)
    assert zt.decode([f, b"x"]).trace == (unsampled, 0)
    # a trace id that begins like a header block, or a send time a trace
    # frame cannot hold: the header block, in C, and the same message back
    skw = SpanContext(b"SKW2" + bytes(range(1, 13)), bytes(range(1, 9)), True)
    for ctx, ns in ((skw, 5), (unsampled, -5), (unsampled, -2**63 + 1)):
        frames = zt.encode(Message(b"x", None, (ctx, ns)))
        assert frames[0].startswith(zt.MAGIC)
        assert zt.decode(frames).trace == (ctx, ns)
    last = zt.encode(Message(b"x", None, (unsampled, 2**63 - 1)))
    assert len(last[0]) == 32 and zt.decode(last).trace == (unsampled, 2**63 - 1)
    # 32 bytes that are not a trace frame: zero ids
    assert zt.decode([bytes(24) + bytes(8), b"x"]) is None
    assert zt.decode([bytes(range(1, 17)) + bytes(8) + bytes(8), b"x"]) is None
    assert zt.decode([bytes(31), b"x"]) is None and zt.decode([bytes(33), b"x"]) is None


def test_decode_rejects_torn_or_foreign_frames():
    good = zt.encode(Message(b"p", [("k", b"v"), ("traceparent", b"00-ab")]))
    assert zt.decode(good) == Message(b"p", [("k", b"v"), ("traceparent", b"00-ab")])
    assert zt.decode(good[:1]) is None                      # no payload frame
    assert zt.decode([good[0][:-1], b"p"]) is None          # a header cut short
    assert zt.decode([good[0][:5], b"p"]) is None           # lengths cut short
    assert zt.decode([b"XXXX", b"p"]) is None               # not ours
    assert zt.decode([zt.MAGIC + b"\x02\x01\x00\xff\xfeX", b"p"]) is None  # key not UTF-8
    with pytest.raises(UsageError):
        zt.encode(Message(b"", [("k" * 300, b"")]))


def _pair(edge="a->b", **extra):
    st_ = zt.plan_settings([edge], {edge: "127.0.0.1"}, 0)
    st_.update(extra)
    return open_transport(TransportSpec("zmq", "t", st_))


def test_messages_cross_loopback_in_order():
    tp = _pair()
    try:
        rx = tp.receiver("a->b")
        tx = tp.sender("a->b")
        for i in range(50):
            tx.send(Message(str(i).encode(), [("traceparent", b"x" * 10), ("n", str(i).encode())]))
        got = [rx.recv(2.0) for _ in range(50)]
        assert [g.payload for g in got] == [str(i).encode() for i in range(50)]
        assert got[7].header("n") == b"7"
        assert rx.recv(0.05) is None
    finally:
        tp.close()


def test_foreign_messages_are_counted_and_dropped():
    import zmq
    tp = _pair()
    try:
        rx = tp.receiver("a->b")
        ctx = zmq.Context.instance()
        raw = ctx.socket(zmq.PUSH)
        raw.connect(tp._endpoints["a->b"])
        raw.send_multipart([b"garbage", b"more"])
        raw.send_multipart(zt.encode(Message(b"ok")))
        assert rx.recv(2.0).payload == b"ok"
        assert rx.malformed == 1
        raw.close(linger=0)
    finally:
        tp.close()


def test_port_in_use_is_reported_with_the_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        with pytest.raises(HostError, match=f"port {port} on 127.0.0.1 is in use"):
            zt.plan_settings(["a->b"], {"a->b": "127.0.0.1"}, port)
        # and at bind time, when something takes the port between plan and start
        tp = open_transport(TransportSpec("zmq", "t", {"endpoints": {"a->b": f"tcp://127.0.0.1:{port}"}}))
        try:
            with pytest.raises(HostError, match=f"port {port} is in use"):
                tp.receiver("a->b")
        finally:
            tp.close()
    finally:
        s.close()


def test_plan_settings_free_ports_and_ranges():
    edges = ["a->b", "b->c", "c->d"]
    st_ = zt.plan_settings(edges, {e: "127.0.0.1" for e in edges}, 0)
    ports = {int(v.rsplit(":", 1)[1]) for v in st_["endpoints"].values()}
    assert len(ports) == 3
    ns = zt.plan_settings(edges, {e: f"10.0.0.{i}" for i, e in enumerate(edges)}, 0, local=False)
    assert ns["endpoints"]["b->c"] == "tcp://10.0.0.1:5551"
    with pytest.raises(UsageError):
        zt.plan_settings(edges, {e: "127.0.0.1" for e in edges}, 65534)


def test_unknown_edge_and_missing_settings():
    with pytest.raises(UsageError, match="endpoints"):
        open_transport(TransportSpec("zmq", "t", {}))
    tp = _pair()
    try:
        with pytest.raises(UsageError, match="no endpoint for edge 'x->y'"):
            tp.sender("x->y")
    finally:
        tp.close()


def test_send_to_a_full_queue_times_out_with_peer_error():
    from skewd.errors import PeerError
    tp = _pair(hwm=1, send_timeout_ms=100)
    try:
        tx = tp.sender("a->b")  # nobody receives: the queue fills
        with pytest.raises(PeerError, match="a->b"):
            for _ in range(10000):
                tx.send(Message(b"x" * 100))
    finally:
        tp.close()
