"""Traces users already have, into the span table; corrected spans back out.

- OTLP JSON, as the OpenTelemetry collector's file exporter writes it: one
  TracesData object per line ({"resourceSpans": [...]}), or a single object.
  Ids are hex (the OTLP/JSON rule; base64 is accepted too), times are
  nanosecond strings or numbers, kinds numbers (1..5) or SPAN_KIND_* names.
  node = resource attribute host.name (else service.instance.id, else
  service.name); stage = service.name; send_ns = span attribute
  "skewd.send_ns" when present; clock = "otlp" (1 ns).
- Jaeger JSON, as the UI's "Download" writes it: {"data": [{"traceID",
  "spans": [...], "processes": {...}}]}. Times are microseconds, so the
  clock is "jaeger_us" (1 us resolution); node = process tag hostname (else
  ip, else serviceName); kind from the span.kind tag; parent from the first
  CHILD_OF reference (else FOLLOWS_FROM, else parentSpanID).

Bad input never crashes: a line that is not JSON, a span without an id or a
time, an id of the wrong length are counted in the Warnings and skipped; only
a file with no usable span raises InputFileError.
"""
from __future__ import annotations

import base64
import binascii
import json
import os

import numpy as np
import pyarrow as pa

from skewd.diagnostics import Warnings
from skewd.errors import InputFileError
from skewd.schema import KINDS, SPAN_SCHEMA, with_metadata

_OTLP_KIND = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


class _Rows:
    def __init__(self):
        self.cols = {f.name: [] for f in SPAN_SCHEMA}

    def add(self, **kw):
        for k, v in self.cols.items():
            v.append(kw.get(k))

    def __len__(self):
        return len(self.cols["span_id"])

    def table(self, source: str) -> pa.Table:
        c = self.cols
        kinds = np.array([KINDS.index(k) for k in c["kind"]], np.int8)
        arrays = []
        for f in SPAN_SCHEMA:
            if f.name == "kind":
                arrays.append(pa.DictionaryArray.from_arrays(pa.array(kinds, pa.int8()),
                                                             pa.array(KINDS)))
            else:
                arrays.append(pa.array(c[f.name], f.type))
        return pa.Table.from_arrays(arrays, schema=with_metadata(SPAN_SCHEMA, source=source))


def _id(value, width: int) -> bytes | None:
    """hex (or base64) id of `width` bytes; shorter hex ids are left-padded."""
    if not isinstance(value, str) or not value:
        return None
    v = value.strip()
    try:
        raw = bytes.fromhex(v)
        if 0 < len(raw) <= width:
            raw = raw.rjust(width, b"\0")
    except ValueError:
        try:
            raw = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            return None
    if len(raw) != width or raw == b"\0" * width:
        return None
    return raw


def _int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(1 << 63) <= value < (1 << 63) else None
    if isinstance(value, float) and np.isfinite(value):
        return int(value) if abs(value) < 9e18 else None
    if isinstance(value, str):
        try:
            return _int(int(value.strip()))
        except ValueError:
            return None
    return None


def _attrs(lst) -> dict:
    out = {}
    if not isinstance(lst, list):
        return out
    for a in lst:
        if not isinstance(a, dict) or not isinstance(a.get("key"), str):
            continue
        v = a.get("value")
        if isinstance(v, dict):
            for k in ("stringValue", "intValue", "doubleValue", "boolValue"):
                if k in v:
                    out[a["key"]] = v[k]
                    break
        elif "value" in a:
            out[a["key"]] = v
    return out


def _json_docs(text: str, path: str, w: Warnings) -> list:
    text = text.strip()
    if not text:
        return []
    try:
        return [json.loads(text)]
    except (json.JSONDecodeError, RecursionError):
        pass
    docs = []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            docs.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError) as e:
            w.add("malformed_json", f"{path} line {i}: {e.msg}")
    return docs


def otlp(docs: list, w: Warnings, path: str = "<otlp>") -> _Rows:
    rows = _Rows()
    for doc in docs:
        rss = doc.get("resourceSpans") if isinstance(doc, dict) else None
        if not isinstance(rss, list):
            w.add("missing_field", f"{path}: an object without resourceSpans")
            continue
        for rs in rss:
            if not isinstance(rs, dict):
                w.add("missing_field", f"{path}: resourceSpans entry is not an object")
                continue
            res = rs.get("resource")
            ra = _attrs(res.get("attributes") if isinstance(res, dict) else None)
            service = ra.get("service.name")
            node = ra.get("host.name") or ra.get("service.instance.id") or service or "unknown"
            scopes = rs.get("scopeSpans", rs.get("instrumentationLibrarySpans"))
            if not isinstance(scopes, list):
                w.add("missing_field", f"{path}: resourceSpans without scopeSpans")
                continue
            for ss in scopes:
                spans = ss.get("spans") if isinstance(ss, dict) else None
                if not isinstance(spans, list):
                    continue
                for sp in spans:
                    _otlp_span(sp, str(node), service, rows, w, path)
    return rows


