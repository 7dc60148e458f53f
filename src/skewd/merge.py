"""Merge every node's logs into one span table (and one offset table).

Inputs, told apart by content, not name (directories are walked):
- span logs: Arrow IPC files or streams, or Parquet, with the span schema
  (skewd.schema). Arrow files go through skewd.spanlog's reader, so torn
  tails are cut in one place (every complete batch kept, the cut reported);
- trace files: OTLP JSON or Jaeger JSON (skewd.importers);
- daemon offset logs: Arrow or Parquet with at least these columns, the
  interface between `skewd daemon` and this module:
      node            string  the node that measured
      peer            string  the node it measured
      time_ns         int64   when, on `node`'s clock (ns since the epoch)
      offset_ns       int64   peer's clock minus node's clock
      uncertainty_ns  int64   half-width of the interval around offset_ns
  Other columns are ignored; a `record` (or `kind`) column, when present,
  keeps only rows that are "estimate" if there are any; a null uncertainty
  falls back on delay_ns / 2; float columns are truncated to int64.

Nothing here is fatal for one bad file: a foreign or torn file is counted in
the warnings and skipped (or cut); only when no file yields anything does
merge raise InputFileError. Spans are conformed to the current schema
(missing nullable columns become null, older versions are counted), exact
duplicates (same trace and span id and times) are dropped, conflicting
duplicates keep the first and are counted, orphans and parent cycles are
counted. The output is grouped by trace and ordered by start, which is what
makes `skewd check` fast; the offsets go to a sidecar file
(`<out stem>.offsets.<ext>`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from skewd.diagnostics import Warnings
from skewd.errors import InputFileError, UsageError
from skewd.schema import KINDS, SCHEMA_VERSION, SPAN_SCHEMA, schema_version, with_metadata

OFFSET_COLUMNS = ("node", "peer", "time_ns", "offset_ns", "uncertainty_ns")
OFFSET_SCHEMA = pa.schema([("node", pa.string()), ("peer", pa.string()), ("time_ns", pa.int64()),
                           ("offset_ns", pa.int64()), ("uncertainty_ns", pa.int64())])
META_MERGED = b"skewd.merged"
_ARROW_FILE_MAGIC = b"ARROW1"
_PARQUET_MAGIC = b"PAR1"
_REQUIRED = ("trace_id", "span_id", "start_ns", "end_ns")


@dataclass
class FileReport:
    path: str
    kind: str          # spans, offsets, traces, foreign, unreadable
    rows: int = 0
    note: str = ""


@dataclass
class Merged:
    spans: pa.Table
    offsets: pa.Table | None
    warnings: Warnings = field(default_factory=Warnings)
    files: list[FileReport] = field(default_factory=list)


def expand(paths: list[str]) -> list[str]:
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in sorted(os.walk(p)):
                out += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
        else:
            out.append(p)
    return out


def _read_arrow(path: str, w: Warnings) -> pa.Table:
    """Arrow IPC file or stream; complete batches of a torn file are kept."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:6] == _ARROW_FILE_MAGIC:
        try:
            with ipc.open_file(path) as r:
                return r.read_all()
        except (pa.ArrowInvalid, OSError):
            pass   # no footer: a torn file; its body is a stream after the magic
        with open(path, "rb") as f:
            data = f.read()
        return _read_stream(pa.BufferReader(data[8:]), path, w)
    with open(path, "rb") as f:
        return _read_stream(pa.PythonFile(f, mode="r"), path, w)


def _read_stream(src, path: str, w: Warnings) -> pa.Table:
    reader = ipc.open_stream(src)
    batches = []
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError, EOFError) as e:
            w.add("torn_tail", f"{path}: kept {len(batches)} complete batch(es), cut: {e}")
            break
    return pa.Table.from_batches(batches, schema=reader.schema)


