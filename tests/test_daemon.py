"""The daemon: units, and real processes on loopback."""
import os
import shutil
import signal
import socket
import time

import numpy as np
import pyarrow.ipc
import pytest
from hypothesis import given, settings, strategies as st

from daemon_helpers import start, status, stop, wait_for, write_config
from skewd import gossip, offsetlog
from skewd.daemon import StepDetector, precision_ns
from skewd.errors import PeerError
from skewd.probe import Key, KeyRing
from skewd.simulate import ClockModel, PathModel, Scenario, simulate
from skewd.transitivity import Link, check


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# --- units ---------------------------------------------------------------------

def test_step_detector_flags_steps_not_slew():
    t = {"rt": 1_000_000_000_000, "mono": 5_000_000_000}
    d = StepDetector(read=lambda: (t["rt"], t["mono"]))
    t["rt"] += 1_000_000_000; t["mono"] += 1_000_000_000
    assert d.check() is None
    t["rt"] += 1_000_000_000 + 400_000; t["mono"] += 1_000_000_000   # 400 ppm slew
    assert d.check() is None
    t["rt"] += 50_000_000; t["mono"] += 10_000_000                   # +40 ms step
    assert d.check() == 40_000_000 and d.steps == 1
    t["rt"] -= 2_000_000_000; t["mono"] += 1                          # backwards step
    assert d.check() < 0 and d.steps == 2


KEY = Key(3, "HMAC-SHA256", b"k" * 32)


def test_gossip_roundtrip_and_auth():
    r = gossip.Report("a", 123, (gossip.Entry("b", 5e6, 100_000.0, 1200.0, 10), gossip.Entry("c", -3.5, 0.0, 900.0, 0)))
    data = gossip.encode(r, KEY)
    assert gossip.is_report(data)
    back = gossip.decode(data, KeyRing({3: KEY}), require_auth=True)
    assert back.node == "a" and back.entries == r.entries and back.key_id == 3
    assert back.entries[0].offset_after(2_000_000_000) == 5e6 + 200_000   # 100 ppm × 2 s
    bad = bytearray(data); bad[30] ^= 1
    with pytest.raises(PeerError, match="authentication"):
        gossip.decode(bytes(bad), KeyRing({3: KEY}))
    with pytest.raises(PeerError, match="unauthenticated"):
        gossip.decode(gossip.encode(r), KeyRing({3: KEY}), require_auth=True)
    with pytest.raises(PeerError, match="length"):
        gossip.decode(data[:-1], KeyRing({3: KEY}))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_gossip_garbage_is_refused_never_a_crash(data):
    try:
        gossip.decode(gossip.MAGIC + data, KeyRing({3: KEY}))
    except PeerError:
        pass


def test_transitivity_finds_the_asymmetric_link_in_the_simulator():
    """Four nodes, every pair measured through the estimator simulator; one
    path (c–d) is 80 µs slower one way. The loops through c–d fail, the
    others close, and c–d is named."""
    truth = {"a": 0.0, "b": 5e6, "c": -2e5, "d": 3e4}
    nodes = sorted(truth)
    links = []
    for i, x in enumerate(nodes):
        for y in nodes[i + 1:]:
            asym = 80_000.0 if (x, y) == ("c", "d") else 0.0
            r = simulate(Scenario(local=ClockModel(truth[x], stamp_noise_ns=200),
                                  peer=ClockModel(truth[y], freq_ppm=0.0, stamp_noise_ns=200),
                                  path=PathModel(base_ns=30_000, asymmetry_ns=asym, jitter_ns=2_000),
                                  count=200, interval_s=0.1, seed=len(links)))
            e = r.estimates[-1]
            assert e.contains(truth[y] - truth[x])       # the bound still holds the truth
            links.append(Link(x, y, e.offset_ns, precision_ns(e)))
    rep = check(links)
    assert {l.nodes for l in rep.failing} == {("a", "c", "d"), ("b", "c", "d")}
    assert rep.suspects == (("c", "d"),) and rep.isolated


