"""scripts/kafka and skewd.kafkabroker: a real broker fetched with Maven,
started, restarted and always stopped."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from skewd import kafkabroker
from skewd.errors import HostError, PeerError, UsageError

SCRIPT = kafkabroker.script_path()
needs_broker = pytest.mark.skipif(kafkabroker.missing_tools() is not None,
                                  reason=f"{kafkabroker.missing_tools()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    return not _alive(pid)


# --- without a broker -------------------------------------------------------------

@pytest.mark.parametrize("good", ["127.0.0.1:9092", "kafka.example:1", "a:9092,b:9093", "[::1]:9092"])
def test_check_bootstrap_accepts(good):
    assert kafkabroker.check_bootstrap(good) == good


@pytest.mark.parametrize("bad", ["127.0.0.1", ":9092", "host:", "host:port", "host:0", "h:70000", "a:1,b",
                                 "0:²", "h:١٢"])  # digits int() takes or refuses
def test_check_bootstrap_rejects_naming_it(bad):
    with pytest.raises(UsageError, match="HOST:PORT"):
        kafkabroker.check_bootstrap(bad)


@given(st.text(max_size=30))
def test_check_bootstrap_never_crashes(text):
    try:
        kafkabroker.check_bootstrap(text)
    except UsageError:
        pass


def _tool_path(tmp_path, leave_out):
    """A PATH holding only the tools the script uses, less `leave_out`."""
    b = tmp_path / "bin"
    b.mkdir()
    for tool in ["bash", "dirname", "sed", "mkdir", "flock", "cat", "ls", "rm", "mv", "touch",
                 "tail", "tr", "grep", "python3", "setsid", "sleep", "seq", "java", "mvn"]:
        found = shutil.which(tool)
        if tool not in leave_out and found:
            (b / tool).symlink_to(found)
    return str(b)


@pytest.mark.parametrize("tool,cmd,advice", [
    ("mvn", "fetch", "install Apache Maven"),
    ("java", "start", "install a Java 17"),
])
def test_missing_tool_says_what_to_install(tmp_path, tool, cmd, advice):
    env = dict(os.environ, PATH=_tool_path(tmp_path, {tool}),
               SKEWD_KAFKA_CACHE=str(tmp_path / "cache"))
    r = subprocess.run(["bash", str(SCRIPT), cmd, *(["--dir", str(tmp_path / "d")] if cmd == "start" else [])],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert advice in r.stderr, r.stderr


def test_script_usage_and_version():
    r = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "scripts/kafka start" in r.stderr
    v = kafkabroker.version()
    assert v.count(".") == 2 and all(p.isdigit() for p in v.split("."))


def test_unknown_option_is_refused(tmp_path):
    r = subprocess.run([str(SCRIPT), "stop", "--dir", str(tmp_path), "--bogus"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "unknown option --bogus" in r.stderr


def test_script_outside_a_checkout_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SKEWD_KAFKA_SCRIPT", str(tmp_path / "nope"))
    with pytest.raises(HostError, match="--bootstrap HOST:PORT"):
        kafkabroker.script_path()


def test_unreachable_broker_is_a_peer_error():
    with pytest.raises(PeerError, match="127.0.0.1:1 did not answer"):
        kafkabroker.wait_answers("127.0.0.1:1", timeout_s=1.0)


# --- with real brokers ----------------------------------------------------------------

@needs_broker
def test_fetch_gives_the_pinned_broker_jars():
    libs = kafkabroker.fetch()
    v = kafkabroker.version()
    assert (libs / f"kafka_2.13-{v}.jar").is_file()
    assert (libs / f"kafka-clients-{v}.jar").is_file()
    assert any(p.name.startswith("scala-library") for p in libs.iterdir())


@needs_broker
def test_session_broker_answers_and_restarts_on_the_same_port(kafka_broker):
    b = kafka_broker
    assert b.bootstrap.startswith("127.0.0.1:")
    info = kafkabroker.wait_answers(b.bootstrap, timeout_s=10)
    assert info["brokers"] == 1
    cfg = (b.directory / "server.properties").read_text()
    assert "group.initial.rebalance.delay.ms=0" in cfg
    assert "process.roles=broker,controller" in cfg
    pid = b.pid()
    stopped, again = b.restart(down_s=0.5)
    assert again - stopped >= 0.5
    assert _wait_gone(pid, 5), "the old broker process still runs"
    assert b.pid() != pid and b.running()
    assert kafkabroker.wait_answers(b.bootstrap, timeout_s=10)["brokers"] == 1


@needs_broker
def test_local_broker_always_stops_and_deletes_its_data(tmp_path):
    d = tmp_path / "k"
    with pytest.raises(RuntimeError):
        with kafkabroker.local_broker(d) as b:
            pid = b.pid()
            assert _alive(pid) and (d / "data" / "meta.properties").is_file()
            raise RuntimeError("a test failing inside the block")
    assert _wait_gone(pid, 5)
    assert not d.exists()
    r = subprocess.run([str(SCRIPT), "status", "--dir", str(d)], capture_output=True, text=True)
    assert r.returncode == 1


@needs_broker
def test_broker_stops_when_its_owner_is_killed(tmp_path):
    """A process killed outright cannot clean up: the script's watcher does."""
    d = tmp_path / "k"
    code = ("import sys, time\nfrom skewd.kafkabroker import KafkaBroker\n"
            f"b = KafkaBroker({str(d)!r})\nb.start()\nprint(b.pid(), flush=True)\ntime.sleep(300)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        line = child.stdout.readline()
        assert line.strip().isdigit(), "the child did not start a broker"
        pid = int(line)
        assert _alive(pid)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert _wait_gone(pid, 20), "the broker outlived its killed owner"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        subprocess.run([str(SCRIPT), "stop", "--dir", str(d), "--clean"], capture_output=True)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
