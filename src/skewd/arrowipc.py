"""Arrow IPC files written without pyarrow, for flat tables of a few types.

The daemon writes its offset logs with this, and the tracer its span logs:
pyarrow's shared libraries put 60 MB or more into the resident set of any
process that imports it (pyarrow 26 here), most of the daemon's 80 MB
budget, and in a traced pipeline stage they slowed the stage's own work by
a few per cent (README). What is written is the standard Arrow IPC *file*
format (Arrow's columnar format specification, metadata version 5), so
pyarrow, skewd's span-log reader and any Arrow tool read it:

    "ARROW1" + 2 bytes of padding
    schema message                         (encapsulated, see below)
    dictionary batch message, ...          (one per dictionary column)
    record batch message, ...              (one write each)
    end-of-stream marker (0xFFFFFFFF, 0)
    footer (flatbuffer: the schema again, a Block per dictionary and record batch)
    int32 footer length, "ARROW1"

An encapsulated message is 0xFFFFFFFF, an int32 metadata length, the
flatbuffer Message padded to 8 bytes, then the body: every buffer of every
column in schema order (validity bitmap, then offsets and data), each starting
at a multiple of 8. A validity bitmap is left out (length 0) where a column
has no nulls. The file stays readable as a stream after any complete batch,
which is what a crashed writer leaves.

Types: INT32, INT64, FLOAT64, UTF8 and FIXED (fixed-size binary of
Column.width bytes), each nullable or not; a UTF8 column with a `dictionary`
(a fixed tuple of strings) is dictionary-encoded with int8 indices, its
dictionary written once, as a dictionary batch after the schema (id: its
place among the dictionary columns), and listed in the footer. The schema
carries key/value metadata. The flatbuffers are laid out front to back (each
table's vtable just before it, its children after it), which the format
allows and Arrow's verifier checks like any other layout.

A batch is given either as Python values per column (write_columns,
write_rows) or as the columns' buffers already laid out as Arrow wants them
(write_buffers: the tracer's drain fills such buffers in C, and the batch
goes to the file in one writev() without a copy).
"""
from __future__ import annotations

import contextlib
import os
import struct
from array import array
from typing import NamedTuple

INT32, INT64, FLOAT64, UTF8, FIXED = "int32", "int64", "float64", "utf8", "fixed"
TYPES = (INT32, INT64, FLOAT64, UTF8, FIXED)
_ARRAY_CODE = {INT32: "i", INT64: "q", FLOAT64: "d"}

MAGIC = b"ARROW1"
CONTINUATION = b"\xff\xff\xff\xff"
EOS = CONTINUATION + b"\0\0\0\0"

# from the format's flatbuffer schemas (Message.fbs, Schema.fbs, File.fbs)
_V5 = 4                                           # MetadataVersion.V5
_HEADER_SCHEMA, _HEADER_DICTIONARY, _HEADER_RECORD_BATCH = 1, 2, 3  # MessageHeader union
_TYPE_INT, _TYPE_FLOAT, _TYPE_UTF8, _TYPE_FIXED = 2, 3, 5, 15       # Type union
_DOUBLE = 2                                       # Precision.DOUBLE


class Column(NamedTuple):
    name: str
    type: str
    nullable: bool = True
    width: int = 0                          # FIXED: bytes per value
    dictionary: tuple[str, ...] | None = None  # UTF8 only: int8 indices into this


def check_columns(columns) -> list[Column]:
    """The columns, or ValueError naming the first one this writer cannot write."""
    columns = list(columns)
    for c in columns:
        if c.type not in TYPES:
            raise ValueError(f"column {c.name}: type {c.type!r} is not one of {TYPES}")
        if (c.type == FIXED) != (c.width > 0):
            raise ValueError(f"column {c.name}: a width goes with type {FIXED!r} only, "
                             f"and it needs one")
        if c.dictionary is not None and (c.type != UTF8 or not 0 < len(c.dictionary) <= 128):
            raise ValueError(f"column {c.name}: a dictionary is 1..128 strings of a "
                             f"{UTF8!r} column")
    return columns


def pyarrow_fields(columns) -> list:
    """The columns as pyarrow fields, for readers (imports pyarrow; nothing
    that writes needs this)."""
    import pyarrow as pa
    types = {INT32: pa.int32(), INT64: pa.int64(), FLOAT64: pa.float64(), UTF8: pa.string()}
    out = []
    for c in columns:
        t = pa.binary(c.width) if c.type == FIXED else types[c.type]
        if c.dictionary is not None:
            t = pa.dictionary(pa.int8(), t)
        out.append(pa.field(c.name, t, nullable=c.nullable))
    return out


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