def read_file(path: str, w: Warnings) -> tuple[str, pa.Table | None]:
    """('spans'|'offsets'|'foreign'|'unreadable', table) for one file."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        w.add("unreadable_file", f"{path}: {e.strerror}")
        return "unreadable", None
    if head.lstrip()[:1] in (b"{", b"["):
        from skewd import importers
        try:
            t = importers.read_traces(path, w)
        except InputFileError as e:
            w.add("foreign_file", f"{path}: {e}")
            return "foreign", None
        return "traces", t
    table = None
    try:
        if head[:4] == _PARQUET_MAGIC:
            table = pq.read_table(path)
        else:
            table = _read_any_arrow(path, w)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as e:
        w.add("foreign_file", f"{path}: not an Arrow, Parquet or JSON trace file ({e})")
        return "foreign", None
    names = set(table.column_names)
    if set(OFFSET_COLUMNS) <= names and "span_id" not in names:
        return "offsets", table
    if set(_REQUIRED) <= names:
        return "spans", table
    w.add("foreign_file", f"{path}: columns {sorted(names)[:6]} are neither spans nor offsets")
    return "foreign", None


def _read_any_arrow(path: str, w: Warnings) -> pa.Table:
    """Arrow IPC through skewd.spanlog's reader (torn tails cut there), whose
    schema check is left to `conform` so that other versions are counted, not
    refused."""
    try:
        from skewd.spanlog import read_file as spanlog_read_file
    except ImportError:   # pragma: no cover - spanlog is part of the package
        return _read_arrow(path, w)
    try:
        fr = spanlog_read_file(path)
    except InputFileError as e:
        raise pa.ArrowInvalid(str(e)) from None
    if fr.torn_offset is not None:
        w.add("torn_tail", f"{path}: cut at byte {fr.torn_offset} of {fr.size} "
                           f"({fr.torn_reason}); {fr.rows} row(s) kept")
    if fr.schema is None:
        raise pa.ArrowInvalid(f"no readable schema ({fr.torn_reason})")
    return pa.Table.from_batches(fr.batches, schema=fr.schema)


def conform(table: pa.Table, path: str, w: Warnings) -> pa.Table | None:
    """A table with SPAN_SCHEMA's columns and types, or None if unusable."""
    n = table.num_rows
    v = schema_version(table.schema)
    if v is not None and v != SCHEMA_VERSION:
        w.add("schema_version_mixed", f"{path}: schema version {v}, this skewd reads {SCHEMA_VERSION}")
    md = table.schema.metadata or {}
    cols = []
    for f in SPAN_SCHEMA:
        if f.name in table.column_names:
            col = table.column(f.name)
            try:
                if f.name == "kind":
                    col = _kinds(col, path, w)
                elif col.type != f.type:
                    col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                if not f.nullable:
                    w.add("bad_column", f"{path}: column {f.name}: {e}; file skipped")
                    return None
                w.add("bad_column", f"{path}: column {f.name}: {e}; left null")
                col = pa.nulls(n, f.type)
            if not f.nullable and col.null_count:
                keep = pc.is_valid(col)
                w.add("missing_field", f"{path}: {col.null_count} row(s) without {f.name} dropped",
                      col.null_count)
                table = table.filter(keep)
                return conform(table, path, w)
            cols.append(col)
        else:
            if not f.nullable and f.name not in ("name", "kind", "node", "clock"):
                w.add("missing_column", f"{path}: no {f.name} column; file skipped")
                return None
            w.add("missing_column", f"{path}: no {f.name} column")
            if f.name == "kind":
                col = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array(KINDS))
            elif f.name == "node":
                fill = (md.get(b"skewd.node") or b"unknown").decode(errors="replace")
                col = pa.array([fill] * n, pa.string())
            elif f.name == "clock":
                fill = (md.get(b"skewd.clock") or b"unknown").decode(errors="replace")
                col = pa.array([fill] * n, pa.string())
            elif f.name == "name":
                col = pa.array([""] * n, pa.string())
            else:
                col = pa.nulls(n, f.type)
            cols.append(col)
    return pa.Table.from_arrays(cols, schema=SPAN_SCHEMA)


