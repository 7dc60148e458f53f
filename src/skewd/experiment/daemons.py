"""A `skewd daemon` beside every node of an experiment run (--daemons, the
default).

Each node's daemon is a real `skewd daemon` process with a TOML config the
runner writes: it listens on the node's address (a free loopback port each
with local hosts; port 3190 on the node's own namespace address with
--hosts netns, started inside that namespace), keeps its clock-state page in
the run's private SKEWD_STATE_DIR, and logs every exchange and estimate into
the run's `logs/` beside the span logs. Sharing the state directory is what
makes the measurement honest: the skewed stage's daemon answers probes with
stamps on that node's skewed clock, read from the very page the runner
writes the injection into, so what the other daemons measure is exactly what
was injected, slot by slot.

Topology, to keep the daemons' cost small on a busy host: every node probes
the reference (the source unless the skew is injected there; its offset to
the reference goes into the node's page, so spans carry est_offset_ns), and
every node probes the skewed stage. Loops of three (reference, skewed stage,
another node) close, so the daemons' transitivity check has something to check.

Daemons are always stopped: SIGTERM (they flush their offset logs), then
SIGKILL after a grace period, also when the run fails.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from skewd import clocks
from skewd.errors import HostError, SkewdError, UsageError
from skewd.experiment.child import ChildProcess
from skewd.units import format_duration

NETNS_PORT = 3190


def default_reference(skew_stage: str, stages: tuple[str, ...]) -> str:
    """The source, unless the skew is injected there (then the sink)."""
    return stages[0] if skew_stage != stages[0] else stages[-1]


def check_reference(reference: str, skew_stage: str, stages: tuple[str, ...]) -> str:
    if reference not in stages:
        raise UsageError(f"--daemon-reference {reference!r} is not a stage: the pipeline's "
                         f"stages are {', '.join(stages)}")
    if reference == skew_stage:
        raise UsageError(f"--daemon-reference {reference!r} is the stage whose clock is skewed; "
                         f"the daemons measure against an unskewed one")
    return reference


@dataclass(frozen=True)
class DaemonSpec:
    """One node's daemon: where it listens, whom it probes, its reference."""
    node: str
    host: str
    port: int
    peers: tuple[str, ...]
    reference: str | None


def plan(stages: tuple[str, ...], skew_stage: str, reference: str,
         addresses: dict[str, tuple[str, int]]) -> list[DaemonSpec]:
    """Every node probes the reference and the skewed stage (not itself)."""
    out = []
    for node in stages:
        peers = tuple(p for p in dict.fromkeys((reference, skew_stage)) if p != node)
        host, port = addresses[node]
        out.append(DaemonSpec(node, host, port, peers,
                              reference if node != reference else None))
    return out