def test_every_probe_follows_its_warmup_by_the_lead(tmp_path, state_dir):
    from skewd.config import load
    from skewd.daemon import Daemon
    peers = [("b", f"127.0.0.1:{free_port()}"), ("c", f"127.0.0.1:{free_port()}")]
    cfg = write_config(tmp_path / "a.toml", "a", f"127.0.0.1:{free_port()}", peers,
                       log_dir=tmp_path / "logs", sock=tmp_path / "a.sock",
                       interval="40ms", extra={"presend": "4ms"})
    d = Daemon(load(cfg))
    sent = []
    d.client.warm = lambda peer: sent.append(("warm", peer[1], time.monotonic_ns()))
    d.client.request = lambda peer: sent.append(("probe", peer[1], time.monotonic_ns())) or 1
    try:
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            time.sleep(d._timers(time.monotonic_ns()) / 1e9)
    finally:
        d.close()
    for port in (int(a.split(":")[1]) for _, a in peers):
        mine = [(k, t) for k, p, t in sent if p == port]
        kinds = [k for k, _ in mine]
        pairs = len(kinds) // 2
        assert len(kinds) >= 10 and kinds[:pairs * 2] == ["warm", "probe"] * pairs
        leads = [t2 - t1 for (_, t1), (_, t2) in zip(mine[0::2], mine[1::2])]
        assert all(4_000_000 <= x < 20_000_000 for x in leads), leads
        probes = [t for k, t in mine if k == "probe"]
        gaps = np.diff(probes)
        assert abs(np.median(gaps) - 40_000_000) < 5_000_000, gaps   # the interval holds


# --- real daemons on loopback ------------------------------------------------