def _field_table(col: Column, dict_id: int | None) -> list:
    if col.type == UTF8:
        ttype, tfields = _TYPE_UTF8, []
    elif col.type == FIXED:
        ttype, tfields = _TYPE_FIXED, [(0, "i", col.width)]
    elif col.type == FLOAT64:
        ttype, tfields = _TYPE_FLOAT, [(0, "h", _DOUBLE)]
    else:
        ttype, tfields = _TYPE_INT, [(0, "i", 32 if col.type == INT32 else 64), (1, "B", 1)]
    fields = [(0, "o", _child(_Builder.string, col.name)), (1, "B", int(col.nullable)),
              (2, "B", ttype), (3, "o", _child(_Builder.table, tfields)),
              (5, "o", _child(_Builder.tables, []))]  # no children (Arrow wants the vector)
    if dict_id is not None:  # DictionaryEncoding: id, int8 indices, not ordered
        fields.append((4, "o", _child(_Builder.table, [
            (0, "q", dict_id), (1, "o", _child(_Builder.table, [(0, "i", 8), (1, "B", 1)])),
            (2, "B", 0)])))
    return fields


def _dict_ids(columns) -> list[int | None]:
    ids, n = [], 0
    for c in columns:
        ids.append(n if c.dictionary is not None else None)
        n += c.dictionary is not None
    return ids


def _schema_table(columns, metadata: dict) -> list:
    kv = [[(0, "o", _child(_Builder.string, k)), (1, "o", _child(_Builder.string, v))]
          for k, v in metadata.items()]
    fields = [(1, "o", _child(_Builder.tables, [
        _field_table(c, i) for c, i in zip(columns, _dict_ids(columns))]))]
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


def column_buffers(col: Column, values) -> tuple[int, list[bytes]]:
    """(null count, the column's buffers) from Python values."""
    valid, nulls = _bitmap(values)
    if nulls and not col.nullable:
        raise ValueError(f"column {col.name}: null in a non-nullable column")
    if col.dictionary is not None:
        try:
            idx = array("b", [0 if v is None else col.dictionary.index(v) for v in values])
        except ValueError:
            raise ValueError(f"column {col.name}: a value outside its dictionary "
                             f"{col.dictionary}") from None
        return nulls, [valid, idx.tobytes()]
    if col.type == FIXED:
        blank = bytes(col.width)
        data = [blank if v is None else bytes(v) for v in values]
        if any(len(d) != col.width for d in data):
            raise ValueError(f"column {col.name}: a value not {col.width} bytes long")
        return nulls, [valid, b"".join(data)]
    if col.type == UTF8:
        enc = [b"" if v is None else v.encode() for v in values]
        offsets = array("i", [0])
        total = 0
        for e in enc:
            total += len(e)
            offsets.append(total)
        return nulls, [valid, offsets.tobytes(), b"".join(enc)]
    data = array(_ARRAY_CODE[col.type], [0 if v is None else v for v in values])
    return nulls, [valid, data.tobytes()]


_PAD = [bytes(i) for i in range(8)]


def _record_batch(n: int, column_buffers) -> tuple[list, list, int]:
    """(RecordBatch table, body pieces, body length) for n rows given as
    (null count, [buffers]) per column; every buffer is padded to 8 bytes."""
    nodes, bufs, body = [], [], []
    size = 0
    for nulls, buffers in column_buffers:
        nodes.append(struct.pack("<qq", n, nulls))
        for b in buffers:
            k = memoryview(b).nbytes
            bufs.append(struct.pack("<qq", size, k))
            if k:
                body.append(b)
                if k % 8:
                    body.append(_PAD[-k % 8])
                size += k + (-k % 8)
    header = [(0, "q", n), (1, "o", _child(_Builder.structs, b"".join(nodes), len(nodes))),
              (2, "o", _child(_Builder.structs, b"".join(bufs), len(bufs)))]
    return header, body, size


def _values_batch(columns, column_values: list) -> tuple[list, list, int]:
    n = len(column_values[0]) if column_values else 0
    for col, values in zip(columns, column_values):
        if len(values) != n:
            raise ValueError(f"column {col.name}: {len(values)} values, expected {n}")
    return _record_batch(n, [column_buffers(c, v) for c, v in zip(columns, column_values)])


def batch_message(columns, column_values: list) -> bytes:
    """One record batch, encapsulated with its body; column_values holds a
    sequence per column (None for a null), all of one length."""
    header, body, size = _values_batch(columns, column_values)
    return _message(_HEADER_RECORD_BATCH, header, size) + b"".join(body)


