"""Span logs: Arrow IPC files of span rows (skewd.schema.SPAN_SCHEMA), written
by a tracer's drain thread and read back by the merger.

Writing (skewd.spanwriter, without pyarrow; SpanLogWriter here also takes
pyarrow record batches). Files are named
``spans-<node>-<UTC time>-<pid>-<seq>.arrow`` in the log directory; each is an
Arrow IPC *file* whose schema metadata carries the schema version, node,
stage, clock, host and pid. Every record batch goes to the kernel in one
writev() as soon as it is built (a tracer builds one at least every flush
interval, 50 ms by default), so a process killed with SIGKILL loses at most
the spans of the last interval. Files rotate by size and by age;
on rotation and close the footer is written and the file and its directory are
fsynced, so a closed file is a complete Arrow IPC file any Arrow tool opens.

Reading. A file without its footer (its writer died) is read as the IPC stream
it contains: every complete record batch is returned and the torn tail after
the last one is cut off with a TornTailWarning naming the file and the byte
offset of the cut. A file from another schema version is refused with an
InputFileError (or skipped with a warning, on request).

    table = spanlog.read("logs/")                # a directory, a file or a list
    info = spanlog.inspect("logs/spans-model-....arrow")
"""
from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass

import pyarrow as pa

from skewd import spanwriter
from skewd.errors import InputFileError, UsageError
from skewd.schema import KINDS, SCHEMA_VERSION, SPAN_SCHEMA, schema_version, with_metadata

NULL_NS = -(2 ** 63)
ARROW_MAGIC = b"ARROW1"
FILE_GLOB = "*.arrow"


class SpanLogWarning(UserWarning):
    """Something in a span log was skipped or cut; the message says what and where."""


class TornTailWarning(SpanLogWarning):
    """A span log ended in an incomplete batch (its writer died); the tail was cut."""


class IncompleteLogWarning(SpanLogWarning):
    """A span log has no footer: its writer is still running or was killed
    between batches. Every batch in it was read."""


# --- writer ---------------------------------------------------------------------------

class SpanLogWriter(spanwriter.SpanLogWriter):
    """skewd.spanwriter's writer (which the tracer uses), taking pyarrow
    record batches of SPAN_SCHEMA too: for tools and tests that build spans
    as tables. A batch's values pass through Python: fine for thousands of
    rows, not for a tracer's stream."""

    def write(self, batch: pa.RecordBatch) -> None:
        """Append one batch (its columns named and typed as SPAN_SCHEMA's;
        kind may be a plain string column); rotate when due."""
        if batch.schema.names != SPAN_SCHEMA.names:
            raise UsageError(f"span batch columns {batch.schema.names} are not the span "
                             f"schema's {SPAN_SCHEMA.names}")
        try:
            self.write_columns([c.to_pylist() for c in batch.columns])
        except ValueError as e:
            raise UsageError(f"span batch: {e} (span kinds are {', '.join(KINDS)})") from None


# --- reader -----------------------------------------------------------------------------

@dataclass
class FileRead:
    """What reading one span log found."""
    path: str
    size: int
    schema: pa.Schema | None
    batches: list[pa.RecordBatch]
    footer: bool                 # a complete file (closed by its writer)
    torn_offset: int | None = None
    torn_reason: str | None = None

    @property
    def rows(self) -> int:
        return sum(b.num_rows for b in self.batches)


def _expand(paths) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            out.extend(sorted(glob.glob(os.path.join(p, FILE_GLOB))))
        elif os.path.exists(p):
            out.append(p)
        else:
            raise InputFileError(f"span log {p} does not exist")
    return out


