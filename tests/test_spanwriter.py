"""skewd.spanwriter: span logs written from the tracer's ring buffers without
pyarrow, read back by pyarrow and skewd.spanlog exactly; the pyarrow-batch
writer in skewd.spanlog on top of it; and a traced process that never loads
pyarrow."""
import os
import subprocess
import sys
import textwrap
import warnings

import pyarrow as pa
import pytest

from skewd import _ring, spanlog, spanwriter
from skewd.errors import UsageError
from skewd.schema import KINDS, SCHEMA_VERSION, SPAN_COLUMNS, SPAN_SCHEMA
from skewd.tracer import Tracer


def _read_strict(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return spanlog.read(path)


def test_span_columns_are_the_span_schema():
    assert [c.name for c in SPAN_COLUMNS] == SPAN_SCHEMA.names
    assert SPAN_SCHEMA.field("kind").type == pa.dictionary(pa.int8(), pa.string())
    assert SPAN_SCHEMA.field("trace_id").type == pa.binary(16)
    assert [f.nullable for f in SPAN_SCHEMA] == [c.nullable for c in SPAN_COLUMNS]


@pytest.mark.parametrize("stage", ["model", None])
def test_tracer_spans_round_trip_every_column(tmp_path, stage):
    t = Tracer(stage=stage, log_dir=tmp_path, clock=None)
    with t.span("root", kind="server") as root:
        with t.span("send", kind="producer") as p:
            sent = p.mark_send()
        with t.span("recv", kind="consumer", parent=p, send_ns=sent - 5):
            pass
    with t.span("other", kind="client", parent=False):
        pass
    t.close()
    tab = _read_strict(tmp_path)
    tab.validate(full=True)
    assert tab.schema.remove_metadata().equals(SPAN_SCHEMA)
    rows = {r["name"]: r for r in tab.to_pylist()}
    assert set(rows) == {"root", "send", "recv", "other"}
    assert rows["root"]["parent_id"] is None and rows["other"]["parent_id"] is None
    assert rows["send"]["parent_id"] == root.context.span_id
    assert rows["recv"]["parent_id"] == p.context.span_id
    assert rows["recv"]["send_ns"] == sent - 5 and rows["send"]["send_ns"] == sent
    assert rows["root"]["send_ns"] is None
    assert {r["kind"] for r in rows.values()} == {"server", "producer", "consumer", "client"}
    assert {r["stage"] for r in rows.values()} == {stage}
    assert {r["node"] for r in rows.values()} == {t.node}
    assert {r["clock"] for r in rows.values()} == {"realtime"}
    assert all(r["start_ns"] <= r["end_ns"] for r in rows.values())
    f = pa.ipc.open_file(t.files()[0])  # a complete file any Arrow reader opens
    md = f.schema.metadata
    assert md[b"skewd.schema_version"] == str(SCHEMA_VERSION).encode()
    assert md[b"skewd.stage"] == (stage or "").encode()
    assert md[b"skewd.pid"] == str(os.getpid()).encode()


def test_large_then_small_ring_batches(tmp_path):
    """Batches past the constant columns' first size grow them; later small
    ones slice them; every span comes back once."""
    core = _ring.Core(None, 8192)
    cols = _ring.Columns(4096)
    w = spanwriter.SpanLogWriter(str(tmp_path), node="n", stage="s", clock="c")
    try:
        for n in (3000, 10, 4096, 1):
            assert core.fill(n, name=f"x{n}") == n
            while (k := core.drain(cols)):
                w.write_ring(cols, k)
        w.write_ring(cols, 0)  # nothing: no batch
    finally:
        w.close()
        core.close()
    tab = _read_strict(tmp_path)
    assert tab.num_rows == 3000 + 10 + 4096 + 1 == w.stats.rows
    assert set(tab.column("node").to_pylist()) == {"n"}
    assert set(tab.column("stage").to_pylist()) == {"s"}
    assert set(tab.column("clock").to_pylist()) == {"c"}
    assert tab.column("name").value_counts().to_pylist() == [
        {"values": f"x{n}", "counts": n} for n in (3000, 10, 4096, 1)]
    assert w.stats.batches == 4 and len(w.stats.files) == 1


def test_rotation_and_an_abandoned_file(tmp_path):
    core = _ring.Core(None, 4096)
    cols = _ring.Columns(1000)
    w = spanwriter.SpanLogWriter(str(tmp_path), node="n", max_bytes=50_000)
    try:
        for _ in range(5):
            core.fill(1000)
            w.write_ring(cols, core.drain(cols))
        assert len(w.stats.files) >= 2
        core.fill(7)
        w.write_ring(cols, core.drain(cols))
        last = w.path
        w.abandon()  # as a forked child does: the footer is never written
    finally:
        core.close()
    for p in w.stats.files[:-1] if w.stats.files else []:
        assert spanlog.inspect(p).complete
    with pytest.warns(spanlog.IncompleteLogWarning, match="no footer"):
        assert spanlog.read(last).num_rows == 7
    with pytest.warns(spanlog.IncompleteLogWarning):
        assert spanlog.read(tmp_path).num_rows == 5007


def test_pyarrow_batches_through_spanlog_writer(tmp_path):
    rows = [dict(trace_id=bytes(range(16)), span_id=(i + 1).to_bytes(8, "big"),
                 parent_id=None, name="n", kind=KINDS[i % 5], node="a", stage=None,
                 start_ns=i, end_ns=i + 1, send_ns=None, clock="realtime",
                 injected_offset_ns=None, est_offset_ns=None, est_uncertainty_ns=None)
            for i in range(6)]
    w = spanlog.SpanLogWriter(str(tmp_path), node="a")
    w.write(pa.RecordBatch.from_pylist(rows, schema=SPAN_SCHEMA))
    # kind as plain strings is fine too
    plain = pa.schema([f.with_type(pa.string()) if f.name == "kind" else f for f in SPAN_SCHEMA])
    w.write(pa.RecordBatch.from_pylist(rows, schema=plain))
    with pytest.raises(UsageError, match="value outside its dictionary.*span kinds are"):
        w.write(pa.RecordBatch.from_pylist([dict(rows[0], kind="weird")], schema=plain))
    with pytest.raises(UsageError, match="are not the span schema's"):
        w.write(pa.RecordBatch.from_pylist([{"x": 1}]))
    w.close()
    assert _read_strict(tmp_path).to_pylist() == rows + rows


def test_a_traced_process_never_imports_pyarrow(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from skewd import Tracer
        t = Tracer(stage="s", log_dir={str(tmp_path)!r})
        for i in range(100):
            with t.span("x", kind="producer") as s:
                s.mark_send()
        t.flush()
        t.close()
        print(sorted(m for m in ("pyarrow", "pandas") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert _read_strict(tmp_path).num_rows == 100
