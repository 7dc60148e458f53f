import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skewd import check as ck
from skewd import importers as im
from skewd import tracegen as g
from skewd.diagnostics import Warnings
from skewd.errors import InputFileError

TID = "5b8efff798038103d269b633813fc60c"


def _otlp_span(sid, parent="", kind=2, start=1_000, end=2_000, **extra):
    sp = {"traceId": TID, "spanId": sid, "parentSpanId": parent, "name": "op", "kind": kind,
          "startTimeUnixNano": str(start), "endTimeUnixNano": str(end)}
    sp.update(extra)
    return sp


def _otlp(spans, host="h1", service="svc"):
    return {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": service}},
        {"key": "host.name", "value": {"stringValue": host}}]},
        "scopeSpans": [{"scope": {"name": "x"}, "spans": spans}]}]}


def test_otlp_file_exporter_lines(tmp_path):
    p = tmp_path / "traces.json"
    lines = [json.dumps(_otlp([_otlp_span("eee19b7ec3c1b174", kind=3, start=1000, end=9000)], "h1")),
             json.dumps(_otlp([_otlp_span("eee19b7ec3c1b175", "eee19b7ec3c1b174", kind=2,
                                          start=500, end=8000)], "h2", "backend"))]
    p.write_text("\n".join(lines) + "\n")
    t = im.read_traces(str(p))
    assert t.num_rows == 2
    assert t.column("node").to_pylist() == ["h1", "h2"]
    assert t.column("kind").to_pylist() == ["client", "server"]
    assert t.column("stage").to_pylist() == ["svc", "backend"]
    det = ck.run(t, do_correct=False).detection
    assert det.counts()["child_before_parent"]["definite"] == 1


def test_jaeger_download():
    doc = {"data": [{"traceID": "d269b633813fc60c", "spans": [
        {"traceID": "d269b633813fc60c", "spanID": "a1", "operationName": "root",
         "references": [], "startTime": 1000, "duration": 50, "processID": "p1",
         "tags": [{"key": "span.kind", "type": "string", "value": "client"}]},
        {"traceID": "d269b633813fc60c", "spanID": "a2", "operationName": "child",
         "references": [{"refType": "CHILD_OF", "traceID": "d269b633813fc60c", "spanID": "a1"}],
         "startTime": 1001, "duration": 60, "processID": "p2",
         "tags": [{"key": "span.kind", "type": "string", "value": "server"}]}],
        "processes": {"p1": {"serviceName": "fe", "tags": [{"key": "hostname", "value": "h1"}]},
                      "p2": {"serviceName": "be", "tags": [{"key": "hostname", "value": "h2"}]}}}]}
    w = Warnings()
    t = im.parse_traces(json.dumps(doc), w)
    assert t.column("start_ns").to_pylist() == [1_000_000, 1_001_000]
    assert t.column("clock").to_pylist() == ["jaeger_us", "jaeger_us"]
    assert t.column("parent_id").to_pylist()[1] == t.column("span_id").to_pylist()[0]
    det = ck.run(t, do_correct=False).detection
    assert det.counts()["child_ends_after_parent"]["definite"] == 1
    assert det.v_mag[0] == 11_000


def test_bad_spans_are_counted_not_fatal():
    spans = [_otlp_span("eee19b7ec3c1b174"), _otlp_span("zz"), _otlp_span("eee19b7ec3c1b176",
                                                                            start="x"),
             _otlp_span("eee19b7ec3c1b177", kind=42), "not a span"]
    w = Warnings()
    t = im.parse_traces(json.dumps(_otlp(spans)) + "\n{broken\n", w)
    assert t.num_rows == 2
    assert w.counts["bad_id"] == 1 and w.counts["bad_time"] == 1
    assert w.counts["unknown_kind"] == 1 and w.counts["malformed_json"] == 1
    assert w.counts["missing_field"] == 1


@pytest.mark.parametrize("text", ["", "[]", "{}", "{\"resourceSpans\": []}", "not json",
                                  "{\"data\": [{\"spans\": [{}]}]}"])
def test_nothing_usable_is_a_clear_error(text):
    with pytest.raises(InputFileError):
        im.parse_traces(text, Warnings(), "f.json")


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) |
                     st.text(max_size=20),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c,
                                                                         max_size=4),
                     max_leaves=20)
_keys = st.sampled_from(["traceId", "spanId", "parentSpanId", "kind", "startTimeUnixNano",
                         "endTimeUnixNano", "attributes", "name"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _json, max_size=8), st.sampled_from(["otlp", "jaeger"]))
def test_fuzzed_documents_never_crash(span, fmt):
    if fmt == "otlp":
        doc = _otlp([span])
    else:
        doc = {"data": [{"spans": [span], "processes": span}]}
    try:
        t = im.parse_traces(json.dumps(doc), Warnings())
    except InputFileError:
        return
    assert t.num_rows == 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_fuzzed_text_never_crashes(text):
    try:
        im.parse_traces(text, Warnings())
    except InputFileError:
        pass


def test_export_round_trip(tmp_path):
    clocks = {"b": g.NodeClock(offset_ns=-90_000)}
    t, _ = g.rpc(50, [("a", "b", "B")], clocks=clocks)
    res = ck.run(t)
    out = ck.with_corrections(t, res.correction)
    p = tmp_path / "c.json"
    assert im.export_otlp(out, str(p)) == t.num_rows
    back = im.read_traces(str(p))
    assert back.num_rows == t.num_rows
    assert ck.run(back, do_correct=False).detection.n_violations == 0
    # the real OpenTelemetry proto decoder reads our export, when installed
    try:
        from google.protobuf import json_format
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    except ImportError:
        return
    line = p.read_text().splitlines()[0]
    msg = json_format.Parse(line, trace_service_pb2.ExportTraceServiceRequest())
    assert len(msg.resource_spans[0].scope_spans[0].spans) > 0
