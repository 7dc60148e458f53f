"""Tests for skewd.spanlog: writing, rotation, reading torn and foreign logs,
and a real writer killed with SIGKILL."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skewd import spanlog
from skewd.errors import InputFileError
from skewd.schema import SCHEMA_VERSION, SPAN_SCHEMA
from skewd.spanlog import (SpanLogWarning, SpanLogWriter,
                           TornTailWarning)

KINDS = ["internal", "producer", "consumer", "client", "server"]


def make_batch(n: int, start: int = 0, node: str = "n1") -> pa.RecordBatch:
    rows = [dict(trace_id=(7).to_bytes(16, "big"), span_id=(start + i + 1).to_bytes(8, "big"),
                 parent_id=None if i % 3 == 0 else (start + i).to_bytes(8, "big"),
                 name=f"s{(start + i) % 7}", kind=KINDS[(start + i) % 5], node=node,
                 stage="st", start_ns=start + i, end_ns=start + i + 10,
                 send_ns=None if i % 2 else start + i - 5, clock="realtime",
                 injected_offset_ns=None, est_offset_ns=None, est_uncertainty_ns=None)
            for i in range(n)]
    return pa.RecordBatch.from_pylist(rows, schema=SPAN_SCHEMA)


def write_log(d, batches, **kw) -> SpanLogWriter:
    w = SpanLogWriter(str(d), node="n1", stage="st", clock="realtime", **kw)
    for b in batches:
        w.write(b)
    w.close()
    return w


def message_ends(path) -> list[int]:
    """Byte offsets where the IPC messages of a complete file end."""
    data = open(path, "rb").read()
    buf = pa.py_buffer(data)
    r = pa.BufferReader(buf)
    r.seek(8)
    mr = pa.ipc.MessageReader.open_stream(r)
    ends = []
    while True:
        try:
            m = mr.read_next_message()
        except StopIteration:
            break
        ends.append((r.tell(), m.type))
    return ends


def test_round_trip_with_metadata(tmp_path):
    w = write_log(tmp_path, [make_batch(10), make_batch(5, 10)])
    assert len(w.stats.files) == 1 and w.stats.batches == 2 and w.stats.rows == 15
    path = w.stats.files[0]
    assert os.path.basename(path).startswith("spans-n1-") and path.endswith(".arrow")
    # a complete Arrow IPC file any Arrow reader opens
    f = pa.ipc.open_file(path)
    md = f.schema.metadata
    assert md[b"skewd.schema_version"] == str(SCHEMA_VERSION).encode()
    assert md[b"skewd.node"] == b"n1" and md[b"skewd.clock"] == b"realtime"
    assert md[b"skewd.host"] and md[b"skewd.pid"] == str(os.getpid()).encode()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = spanlog.read(tmp_path)
    assert t.num_rows == 15
    assert t.schema.remove_metadata().equals(SPAN_SCHEMA)
    assert t.to_pylist() == (pa.Table.from_batches([make_batch(10), make_batch(5, 10)])
                             .to_pylist())
    assert spanlog.read(path).num_rows == 15 and spanlog.read([path, path]).num_rows == 30


def test_rotation_by_size_and_age(tmp_path):
    w = write_log(tmp_path / "a", [make_batch(200, i * 200) for i in range(10)],
                  max_bytes=20_000)
    assert len(w.stats.files) >= 3
    for p in w.stats.files:
        assert spanlog.inspect(p).complete
    assert spanlog.read(tmp_path / "a").num_rows == 2000
    w = SpanLogWriter(str(tmp_path / "b"), node="n1", max_age_s=0.05)
    w.write(make_batch(3))
    time.sleep(0.06)
    w.write(make_batch(3, 3))  # past its age: this file closes after the batch
    w.write(make_batch(3, 6))
    w.close()
    assert len(w.stats.files) == 2
    assert spanlog.read(tmp_path / "b").num_rows == 9


def test_empty_inputs(tmp_path):
    assert spanlog.read(tmp_path).num_rows == 0
    assert spanlog.read([]).num_rows == 0
    (tmp_path / "empty.arrow").write_bytes(b"")
    with pytest.warns(TornTailWarning, match="empty.arrow.*byte 0"):
        assert spanlog.read(tmp_path).num_rows == 0
    with pytest.raises(InputFileError, match="does not exist"):
        spanlog.read(tmp_path / "nope.arrow")
    (tmp_path / "x.arrow").write_bytes(b"hello, not arrow at all")
    with pytest.raises(InputFileError, match="x.arrow.*not an Arrow IPC file"):
        spanlog.read(tmp_path / "x.arrow")


def test_every_truncation_keeps_each_complete_batch(tmp_path):
    batches = [make_batch(4, 0), make_batch(3, 4), make_batch(5, 7)]
    w = write_log(tmp_path / "src", batches)
    path = w.stats.files[0]
    data = open(path, "rb").read()
    ends = message_ends(path)
    batch_ends = [e for e, typ in ends if typ == "record batch"]
    cum = [4, 7, 12]
    cut_file = tmp_path / "cut.arrow"
    for cut in range(0, len(data)):
        cut_file.write_bytes(data[:cut])
        expect = sum(1 for e in batch_ends if e <= cut)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t = spanlog.read(cut_file)
        assert t.num_rows == (cum[expect - 1] if expect else 0), cut
        torn = [w for w in caught if issubclass(w.category, TornTailWarning)]
        if cut in [e for e, _ in ends] and cut >= ends[0][0]:
            # ends exactly after a message: nothing torn, just no footer
            assert not torn, cut
        elif cut < batch_ends[-1] or cut < ends[-1][0]:
            assert len(torn) == 1, (cut, [str(w.message) for w in caught])
            msg = str(torn[0].message)
            assert "cut.arrow" in msg and f"of {cut}" in msg
            off = int(msg.split("cut at byte ")[1].split()[0])
            assert off <= cut and (off in [e for e, _ in ends] or off <= 8)
    # the whole file reads clean
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert spanlog.read(path).num_rows == 12


def test_corrupt_middle_keeps_batches_before_it(tmp_path):
    w = write_log(tmp_path / "src", [make_batch(4), make_batch(4, 4), make_batch(4, 8)])
    path = w.stats.files[0]
    data = bytearray(open(path, "rb").read())
    ends = message_ends(path)
    second = [e for e, t in ends if t == "record batch"][0]
    # smash the framing of the message after the first batch
    data[second:second + 8] = b"\x00\x01\x02\x03\x04\x05\x06\x07"
    bad = tmp_path / "bad.arrow"
    bad.write_bytes(bytes(data))
    with pytest.warns(TornTailWarning, match=rf"bad.arrow: torn tail cut at byte {second}"):
        t = spanlog.read(bad)
    assert t.num_rows == 4


def write_foreign(path, version):
    schema = SPAN_SCHEMA.with_metadata({b"skewd.schema_version": str(version).encode()})
    with pa.ipc.new_file(str(path), schema) as w:
        w.write_batch(make_batch(2))


def test_foreign_schema_version(tmp_path):
    write_foreign(tmp_path / "v99.arrow", 99)
    with pytest.raises(InputFileError, match=r"v99.arrow: schema version 99.*version 1"):
        spanlog.read(tmp_path)
    write_log(tmp_path, [make_batch(3)])
    with pytest.warns(SpanLogWarning, match="v99.arrow.*skipped"):
        assert spanlog.read(tmp_path, foreign="skip").num_rows == 3
    other = pa.schema([pa.field("x", pa.int64())])
    with pa.ipc.new_file(str(tmp_path / "plain.arrow"), other) as w:
        w.write_batch(pa.record_batch([pa.array([1])], schema=other))
    with pytest.raises(InputFileError, match="plain.arrow: no skewd schema version"):
        spanlog.read(tmp_path / "plain.arrow")


def test_inspect(tmp_path):
    w = write_log(tmp_path, [make_batch(10, 100, node="n1")])
    info = spanlog.inspect(w.stats.files[0])
    assert info.complete and info.rows == 10 and info.batches == 1
    assert info.schema_version == SCHEMA_VERSION
    assert info.start_ns == 100 and info.end_ns == 119
    assert info.nodes == ("n1",) and info.stages == ("st",)
    assert sum(info.kinds.values()) == 10 and info.torn_offset is None
    assert info.metadata["skewd.node"] == "n1"


def test_cli_inspect(tmp_path, capsys):
    from skewd.cli import main
    w = write_log(tmp_path, [make_batch(10, 100)])
    data = open(w.stats.files[0], "rb").read()
    torn = tmp_path / "torn.arrow"
    torn.write_bytes(data[: len(data) - 40])
    assert main(["spans", "inspect", w.stats.files[0], str(torn)]) == 0
    out = capsys.readouterr().out
    assert "rows" in out and "10" in out and "schema version" in out and "n1" in out
    assert "torn tail" in out and "torn.arrow" in out
    assert main(["spans", "inspect", str(tmp_path / "missing.arrow")]) == 2
    out_json = tmp_path / "o.json"
    assert main(["spans", "export", w.stats.files[0], "-o", str(out_json)]) == 0
    assert out_json.read_text().startswith('{"resourceSpans"')


# --- garbage never crashes the reader --------------------------------------------------

@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    w = write_log(d, [make_batch(5), make_batch(6, 5), make_batch(7, 11)])
    return open(w.stats.files[0], "rb").read()


def _read_bytes(tmp_path, data: bytes):
    p = tmp_path / "g.arrow"
    p.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return spanlog.read(p).num_rows
        except InputFileError as e:
            assert "g.arrow" in str(e)
            return None


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_reader_on_random_bytes(tmp_path, data):
    _read_bytes(tmp_path, data)
    _read_bytes(tmp_path, b"ARROW1\x00\x00" + data)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_reader_on_damaged_logs(tmp_path, good_file, data):
    b = bytearray(good_file)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(b)))
    n = _read_bytes(tmp_path, bytes(b[:cut]))
    assert n is None or 0 <= n <= 18


# --- a real writer killed with SIGKILL ----------------------------------------------------

WRITER = textwrap.dedent("""
    import sys, time
    from skewd.tracer import Tracer
    t = Tracer(stage="crash", log_dir=sys.argv[1], flush_interval=0.05,
               max_bytes=1_000_000, block=True)
    i = 0
    print("ready", flush=True)
    while True:
        with t.span("s", send_ns=i):
            pass
        i += 1
        if i % 100 == 0:
            time.sleep(0.001)
