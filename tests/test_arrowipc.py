"""skewd.arrowipc writes Arrow IPC files that pyarrow reads back exactly, as a
file with its footer and as the stream a crashed writer leaves; and the
offset-log writer built on it rotates, finishes and abandons files."""
import os
import warnings

import pyarrow as pa
import pyarrow.ipc
import pytest
from hypothesis import given, settings, strategies as st

from skewd import arrowipc, offsetlog, spanlog
from skewd.arrowipc import FLOAT64, INT32, INT64, UTF8, Column

COLS = [Column("t", INT64, False), Column("s", UTF8), Column("f", FLOAT64), Column("i", INT32),
        Column("name", UTF8, False)]
META = {"skewd.node": "n1", b"k": b"v\x00w"}


def _write(path, columns, batches, metadata=META, close=True):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        w = arrowipc.FileWriter(fd, columns, metadata)
        for rows in batches:
            w.write_rows(rows)
        if close:
            w.close()
    finally:
        os.close(fd)


def _expected(columns, batches):
    return [dict(zip([c.name for c in columns], r)) for rows in batches for r in rows]


def test_file_round_trip_types_nulls_and_metadata(tmp_path):
    batches = [[(1, "a", 1.5, None, "x"), (2, None, None, 7, ""), (-3, "héllo ✓", -0.0, -8, "z")],
               [(2**62, "b" * 1000, float("inf"), 2**31 - 1, "y")] * 17,
               [(0, None, None, None, "only nulls")] * 9]
    p = str(tmp_path / "x.arrow")
    _write(p, COLS, batches)
    r = pa.ipc.open_file(p)
    assert r.num_record_batches == 3
    assert r.schema.names == [c.name for c in COLS]
    assert [f.nullable for f in r.schema] == [c.nullable for c in COLS]
    assert r.schema.field("t").type == pa.int64() and r.schema.field("i").type == pa.int32()
    assert r.schema.field("f").type == pa.float64() and r.schema.field("s").type == pa.string()
    assert r.schema.metadata == {b"skewd.node": b"n1", b"k": b"v\x00w"}
    t = r.read_all()
    t.validate(full=True)
    assert t.to_pylist() == _expected(COLS, batches)
    assert t.column("i").null_count == 1 + 9


def test_a_file_cut_anywhere_reads_back_every_complete_batch(tmp_path):
    batches = [[(i, f"s{i}", i / 2, i, "n")] * (i + 1) for i in range(4)]
    p = str(tmp_path / "full.arrow")
    _write(p, COLS, batches, close=False)   # a writer killed after its 4th batch
    data = open(p, "rb").read()
    cut = str(tmp_path / "cut.arrow")
    for n in (len(data), len(data) - 1, len(data) - 20, len(data) // 2):
        with open(cut, "wb") as f:
            f.write(data[:n])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fr = spanlog.read_file(cut)
        got = sum(b.num_rows for b in fr.batches)
        whole = [b for b in range(4) if sum(range(1, b + 2)) <= got]
        assert got == sum(i + 1 for i in whole), (n, got)
        assert (n == len(data)) == (got == 10), (n, got)


def test_empty_file_and_bad_input(tmp_path):
    p = str(tmp_path / "empty.arrow")
    _write(p, COLS, [])
    r = pa.ipc.open_file(p)
    assert r.num_record_batches == 0 and r.schema.names[0] == "t"
    fd = os.open(str(tmp_path / "bad.arrow"), os.O_WRONLY | os.O_CREAT)
    try:
        w = arrowipc.FileWriter(fd, COLS)
        with pytest.raises(ValueError, match="name: null in a non-nullable column"):
            w.write_rows([(1, None, None, None, None)])
        with pytest.raises(ValueError, match="column s: 1 values, expected 2"):
            w.write_columns([[1, 2], ["a"], [None, None], [None, None], ["a", "b"]])
        with pytest.raises(ValueError, match="type 'bool'"):
            arrowipc.FileWriter(fd, [Column("b", "bool")])
    finally:
        os.close(fd)


_row = st.tuples(st.integers(-2**63, 2**63 - 1), st.none() | st.text(max_size=12),
                 st.none() | st.floats(allow_nan=False), st.none() | st.integers(-2**31, 2**31 - 1),
                 st.text(max_size=3))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_row, min_size=1, max_size=40), max_size=4))
