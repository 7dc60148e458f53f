"""Tests for the trace context's wire forms in C (csrc/tracectx.c through
skewd._ring): the fast paths must agree with skewd.tracer's general parsers
on everything they accept, and decline the rest."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skewd import _ring
from skewd.tracer import SpanContext, parse_traceparent

ids16 = st.binary(min_size=16, max_size=16).filter(any)
ids8 = st.binary(min_size=8, max_size=8).filter(any)


def slow_tp(ctx: SpanContext) -> str:
    hi = int.from_bytes(ctx.trace_id, "big")
    return f"00-{hi:032x}-{ctx.span_id.hex()}-{1 if ctx.sampled else 0:02x}"


@given(ids16, ids8, st.booleans())
def test_format_matches_the_w3c_form_and_parses_back(tid, sid, sampled):
    ctx = SpanContext(tid, sid, sampled)
    b = ctx.traceparent_bytes
    assert len(b) == 55 and b.decode() == slow_tp(ctx) == ctx.traceparent
    assert _ring.parse_traceparent_fast(b) == ctx


def test_w3c_example():
    v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ctx = _ring.parse_traceparent_fast(v)
    assert ctx.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert ctx.span_id.hex() == "00f067aa0ba902b7" and ctx.sampled
    assert not _ring.parse_traceparent_fast(v[:-2] + b"00").sampled


@pytest.mark.parametrize("v", [
    b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   # upper case
    b" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # space
    b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   # other version
    b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",   # zero trace
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   # zero span
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
    b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    b"", b"00-",
])
def test_fast_parser_declines_what_is_not_canonical(v):
    assert _ring.parse_traceparent_fast(v) is None


def test_fast_parsers_take_only_bytes():
    v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert _ring.parse_traceparent_fast(v) is None
    assert _ring.parse_traceparent_fast(bytearray(v.encode())) is None
    assert _ring.parse_ns_fast("12") is None and _ring.parse_ns_fast(12) is None


HEXISH = st.sampled_from(list("0123456789abcdefABx- \t"))


@settings(max_examples=300)
@given(st.one_of(
    st.binary(max_size=60),
    st.lists(HEXISH, min_size=55, max_size=55).map(lambda c: "".join(c).encode()),
    st.builds(lambda t, s, f: f"00-{t}-{s}-{f}".encode(),
              st.text("0123456789abcdef", min_size=32, max_size=32),
              st.text("0123456789abcdef", min_size=16, max_size=16),
              st.text("0123456789abcdefF", min_size=2, max_size=2))))
def test_fast_traceparent_parser_agrees_with_the_general_one(value):
    fast = _ring.parse_traceparent_fast(value)
    try:
        slow = parse_traceparent(value.decode("latin-1")) if value.isascii() else None
    except ValueError:
        slow = None
    if fast is not None:
        assert slow == fast
    # the general parser (which tries the fast one first) still rules on the rest
    if fast is None and slow is not None:
        assert not re.fullmatch(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", value)


@given(st.integers(-2**63 + 1, 2**63 - 1))
def test_ns_round_trip(v):
    b = _ring.format_ns(v)
    assert b == str(v).encode()
    assert _ring.parse_ns_fast(b) == v


@pytest.mark.parametrize("v", [b"", b"-", b"+1", b" 1", b"1 ", b"1_000", b"0x10", b"1.0",
                               b"12345678901234567890", b"9223372036854775808",
                               b"-9223372036854775808", "١".encode()])
def test_ns_fast_parser_declines_the_rest(v):
    assert _ring.parse_ns_fast(v) is None


@given(st.binary(max_size=22))
def test_ns_fast_parser_agrees_with_int(value):
    got = _ring.parse_ns_fast(value)
    if got is not None:
        assert re.fullmatch(rb"-?[0-9]{1,19}", value) and int(value) == got
        assert -2**63 < got < 2**63


TP = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
KEYS = st.sampled_from(["traceparent", "skewd-send-ns", "TraceParent", "other", b"traceparent"])
VALUES = st.sampled_from([TP, TP.upper(), b"12", b"-7", b" 12", b"x", "12", TP.decode(), None])


@settings(max_examples=300)
@given(st.lists(st.one_of(st.tuples(KEYS, VALUES), st.just(("traceparent",)), st.just(None)),
                max_size=4))
def test_fast_header_extraction_agrees_with_the_general_one(monkeypatch_headers):
    import warnings

    from skewd import tracer
    fast = _ring.extract_list_fast(monkeypatch_headers)
    saved = tracer._extract_list_fast
    tracer._extract_list_fast = lambda h: None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slow = tracer.extract_headers(monkeypatch_headers)
    finally:
        tracer._extract_list_fast = saved
    if fast is not None:
        assert fast == slow


@given(ids16, ids8, st.booleans(), st.one_of(st.none(), st.integers(-2**63 + 1, 2**63 - 1)))
def test_fast_headers_match_the_general_injection(tid, sid, sampled, send_ns):
    from skewd import tracer
    ctx = SpanContext(tid, sid, sampled)
    fast = _ring.headers_fast(ctx, send_ns)
    saved = tracer._headers_fast
    tracer._headers_fast = lambda c, s: None
    try:
        slow = tracer.inject_headers(ctx, [], send_ns)
    finally:
        tracer._headers_fast = saved
    assert fast == slow
    assert tracer.extract_headers(fast) == (ctx, send_ns)


def test_fast_headers_decline_other_types():
    ctx = SpanContext(b"\1" * 16, b"\2" * 8)
    assert _ring.headers_fast("00-...", None) is None
    assert _ring.headers_fast(ctx, 1.5) is None
    assert _ring.headers_fast(ctx, 2**63) is None
    assert _ring.headers_fast(None, None) == []


@given(ids16, ids8, st.booleans(), st.integers(-2**63 + 1, 2**63 - 1), st.binary(max_size=6))
def test_header_block_is_the_general_block_of_the_two_headers(tid, sid, sampled, send_ns,
                                                              prefix):
    from skewd.experiment.transports import zmq as zt
    from skewd.experiment.transports.base import Message
    ctx = SpanContext(tid, sid, sampled)
    block = _ring.header_block(prefix, ctx, send_ns)
    general = zt.encode(Message(b"", _ring.headers_fast(ctx, send_ns)))[0][len(zt.MAGIC):]
    assert block == prefix + general
    assert _ring.parse_header_block(block, len(prefix)) == (ctx, send_ns)


@given(ids16, ids8, st.booleans(), st.integers(-2**63, 2**64))
def test_trace_frame_round_trips_or_declines(tid, sid, sampled, send_ns):
    ctx = SpanContext(tid, sid, sampled)
    f = _ring.trace_frame(ctx, send_ns)
    if not 0 <= send_ns < 2**63 or tid[:4] == b"SKW2":
        assert f is None
        return
    assert len(f) == _ring.TRACE_FRAME_LEN == 32
    assert f[:24] == tid + sid and f[24:] == (send_ns | sampled << 63).to_bytes(8, "little")
    assert _ring.parse_trace_frame(f) == (ctx, send_ns)


def test_header_block_declines_what_it_does_not_write():
    ctx = SpanContext(b"\1" * 16, b"\2" * 8)
    assert _ring.header_block(b"", "00-...", 1) is None
    assert _ring.header_block(b"", ctx, None) is None
    assert _ring.header_block(b"", ctx, 2**63) is None
    good = _ring.header_block(b"", ctx, 42)
    assert _ring.parse_header_block(good, 0) == (ctx, 42)
    for bad in (good + b"\0",                       # more after it
                good[:-1],                          # the send time cut short
                good.replace(b"traceparent", b"traceparenT"),
                good.replace(b"skewd-send-ns", b"skewd-send-nz"),
                good.replace(b"-01\r", b"-0x\r"),             # flags not hex
                good.replace(b"0101", b"0A01", 1),              # not lowercase
                good.replace(b"\x0b7\x00", b"\x0b7\x01"),      # value length
                good.replace(good[-2:], b"4x"),     # not decimal
                b"", good[:20]):
        assert _ring.parse_header_block(bad, 0) is None, bad
