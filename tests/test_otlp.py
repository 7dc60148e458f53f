"""Tests for skewd.otlp, round-tripped through the real OpenTelemetry packages."""
import json

import pytest

from skewd import otlp, spanlog
from skewd.tracer import Tracer, inject_headers

propagate = pytest.importorskip("opentelemetry.trace.propagation.tracecontext")
otel_trace = pytest.importorskip("opentelemetry.trace")
proto_json = pytest.importorskip("opentelemetry.proto_json.collector.trace.v1.trace_service")


@pytest.fixture
def table(tmp_path):
    t = Tracer(node="model", stage="infer", log_dir=tmp_path, block=True)
    with t.span("request", kind="server") as root:
        with t.span("send", kind="producer") as p:
            sent = p.mark_send()
        with t.span("recv", kind="consumer", parent=p.context, send_ns=sent):
            pass
        with t.span("call", kind="client"):
            pass
    t.close()
    return spanlog.read(tmp_path), root, sent


def test_otel_propagator_parses_our_traceparent(tmp_path):
    t = Tracer(log_dir=None)
    try:
        with t.span("p", kind="producer") as s:
            headers = inject_headers(s.context, [], s.mark_send())
        carrier = {k: v.decode() for k, v in headers}
        ctx = propagate.TraceContextTextMapPropagator().extract(carrier)
        sc = otel_trace.get_current_span(ctx).get_span_context()
        assert sc.is_valid and sc.is_remote
        assert sc.trace_id == int.from_bytes(s.context.trace_id, "big")
        assert sc.span_id == int.from_bytes(s.context.span_id, "big")
        assert sc.trace_flags.sampled
    finally:
        t.close()


def test_we_parse_the_otel_propagators_traceparent():
    from opentelemetry.sdk.trace import TracerProvider
    from skewd.tracer import extract_headers
    tp = TracerProvider()
    with tp.get_tracer("x").start_as_current_span("s") as s:
        carrier = {}
        propagate.TraceContextTextMapPropagator().inject(carrier)
        sc = s.get_span_context()
    ctx, _ = extract_headers([(k, v.encode()) for k, v in carrier.items()])
    assert ctx.trace_id == sc.trace_id.to_bytes(16, "big")
    assert ctx.span_id == sc.span_id.to_bytes(8, "big")


def test_export_decodes_with_opentelemetry_proto_json(table, tmp_path):
    tab, root, sent = table
    out = tmp_path / "trace.json"
    assert otlp.export(tab, out) == 4
    req = proto_json.ExportTraceServiceRequest.from_json(out.read_text())
    assert len(req.resource_spans) == 1
    rs = req.resource_spans[0]
    rattrs = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
    assert rattrs == {"service.name": "infer", "skewd.node": "model", "skewd.stage": "infer"}
    spans = {s.name: s for s in rs.scope_spans[0].spans}
    assert rs.scope_spans[0].scope.name == "skewd"
    rows = {r["name"]: r for r in tab.to_pylist()}
    kinds = {"request": 2, "send": 4, "recv": 5, "call": 3}
    for name, s in spans.items():
        r = rows[name]
        assert s.trace_id == r["trace_id"] and s.span_id == r["span_id"]
        assert (s.parent_span_id or None) == r["parent_id"]
        assert s.start_time_unix_nano == r["start_ns"] and s.end_time_unix_nano == r["end_ns"]
        assert int(s.kind) == kinds[name]
    attrs = {kv.key: kv.value.int_value for kv in spans["recv"].attributes
             if kv.key != "skewd.clock"}
    assert attrs == {"skewd.send_ns": sent}
    assert spans["request"].span_id == root.span_id and not spans["request"].parent_span_id
    # and it encodes back to the same document
    assert req.to_dict() == json.loads(out.read_text())


def test_export_parses_into_the_protobuf_message(table):
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest)
    tab, _, _ = table
    doc = otlp.to_otlp(tab)
    # OTLP/JSON writes ids in hex where proto3 JSON expects base64: the
    # decoder in opentelemetry-proto-json bridges the two
    pj = proto_json.ExportTraceServiceRequest.from_dict(doc)
    msg = ExportTraceServiceRequest()
    for rs in pj.resource_spans:
        m_rs = msg.resource_spans.add()
        for kv in rs.resource.attributes:
            a = m_rs.resource.attributes.add()
            a.key, a.value.string_value = kv.key, kv.value.string_value
        ss = m_rs.scope_spans.add()
        for s in rs.scope_spans[0].spans:
            p = ss.spans.add()
            p.trace_id, p.span_id, p.parent_span_id = s.trace_id, s.span_id, s.parent_span_id
            p.name, p.kind = s.name, int(s.kind)
            p.start_time_unix_nano, p.end_time_unix_nano = (s.start_time_unix_nano,
                                                            s.end_time_unix_nano)
    again = ExportTraceServiceRequest()
    again.ParseFromString(msg.SerializeToString())
    d = json_format.MessageToDict(again)
    assert len(d["resourceSpans"][0]["scopeSpans"][0]["spans"]) == tab.num_rows


def test_export_from_paths_and_empty(tmp_path, table):
    tab, _, _ = table
    assert otlp.to_otlp(tab.slice(0, 0)) == {"resourceSpans": []}
    n = otlp.export(tmp_path, tmp_path / "out.json")
    assert n == 4