def free_udp_ports(host: str, n: int) -> list[int]:
    """n UDP ports free on host right now (held together while picked, so
    they differ; a process that grabs one before the daemon binds it makes
    that daemon fail to start, which the run reports)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def config_text(spec: DaemonSpec, addresses: dict[str, tuple[str, int]], *, interval_ns: int,
                log_dir: str, control_socket: str, state_dir: str) -> str:
    from skewd.config import render
    top = {"node": spec.node, "listen": f"{spec.host}:{spec.port}",
           "probe_interval": f"{interval_ns}ns", "control_socket": control_socket,
           "state_dir": state_dir, "unreachable_after": "2s"}
    if spec.reference:
        top["reference"] = spec.reference
    peers = [(p, "%s:%d" % addresses[p]) for p in spec.peers]
    return render(top, peers, {"log": {"dir": log_dir, "flush": "500ms"},
                               "metrics": {"enabled": False}},
                  comment=f"written by skewd experiment for node {spec.node}")


class _Proc(ChildProcess):
    TAIL = 300

    def __init__(self, spec: DaemonSpec, argv: list[str], env: dict, config: str,
                 stderr_path: str, control_socket: str):
        super().__init__(argv, env, stderr_path, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL)
        self.spec = spec
        self.config = config
        self.control_socket = control_socket
        self.up = False

    def error_of(self, line: str) -> str | None:
        # the daemon logs its errors with the level in the line
        return line.strip() if line.startswith("error:") or " ERROR " in line else None


class Daemons:
    """The run's daemons: start(), wait_up(), dead(), stop(); stop() is safe
    to call any number of times and always leaves no daemon running."""

    def __init__(self, stages: tuple[str, ...], skew_stage: str, reference: str, *,
                 interval_ns: int, addresses: dict[str, str], local: bool, log_dir: str,
                 status_dir: str, state_dir: str, env: dict, prefix=None):
        self.reference = reference
        self.interval_ns = interval_ns
        self.log_dir = log_dir
        self.status_dir = status_dir
        self.state_dir = state_dir
        if local:
            ports = free_udp_ports("127.0.0.1", len(stages))
            self.addresses = {s: ("127.0.0.1", p) for s, p in zip(stages, ports)}
        else:
            self.addresses = {s: (addresses[s], NETNS_PORT) for s in stages}
        self.specs = plan(stages, skew_stage, reference, self.addresses)
        self.prefix = prefix or (lambda node: [])
        # the daemons must not talk to a systemd that started the runner
        self.env = {k: v for k, v in env.items()
                    if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        self.env["SKEWD_STATE_DIR"] = state_dir
        self.procs: dict[str, _Proc] = {}
        #: node -> why its daemon is gone; those that never came up
        self.failed: dict[str, str] = {}
        self.start_failures: dict[str, str] = {}
        #: node -> daemons that run but were not measuring when the run began
        self.late: dict[str, str] = {}
        self.stamps: dict[str, str] = {}

    def start(self) -> None:
        for spec in self.specs:
            conf = os.path.join(self.status_dir, f"{spec.node}.daemon.toml")
            sock = os.path.join(self.state_dir, f"{spec.node}.sock")
            with open(conf, "w") as f:
                f.write(config_text(spec, self.addresses, interval_ns=self.interval_ns,
                                    log_dir=self.log_dir, control_socket=sock,
                                    state_dir=self.state_dir))
            argv = [*self.prefix(spec.node), sys.executable, "-m", "skewd.cli", "daemon",
                    "--config", conf]
            self.procs[spec.node] = _Proc(spec, argv, self.env, conf,
                                          os.path.join(self.status_dir,
                                                       f"{spec.node}.daemon.stderr"), sock)

    def _status(self, p: _Proc) -> dict | None:
        from skewd import control
        try:
            return control.request(p.control_socket, {"cmd": "status"}, timeout=2.0)["status"]
        except (SkewdError, OSError, KeyError):
            return None

    def wait_up(self, timeout_s: float) -> None:
        """Wait until every daemon measures (or has exited: recorded in
        `failed`, the run goes on without it)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            waiting = 0
            for node, p in self.procs.items():
                if p.up or node in self.failed:
                    continue
                if p.proc.poll() is not None:
                    self._record_exit(p)
                    continue
                st = self._status(p)
                if st is not None and st.get("ready"):
                    p.up = True
                    self.stamps[node] = (st.get("stamps") or {}).get("mode") or "?"
                else:
                    waiting += 1
            if not waiting:
                break
            time.sleep(0.05)
        else:
            self._late(timeout_s)
        self.start_failures = dict(self.failed)

    def _late(self, timeout_s: float) -> None:
        for node, p in self.procs.items():
            if not p.up and node not in self.failed:
                self.late[node] = f"was not measuring yet {timeout_s:.0f}s after it started"

    def _record_exit(self, p: _Proc) -> None:
        if p.died_ns is None:
            p.died_ns = clocks.realtime_ns()
        why = p.stderr_tail()
        self.failed.setdefault(p.spec.node, f"exited with status {p.proc.returncode}"
                               + (f" ({why})" if why else ""))

    def dead(self) -> list[str]:
        """Daemons that exited since the last call (each reported once)."""
        out = []
        for node, p in self.procs.items():
            if p.died_ns is None and p.proc.poll() is not None:
                self._record_exit(p)
                out.append(node)
        return out

    def cpu_seconds(self) -> dict[str, float]:
        import psutil
        out = {}
        for node, p in self.procs.items():
            try:
                t = psutil.Process(p.proc.pid).cpu_times()
                out[node] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def stop(self, grace_s: float = 5.0) -> list[str]:
        """SIGTERM every daemon, SIGKILL what is left after grace_s; returns
        the nodes whose daemon had to be killed."""
        for p in self.procs.values():
            p.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.proc.poll() is None
                                                  for p in self.procs.values()):
            time.sleep(0.02)
        killed = []
        for p in self.procs.values():
            if p.proc.poll() is None:
                p.killed = True
                killed.append(p.spec.node)
                p.signal(signal.SIGKILL)
        for p in self.procs.values():
            try:
                p.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL failed
                raise HostError(f"the daemon of node {p.spec.node} (pid {p.proc.pid}) "
                                f"survived SIGKILL") from None
            p.close_stderr()
        return killed

    def running(self) -> list[str]:
        return [n for n in self.procs if n not in self.failed]

    def describe(self) -> dict:
        return {"reference": self.reference,
                "probe_interval": format_duration(self.interval_ns),
                "nodes": {s.node: {"listen": f"{s.host}:{s.port}", "peers": list(s.peers),
                                   "reference": s.reference,
                                   "stamps": self.stamps.get(s.node),
                                   "exit_code": self.procs[s.node].proc.returncode
                                   if s.node in self.procs else None,
                                   "killed": self.procs[s.node].killed
                                   if s.node in self.procs else False,
                                   "failed": self.failed.get(s.node)}
                          for s in self.specs}}