def test_any_rows_round_trip(tmp_path_factory, batches):
    p = str(tmp_path_factory.mktemp("ipc") / "h.arrow")
    _write(p, COLS, batches)
    t = pa.ipc.open_file(p).read_all()
    t.validate(full=True)
    assert t.to_pylist() == _expected(COLS, batches)


def _offset_row(i):
    return (1000 + i, "a", "b", "exchange", 1, 2, 3, 4, 0.5 * i, 10.0, None, None, None,
            None, "kernel", "accepted")


def test_offset_log_writer_rotates_finishes_and_abandons(tmp_path):
    d = tmp_path / "logs"
    w = offsetlog.OffsetLogWriter(str(d), node="a", max_bytes=2000)
    for k in range(6):
        w.write([_offset_row(10 * k + i) for i in range(10)])
    w.write([])  # nothing: no batch
    w.close()
    files = sorted(os.listdir(d))
    assert len(files) >= 3 and all(f.startswith("offsets-a-") for f in files)
    for f in files:   # every rotated file is complete, with its footer
        r = pa.ipc.open_file(str(d / f))
        assert r.schema.metadata[offsetlog.META_VERSION] == b"1"
        assert r.schema.equals(offsetlog.OFFSET_SCHEMA)
    tab = offsetlog.read(str(d))
    assert tab.column("time_ns").to_pylist() == [1000 + i for i in range(60)]
    assert w.stats.rows == 60 and w.stats.batches == 6
    # abandoned mid-file: what was written reads back, the missing footer is named
    w2 = offsetlog.OffsetLogWriter(str(tmp_path / "ab"), node="a")
    w2.write([_offset_row(1)])
    path = w2.path
    w2.abandon()
    assert w2.path is None
    with pytest.warns(spanlog.IncompleteLogWarning, match="no footer"):
        assert offsetlog.read(path).num_rows == 1


# --- fixed-size binary and dictionary columns; batches from buffers ------------------

KIND_COLS = [Column("id", arrowipc.FIXED, False, width=4), Column("p", arrowipc.FIXED, width=2),
             Column("k", UTF8, False, dictionary=("a", "b", "c")),
             Column("k2", UTF8, dictionary=("x", "y")), Column("v", INT64)]
KIND_ROWS = [[(b"abcd", None, "b", "y", 5), (b"efgh", b"zz", "c", None, None)],
             [(bytes(4), b"\x00\x01", "a", "x", -1)] * 3]


def test_fixed_and_dictionary_columns_round_trip(tmp_path):
    p = str(tmp_path / "d.arrow")
    _write(p, KIND_COLS, KIND_ROWS)
    r = pa.ipc.open_file(p)
    assert r.schema.field("id").type == pa.binary(4) and r.schema.field("p").nullable
    assert r.schema.field("k").type == pa.dictionary(pa.int8(), pa.string())
    t = r.read_all()
    t.validate(full=True)
    assert t.to_pylist() == _expected(KIND_COLS, KIND_ROWS)
    assert t.column("k").chunk(0).dictionary.to_pylist() == ["a", "b", "c"]
    # the stream a crashed writer leaves holds the dictionary too
    data = open(p, "rb").read()
    s = pa.ipc.open_stream(data[8:])
    assert s.read_all().to_pylist() == _expected(KIND_COLS, KIND_ROWS)


def _buffers(columns, rows):
    return [arrowipc.column_buffers(c, v) for c, v in zip(columns, zip(*rows))]