def _kinds(col, path, w) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    low = pc.utf8_lower(col.cast(pa.string()))
    low = pc.replace_substring(low, "span_kind_", "")
    idx = pc.index_in(low, pa.array(KINDS))
    bad = int(pc.sum(pc.is_null(idx)).as_py() or 0) - low.null_count
    if bad > 0:
        w.add("unknown_kind", f"{path}: {bad} span(s) of unknown kind read as internal", bad)
    codes = pc.fill_null(idx, 0).cast(pa.int8())
    if isinstance(codes, pa.ChunkedArray):
        codes = codes.combine_chunks()
    return pa.chunked_array([pa.DictionaryArray.from_arrays(codes, pa.array(KINDS))])


def conform_offsets(table: pa.Table, path: str, w: Warnings) -> pa.Table | None:
    """The five offset columns as OFFSET_SCHEMA; estimates preferred over raw
    exchanges when the log says which is which (`record` or `kind`)."""
    for col in ("record", "kind"):
        if col in table.column_names:
            est = pc.equal(table.column(col).cast(pa.string()), "estimate")
            if pc.any(est).as_py():
                table = table.filter(est)
            break
    if "uncertainty_ns" in table.column_names and table.column("uncertainty_ns").null_count:
        unc = table.column("uncertainty_ns")
        if "delay_ns" in table.column_names:   # an exchange's bound: half its delay
            unc = pc.coalesce(unc, pc.divide(table.column("delay_ns").cast(pa.float64()), 2.0))
        table = table.set_column(table.schema.get_field_index("uncertainty_ns"),
                                 "uncertainty_ns", unc)
    try:
        out = pa.table({f.name: table.column(f.name).cast(f.type, safe=False)
                        for f in OFFSET_SCHEMA})
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError) as e:
        w.add("offset_log_unusable", f"{path}: {e}")
        return None
    ok = pc.and_(pc.is_valid(out.column("offset_ns")), pc.is_valid(out.column("uncertainty_ns")))
    bad = out.num_rows - int(pc.sum(ok.cast(pa.int64())).as_py() or 0)
    if bad:
        w.add("offset_log_unusable", f"{path}: {bad} row(s) without offset or uncertainty", bad)
        out = out.filter(ok)
    return out


def _words(col: pa.ChunkedArray, width: int) -> np.ndarray:
    from skewd.check import _fixed_words
    return _fixed_words(col, width)


def organise(spans: pa.Table, w: Warnings) -> pa.Table:
    """Drop exact duplicates, count conflicting ones, orphans and cycles, and
    order the table by (trace, start)."""
    if spans.num_rows == 0:
        return spans
    tid = _words(spans.column("trace_id"), 16)
    sid = _words(spans.column("span_id"), 8)[:, 0]
    start = spans.column("start_ns").to_numpy()
    end = spans.column("end_ns").to_numpy()
    order = np.lexsort((start, sid, tid[:, 1], tid[:, 0]))
    t0, t1, s = tid[order, 0], tid[order, 1], sid[order]
    dup = np.r_[False, (t0[1:] == t0[:-1]) & (t1[1:] == t1[:-1]) & (s[1:] == s[:-1])]
    if dup.any():
        st, en = start[order], end[order]
        same_times = np.r_[False, (st[1:] == st[:-1]) & (en[1:] == en[:-1])]
        exact = int((dup & same_times).sum())
        conflict = int((dup & ~same_times).sum())
        if exact:
            w.add("duplicate_span", f"{exact} exact duplicate span(s) dropped", exact)
        if conflict:
            w.add("duplicate_span_conflict",
                  f"{conflict} span(s) reuse an id with other times; the first kept", conflict)
        order = order[~dup]
    # by trace, then start
    o2 = np.lexsort((start[order], tid[order, 1], tid[order, 0]))
    out = spans.take(pa.array(order[o2]))
    from skewd.check import SpanArrays, depths, link_parents
    sa = SpanArrays.from_table(out, warnings=Warnings(), stages=False)
    lw = Warnings()
    prow = link_parents(sa, lw)
    depths(prow, lw)
    w.extend(lw)
    md = dict(out.schema.metadata or {})
    md.update(with_metadata(SPAN_SCHEMA).metadata)
    md[META_MERGED] = b"1"
    return out.replace_schema_metadata(md)


