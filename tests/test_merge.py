import json
import os

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from skewd import cli, merge
from skewd import tracegen as g
from skewd.errors import InputFileError
from skewd.schema import SPAN_SCHEMA


def _write_arrow(path, t):
    with ipc.new_file(str(path), t.schema) as w:
        for b in t.to_batches(max_chunksize=500):
            w.write_batch(b)


@pytest.fixture
def logs(tmp_path):
    t, _ = g.pipeline(400, [("s", "a"), ("p", "b")], clocks={"b": g.NodeClock(offset_ns=-80_000)},
                      order="node")
    node = t.column("node").to_pylist()
    a = t.filter(pa.array([n == "a" for n in node]))
    b = t.filter(pa.array([n == "b" for n in node]))
    _write_arrow(tmp_path / "a.arrow", a)
    pq.write_table(b, tmp_path / "b.parquet")
    return tmp_path, t


def test_merge_groups_by_trace_and_reports_bad_files(logs, tmp_path):
    d, t = logs
    (d / "junk.bin").write_bytes(b"\x00garbage")
    full = (d / "a.arrow").read_bytes()
    (d / "torn.arrow").write_bytes(full[: len(full) * 3 // 4])
    m = merge.merge([str(d)])
    assert m.warnings.counts["foreign_file"] == 1
    assert m.warnings.counts["torn_tail"] == 1
    assert m.warnings.counts["duplicate_span"] > 0      # torn copy of a.arrow
    assert m.spans.num_rows == t.num_rows
    tid = m.spans.column("trace_id").to_pylist()
    # grouped: each trace id appears in one run
    runs = sum(1 for i in range(len(tid)) if i == 0 or tid[i] != tid[i - 1])
    assert runs == 400
    assert m.spans.schema.metadata[merge.META_MERGED] == b"1"


def test_write_and_load_with_offsets_sidecar(logs, tmp_path):
    d, t = logs
    off = pa.table({"node": ["a"], "peer": ["b"], "time_ns": [t.column("start_ns")[0].as_py()],
                    "offset_ns": [-80_000], "uncertainty_ns": [1_000], "kind": ["estimate"]})
    _write_arrow(d / "offsets-a.arrow", off)
    m = merge.merge([str(d)])
    assert m.offsets.num_rows == 1
    out = tmp_path / "out" / "merged.arrow"
    out.parent.mkdir()
    written = merge.write(m, str(out))
    assert written == [str(out), str(tmp_path / "out" / "merged.offsets.arrow")]
    back = merge.load([str(out)])
    assert back.spans.num_rows == t.num_rows and back.offsets.num_rows == 1


def test_mixed_versions_and_missing_columns(tmp_path):
    t, _ = g.pipeline(10, [("s", "a"), ("p", "b")])
    old = t.drop_columns(["stage", "est_offset_ns"]).replace_schema_metadata(
        {b"skewd.schema_version": b"0"})
    pq.write_table(old, tmp_path / "old.parquet")
    nok = t.drop_columns(["start_ns"])
    pq.write_table(nok, tmp_path / "nostart.parquet")
    m = merge.merge([str(tmp_path)])
    assert m.spans.num_rows == t.num_rows
    assert m.spans.schema.remove_metadata().equals(SPAN_SCHEMA)
    assert m.warnings.counts["schema_version_mixed"] == 1
    assert m.warnings.counts["missing_column"] >= 2
    assert m.warnings.counts["foreign_file"] == 1       # no start_ns: neither spans nor offsets


def test_conflicting_duplicates_and_string_kinds(tmp_path):
    t, _ = g.pipeline(5, [("s", "a"), ("p", "b")])
    t2 = t.set_column(t.schema.get_field_index("start_ns"), "start_ns",
                      pa.array([x + 1 for x in t.column("start_ns").to_pylist()]))
    t2 = t2.set_column(t2.schema.get_field_index("kind"), "kind",
                       pa.array([k.upper() for k in t2.column("kind").to_pylist()]))
    pq.write_table(t, tmp_path / "x.parquet")
    pq.write_table(t2, tmp_path / "y.parquet")
    m = merge.merge([str(tmp_path)])
    assert m.spans.num_rows == t.num_rows
    assert m.warnings.counts["duplicate_span_conflict"] == t.num_rows


def test_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(InputFileError):
        merge.merge([str(tmp_path)])
    with pytest.raises(InputFileError):
        merge.merge([str(tmp_path / "empty-dir-that-is-missing")])


def test_cli_merge_then_check(logs, tmp_path, capsys):
    d, t = logs
    out = str(tmp_path / "m.parquet")
    assert cli.main(["merge", str(d), "-o", out]) == 0
    assert os.path.exists(out)
    capsys.readouterr()
    assert cli.main(["check", out, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["spans"] == t.num_rows
    assert rep["violations"]["negative_transport"]["total"] > 0
    assert rep["after_correction"]["negative_transport"]["total"] == 0
    assert cli.main(["check", out, "--fail-on-violation", "--no-correct"]) == 1
    assert cli.main(["merge", str(d), "-o", str(tmp_path / "nodir" / "x.arrow")]) == 2


def test_daemon_style_offset_log(tmp_path):
    # the daemon's columns: record kind, float offsets, null uncertainty on exchanges
    off = pa.table({"time_ns": [1, 2, 3], "node": ["a"] * 3, "peer": ["b"] * 3,
                    "record": ["exchange", "estimate", "estimate"],
                    "offset_ns": [5.5, -80_000.4, -80_001.0], "delay_ns": [100.0, None, None],
                    "uncertainty_ns": [None, 900.0, None]})
    _write_arrow(tmp_path / "offsets-a.arrow", off)
    m = merge.merge([str(tmp_path)])
    assert m.offsets.column("offset_ns").to_pylist() == [-80_000]
    assert m.warnings.counts["offset_log_unusable"] == 1
