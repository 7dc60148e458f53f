"""A local Apache Kafka broker for experiments and tests, run by the
project's scripts/kafka (single node, KRaft, 127.0.0.1, a free port).

    with local_broker() as broker:
        run_something(bootstrap=broker.bootstrap)
        broker.restart(down_s=2.0)     # same port, same data

The broker is always stopped and its data directory deleted when the block
ends, whatever ends it; if this process is killed outright, the script's
watcher stops the broker when it sees this process gone.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from skewd.errors import HostError, PeerError, UsageError

log = logging.getLogger(__name__)
#: librdkafka's own log lines go to Python logging, not straight to stderr
_quiet = logging.getLogger("skewd.kafka.client")

#: seconds a start may take (a cold start formats storage and warms a JVM)
START_TIMEOUT_S = 120.0


def script_path() -> Path:
    """scripts/kafka: from $SKEWD_KAFKA_SCRIPT, else the source tree's."""
    env = os.environ.get("SKEWD_KAFKA_SCRIPT")
    if env:
        p = Path(env)
    else:
        p = Path(__file__).resolve().parents[2] / "scripts" / "kafka"
    if not p.is_file():
        raise HostError(
            f"the Kafka broker script is not at {p}: run from a skewd source checkout, "
            "or set SKEWD_KAFKA_SCRIPT to its scripts/kafka, or give --bootstrap HOST:PORT "
            "for a broker of your own")
    return p


def _run(args: list[str], timeout_s: float) -> str:
    cmd = [str(script_path()), *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HostError(f"`scripts/kafka {' '.join(args)}` took more than {timeout_s:.0f}s") from None
    if r.returncode != 0:
        msg = r.stderr.strip().splitlines()
        # the script's own last line says what went wrong and what to install
        last = next((m for m in reversed(msg) if m.startswith("kafka: ")), None)
        detail = last[len("kafka: "):] if last else (r.stderr.strip()[-2000:] or f"exit {r.returncode}")
        if last and "log above" in last:
            # the log is the only clue to what the JVM refused: keep its end
            tail = [m for m in msg if not m.startswith("kafka: ")][-15:]
            detail += ":\n  " + "\n  ".join(tail)
        raise HostError(f"Kafka broker: {detail}")
    return r.stdout.strip()


def missing_tools() -> str | None:
    """Why a local broker cannot run here (no Java, or no Maven and no cached
    jars), or None when it can."""
    if shutil.which("java") is None:
        return "no java: install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)"
    if shutil.which("mvn") is None:
        try:
            fetch(timeout_s=30.0)   # the jars may already be cached
        except HostError:
            return "no mvn: install Apache Maven to fetch the broker (Debian: apt-get install maven)"
    return None


def fetch(timeout_s: float = 600.0) -> Path:
    """Fetch the broker's jars (once; cached). Returns their directory."""
    return Path(_run(["fetch"], timeout_s).splitlines()[-1])


def version() -> str:
    return _run(["version"], 10.0)


def check_bootstrap(bootstrap: str) -> str:
    """HOST:PORT as given to --bootstrap, checked; a comma list is allowed."""
    for part in bootstrap.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not (port.isascii() and port.isdigit()) \
                or not 0 < int(port) < 65536:
            raise UsageError(f"bootstrap {bootstrap!r}: {part.strip()!r} is not HOST:PORT")
    return bootstrap


def wait_answers(bootstrap: str, timeout_s: float = 30.0) -> dict:
    """Block until the broker at `bootstrap` answers a metadata request;
    returns {"brokers": n, "topics": n}. Raises PeerError naming it if not."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet})
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            md = admin.list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            if md.brokers:
                return {"brokers": len(md.brokers), "topics": len(md.topics)}
        except KafkaException as e:
            last = e
        time.sleep(0.2)
    why = f" ({kafka_error_text(last)})" if last else ""
    raise PeerError(f"Kafka broker {bootstrap} did not answer within {timeout_s:.0f}s{why}")


def kafka_error_text(e: BaseException) -> str:
    """The readable part of a confluent_kafka exception."""
    arg = e.args[0] if e.args else None
    return arg.str() if hasattr(arg, "str") else str(e)


class KafkaBroker:
    """A broker started by scripts/kafka in its own directory."""

    def __init__(self, directory: Path, heap: str = "512m"):
        self.directory = Path(directory)
        self.heap = heap
        self.bootstrap: str | None = None
        #: (stopped_at, started_again_at) in time.time() seconds, per restart
        self.restarts: list[tuple[float, float]] = []

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        out = _run(["start", "--dir", str(self.directory), "--heap", self.heap,
                    "--owner", str(os.getpid())], timeout_s)
        self.bootstrap = out.splitlines()[-1]
        wait_answers(self.bootstrap, timeout_s=30.0)
        return self.bootstrap

    def stop(self, clean: bool = False) -> None:
        args = ["stop", "--dir", str(self.directory)] + (["--clean"] if clean else [])
        _run(args, 60.0)

    def running(self) -> bool:
        try:
            _run(["status", "--dir", str(self.directory)], 10.0)
            return True
        except HostError:
            return False

    def pid(self) -> int | None:
        try:
            return int((self.directory / "broker.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def restart(self, down_s: float = 0.0) -> tuple[float, float]:
        """Stop cleanly, stay down `down_s`, start again on the same port and
        data. Returns (stopped_at, answering_again_at) as time.time()."""
        before = self.bootstrap
        self.stop()
        stopped = time.time()
        if down_s > 0:
            time.sleep(down_s)
        self.start()
        again = time.time()
        if self.bootstrap != before:
            raise HostError(f"the broker came back on {self.bootstrap}, not {before}")
        self.restarts.append((stopped, again))
        return stopped, again

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.directory / "broker.log").read_text(
                errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextmanager
def local_broker(directory: str | os.PathLike | None = None, *, heap: str = "512m",
                 timeout_s: float = START_TIMEOUT_S) -> Iterator[KafkaBroker]:
    """Start a broker for the duration of the block; always stop it and
    delete its data. `directory` (created, then deleted) defaults to a new
    temporary one."""
    made = directory is None
    d = Path(tempfile.mkdtemp(prefix="skewd-kafka-")) if made else Path(directory)
    broker = KafkaBroker(d, heap=heap)
    try:
        broker.start(timeout_s=timeout_s)
        log.info("Kafka broker %s up (%s)", broker.bootstrap, d)
        yield broker
    finally:
        try:
            broker.stop(clean=True)
        except HostError as e:
            log.warning("stopping the Kafka broker in %s: %s", d, e)
            pid = broker.pid()
            if pid:
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
        shutil.rmtree(d, ignore_errors=True)