def _check_schema(path: str, schema: pa.Schema) -> None:
    v = schema_version(schema)
    if v is None:
        raise InputFileError(
            f"span log {path}: no skewd schema version in its metadata "
            f"(not written by skewd's tracer?)")
    if v != SCHEMA_VERSION:
        raise InputFileError(
            f"span log {path}: schema version {v}, this skewd reads version "
            f"{SCHEMA_VERSION}: read it with the skewd that wrote it")
    if not schema.remove_metadata().equals(SPAN_SCHEMA):
        raise InputFileError(
            f"span log {path}: columns differ from the span schema version "
            f"{SCHEMA_VERSION} it claims: {schema.remove_metadata()}")


def _read_footer(buf: pa.Buffer):
    f = pa.ipc.open_file(buf)
    batches = [f.get_batch(i) for i in range(f.num_record_batches)]
    for b in batches:
        b.validate(full=True)
    return f.schema, batches


def _read_stream(path: str, buf: pa.Buffer, start: int) -> FileRead:
    """Walk the IPC messages from `start`; keep every complete batch."""
    size = buf.size
    reader = pa.BufferReader(buf)
    reader.seek(start)
    msgs: list[tuple[int, int, str]] = []
    pos = start
    cut = reason = None
    try:
        mr = pa.ipc.MessageReader.open_stream(reader)
        while True:
            try:
                m = mr.read_next_message()
            except StopIteration:
                break  # end-of-stream marker (then a footer) or a clean end
            end = reader.tell()
            if end <= pos or end > size:
                raise pa.ArrowInvalid("message framing runs past the file")
            msgs.append((pos, end, m.type))
            pos = end
    except (pa.ArrowException, OSError, ValueError) as e:
        cut, reason = pos, str(e).splitlines()[0] if str(e) else type(e).__name__
    if cut is None and not msgs:
        cut, reason = start, "no schema message"

    schema = None
    batches: list[pa.RecordBatch] = []
    good_end = msgs[-1][1] if msgs else start
    if msgs:
        try:
            sr = pa.ipc.open_stream(buf.slice(start, good_end - start))
            schema = sr.schema
        except (pa.ArrowException, OSError, ValueError) as e:
            return FileRead(path, size, None, [], False, start,
                            f"unreadable schema: {str(e).splitlines()[0] if str(e) else e}")
        batch_msgs = [m for m in msgs if m[2] == "record batch"]
        while len(batches) < len(batch_msgs):
            try:
                b = sr.read_next_batch()
                b.validate(full=True)
            except StopIteration:
                break
            except (pa.ArrowException, OSError, ValueError) as e:
                cut = batch_msgs[len(batches)][0]
                reason = f"bad record batch: {str(e).splitlines()[0] if str(e) else e}"
                break
            batches.append(b)
    return FileRead(path, size, schema, batches, False, cut, reason)


