"""Arrow IPC files written without pyarrow, for flat tables of a few types.

The daemon writes its offset logs with this: pyarrow's shared libraries put
60 MB or more into the resident set of any process that imports it (pyarrow
26 here), most of the daemon's 80 MB budget, for a table of sixteen plain
columns written ten times a second. What is written is the standard Arrow IPC
*file* format (Arrow's columnar format specification, metadata version 5),
so pyarrow, skewd's span-log reader and any Arrow tool read it:

    "ARROW1" + 2 bytes of padding
    schema message                         (encapsulated, see below)
    record batch message, ...              (one os.write() each)
    end-of-stream marker (0xFFFFFFFF, 0)
    footer (flatbuffer: the schema again, and a Block per record batch)
    int32 footer length, "ARROW1"

An encapsulated message is 0xFFFFFFFF, an int32 metadata length, the
flatbuffer Message padded to 8 bytes, then the body: every buffer of every
column in schema order (validity bitmap, then offsets and data), each starting
at a multiple of 8. A validity bitmap is left out (length 0) where a column
has no nulls. The file stays readable as a stream after any complete batch,
which is what a crashed writer leaves.

Types: INT32, INT64, FLOAT64 and UTF8, each nullable or not; the schema
carries key/value metadata. The flatbuffers are laid out front to back (each
table's vtable just before it, its children after it), which the format
allows and Arrow's verifier checks like any other layout.
"""
from __future__ import annotations

import os
import struct
from array import array
from typing import NamedTuple

INT32, INT64, FLOAT64, UTF8 = "int32", "int64", "float64", "utf8"
TYPES = (INT32, INT64, FLOAT64, UTF8)
_ARRAY_CODE = {INT32: "i", INT64: "q", FLOAT64: "d"}

MAGIC = b"ARROW1"
CONTINUATION = b"\xff\xff\xff\xff"
EOS = CONTINUATION + b"\0\0\0\0"

# from the format's flatbuffer schemas (Message.fbs, Schema.fbs, File.fbs)
_V5 = 4                                           # MetadataVersion.V5
_HEADER_SCHEMA, _HEADER_RECORD_BATCH = 1, 3       # MessageHeader union
_TYPE_INT, _TYPE_FLOAT, _TYPE_UTF8 = 2, 3, 5      # Type union
_DOUBLE = 2                                       # Precision.DOUBLE


class Column(NamedTuple):
    name: str
    type: str
    nullable: bool = True


# --- a flatbuffer builder that writes front to back -----------------------------------

class _Builder:
    """Tables are lists of (field id, format, value): format is a struct
    code for a scalar ("b", "B", "h", "i", "q") or "o" for an offset to a
    child, whose value is a function that places the child and returns its
    position. Children come after their parent, so every uoffset is
    positive, as the format requires."""

    def __init__(self):
        self.b = bytearray(4)  # the root offset

    def _align(self, n: int) -> None:
        self.b.extend(bytes(-len(self.b) % n))

    def finish(self, root: list) -> bytes:
        struct.pack_into("<I", self.b, 0, self.table(root))
        self._align(8)
        return bytes(self.b)

    def table(self, fields: list) -> int:
        b = self.b
        slots = max((f[0] for f in fields), default=-1) + 1
        self._align(2)
        vt = len(b)
        b.extend(bytes(4 + 2 * slots))
        self._align(8)
        start = len(b)
        b.extend(struct.pack("<i", start - vt))  # the vtable lies that far back
        where = [0] * slots
        children = []
        sized = [(struct.calcsize("I" if fmt == "o" else fmt), fid, fmt, value)
                 for fid, fmt, value in fields]
        for size, fid, fmt, value in sorted(sized, key=lambda f: -f[0]):  # largest first
            self._align(size)
            where[fid] = len(b) - start
            if fmt == "o":
                children.append((len(b), value))
                b.extend(bytes(4))
            else:
                b.extend(struct.pack("<" + fmt, value))
        struct.pack_into(f"<HH{slots}H", b, vt, 4 + 2 * slots, len(b) - start, *where)
        for at, place in children:
            struct.pack_into("<I", b, at, place(self) - at)
        return start

    def string(self, s: str | bytes) -> int:
        data = s.encode() if isinstance(s, str) else s
        self._align(4)
        pos = len(self.b)
        self.b.extend(struct.pack("<I", len(data)) + data + b"\0")
        return pos

    def tables(self, items: list[list]) -> int:
        """A vector of tables."""
        self._align(4)
        pos = len(self.b)
        self.b.extend(struct.pack("<I", len(items)) + bytes(4 * len(items)))
        for i, t in enumerate(items):
            at = pos + 4 + 4 * i
            struct.pack_into("<I", self.b, at, self.table(t) - at)
        return pos

    def structs(self, data: bytes, count: int) -> int:
        """A vector of 8-byte-aligned structs, already packed."""
        self.b.extend(bytes(-(len(self.b) + 4) % 8))
        pos = len(self.b)
        self.b.extend(struct.pack("<I", count) + data)
        return pos


def _child(fn, *args):
    return lambda fb: fn(fb, *args)


# --- schema, record batches, footer ----------------------------------------------------