def dictionary_message(dict_id: int, values) -> bytes:
    """A dictionary batch: the strings of dictionary `dict_id`."""
    header, body, size = _values_batch([Column("d", UTF8, False)], [list(values)])
    return _message(_HEADER_DICTIONARY, [(0, "q", dict_id), (1, "o", _child(_Builder.table,
                                                                              header))],
                    size) + b"".join(body)


def footer(columns, metadata: dict | None, blocks: list[tuple[int, int, int]],
           dictionaries: list[tuple[int, int, int]] = ()) -> bytes:
    """The file footer and its trailer; blocks: (offset, metadata length
    with its 8-byte prefix, body length) per record batch, and likewise
    dictionaries per dictionary batch."""
    def structs(bs):
        return _child(_Builder.structs, b"".join(struct.pack("<qi4xq", *b) for b in bs),
                      len(bs))

    fields = [(0, "h", _V5),
              (1, "o", _child(_Builder.table, _schema_table(columns, metadata or {}))),
              (3, "o", structs(blocks))]
    if dictionaries:
        fields.append((2, "o", structs(dictionaries)))
    meta = _Builder().finish(fields)
    return meta + struct.pack("<i", len(meta)) + MAGIC


class FileWriter:
    """An Arrow IPC file on an open descriptor: header, schema and
    dictionaries at once, each batch in one write, the footer on close().
    Not thread-safe."""

    def __init__(self, fd: int, columns, metadata: dict | None = None):
        self.fd = fd
        self.columns = check_columns(columns)
        self.metadata = dict(metadata or {})
        self.blocks: list[tuple[int, int, int]] = []
        self.dictionaries: list[tuple[int, int, int]] = []
        self.pos = 0
        self._write(MAGIC + b"\0\0" + schema_message(self.columns, self.metadata))
        for c, i in zip(self.columns, _dict_ids(self.columns)):
            if i is not None:
                self._message(self.dictionaries, dictionary_message(i, c.dictionary))

    def _write(self, data) -> None:
        view = memoryview(data).cast("B")
        self.pos += len(view)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def _message(self, blocks: list, msg: bytes) -> int:
        meta_len = 8 + struct.unpack_from("<i", msg, 4)[0]
        pos = self.pos
        with self._undo_on_error():
            self._write(msg)
        blocks.append((pos, meta_len, len(msg) - meta_len))
        return len(msg)

    @contextlib.contextmanager
    def _undo_on_error(self):
        """A write that fails part way (a full disk) is cut off again, so
        the file ends at its last complete message and the next one follows
        it; the error goes on to the caller."""
        pos = self.pos
        try:
            yield
        except OSError:
            try:
                os.ftruncate(self.fd, pos)
                os.lseek(self.fd, pos, os.SEEK_SET)
                self.pos = pos
            except OSError:
                pass  # the reader cuts a torn tail off all the same
            raise

    def write_columns(self, column_values: list) -> int:
        """Append one batch; returns its size in bytes."""
        return self._message(self.blocks, batch_message(self.columns, column_values))

    def write_rows(self, rows: list[tuple]) -> int:
        """Append rows given as tuples in column order."""
        cols = list(zip(*rows)) if rows else [()] * len(self.columns)
        return self.write_columns(cols)

    def write_buffers(self, n: int, column_buffers) -> int:
        """Append n rows given as (null count, [buffers]) per column, each
        buffer exactly as the format lays it out (an empty validity bitmap
        where the column has no nulls; for a dictionary column, its int8
        indices); any object with the buffer protocol will do. The batch is
        one writev() of the message and the buffers themselves. Returns its
        size in bytes."""
        if len(column_buffers) != len(self.columns):
            raise ValueError(f"{len(column_buffers)} columns given, the schema has "
                             f"{len(self.columns)}")
        header, body, size = _record_batch(n, column_buffers)
        prefix = _message(_HEADER_RECORD_BATCH, header, size)
        pos, total = self.pos, len(prefix) + size
        with self._undo_on_error():
            done = os.writev(self.fd, [prefix, *body])
            self.pos += done
            if done < total:  # a short write (a signal, a full disk): the rest, piece by piece
                self._write(b"".join([prefix, *(memoryview(b).cast("B") for b in body)])[done:])
        self.blocks.append((pos, len(prefix), size))
        return total

    def close(self) -> None:
        """End of stream and footer (the descriptor stays open: its owner
        fsyncs and closes it)."""
        self._write(EOS + footer(self.columns, self.metadata, self.blocks, self.dictionaries))