def _otlp_span(sp, node, service, rows, w, path):
    if not isinstance(sp, dict):
        w.add("missing_field", f"{path}: a span that is not an object")
        return
    tid, sid = _id(sp.get("traceId"), 16), _id(sp.get("spanId"), 8)
    if tid is None or sid is None:
        w.add("bad_id", f"{path}: span {sp.get('name')!r}: traceId/spanId missing or malformed")
        return
    pid_raw = sp.get("parentSpanId")
    pid = _id(pid_raw, 8) if pid_raw else None
    if pid_raw and pid is None:
        w.add("bad_id", f"{path}: span {sp.get('name')!r}: parentSpanId {pid_raw!r} malformed; "
                        f"read as a root")
    start, end = _int(sp.get("startTimeUnixNano")), _int(sp.get("endTimeUnixNano"))
    if start is None or end is None:
        w.add("bad_time", f"{path}: span {sp.get('name')!r}: start/end time missing or malformed")
        return
    k = sp.get("kind", 1)
    if isinstance(k, str):
        kind = k.lower().replace("span_kind_", "")
        if kind not in KINDS:
            kind = "internal" if kind == "unspecified" else None
    else:
        kind = _OTLP_KIND.get(_int(k) if _int(k) is not None else -1)
    if kind is None:
        w.add("unknown_kind", f"{path}: kind {k!r} read as internal")
        kind = "internal"
    at = _attrs(sp.get("attributes"))
    rows.add(trace_id=tid, span_id=sid, parent_id=pid, name=str(sp.get("name") or ""),
             kind=kind, node=str(at.get("skewd.node") or node),
             stage=str(at.get("skewd.stage") or service) if (at.get("skewd.stage") or service)
             else None,
             start_ns=start, end_ns=end, send_ns=_int(at.get("skewd.send_ns")),
             clock=str(at.get("skewd.clock") or "otlp"),
             injected_offset_ns=_int(at.get("skewd.injected_offset_ns")),
             est_offset_ns=_int(at.get("skewd.est_offset_ns")),
             est_uncertainty_ns=_int(at.get("skewd.est_uncertainty_ns")))


def jaeger(docs: list, w: Warnings, path: str = "<jaeger>") -> _Rows:
    rows = _Rows()
    for doc in docs:
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, list):
            w.add("missing_field", f"{path}: an object without data")
            continue
        for tr in data:
            if not isinstance(tr, dict):
                continue
            procs = tr.get("processes") if isinstance(tr.get("processes"), dict) else {}
            for sp in tr.get("spans") or []:
                _jaeger_span(sp, tr, procs, rows, w, path)
    return rows


def _jaeger_span(sp, tr, procs, rows, w, path):
    if not isinstance(sp, dict):
        w.add("missing_field", f"{path}: a span that is not an object")
        return
    tid = _id(sp.get("traceID") or tr.get("traceID"), 16)
    sid = _id(sp.get("spanID"), 8)
    if tid is None or sid is None:
        w.add("bad_id", f"{path}: span {sp.get('operationName')!r}: traceID/spanID malformed")
        return
    start, dur = _int(sp.get("startTime")), _int(sp.get("duration"))
    if start is None or dur is None or abs(start) > 9_000_000_000_000_000:
        w.add("bad_time", f"{path}: span {sp.get('operationName')!r}: startTime/duration bad")
        return
    pid = None
    refs = sp.get("references") if isinstance(sp.get("references"), list) else []
    for want in ("CHILD_OF", "FOLLOWS_FROM"):
        for r in refs:
            if isinstance(r, dict) and r.get("refType") == want:
                pid = _id(r.get("spanID"), 8)
                break
        if pid:
            break
    if pid is None and sp.get("parentSpanID"):
        pid = _id(sp.get("parentSpanID"), 8)
    tags = {t.get("key"): t.get("value") for t in sp.get("tags") or []
            if isinstance(t, dict) and isinstance(t.get("key"), str)}
    proc = procs.get(sp.get("processID")) if isinstance(sp.get("processID"), str) else None
    proc = proc if isinstance(proc, dict) else {}
    ptags = {t.get("key"): t.get("value") for t in proc.get("tags") or []
             if isinstance(t, dict) and isinstance(t.get("key"), str)}
    service = proc.get("serviceName")
    node = ptags.get("hostname") or ptags.get("host.name") or ptags.get("ip") or service or "unknown"
    kind = str(tags.get("span.kind") or "internal").lower()
    if kind not in KINDS:
        w.add("unknown_kind", f"{path}: span.kind {kind!r} read as internal")
        kind = "internal"
    send = _int(tags.get("skewd.send_ns"))
    rows.add(trace_id=tid, span_id=sid, parent_id=pid, name=str(sp.get("operationName") or ""),
             kind=kind, node=str(node), stage=str(service) if service else None,
             start_ns=start * 1000, end_ns=(start + dur) * 1000, send_ns=send,
             clock="jaeger_us", injected_offset_ns=None, est_offset_ns=None,
             est_uncertainty_ns=None)