def _field_table(col: Column) -> list:
    if col.type == UTF8:
        ttype, tfields = _TYPE_UTF8, []
    elif col.type == FLOAT64:
        ttype, tfields = _TYPE_FLOAT, [(0, "h", _DOUBLE)]
    else:
        ttype, tfields = _TYPE_INT, [(0, "i", 32 if col.type == INT32 else 64), (1, "B", 1)]
    return [(0, "o", _child(_Builder.string, col.name)), (1, "B", int(col.nullable)),
            (2, "B", ttype), (3, "o", _child(_Builder.table, tfields)),
            (5, "o", _child(_Builder.tables, []))]  # no children (Arrow wants the vector)


def _schema_table(columns, metadata: dict) -> list:
    kv = [[(0, "o", _child(_Builder.string, k)), (1, "o", _child(_Builder.string, v))]
          for k, v in metadata.items()]
    fields = [(1, "o", _child(_Builder.tables, [_field_table(c) for c in columns]))]
    if kv:
        fields.append((2, "o", _child(_Builder.tables, kv)))
    return fields


def _message(header_type: int, header: list, body_len: int) -> bytes:
    meta = _Builder().finish([(0, "h", _V5), (1, "B", header_type),
                              (2, "o", _child(_Builder.table, header)), (3, "q", body_len)])
    return CONTINUATION + struct.pack("<i", len(meta)) + meta


def schema_message(columns, metadata: dict | None = None) -> bytes:
    return _message(_HEADER_SCHEMA, _schema_table(columns, metadata or {}), 0)


def _bitmap(values) -> tuple[bytes, int]:
    bits = bytearray((len(values) + 7) // 8)
    nulls = 0
    for i, v in enumerate(values):
        if v is None:
            nulls += 1
        else:
            bits[i >> 3] |= 1 << (i & 7)
    return (bytes(bits) if nulls else b""), nulls


def _column_buffers(col: Column, values) -> tuple[list[bytes], int]:
    valid, nulls = _bitmap(values)
    if nulls and not col.nullable:
        raise ValueError(f"column {col.name}: null in a non-nullable column")
    if col.type == UTF8:
        enc = [b"" if v is None else v.encode() for v in values]
        offsets = array("i", [0])
        total = 0
        for e in enc:
            total += len(e)
            offsets.append(total)
        return [valid, offsets.tobytes(), b"".join(enc)], nulls
    data = array(_ARRAY_CODE[col.type], [0 if v is None else v for v in values])
    return [valid, data.tobytes()], nulls


def batch_message(columns, column_values: list) -> bytes:
    """One record batch, encapsulated with its body; column_values holds a
    sequence per column (None for a null), all of one length."""
    n = len(column_values[0]) if column_values else 0
    nodes, bufs, body = [], [], bytearray()
    for col, values in zip(columns, column_values):
        if len(values) != n:
            raise ValueError(f"column {col.name}: {len(values)} values, expected {n}")
        parts, nulls = _column_buffers(col, values)
        nodes.append(struct.pack("<qq", n, nulls))
        for p in parts:
            bufs.append(struct.pack("<qq", len(body), len(p)))
            body.extend(p)
            body.extend(bytes(-len(body) % 8))
    header = [(0, "q", n), (1, "o", _child(_Builder.structs, b"".join(nodes), len(nodes))),
              (2, "o", _child(_Builder.structs, b"".join(bufs), len(bufs)))]
    return _message(_HEADER_RECORD_BATCH, header, len(body)) + bytes(body)


def footer(columns, metadata: dict | None, blocks: list[tuple[int, int, int]]) -> bytes:
    """The file footer and its trailer; blocks: (offset, metadata length
    with its 8-byte prefix, body length) per record batch."""
    data = b"".join(struct.pack("<qi4xq", *b) for b in blocks)
    meta = _Builder().finish([
        (0, "h", _V5), (1, "o", _child(_Builder.table, _schema_table(columns, metadata or {}))),
        (3, "o", _child(_Builder.structs, data, len(blocks)))])
    return meta + struct.pack("<i", len(meta)) + MAGIC


class FileWriter:
    """An Arrow IPC file on an open descriptor: header and schema at once,
    each batch in one write, the footer on close(). Not thread-safe."""

    def __init__(self, fd: int, columns, metadata: dict | None = None):
        for c in columns:
            if c.type not in TYPES:
                raise ValueError(f"column {c.name}: type {c.type!r} is not one of {TYPES}")
        self.fd = fd
        self.columns = list(columns)
        self.metadata = dict(metadata or {})
        self.blocks: list[tuple[int, int, int]] = []
        self.pos = 0
        self._write(MAGIC + b"\0\0" + schema_message(self.columns, self.metadata))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.pos += len(data)

    def write_columns(self, column_values: list) -> int:
        """Append one batch; returns its size in bytes."""
        msg = batch_message(self.columns, column_values)
        meta_len = 8 + struct.unpack_from("<i", msg, 4)[0]
        self.blocks.append((self.pos, meta_len, len(msg) - meta_len))
        self._write(msg)
        return len(msg)

    def write_rows(self, rows: list[tuple]) -> int:
        """Append rows given as tuples in column order."""
        cols = list(zip(*rows)) if rows else [()] * len(self.columns)
        return self.write_columns(cols)

    def close(self) -> None:
        """End of stream and footer (the descriptor stays open: its owner
        fsyncs and closes it)."""
        self._write(EOS + footer(self.columns, self.metadata, self.blocks))
