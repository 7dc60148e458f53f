"""`skewd experiment` on the command line: flags, messages, output."""
import json
import os
import socket

import pytest

from skewd import cli


def _run(capsys, *argv):
    rc = cli.main(["experiment", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("argv,msg", [
    (["--skew-stage", "gpu"], "stage 'gpu' does not exist"),
    (["--skews", "0,10xs"], "unknown unit 'xs'"),
    (["--skews", "0,5"], "has no unit"),
    (["--duration", "3"], "has no unit"),
    (["--rate", "fast"], "--rate 'fast'"),
    (["--rate", "-4"], "--rate -4"),
    (["--drift", "100"], "needs a unit"),
    (["--transport", "pigeon"], "transport 'pigeon' is not available; this skewd has: "),
    (["--hosts", "cloud"], "--hosts 'cloud'"),
    (["--port", "http"], "--port 'http' is not a whole number"),
    (["--slot", "1ms"], "--slot must be at least 20ms"),
    (["--cpus", "model"], "write STAGE=CPUS"),
    (["--cpus", "gpu=1"], "stage 'gpu' does not exist"),
    (["--cpus", "model=x"], "CPUs are numbers"),
    (["--cpus", "model=3-1"], "3-1 is not a CPU range"),
    (["--cpus", "model=1;model=0"], "names model twice"),
    (["--cpus", "model=4096"], "CPU 4096 is not one of this host's"),
])
def test_bad_input_gets_a_clear_message(capsys, tmp_path, argv, msg):
    rc, out, err = _run(capsys, "--out", str(tmp_path / "o"), *argv)
    assert rc == 2
    assert msg in err, err
    assert err.startswith("skewd experiment: error: ")
    assert not os.path.exists(tmp_path / "o")


def test_port_in_use(capsys, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        rc, out, err = _run(capsys, "--out", str(tmp_path / "o"), "--port", str(port),
                            "--skews", "0", "--duration", "1s")
    finally:
        s.close()
    assert rc == 2
    assert f"port {port} on 127.0.0.1 is in use" in err


def test_short_run_prints_the_table_and_points_at_the_report(capsys, tmp_path):
    out = str(tmp_path / "o")
    rc, text, err = _run(capsys, "--out", out, "--skews", "0,2ms", "--duration", "1s",
                         "--rate", "300")
    assert rc == 0, err
    assert "negative spans" in text and "predicted" in text
    assert f"report: {out}/report.html" in text
    res = json.load(open(os.path.join(out, "results.json")))
    assert [s["skew_ns"] for s in res["analysis"]["skews"]] == [0, 2_000_000]
    # daemons run by default and measure the model's offset at each skew
    assert abs(res["analysis"]["skews"][1]["daemon_offset_ns"] - 2_000_000) < 100_000
    assert res["complete"] is True
    # a second run into the same directory replaces the first one's files
    rc, text, err = _run(capsys, "--out", out, "--skews", "0", "--duration", "500ms",
                         "--json", "--no-daemons")
    assert rc == 0, err
    assert json.loads(text)["config"]["skews_ns"] == [0]
    assert json.loads(text)["analysis"]["skews"][0]["daemon_offset_ns"] is None
    assert not os.path.exists(os.path.join(out, "rate_vs_skew.png"))


def test_a_node_that_dies_exits_1_with_the_report(capsys, tmp_path):
    out = str(tmp_path / "o")
    rc, text, err = _run(capsys, "--out", out, "--skews", "0,1ms", "--duration", "2s",
                         "--fault", "postprocess:after=300")
    assert rc == 1
    assert "INCOMPLETE RUN" in text and "node postprocess exited" in text
    assert "the run is incomplete" in err
    assert os.path.exists(os.path.join(out, "report.html"))


def test_stages_run_on_the_cpus_they_are_pinned_to(capsys, tmp_path):
    out = str(tmp_path / "o")
    usable = sorted(os.sched_getaffinity(0))
    last, rest = usable[-1], usable[:-1] or usable
    rc, text, err = _run(capsys, "--out", out, "--skews", "0", "--duration", "500ms",
                         "--no-daemons", "--json",
                         "--cpus", f"model={last};rest={','.join(map(str, rest))}")
    assert rc == 0, err
    res = json.loads(text)
    nodes = {n["node"]: n for n in res["nodes"]}
    assert nodes["model"]["cpus"] == [last]
    for s in ("source", "preprocess", "postprocess", "sink"):
        assert nodes[s]["cpus"] == rest
    # every node reports what its tracer recorded and what draining it cost
    for n in nodes.values():
        assert n["tracing"]["spans"] > 0 and n["tracing"]["dropped"] == 0
        assert 0 < n["tracing"]["drain_cpu_s"] < 5
    assert res["complete"] is True