@pytest.fixture
def pair(tmp_path):
    """Two daemons on loopback: b injected +5 ms; a's reference is b."""
    pa, pb = free_port(), free_port()
    ca = write_config(tmp_path / "a.toml", "a", f"127.0.0.1:{pa}", [("b", f"127.0.0.1:{pb}")],
                      log_dir=tmp_path / "logs-a", sock=tmp_path / "a.sock", reference="b")
    cb = write_config(tmp_path / "b.toml", "b", f"127.0.0.1:{pb}", [("a", f"127.0.0.1:{pa}")],
                      log_dir=tmp_path / "logs-b", sock=tmp_path / "b.sock", schedule="step:offset=5ms")
    notify = tmp_path / "notify"
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(str(notify))
    ns.settimeout(0.2)
    procs = [start(ca, env={"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "1000000"}),
             start(cb)]
    try:
        yield {"tmp": tmp_path, "procs": procs, "notify": ns, "a": ca, "b": cb,
               "ports": (pa, pb)}
    finally:
        stop(procs)
        ns.close()


def _messages(sock, seconds):
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            out.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
    return out


def test_daemons_measure_notify_and_stop_cleanly(pair):
    t = pair["tmp"]
    st = wait_for(lambda: (s := status(t / "a.sock"))["peers"]["b"]["samples"] >= 5 and s,
                  30, "a to measure b")
    p = st["peers"]["b"]
    assert abs(p["offset_ns"] - 5_000_000) < max(5_000, p["uncertainty_ns"])
    assert p["stamp_source"] == "kernel" and st["stamps"]["mode"] == "software"
    # the page carries our offset to the reference
    assert st["measurement"] and abs(st["measurement"]["offset_ns"] + 5_000_000) < 5_000
    msgs = _messages(pair["notify"], 2.5)
    joined = "\n".join(msgs)
    assert "READY=1" in joined and "STATUS=" in joined and "WATCHDOG=1" in joined
    assert any("1/1 peers measured" in m for m in msgs)
    a = pair["procs"][0]
    # no pyarrow, no numpy: their shared libraries alone would take most of
    # the 80 MB budget (the offset log is written by skewd.arrowipc)
    maps = open(f"/proc/{a.pid}/maps").read()
    assert "libarrow" not in maps and "numpy" not in maps
    # SIGTERM: flush, STOPPING=1, exit 0, log readable
    os.kill(a.pid, signal.SIGTERM)
    assert a.wait(10) == 0
    assert "STOPPING=1" in "\n".join(_messages(pair["notify"], 0.5))
    tab = offsetlog.read(t / "logs-a")
    assert tab.num_rows > 5
    ex = tab.filter(np.array(tab.column("record").to_pylist()) == "exchange")
    assert ex.num_rows >= 5 and set(tab.column("peer").to_pylist()) == {"b"}
    for f in os.listdir(t / "logs-a"):  # closed on SIGTERM: footers, any Arrow tool opens them
        assert pyarrow.ipc.open_file(str(t / "logs-a" / f)).num_record_batches >= 1
    assert not os.path.exists(t / "a.sock")


def test_status_cli_and_metrics(pair, capsys):
    from skewd import cli
    t = pair["tmp"]
    wait_for(lambda: status(t / "a.sock")["peers"]["b"]["samples"] >= 3, 30, "samples")
    assert cli.main(["status", "--socket", str(t / "a.sock")]) == 0
    out = capsys.readouterr().out
    assert "peer" in out and "127.0.0.1" in out and "kernel" in out and "drops: none" in out


def test_sighup_reload_keeps_estimator_and_applies_changes(pair):
    t = pair["tmp"]
    wait_for(lambda: status(t / "a.sock")["peers"]["b"]["samples"] >= 5, 30, "samples")
    before = status(t / "a.sock")["peers"]["b"]["exchanges"]
    pb = pair["ports"][1]
    # add a peer that does not exist and a probe interval change; b stays
    cfg = open(pair["a"]).read().replace('probe_interval = "100ms"', 'probe_interval = "50ms"')
    cfg += f'[[peers]]\nname = "ghost"\naddress = "127.0.0.1:{free_port()}"\n'
    # [[peers]] must come before the [log] table in TOML: rebuild in order
    write_config(pair["a"], "a", f"127.0.0.1:{pair['ports'][0]}",
                 [("b", f"127.0.0.1:{pb}"), ("ghost", f"127.0.0.1:{free_port()}")],
                 log_dir=t / "logs-a", sock=t / "a.sock", reference="b", interval="50ms")
    os.kill(pair["procs"][0].pid, signal.SIGHUP)
    st = wait_for(lambda: (s := status(t / "a.sock"))["peers"].get("ghost") and s, 10, "reload")
    assert st["peers"]["b"]["exchanges"] >= before       # not reset
    assert st["peers"]["ghost"]["reachable"] is False
    # a broken config on reload is refused and the daemon keeps running
    with open(pair["a"], "w") as f:
        f.write('node = "a"\nprobe_interval = "fast"\n')
    os.kill(pair["procs"][0].pid, signal.SIGHUP)
    time.sleep(1)
    assert pair["procs"][0].poll() is None
    assert "ghost" in status(t / "a.sock")["peers"]


def test_unwritable_log_dir_is_reported_and_writing_resumes(tmp_path):
    pa, pb = free_port(), free_port()
    logs = tmp_path / "logs-a"
    ca = write_config(tmp_path / "a.toml", "a", f"127.0.0.1:{pa}", [("b", f"127.0.0.1:{pb}")],
                      log_dir=logs, sock=tmp_path / "a.sock", rotate_age="300ms")
    cb = write_config(tmp_path / "b.toml", "b", f"127.0.0.1:{pb}", [("a", f"127.0.0.1:{pa}")],
                      log_dir=tmp_path / "logs-b", sock=tmp_path / "b.sock")
    procs = [start(ca), start(cb)]
    try:
        wait_for(lambda: status(tmp_path / "a.sock")["log"]["rows_written"] > 0, 30, "log rows")
        # the directory goes away and a file takes its place: even root cannot write there
        shutil.move(str(logs), str(tmp_path / "moved"))
        logs.write_text("not a directory")
        st = wait_for(lambda: (s := status(tmp_path / "a.sock"))["log"]["error"] and s, 15,
                      "log error in status")
        assert "cannot write offset log" in st["log"]["error"]
        assert "LOG ERROR" in st["summary"]
        n0 = st["peers"]["b"]["exchanges"]
        time.sleep(1.0)
        st = status(tmp_path / "a.sock")
        assert st["peers"]["b"]["exchanges"] > n0           # measuring goes on
        assert st["log"]["rows_waiting"] > 0
        logs.unlink()
        logs.mkdir()
        st = wait_for(lambda: (s := status(tmp_path / "a.sock"))["log"]["error"] is None and
                      s["log"]["rows_waiting"] < 50 and s, 15, "log recovery")
        tab = offsetlog.read(logs)
        assert tab.num_rows > 0
    finally:
        stop(procs)


def test_forged_and_malformed_flood_is_dropped_memory_flat(pair):
    import psutil
    t = pair["tmp"]
    pa = pair["ports"][0]
    wait_for(lambda: status(t / "a.sock")["peers"]["b"]["samples"] >= 3, 30, "samples")
    proc = psutil.Process(pair["procs"][0].pid)
    rng = np.random.default_rng(1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    from skewd import probe
    good = probe.encode(probe.Packet(probe.TYPE_REQUEST, 1, 7, t1=1))

    def blast(n):
        for i in range(n):
            kind = i % 4
            if kind == 0:
                data = rng.bytes(int(rng.integers(0, 300)))
            elif kind == 1:
                data = bytearray(good); data[int(rng.integers(0, len(good)))] ^= 0xFF; data = bytes(data)
            elif kind == 2:
                data = gossip.MAGIC + rng.bytes(100)
            else:
                data = good[:int(rng.integers(1, len(good)))]
            s.sendto(data, ("127.0.0.1", pa))
            if i % 200 == 0:
                time.sleep(0.002)
    blast(5000)
    time.sleep(1)
    rss0 = proc.memory_info().rss
    blast(20000)
    time.sleep(1.5)
    rss1 = proc.memory_info().rss
    s.close()
    st = status(t / "a.sock")
    dropped = st["server"]["dropped"] + st["client"]["dropped"] + st["reports"]["dropped"]
    assert dropped > 1000
    assert st["peers"]["b"]["reachable"]
    n0 = st["peers"]["b"]["exchanges"]
    time.sleep(0.5)
    assert status(t / "a.sock")["peers"]["b"]["exchanges"] > n0
    assert rss1 - rss0 < 8 * 1024 * 1024, f"RSS grew {(rss1 - rss0) / 1e6:.1f} MB"


def test_paired_read_is_one_moment():
    from skewd.daemon import _paired_read
    import time as _t
    diffs = []
    for _ in range(200):
        rt, mono = _paired_read()
        diffs.append((rt - mono) - (_t.time_ns() - _t.monotonic_ns()))
    assert np.median(np.abs(diffs)) < 100_000
    d = StepDetector()
    assert all(d.check() is None for _ in range(2000))   # no false steps from preemption


def test_inject_through_the_daemon(pair, capsys):
    from skewd import cli
    t = pair["tmp"]
    wait_for(lambda: status(t / "b.sock")["peers"]["a"]["samples"] >= 3, 30, "samples")
    assert cli.main(["inject", "--node", "b", "--offset=-2ms", "--socket", str(t / "b.sock")]) == 0
    assert "the daemon now injects step:offset=-2ms" in capsys.readouterr().out
    wait_for(lambda: (s := status(t / "a.sock"))["peers"]["b"]["offset_ns"] is not None
                  and abs(s["peers"]["b"]["offset_ns"] + 2_000_000) < 20_000 and s, 20,
                  "a to see b's new offset")
    assert cli.main(["inject", "--node", "zz", "--offset", "1ms", "--socket", str(t / "b.sock")]) == 2
    assert "runs node 'b'" in capsys.readouterr().err
    assert cli.main(["inject", "--node", "b", "--clear", "--socket", str(t / "b.sock")]) == 0
    assert status(t / "b.sock")["injected_offset_ns"] == 0
