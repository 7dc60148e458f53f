"""--hosts netns: each node in its own network namespace (root only)."""
import os
import subprocess

import psutil
import pytest

from conftest import have_netns, tracks_prediction
from skewd.errors import HostError
from skewd.experiment import netns, report, runner

pytestmark = pytest.mark.skipif(not have_netns(), reason="needs root and iproute2 (ip netns)")
MS = 1_000_000


def _mine():
    return [n for n in netns.list_namespaces() if n.startswith(f"{netns.PREFIX}-{os.getpid()}-")]


def test_namespaces_are_joined_and_removed():
    with netns.Namespaces(["a", "b"]) as ns:
        assert len(_mine()) == 3
        # b's address answers from a's namespace (a refused TCP connection is an answer)
        r = subprocess.run(ns.exec_prefix("a") + ["python3", "-c", (
            "import socket,sys\n"
            "try: socket.create_connection(('%s', 9), timeout=2)\n"
            "except ConnectionRefusedError: sys.exit(0)\n"
            "sys.exit(1)") % ns.address("b")], capture_output=True, timeout=20)
        assert r.returncode == 0, r.stderr
        # nothing of the run is in the host's own namespace
        host = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        assert ns.address("a") not in host and ns.address("b") not in host
    assert _mine() == []


def test_a_failure_while_building_removes_what_was_made(monkeypatch):
    real = netns._ip
    calls = []

    def flaky(*args, check=True):
        calls.append(args)
        if args[:1] == ("-n",) and "veth" in args and len(calls) > 6:
            raise HostError("simulated failure")
        return real(*args, check=check)
    monkeypatch.setattr(netns, "_ip", flaky)
    with pytest.raises(HostError, match="simulated"):
        netns.Namespaces(["a", "b", "c"])
    assert _mine() == []


def test_stale_namespaces_of_dead_runs_are_cleared():
    p = subprocess.Popen(["sleep", "0"])
    p.wait()
    name = f"{netns.PREFIX}-{p.pid}-abcdef-x"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in netns.remove_stale()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    assert name not in netns.list_namespaces()


def test_sweep_in_namespaces(tmp_path):
    out = str(tmp_path / "ns")
    cfg = runner.ExperimentConfig(out_dir=out, hosts="netns", duration_ns=2000 * MS, rate=400)
    res = runner.run(cfg)
    report.write(res)
    assert res.complete, (res.problems, res.missing)
    assert _mine() == []
    assert not [p for p in psutil.process_iter(["cmdline"])
                if any(out in a for a in (p.info["cmdline"] or []))]
    assert set(res.hosts["nodes"]) == {"source", "preprocess", "model", "postprocess", "sink"}
    assert all(v["address"].startswith("10.77.0.") for v in res.hosts["nodes"].values())
    assert res.transport["endpoints"]["model->postprocess"].startswith("tcp://10.77.0.")
    by = {s.skew_ns: s for s in res.analysis.skews}
    assert by[0].rate == 0 and by[10_000].rate == 0
    assert by[5 * MS].rate > 0.9
    for s in res.analysis.skews:
        assert tracks_prediction(s), (s.skew_ns, s.rate, s.predicted_rate, s.rate_error_sd)
        assert s.correct == s.sent > 0