def read_traces(path: str, warnings: Warnings | None = None) -> pa.Table:
    """An OTLP or Jaeger JSON file as a span table (format told by content)."""
    w = warnings if warnings is not None else Warnings()
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError as e:
        raise InputFileError(f"{path}: cannot read: {e.strerror}") from None
    return parse_traces(text, w, path)


def parse_traces(text: str, w: Warnings, path: str = "<text>") -> pa.Table:
    docs = _json_docs(text, path, w)
    if not docs:
        raise InputFileError(f"{path}: no JSON document in it")
    first = next((d for d in docs if isinstance(d, dict)), None)
    if first is None:
        raise InputFileError(f"{path}: JSON but neither OTLP (resourceSpans) nor Jaeger (data)")
    if "resourceSpans" in first:
        rows, src = otlp(docs, w, path), "otlp"
    elif "data" in first:
        rows, src = jaeger(docs, w, path), "jaeger"
    else:
        raise InputFileError(f"{path}: JSON but neither OTLP (resourceSpans) nor Jaeger (data)")
    if not len(rows):
        raise InputFileError(f"{path}: no usable span ({'; '.join(w.lines()[:2]) or 'empty'})")
    return rows.table(src)


def export_otlp(table: pa.Table, path: str, *, corrected: bool = True) -> int:
    """Write spans as OTLP JSON (one TracesData per node, one per line). With
    corrected=True and corr_* columns present, times are the corrected ones and
    the raw times and correction ride along as skewd.* attributes."""
    use = corrected and "corr_start_ns" in table.column_names
    cols = table.to_pydict()
    n = table.num_rows
    by_node: dict[str, list[int]] = {}
    for i, node in enumerate(cols["node"]):
        by_node.setdefault(node, []).append(i)
    kind_num = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for node, idx in by_node.items():
            spans = []
            for i in idx:
                attrs = [{"key": "skewd.node", "value": {"stringValue": node}},
                         {"key": "skewd.clock", "value": {"stringValue": cols["clock"][i]}}]
                if cols["stage"][i] is not None:
                    attrs.append({"key": "skewd.stage", "value": {"stringValue": cols["stage"][i]}})
                s, e, x = cols["start_ns"][i], cols["end_ns"][i], cols["send_ns"][i]
                if use:
                    attrs += [{"key": "skewd.raw_start_ns", "value": {"intValue": str(s)}},
                              {"key": "skewd.raw_end_ns", "value": {"intValue": str(e)}},
                              {"key": "skewd.correction_method",
                               "value": {"stringValue": str(cols["corr_method"][i])}}]
                    s, e = cols["corr_start_ns"][i], cols["corr_end_ns"][i]
                    x = cols["corr_send_ns"][i] if x is not None else None
                if x is not None:
                    attrs.append({"key": "skewd.send_ns", "value": {"intValue": str(x)}})
                for k in ("injected_offset_ns", "est_offset_ns", "est_uncertainty_ns"):
                    if cols[k][i] is not None:
                        attrs.append({"key": f"skewd.{k}", "value": {"intValue": str(cols[k][i])}})
                sp = {"traceId": cols["trace_id"][i].hex(), "spanId": cols["span_id"][i].hex(),
                      "name": cols["name"][i], "kind": kind_num.get(cols["kind"][i], 1),
                      "startTimeUnixNano": str(s), "endTimeUnixNano": str(e),
                      "attributes": attrs}
                if cols["parent_id"][i] is not None:
                    sp["parentSpanId"] = cols["parent_id"][i].hex()
                spans.append(sp)
            stage = next((cols["stage"][i] for i in idx if cols["stage"][i]), node)
            doc = {"resourceSpans": [{
                "resource": {"attributes": [
                    {"key": "service.name", "value": {"stringValue": stage}},
                    {"key": "host.name", "value": {"stringValue": node}}]},
                "scopeSpans": [{"scope": {"name": "skewd"}, "spans": spans}]}]}
            f.write(json.dumps(doc, separators=(",", ":")) + "\n")
    os.replace(tmp, path)
    return n