def merge(paths: list[str], *, progress=None) -> Merged:
    """Read, conform and organise every file under paths (see module docstring)."""
    w = Warnings()
    files = expand(paths)
    if not files:
        raise InputFileError("no input files given (or the directories are empty)")
    spans, offsets, reports = [], [], []
    for i, path in enumerate(files):
        kind, table = read_file(path, w)
        rows = 0
        if kind in ("spans", "traces") and table is not None:
            t = conform(table, path, w) if kind == "spans" else table
            if t is not None:
                spans.append(t)
                rows = t.num_rows
            else:
                kind = "foreign"
        elif kind == "offsets" and table is not None:
            t = conform_offsets(table, path, w)
            if t is not None:
                offsets.append(t)
                rows = t.num_rows
        reports.append(FileReport(path, kind, rows))
        if progress:
            progress((i + 1) / len(files))
    if not spans and not offsets:
        raise InputFileError(
            f"none of the {len(files)} file(s) holds spans or offsets: "
            + "; ".join(w.lines()[:3]))
    table = pa.concat_tables(spans) if spans else SPAN_SCHEMA.empty_table()
    table = organise(table.combine_chunks(), w)
    off = pa.concat_tables(offsets) if offsets else None
    return Merged(table, off, w, reports)


def sidecar(path: str) -> str:
    stem, ext = os.path.splitext(path)
    return f"{stem}.offsets{ext or '.arrow'}"


def write(m: Merged, path: str) -> list[str]:
    """Write the merged spans to path (.parquet, else Arrow IPC file) and the
    offsets beside it; returns the paths written."""
    md = dict(m.spans.schema.metadata or {})
    md[b"skewd.warnings"] = json.dumps(m.warnings.as_dict()).encode()
    spans = m.spans.replace_schema_metadata(md)
    written = [path]
    write_table(spans, path)
    if m.offsets is not None:
        write_table(m.offsets, sidecar(path))
        written.append(sidecar(path))
    return written


def write_table(t: pa.Table, path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise UsageError(f"cannot write {path}: directory {d} does not exist")
    tmp = path + ".tmp"
    if path.endswith(".parquet"):
        pq.write_table(t, tmp)
    else:
        with ipc.new_file(tmp, t.schema) as wr:
            wr.write_table(t, max_chunksize=max(t.num_rows, 1))
    os.replace(tmp, path)


def load(paths: list[str], offsets: list[str] | None = None, *, progress=None) -> Merged:
    """A merged table from one merged file (and its sidecar) or from logs."""
    w = Warnings()
    if len(paths) == 1 and os.path.isfile(paths[0]):
        kind, t = read_file(paths[0], w)
        if kind == "spans" and (t.schema.metadata or {}).get(META_MERGED) == b"1":
            off = None
            sc = sidecar(paths[0])
            if os.path.exists(sc):
                k2, o = read_file(sc, w)
                off = conform_offsets(o, sc, w) if k2 == "offsets" else None
            m = Merged(t, off, w, [FileReport(paths[0], "spans", t.num_rows)])
            return _add_offsets(m, offsets)
    return _add_offsets(merge(paths, progress=progress), offsets)


def _add_offsets(m: Merged, offsets: list[str] | None) -> Merged:
    if not offsets:
        return m
    tables = [m.offsets] if m.offsets is not None else []
    for path in expand(offsets):
        kind, t = read_file(path, m.warnings)
        if kind == "offsets":
            o = conform_offsets(t, path, m.warnings)
            if o is not None:
                tables.append(o)
                m.files.append(FileReport(path, "offsets", o.num_rows))
        elif kind != "foreign":
            m.warnings.add("offset_log_unusable", f"{path}: holds {kind}, not offsets")
    if tables:
        m.offsets = pa.concat_tables(tables)
    return m