def test_write_buffers_writes_what_write_rows_does(tmp_path):
    a, b = str(tmp_path / "rows.arrow"), str(tmp_path / "bufs.arrow")
    _write(a, KIND_COLS, KIND_ROWS)
    fd = os.open(b, os.O_WRONLY | os.O_CREAT)
    try:
        w = arrowipc.FileWriter(fd, KIND_COLS, META)
        for rows in KIND_ROWS:
            # buffers of other types than bytes, as the tracer's drain hands them
            bufs = [(n, [memoryview(x) for x in parts]) for n, parts in _buffers(KIND_COLS, rows)]
            assert w.write_buffers(len(rows), bufs) > 0
        w.close()
    finally:
        os.close(fd)
    assert open(a, "rb").read() == open(b, "rb").read()


def test_write_buffers_finishes_a_short_writev(tmp_path, monkeypatch):
    real = os.writev
    monkeypatch.setattr(arrowipc.os, "writev", lambda fd, parts: real(fd, [bytes(parts[0])[:5]]))
    p = str(tmp_path / "short.arrow")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT)
    try:
        w = arrowipc.FileWriter(fd, KIND_COLS)
        for rows in KIND_ROWS:
            w.write_buffers(len(rows), _buffers(KIND_COLS, rows))
        w.close()
        assert w.pos == os.fstat(fd).st_size
    finally:
        os.close(fd)
    assert pa.ipc.open_file(p).read_all().to_pylist() == _expected(KIND_COLS, KIND_ROWS)


@pytest.mark.parametrize("col, why", [
    (Column("f", arrowipc.FIXED), "width goes with type 'fixed' only"),
    (Column("i", INT64, width=8), "width goes with type 'fixed' only"),
    (Column("d", INT64, dictionary=("a",)), "dictionary is 1..128 strings"),
    (Column("d", UTF8, dictionary=()), "dictionary is 1..128 strings"),
])
def test_bad_column_definitions(tmp_path, col, why):
    fd = os.open(str(tmp_path / "bad.arrow"), os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(ValueError, match=f"column {col.name}: a {why}"):
            arrowipc.FileWriter(fd, [col])
    finally:
        os.close(fd)


def test_bad_fixed_and_dictionary_values(tmp_path):
    fd = os.open(str(tmp_path / "bad.arrow"), os.O_WRONLY | os.O_CREAT)
    try:
        w = arrowipc.FileWriter(fd, KIND_COLS)
        with pytest.raises(ValueError, match="column id: a value not 4 bytes long"):
            w.write_rows([(b"abc", None, "a", None, 1)])
        with pytest.raises(ValueError, match=r"column k: a value outside its dictionary"):
            w.write_rows([(b"abcd", None, "q", None, 1)])
        with pytest.raises(ValueError, match="2 columns given, the schema has 5"):
            w.write_buffers(1, [(0, [b"", b"abcd"])] * 2)
    finally:
        os.close(fd)


def test_a_batch_that_fails_part_way_is_cut_off_again(tmp_path, monkeypatch):
    """A full disk in the middle of a batch: the writer raises, the file is
    cut back to its last complete batch, and later batches follow it."""
    import errno
    real_writev, real_write = os.writev, os.write
    fail = {"on": False}

    def writev(fd, parts):
        if fail["on"]:
            return real_writev(fd, [bytes(parts[0])[:5]])
        return real_writev(fd, parts)

    def write(fd, data):
        if fail["on"]:
            fail["on"] = False
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(arrowipc.os, "writev", writev)
    monkeypatch.setattr(arrowipc.os, "write", write)
    p = str(tmp_path / "full.arrow")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT)
    try:
        w = arrowipc.FileWriter(fd, KIND_COLS)
        w.write_buffers(2, _buffers(KIND_COLS, KIND_ROWS[0]))
        fail["on"] = True
        with pytest.raises(OSError, match="No space"):
            w.write_buffers(3, _buffers(KIND_COLS, KIND_ROWS[1]))
        assert w.pos == os.fstat(fd).st_size
        w.write_rows(KIND_ROWS[1])
        w.close()
    finally:
        os.close(fd)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pa.ipc.open_file(p).read_all().to_pylist() == _expected(KIND_COLS, KIND_ROWS)
