"""Export spans to OTLP JSON (OpenTelemetry protocol, JSON encoding), the
form collectors, Jaeger and most trace tools load.

One ResourceSpans per (node, stage): resource attributes service.name (the
stage, else the node), skewd.node, skewd.stage; one ScopeSpans named
"skewd". Per the OTLP JSON rules trace and span ids are lowercase hex, 64-bit
integers are decimal strings and the kind is the SpanKind number. skewd's
own columns travel as span attributes: skewd.send_ns, skewd.clock,
skewd.injected_offset_ns, skewd.est_offset_ns, skewd.est_uncertainty_ns
(only where not null).

    doc = otlp.to_otlp(spanlog.read("logs/"))
    otlp.export("logs/", "trace.json")
"""
from __future__ import annotations

import json
import os

import pyarrow as pa

from skewd.errors import UsageError

#: OTLP SpanKind numbers
SPAN_KIND = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
SCOPE = {"name": "skewd", "version": "1"}
_INT_ATTRS = ("send_ns", "injected_offset_ns", "est_offset_ns", "est_uncertainty_ns")


def _str_attr(key: str, value: str) -> dict:
    return {"key": key, "value": {"stringValue": value}}


def _int_attr(key: str, value: int) -> dict:
    return {"key": key, "value": {"intValue": str(int(value))}}


def to_otlp(table: pa.Table) -> dict:
    """An OTLP JSON document (TracesData / ExportTraceServiceRequest) of a
    span table (skewd.schema.SPAN_SCHEMA)."""
    missing = {"trace_id", "span_id", "parent_id", "name", "kind", "node", "start_ns",
               "end_ns"} - set(table.column_names)
    if missing:
        raise UsageError(f"span table lacks columns {', '.join(sorted(missing))}")
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    n = table.num_rows
    groups: dict[tuple[str, str | None], list[dict]] = {}
    for i in range(n):
        kind = cols["kind"][i]
        span = {
            "traceId": cols["trace_id"][i].hex(),
            "spanId": cols["span_id"][i].hex(),
            "name": cols["name"][i],
            "kind": SPAN_KIND.get(kind, 0),
            "startTimeUnixNano": str(cols["start_ns"][i]),
            "endTimeUnixNano": str(cols["end_ns"][i]),
        }
        pid = cols["parent_id"][i]
        if pid:
            span["parentSpanId"] = pid.hex()
        attrs = []
        if cols.get("clock") and cols["clock"][i] is not None:
            attrs.append(_str_attr("skewd.clock", cols["clock"][i]))
        for a in _INT_ATTRS:
            if a in cols and cols[a][i] is not None:
                attrs.append(_int_attr(f"skewd.{a}", cols[a][i]))
        if attrs:
            span["attributes"] = attrs
        stage = cols["stage"][i] if "stage" in cols else None
        groups.setdefault((cols["node"][i], stage), []).append(span)
    resource_spans = []
    for (node, stage), spans in groups.items():
        rattrs = [_str_attr("service.name", stage or node), _str_attr("skewd.node", node)]
        if stage:
            rattrs.append(_str_attr("skewd.stage", stage))
        resource_spans.append({"resource": {"attributes": rattrs},
                               "scopeSpans": [{"scope": dict(SCOPE), "spans": spans}]})
    return {"resourceSpans": resource_spans}


def dumps(table: pa.Table) -> str:
    return json.dumps(to_otlp(table), separators=(",", ":"))


def export(source, out: str | os.PathLike) -> int:
    """Write the spans of `source` (a table, or span-log paths for
    skewd.spanlog.read) to `out` as OTLP JSON; returns the span count."""
    if not isinstance(source, pa.Table):
        from skewd import spanlog
        source = spanlog.read(source)
    doc = to_otlp(source)
    tmp = f"{os.fspath(out)}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    os.replace(tmp, out)
    return source.num_rows