def read_file(path: str) -> FileRead:
    """Read one span log (complete or torn) without checking its schema."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        buf = pa.memory_map(path, "r").read_buffer() if size else pa.py_buffer(b"")
    except OSError as e:
        raise InputFileError(f"span log {path}: {e.strerror or e}") from None
    if size == 0:
        return FileRead(path, 0, None, [], False, 0, "empty file")
    head = buf.slice(0, min(8, size)).to_pybytes()
    if size < 8 and (ARROW_MAGIC + b"\0\0").startswith(head):
        return FileRead(path, size, None, [], False, 0, "torn inside the file magic")
    if head.startswith(ARROW_MAGIC):
        start = 8
    elif head[:4] == b"\xff\xff\xff\xff":
        start = 0  # an Arrow IPC stream rather than a file
    else:
        raise InputFileError(
            f"span log {path}: not an Arrow IPC file (starts with {head!r})")
    if start == 8 and size >= 14 and buf.slice(size - 6, 6).to_pybytes() == ARROW_MAGIC:
        try:
            schema, batches = _read_footer(buf)
            return FileRead(path, size, schema, batches, True)
        except (pa.ArrowException, OSError, ValueError):
            pass  # a damaged file: walk it message by message
    return _read_stream(path, buf, start)


def _warn_torn(fr: FileRead, stacklevel: int) -> None:
    if fr.torn_offset is not None:
        warnings.warn(
            f"span log {fr.path}: torn tail cut at byte {fr.torn_offset} of {fr.size} "
            f"({fr.size - fr.torn_offset} bytes after the last complete batch dropped; "
            f"{fr.torn_reason})", TornTailWarning, stacklevel=stacklevel + 1)
    elif not fr.footer and fr.batches:
        warnings.warn(
            f"span log {fr.path}: no footer (its writer is running or was killed); "
            f"read its {len(fr.batches)} complete batches", IncompleteLogWarning,
            stacklevel=stacklevel + 1)


def read(paths, *, foreign: str = "error") -> pa.Table:
    """Every span in the given logs as one table of SPAN_SCHEMA.

    `paths`: a file, a directory (its *.arrow files) or a list of either.
    Torn tails are cut with a TornTailWarning naming the file and offset. A
    file of another schema version raises InputFileError, or with
    foreign="skip" is left out with a SpanLogWarning."""
    if foreign not in ("error", "skip"):
        raise UsageError(f"foreign must be 'error' or 'skip', not {foreign!r}")
    batches: list[pa.RecordBatch] = []
    for path in _expand(paths):
        fr = read_file(path)
        _warn_torn(fr, 2)
        if fr.schema is None:
            continue
        try:
            _check_schema(path, fr.schema)
        except InputFileError as e:
            if foreign == "skip":
                warnings.warn(f"{e}; skipped", SpanLogWarning, stacklevel=2)
                continue
            raise
        batches.extend(b.replace_schema_metadata(None) for b in fr.batches)
    schema = with_metadata(SPAN_SCHEMA)
    if not batches:
        return schema.empty_table()
    return pa.Table.from_batches(batches, schema=SPAN_SCHEMA).replace_schema_metadata(
        schema.metadata)


# --- inspect --------------------------------------------------------------------------------

@dataclass(frozen=True)
class LogInfo:
    """A summary of one span log, for `skewd spans inspect`."""
    path: str
    size: int
    complete: bool
    schema_version: int | None
    metadata: dict[str, str]
    batches: int
    rows: int
    start_ns: int | None
    end_ns: int | None
    nodes: tuple[str, ...]
    stages: tuple[str, ...]
    kinds: dict[str, int]
    torn_offset: int | None
    torn_reason: str | None


def inspect(path: str) -> LogInfo:
    """Counts, time range, nodes, schema version and torn tail of one log."""
    import pyarrow.compute as pc
    fr = read_file(path)
    md = {}
    version = None
    if fr.schema is not None:
        md = {k.decode(errors="replace"): v.decode(errors="replace")
              for k, v in (fr.schema.metadata or {}).items()}
        version = schema_version(fr.schema)
    rows = fr.rows
    start = end = None
    nodes: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    kinds: dict[str, int] = {}
    names = fr.schema.names if fr.schema is not None else []
    if rows and {"start_ns", "end_ns", "node"} <= set(names):
        t = pa.Table.from_batches(fr.batches)
        start = pc.min(t["start_ns"]).as_py()
        end = pc.max(t["end_ns"]).as_py()
        nodes = tuple(sorted(str(x) for x in pc.unique(t["node"]).to_pylist()))
        if "stage" in names:
            stages = tuple(sorted(str(x) for x in pc.unique(t["stage"]).to_pylist()
                                  if x is not None))
        if "kind" in names:
            vc = pc.value_counts(t["kind"].cast(pa.string()))
            kinds = {d["values"]: d["counts"] for d in vc.to_pylist()}
    return LogInfo(fr.path, fr.size, fr.footer, version, md, len(fr.batches), rows,
                   start, end, nodes, stages, kinds, fr.torn_offset, fr.torn_reason)


def log_files(directory: str) -> list[str]:
    return _expand(directory) if os.path.isdir(directory) else []


__all__ = ["read", "read_file", "inspect", "SpanLogWriter", "LogInfo",
           "FileRead", "TornTailWarning", "IncompleteLogWarning", "SpanLogWarning"]