""")


def test_kill_9_writer_loses_at_most_a_flush_interval(tmp_path):
    logs = tmp_path / "logs"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(logs)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(os.listdir(logs)) < 3:
            time.sleep(0.05)
        time.sleep(0.23)
        killed_at = time.time_ns()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    files = sorted(os.path.join(logs, f) for f in os.listdir(logs))
    assert len(files) >= 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = spanlog.read(logs)
    seq = sorted(t["send_ns"].to_pylist())
    # every span up to the last one written is there: no batch lost
    assert seq == list(range(len(seq))) and len(seq) > 1000
    lost_ns = killed_at - max(t["end_ns"].to_pylist())
    print(f"kill -9: {len(seq)} spans kept, lost the last {lost_ns / 1e6:.1f} ms")
    assert lost_ns <= 100_000_000, f"lost {lost_ns / 1e6:.1f} ms of spans"
    infos = [spanlog.inspect(f) for f in files]
    newest = max(infos, key=lambda i: os.path.getmtime(i.path))
    # every file but the one being written was rotated: footer and fsync
    assert all(i.complete for i in infos if i is not newest)
    if not newest.complete:
        named = [str(w.message) for w in caught
                 if issubclass(w.category, SpanLogWarning) and newest.path in str(w.message)]
        assert named, [str(w.message) for w in caught]

    # the newest file with a batch (a kill can land between a rotation's new
    # file and its first batch), torn mid-batch as a crash mid-write leaves
    # it: the cut is named with its byte offset and the batches before it survive
    newest = max((i for i in infos if i.batches), key=lambda i: os.path.getmtime(i.path))
    fr = spanlog.read_file(newest.path)
    batch_ends = [e for e, typ in message_ends(newest.path) if typ == "record batch"]
    assert len(batch_ends) == len(fr.batches) >= 1
    data = open(newest.path, "rb").read()
    torn = tmp_path / "torn.arrow"
    torn.write_bytes(data[: batch_ends[-1] - 20])
    prev_end = batch_ends[-2] if len(batch_ends) > 1 else None
    with pytest.warns(TornTailWarning, match=r"torn.arrow: torn tail cut at byte \d+") as w:
        t2 = spanlog.read(torn)
    assert t2.num_rows == fr.rows - fr.batches[-1].num_rows
    if prev_end is not None:
        assert f"cut at byte {prev_end} " in str(w[0].message)
    shutil.rmtree(logs)
