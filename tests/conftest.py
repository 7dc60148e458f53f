"""Shared fixtures. Every test gets its own clock-state directory, so no test
touches /dev/shm/skewd or another test's pages."""
import os
import shutil
import subprocess

import pytest


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    d = tmp_path / "state"
    d.mkdir()
    monkeypatch.setenv("SKEWD_STATE_DIR", str(d))
    return str(d)


def processes_of(out_dir: str) -> list:
    """Processes still running from an experiment run (stages and daemons
    name its out dir in their argv)."""
    import psutil
    left = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(out_dir in a for a in (p.info["cmdline"] or [])):
                left.append(p)
        except psutil.Error:
            pass
    return left


def tracks_prediction(s, pp: float = 0.05) -> bool:
    """A skew's measured violation rate is its prediction's within 5 points,
    or within three standard errors of sampling where a short run counts too
    few messages for 5 points to mean anything (600 messages a side at a
    30 % rate: one standard error is 2.6 points)."""
    return abs(s.rate - s.predicted_rate) <= max(pp, 3 * (s.rate_error_sd or 0.0))


def have_root() -> bool:
    return os.geteuid() == 0


def have_netns() -> bool:
    """True when this process can create network namespaces (root and ip)."""
    if not have_root() or shutil.which("ip") is None:
        return False
    probe = f"skwprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if r.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return True


requires_root = pytest.mark.skipif(not have_root(), reason="needs root")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """One real Kafka broker (scripts/kafka: jars fetched with Maven once,
    KRaft, 127.0.0.1) shared by the Kafka tests; stopped and its data deleted
    at the end of the session, even after failures."""
    from skewd.kafkabroker import local_broker, missing_tools
    why = missing_tools()
    if why:
        pytest.skip(f"no local Kafka broker: {why}")
    with local_broker(tmp_path_factory.mktemp("kafka") / "broker") as broker:
        yield broker
