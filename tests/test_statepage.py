import multiprocessing as mp
import os
import struct
import time

import pytest

from skewd import _page
from skewd.errors import InputFileError, UsageError
from skewd.statepage import (NO_SEGMENT, Measurement, Segment, StatePage, page_path,
                             validate_node)

LAYOUT = "<IHHIIQiI"  # magic, version, header_size, seq, flags, generation, base_clock, rsv


def test_create_writes_documented_header(state_dir):
    with StatePage("n1") as p:
        raw = open(p.path, "rb").read()
    assert len(raw) == 4096
    magic, version, hsize, seq, flags, gen, base, _ = struct.unpack_from(LAYOUT, raw)
    assert (magic, version, hsize, seq, flags, gen, base) == (0x50574B53, 1, 256, 0, 0, 0, 0)
    assert raw[:4] == b"SKWP"
    assert struct.unpack_from("<q", raw, 64)[0] == 2**63 - 1   # next.start_ns: none
    assert raw[128:130] == b"n1"


def test_write_read_roundtrip_and_generation(state_dir):
    p = StatePage("n1", writable=True)
    cur = Segment(10, 5_000_000, 20_000, 10)
    nxt = Segment(1_000, -3, 0, 1_000)
    p.set_injection(cur, nxt)
    s = p.snapshot()
    assert s.injected and not s.measured and s.generation == 1
    assert s.cur == cur and s.next == nxt
    p.set_measurement(Measurement(120, 7, -3, 99))
    s2 = p.snapshot()
    assert s2.measured and s2.measurement == Measurement(120, 7, -3, 99)
    assert s2.cur == cur and s2.generation == 2          # injection kept
    p.clear_injection()
    s3 = p.snapshot()
    assert not s3.injected and s3.measurement == Measurement(120, 7, -3, 99)
    assert s3.next == NO_SEGMENT and s3.generation == 3
    # the byte layout carries the same values at the documented offsets
    raw = open(p.path, "rb").read(256)
    assert struct.unpack_from("<Q", raw, 16)[0] == 3
    assert struct.unpack_from("<4q", raw, 96) == (120, 7, -3, 99)
    p.close()


def test_readonly_page_refuses_writes(state_dir):
    StatePage("n1", writable=True).close()
    with StatePage("n1") as p:
        with pytest.raises(UsageError, match="read-only"):
            p.set_injection(Segment())


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", ".hidden", "-x", "x" * 64, "sp ace", "é"])
def test_unsafe_node_names_refused(bad):
    with pytest.raises(UsageError, match="not a safe file name"):
        validate_node(bad)
    with pytest.raises(UsageError):
        StatePage(bad)


def test_other_layout_version_is_refused(state_dir):
    path = page_path("old")
    StatePage("old").close()
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<H", 2))
    with pytest.raises(InputFileError, match=r"layout version 2, this skewd reads version 1"):
        StatePage("old")


def test_foreign_or_short_file_is_refused(state_dir):
    with open(page_path("junk"), "wb") as f:
        f.write(b"\0" * 4096)
    with pytest.raises(InputFileError, match="not a skewd clock-state page"):
        StatePage("junk")
    with open(page_path("short"), "wb") as f:
        f.write(b"SKWP")
    with pytest.raises(InputFileError, match="too small"):
        StatePage("short")


def test_out_of_range_segment_leaves_page_untouched(state_dir):
    p = StatePage("n1", writable=True)
    p.set_injection(Segment(0, 5, 0, 0))
    before = p.snapshot()
    with pytest.raises(UsageError, match="64 bits"):
        p.set_injection(Segment(0, 2**70, 0, 0))
    assert p.snapshot() == before
    p.close()


def test_writer_killed_mid_update_is_repaired(state_dir):
    p = StatePage("n1", writable=True)
    p.set_injection(Segment(0, 5, 0, 0))
    with open(p.path, "r+b") as f:   # what a writer dying mid-update leaves: odd seq
        f.seek(8)
        seq = struct.unpack("<I", f.read(4))[0]
        f.seek(8)
        f.write(struct.pack("<I", seq + 1))
    with pytest.raises(OSError):
        p.raw.now_ns()                     # readers give up rather than spin forever
    p.set_injection(Segment(0, 7, 0, 0))  # the next writer repairs and writes
    assert p.snapshot().cur.offset_ns == 7
    assert p.raw.seq % 2 == 0
    p.close()


def _writer(path, seconds, out):
    page = _page.Page(path, True)
    fd = os.open(path, os.O_RDONLY)
    k, end = 1, time.monotonic() + seconds
    while time.monotonic() < end:
        page.stress_write(20_000, k, fd)   # the writer's real path: flock, write, unlock
        k += 20_000
    os.close(fd)
    out.put(k)


def _reader(path, seconds, out):
    page = _page.Page(path, False)
    bad = changes = reads = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        b, c = page.stress_read(200_000)
        bad, changes, reads = bad + b, changes + c, reads + 200_000
    out.put((bad, changes, reads))


def _py_reader(node, directory, seconds, out):
    page = StatePage(node, directory=directory)
    bad = n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = page.snapshot()
        k = s.cur.start_ns
        ok = (s.cur.offset_ns, s.cur.drift_ppb, s.cur.epoch_ns, s.next.start_ns,
              s.next.offset_ns, s.next.drift_ppb, s.next.epoch_ns) == (
              -k, 2 * k, 3 * k, 4 * k, 5 * k, 6 * k, 7 * k)
        bad += not ok
        n += 1
    out.put((bad, n))


def test_no_torn_reads_under_a_hammering_writer(state_dir):
    """One process rewrites the page as fast as it can; readers in other
    processes check, on every read, that all fields agree on one counter."""
    StatePage("torn").close()
    path = page_path("torn")
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(path, 3.0, q)),
             ctx.Process(target=_reader, args=(path, 2.5, q)),
             ctx.Process(target=_py_reader, args=("torn", state_dir, 2.5, q))]
    for p in procs:
        p.start()
    results = [q.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    writes = next(r for r in results if isinstance(r, int))
    c_bad, c_changes, c_reads = next(r for r in results if isinstance(r, tuple) and len(r) == 3)
    py_bad, py_reads = next(r for r in results if isinstance(r, tuple) and len(r) == 2)
    assert writes > 100_000
    assert c_changes > 1000, "reader never overlapped the writer"
    assert c_bad == 0 and py_bad == 0
    assert py_reads > 1000


def test_invariant_check_catches_torn_reads_without_the_seqlock(state_dir):
    """Control: the same check with the seqlock bypassed does see tears, so
    the test above would fail if the seqlock were broken."""
    StatePage("torn").close()
    path = page_path("torn")
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    w = ctx.Process(target=_writer, args=(path, 3.0, q))
    w.start()
    try:
        page = _page.Page(path, False)
        torn = 0
        end = time.monotonic() + 2.5
        while time.monotonic() < end and torn == 0:
            torn += _page.stress_read_unlocked(page, 1_000_000)
    finally:
        w.join(10)
    assert torn > 0
