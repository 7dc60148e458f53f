"""Run the pipeline with skew injected at one stage and measure what its
traces say.

One pipeline session per run: the five stages start as separate processes
(plain processes, or each in its own network namespace with --hosts netns),
the source sends for the whole plan, and the runner moves the skewed stage's
injected offset through the plan by writing its clock-state page:

    warmup | sweep: rounds of slots, every skew once per round (skew 0
           |        twice) in a seeded shuffled order, each held for `slot`
           | drift: a ramp, offset = drift·(t − start), in slots that
           |        alternate with skew-0 slots

Interleaving the skews in short slots means every skew, and the skew-0
baseline the prediction comes from, sees the same machine load. Each change
is written one slot ahead as the page's "next" segment, so it takes effect at
its planned instant, not when the runner gets round to it.

A node that dies ends the run: the others are stopped (SIGTERM, so they flush
their span logs), what was recorded is analysed and the result says what is
missing. Every process and namespace the run made is gone when run()
returns, whatever happened.
"""
from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace

from skewd import clocks
from skewd.errors import HostError, SkewdError, UsageError
from skewd.experiment import DEFAULT_SKEWS, transport_names
from skewd.experiment.analysis import Analysis, Phase, analyse
from skewd.experiment.child import ChildProcess
from skewd.experiment.stages import EDGES, STAGES, NodeConfig
from skewd.experiment.transports.base import TransportSpec
from skewd.statepage import NO_SEGMENT, StatePage
from skewd.units import format_duration, parse_duration

HOSTS = ("local", "netns")
OUT_FILES = ("results.json", "report.html", "rate_vs_skew.png", "throughput_vs_skew.png",
             "drift_rate.png")
OUT_DIRS = ("logs", "nodes")
#: the longest the end of a run waits for the stages to drain and the sink
#: to check its outputs, as long as they make progress
DRAIN_MAX_S = 600.0


# --- parsing ------------------------------------------------------------------

def parse_skews(text: str) -> tuple[int, ...]:
    """'0,10us,1ms' -> (0, 10000, 1000000). A bare 0 needs no unit."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise UsageError(f"--skews {text!r} has an empty item: separate skews with "
                             f"commas, e.g. {DEFAULT_SKEWS}")
        try:
            v = 0 if part.lstrip("+-") in ("0", "0.0") else parse_duration(part)
        except UsageError as e:
            raise UsageError(f"--skews: {e}") from None
        if v in out:
            raise UsageError(f"--skews lists {part} twice")
        out.append(v)
    return tuple(out)


def parse_stage(name: str) -> str:
    if name not in STAGES:
        raise UsageError(f"stage {name!r} does not exist: the pipeline's stages are "
                         f"{', '.join(STAGES)}")
    return name


def parse_transport(name: str) -> str:
    names = transport_names()
    if name not in names:
        raise UsageError(f"transport {name!r} is not available; this skewd has: "
                         f"{', '.join(names)}")
    return name


def _cpu_list(stage: str, text: str) -> tuple[int, ...]:
    """'0', '0-3', '0,2' -> CPU numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise UsageError(f"--cpus {stage}={text!r}: CPUs are numbers, ranges (0-3) or "
                             f"both, comma-separated") from None
        if a < 0 or b < a:
            raise UsageError(f"--cpus {stage}={text!r}: {part.strip()} is not a CPU range")
        cpus.update(range(a, b + 1))
    return tuple(sorted(cpus))


def parse_cpus(text: str) -> dict[str, tuple[int, ...]]:
    """'model=1;rest=0' -> {'model': (1,), 'rest': (0,)}: the CPUs each stage
    (its process and every thread in it) may run on; 'rest' covers the stages
    not named. The stages and CPUs are checked by ExperimentConfig.validate."""
    out: dict[str, tuple[int, ...]] = {}
    for item in str(text).split(";"):
        stage, eq, cpus = item.strip().partition("=")
        stage = stage.strip()
        if not eq or not stage or not cpus.strip():
            raise UsageError(f"--cpus {text!r}: write STAGE=CPUS[;STAGE=CPUS...], e.g. "
                             f"model=1;rest=0")
        if stage in out:
            raise UsageError(f"--cpus names {stage} twice")
        out[stage] = _cpu_list(stage, cpus)
    return out


def cpus_of(cpus: dict, stage: str) -> tuple[int, ...] | None:
    """The CPUs a stage is pinned to under `cpus` (None: not pinned)."""
    return cpus.get(stage) or cpus.get("rest") or None


# --- configuration and results ---------------------------------------------------

@dataclass(frozen=True)
class ExperimentConfig:
    out_dir: str
    transport: str = "zmq"
    skew_stage: str = "model"
    skews_ns: tuple[int, ...] | None = parse_skews(DEFAULT_SKEWS)  # None: no sweep
    duration_ns: int = 3_000_000_000      # per skew (sweep) / the ramp (drift)
    rate: float = 400.0                   # requests per second; 0: as fast as taken
    drift_ppb: float | None = None
    hosts: str = "local"
    port: int = 0
    slot_ns: int = 20_000_000
    warmup_ns: int = 1_000_000_000
    seed: int = 1
    instrumented: bool = True
    transport_settings: dict = field(default_factory=dict)
    drift_windows: int = 10
    fault: str | None = None              # testing: "NODE:after=N" kills NODE
    #: a `skewd daemon` beside every node (experiment/daemons.py), measuring
    #: the skewed stage against `daemon_reference` (None: the source, or the
    #: sink when the source is skewed) every `daemon_interval_ns`
    daemons: bool = True
    daemon_reference: str | None = None
    daemon_interval_ns: int = 100_000_000
    #: CPUs per stage (parse_cpus): pin the bottleneck stage to a core of its
    #: own, as on a host of its own; empty: the scheduler places every stage
    cpus: dict = field(default_factory=dict)
    #: instrumented runs: trace only the requests the source sends in every
    #: other window of this length (0: all), for comparing traced and
    #: untraced windows in the same processes (bench/experiment.py)
    trace_windows_ns: int = 0

    def validate(self) -> "ExperimentConfig":
        parse_stage(self.skew_stage)
        parse_transport(self.transport)
        if self.hosts not in HOSTS:
            raise UsageError(f"--hosts {self.hosts!r}: use one of {', '.join(HOSTS)}")
        if self.skews_ns is None and self.drift_ppb is None:
            raise UsageError("nothing to run: give --skews, --drift or both")
        if self.duration_ns <= 0:
            raise UsageError("--duration must be positive")
        if self.slot_ns < 20_000_000:
            raise UsageError("--slot must be at least 20ms (each change of skew is "
                             "written one slot ahead by the runner)")
        if self.slot_ns > self.duration_ns:
            raise UsageError("--slot is longer than --duration")
        if not (self.rate >= 0) or self.rate > 100_000:
            raise UsageError(f"--rate {self.rate:g}: give requests per second, at most "
                             f"100000 (or max: as fast as the pipeline takes them)")
        if self.drift_ppb is not None and self.drift_ppb == 0:
            raise UsageError("--drift 0 injects nothing; give e.g. 100ppm")
        if self.drift_ppb is not None and abs(self.drift_ppb) > 1e8:
            raise UsageError("--drift above 100000ppm (10 %) is not a clock")
        if self.skews_ns is not None:
            for s in self.skews_ns:
                if abs(s) > 10_000_000_000:
                    raise UsageError(f"skew {format_duration(s)} is beyond ±10s")
        if self.fault is not None:
            _parse_fault(self.fault)
        if self.daemon_reference is not None:
            from skewd.experiment.daemons import check_reference
            check_reference(self.daemon_reference, self.skew_stage, STAGES)
        if not 1_000_000 <= self.daemon_interval_ns <= 10_000_000_000:
            raise UsageError("--daemon-interval must lie between 1ms and 10s")
        if self.trace_windows_ns and (self.trace_windows_ns < 0 or not self.instrumented):
            raise UsageError("trace windows need a positive length and an instrumented run")
        if self.cpus:
            # the host's CPUs (a stage may be pinned off the runner's own);
            # one a cgroup forbids fails in the stage, which says so
            n = os.cpu_count() or 1
            for stage, cpus in self.cpus.items():
                if stage != "rest":
                    parse_stage(stage)
                bad = [c for c in cpus if c >= n]
                if not cpus or bad:
                    raise UsageError(f"--cpus {stage}: CPU {', '.join(map(str, bad)) or '(none)'}"
                                     f" is not one of this host's (0-{n - 1})")
        return self

    def reference(self) -> str:
        """The daemons' reference node."""
        from skewd.experiment.daemons import default_reference
        return self.daemon_reference or default_reference(self.skew_stage, STAGES)


def _parse_fault(text: str) -> tuple[str, int]:
    node, _, rest = text.partition(":")
    if node not in STAGES or not rest.startswith("after="):
        raise UsageError(f"fault {text!r}: write NODE:after=N (a stage and a count)")
    try:
        return node, int(rest[6:])
    except ValueError:
        raise UsageError(f"fault {text!r}: N must be a whole number") from None


@dataclass(frozen=True)
class NodeOutcome:
    node: str
    exit_code: int | None
    end: str                               # eos | terminated | error | died | killed
    received: int = 0
    sent: int = 0
    error: str | None = None
    log_files: int = 0
    #: the CPUs the node ran on (when pinned) and its tracer's counts
    #: (spans, dropped, drain_cpu_s), as its status reports them
    cpus: tuple[int, ...] | None = None
    tracing: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentResult:
    config: dict
    transport: dict
    hosts: dict
    analysis: Analysis
    complete: bool
    problems: tuple[str, ...]
    missing: tuple[str, ...]
    nodes: tuple[NodeOutcome, ...]
    plan: tuple[Phase, ...]
    started_ns: int
    ended_ns: int
    out_dir: str
    files: dict = field(default_factory=dict)
    #: CPU seconds each node used from the end of the warmup to the end of
    #: the plan ("nodes_s"), over "window_s" seconds
    cpu: dict = field(default_factory=dict)
    daemon: str = "no daemons ran (--no-daemons): the offset measured by skewd's daemon is left empty"
    #: the daemons: reference, probe interval, per node its address, peers and end
    daemons: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# --- the plan -------------------------------------------------------------------------

def make_plan(cfg: ExperimentConfig, t0: int) -> list[Phase]:
    plan = [Phase("warmup", t0, t0 + cfg.warmup_ns)]
    t = plan[-1].end_ns
    if cfg.skews_ns is not None:
        skews = [s for s in cfg.skews_ns if s != 0]
        # skew 0 is the baseline the prediction comes from: it gets two slots a
        # round, so the predicted rates carry less sampling noise than the measured
        rounds = max(1, round(cfg.duration_ns / cfg.slot_ns))
        slot = cfg.duration_ns // rounds
        rng = random.Random(cfg.seed)
        for _ in range(rounds):
            order = [0, 0] + skews
            rng.shuffle(order)
            for s in order:
                plan.append(Phase("skew", t, t + slot, s))
                t += slot
    if cfg.drift_ppb is not None:
        # the ramp, offset = drift·(t − r0), in slots that alternate with
        # skew-0 slots: the baseline is measured under the same load throughout
        r0 = t
        ppb = round(cfg.drift_ppb)
        slot = min(cfg.slot_ns, cfg.duration_ns)
        end = t + cfg.duration_ns
        on = True
        while t < end:
            e = min(end, t + slot)
            plan.append(Phase("drift", t, e, round(ppb * (t - r0) / 1e9), ppb) if on
                        else Phase("skew", t, e, 0))
            t, on = e, not on
    return plan


# --- processes ------------------------------------------------------------------------

class _Node(ChildProcess):
    def __init__(self, node: str, argv: list[str], env: dict, stderr_path: str, source: bool):
        super().__init__(argv, env, stderr_path,
                         stdin=subprocess.PIPE if source else subprocess.DEVNULL,
                         stdout=subprocess.PIPE)
        self.node = node
        self.ready = threading.Event()
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line == "READY":
                self.ready.set()
            self.lines.put(line)

    def close(self) -> None:
        for s in (self.proc.stdin, self.proc.stdout):
            if s:
                try:
                    s.close()
                except OSError:
                    pass
        self.close_stderr()


class _Supervisor:
    """Starts the nodes, and stops every one of them, whatever happens."""

    def __init__(self):
        self.nodes: dict[str, _Node] = {}

    def start(self, node: str, argv: list[str], env: dict, stderr_path: str) -> None:
        self.nodes[node] = _Node(node, argv, env, stderr_path, node == "source")

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for n in self.nodes.values():
                if n.proc.poll() is not None and not n.ready.is_set():
                    why = n.stderr_tail()
                    raise HostError(f"node {n.node} did not start: "
                                    f"{why or f'exit status {n.proc.returncode}'}")
            if all(n.ready.is_set() for n in self.nodes.values()):
                return
            time.sleep(0.02)
        late = [n.node for n in self.nodes.values() if not n.ready.is_set()]
        raise HostError(f"node(s) {', '.join(late)} not ready after {timeout_s:.0f}s")

    def go(self, t0: int, t_end: int) -> None:
        src = self.nodes["source"].proc
        src.stdin.write(f"GO {t0} {t_end}\n".encode())
        src.stdin.flush()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each live node has used so far."""
        import psutil
        out = {}
        for n in self.nodes.values():
            try:
                t = psutil.Process(n.proc.pid).cpu_times()
                out[n.node] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def dead(self) -> list[_Node]:
        out = []
        for n in self.nodes.values():
            if n.proc.poll() is not None and n.died_ns is None:
                n.died_ns = clocks.realtime_ns()
                out.append(n)
        return out

    def all_exited(self) -> bool:
        return all(n.proc.poll() is not None for n in self.nodes.values())

    def stop_all(self, grace_s: float = 5.0) -> None:
        for n in self.nodes.values():
            n.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not self.all_exited():
            time.sleep(0.02)
        for n in self.nodes.values():
            if n.proc.poll() is None:
                n.killed = True
                n.signal(signal.SIGKILL)
        for n in self.nodes.values():
            try:
                n.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL failed
                pass
            n.close()


# --- reading what the nodes left ------------------------------------------------------

def _bytes_in(directory: str, names) -> int:
    total = 0
    for name in names:
        try:
            total += os.stat(os.path.join(directory, name)).st_size
        except OSError:
            pass
    return total


def read_records(path: str):
    """An Arrow stream file written in batches; a torn tail is cut off."""
    import pyarrow as pa
    if not os.path.exists(path):
        return None
    batches, schema = [], None
    try:
        with pa.OSFile(path, "rb") as f:
            r = pa.ipc.open_stream(f)
            schema = r.schema
            while True:
                try:
                    batches.append(r.read_next_batch())
                except StopIteration:
                    break
    except (pa.ArrowInvalid, OSError, EOFError):
        pass
    if schema is None:
        return None
    return pa.Table.from_batches(batches, schema=schema)


def read_spans(log_dir: str) -> tuple:
    """(all span logs of the run or None where there are none, the warnings
    reading them gave: torn tails of killed writers and the like). The
    daemons' offset logs (offsets-*.arrow) share the directory."""
    import glob
    import warnings
    files = sorted(glob.glob(os.path.join(log_dir, "spans-*.arrow")))
    if not files:
        return None, []
    from skewd import spanlog
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = spanlog.read(files)
    return table, [str(w.message) for w in caught]


def check_outputs(outputs, seed: int):
    """The sink's check, done here on the outputs it kept (outputs.arrow)."""
    import numpy as np
    import pyarrow as pa

    from skewd.experiment import workload
    ref = workload.Reference(seed)
    ids = outputs.column("req_id").to_pylist()
    raw = outputs.column("output").to_pylist()
    ok = []
    for a in range(0, len(ids), 256):
        chunk = [workload.unpack_output(memoryview(b)) for b in raw[a:a + 256]]
        ok.extend(ref.check(ids[a:a + 256], np.stack([c[0] for c in chunk]),
                            np.stack([c[1] for c in chunk])).tolist())
    return pa.table({"req_id": outputs.column("req_id"),
                     "t_source_ns": outputs.column("t_source_ns"),
                     "t_sink_ns": outputs.column("t_sink_ns"),
                     "correct": pa.array(ok, pa.bool_())})


def _log_files(log_dir: str, node: str) -> int:
    try:
        return sum(1 for f in os.listdir(log_dir) if f.startswith(f"spans-{node}-"))
    except OSError:
        return 0


# --- the run ----------------------------------------------------------------------------

def prepare_out_dir(path: str) -> None:
    """Make `path`, or clear a previous run's output from it; refuse a
    directory holding anything else."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--out {path} exists and is not a directory")
    os.makedirs(path, exist_ok=True)
    foreign = [e for e in os.listdir(path) if e not in OUT_FILES + OUT_DIRS]
    if foreign:
        raise UsageError(f"--out {path} holds files that are not a skewd experiment's "
                         f"({', '.join(sorted(foreign)[:3])}...): give an empty or new directory")
    for e in OUT_DIRS:
        shutil.rmtree(os.path.join(path, e), ignore_errors=True)
    for e in OUT_FILES:
        if os.path.exists(os.path.join(path, e)):
            os.remove(os.path.join(path, e))


def _state_root() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def run(cfg: ExperimentConfig, progress=None) -> ExperimentResult:
    """Run the experiment; `progress(fraction)` is called as it goes."""
    import importlib
    cfg = cfg.validate()
    if cfg.hosts == "netns":
        from skewd.experiment import netns
        ok, why = netns.available()
        if not ok:
            raise HostError(why)
    prepare_out_dir(cfg.out_dir)
    logs = os.path.join(cfg.out_dir, "logs")
    status = os.path.join(cfg.out_dir, "nodes")
    os.makedirs(logs)
    os.makedirs(status)
    state = tempfile.mkdtemp(prefix="skewd-exp-", dir=_state_root())
    run_id = os.path.basename(state)[len("skewd-exp-"):]
    fault = _parse_fault(cfg.fault) if cfg.fault else None
    sup = _Supervisor()
    namespaces = None
    problems: list[str] = []
    page = None
    daemons = None
    try:
        if cfg.hosts == "netns":
            from skewd.experiment import netns
            netns.remove_stale()
            namespaces = netns.Namespaces(list(STAGES))
            addr = {s: namespaces.address(s) for s in STAGES}
        else:
            addr = {s: "127.0.0.1" for s in STAGES}
        mod = importlib.import_module(f"skewd.experiment.transports.{cfg.transport}")
        settings = dict(cfg.transport_settings)
        if cfg.rate == 0:
            # as fast as taken: short queues, so the pipeline paces the
            # source instead of queueing more than it can drain by the end
            settings = {**getattr(mod, "SATURATED_SETTINGS", {}), **settings}
        planner = getattr(mod, "plan_settings", None)
        if planner is not None:
            receivers = {e: addr[e.split("->")[1]] for e in EDGES}
            settings = {**planner(list(EDGES), receivers, cfg.port,
                                  local=cfg.hosts == "local"), **settings}
        spec = TransportSpec(cfg.transport, run_id, settings)
        env = dict(os.environ, SKEWD_STATE_DIR=state, OPENBLAS_NUM_THREADS="1",
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        page = StatePage(cfg.skew_stage, writable=True, directory=state)
        page.clear_injection()
        if cfg.daemons:
            from skewd.experiment.daemons import Daemons
            daemons = Daemons(STAGES, cfg.skew_stage, cfg.reference(),
                              interval_ns=cfg.daemon_interval_ns, addresses=addr,
                              local=namespaces is None, log_dir=logs, status_dir=status,
                              state_dir=state, env=env,
                              prefix=namespaces.exec_prefix if namespaces else None)
            daemons.start()
        for s in STAGES:
            nc = NodeConfig(node=s, stage=s, transport=spec, status_dir=status,
                            log_dir=logs if cfg.instrumented else None, seed=cfg.seed,
                            rate=cfg.rate, cpus=cpus_of(cfg.cpus, s),
                            trace_windows_ns=cfg.trace_windows_ns if s == "source" else 0,
                            fault_after=fault[1] if fault and fault[0] == s else None)
            path = os.path.join(status, f"{s}.config.json")
            with open(path, "w") as f:
                f.write(nc.to_json())
            argv = [sys.executable, "-m", "skewd.experiment.stages", path]
            if namespaces is not None:
                argv = namespaces.exec_prefix(s) + argv
            sup.start(s, argv, env, os.path.join(status, f"{s}.stderr"))
        sup.wait_ready(60.0)
        if daemons is not None:
            daemons.wait_up(30.0)

        t0 = clocks.realtime_ns() + 100_000_000
        plan = make_plan(cfg, t0)
        t_end = plan[-1].end_ns
        page.set_injection(plan[0].segment(), plan[1].segment() if len(plan) > 1 else NO_SEGMENT)
        written = 0
        late: set[int] = set()
        sup.go(t0, t_end)
        failed_at = None
        cpu0 = None
        while True:
            now = clocks.realtime_ns()
            if cpu0 is None and len(plan) > 1 and now >= plan[1].start_ns:
                cpu0 = (now, sup.cpu_seconds(), daemons.cpu_seconds() if daemons else {})
            dead = sup.dead()
            if dead:
                failed_at = now
                for n in dead:
                    why = n.stderr_tail() if n.proc.returncode not in (0, None) else ""
                    problems.append(
                        f"node {n.node} exited with status {n.proc.returncode} "
                        f"{(now - t0) / 1e9:.2f}s into the run"
                        + (f" ({why})" if why else "")
                        + "; the run was stopped and what was recorded up to then is kept")
                break
            if now >= t_end:
                break
            k = max(0, min(len(plan) - 1, _phase_at(plan, now)))
            if k > written or (k == 0 and written == 0):
                nxt = plan[k + 1].segment() if k + 1 < len(plan) else NO_SEGMENT
                page.set_injection(plan[k].segment(), nxt)
                if k + 1 < len(plan) and clocks.realtime_ns() >= plan[k + 1].start_ns:
                    late.add(k + 1)
                written = k
            if daemons is not None:
                for n in daemons.dead():
                    problems.append(f"the daemon of node {n} {daemons.failed[n]} "
                                    f"{(now - t0) / 1e9:.2f}s into the run; the run went on "
                                    f"without it")
            if progress:
                progress(min(0.99, (now - t0) / max(1, t_end - t0)))
            time.sleep(0.005)
        ended = clocks.realtime_ns()
        cpu = {}
        if cpu0 is not None:
            c1 = sup.cpu_seconds()
            cpu = {"window_s": (ended - cpu0[0]) / 1e9,
                   "nodes_s": {n: round(c1[n] - cpu0[1][n], 4)
                               for n in c1 if n in cpu0[1]}}
            if daemons is not None:
                d1 = daemons.cpu_seconds()
                cpu["daemons_s"] = {n: round(d1[n] - cpu0[2][n], 4)
                                    for n in d1 if n in cpu0[2]}
        if failed_at is None:
            # the source sends end-of-stream at t_end; every stage passes it on and exits
            # and the sink then checks every output it kept (about 240 µs
            # each: a long saturated run holds minutes of them). While its
            # record files grow it is working, and the wait goes on.
            start = time.monotonic()
            deadline = start + 15.0
            grew = -1
            while time.monotonic() < deadline and not sup.all_exited():
                dead = [n for n in sup.dead() if n.proc.returncode != 0]
                for n in dead:
                    problems.append(f"node {n.node} exited with status {n.proc.returncode} "
                                    f"while draining ({n.stderr_tail()})")
                size = _bytes_in(status, ("outputs.arrow", "sink.arrow"))
                if size != grew:
                    grew = size
                    deadline = min(max(deadline, time.monotonic() + 5.0), start + DRAIN_MAX_S)
                time.sleep(0.02)
            ended = clocks.realtime_ns()
        sup.stop_all()
        for n in sup.nodes.values():
            if n.killed:
                problems.append(f"node {n.node} did not stop when asked and was killed")
        if daemons is not None:
            for n in daemons.dead():   # died while the pipeline drained
                problems.append(f"the daemon of node {n} {daemons.failed[n]}")
            for n in daemons.stop():
                problems.append(f"the daemon of node {n} did not stop when asked and was "
                                f"killed; its last offsets are lost")
        if progress:
            progress(1.0)
        plan = [replace(p, kind="late") if i in late else p for i, p in enumerate(plan)]
        result = _finish(cfg, spec, mod, namespaces, plan, sup, logs, status, t0, ended,
                         failed_at, problems, daemons, cpu)
        if late:
            note = (f"{len(late)} of {len(plan)} slots began before the runner could write "
                    f"them (this host was busy) and were left out")
            result = replace(result, analysis=replace(
                result.analysis, notes=result.analysis.notes + (note,)))
        return result
    finally:
        sup.stop_all(grace_s=3.0)
        if daemons is not None:
            daemons.stop(grace_s=3.0)
        if page is not None:
            page.close()
        shutil.rmtree(state, ignore_errors=True)
        if namespaces is not None:
            left = namespaces.close()
            if left:
                raise HostError(f"namespaces could not be removed: {'; '.join(left)}")


def _phase_at(plan: list[Phase], t: int) -> int:
    k = 0
    for i, p in enumerate(plan):
        if p.start_ns <= t:
            k = i
    return k


def _finish(cfg, spec, mod, namespaces, plan, sup, logs, status, t0, ended, failed_at,
            problems, daemons, cpu) -> ExperimentResult:
    missing = []
    outcomes = []
    for s in STAGES:
        n = sup.nodes[s]
        st = {}
        try:
            with open(os.path.join(status, f"{s}.json")) as f:
                st = json.load(f)
        except (OSError, ValueError):
            pass
        code = n.proc.returncode
        end = st.get("end") or ("killed" if n.killed else "died")
        nfiles = _log_files(logs, s) if cfg.instrumented else 0
        extra = st.get("extra", {})
        outcomes.append(NodeOutcome(s, code, end, st.get("received", 0), st.get("sent", 0),
                                    st.get("error"), nfiles,
                                    tuple(extra["cpus"]) if extra.get("cpus") else None,
                                    extra.get("tracing", {})))
        if not st:
            missing.append(f"node {s} left no status (it did not exit cleanly); "
                           f"its last unflushed spans are lost")
        if cfg.instrumented and nfiles == 0:
            missing.append(f"node {s} left no span log")
    spans = None
    if cfg.instrumented:
        try:
            spans, warned = read_spans(logs)
            missing.extend(f"span log: {w}" for w in warned)
        except SkewdError as e:
            missing.append(f"span logs unreadable: {e}")
    source = read_records(os.path.join(status, "source.arrow"))
    sink = read_records(os.path.join(status, "sink.arrow"))
    outputs = read_records(os.path.join(status, "outputs.arrow"))
    if outputs is not None and outputs.num_rows > (sink.num_rows if sink is not None else 0):
        sink = check_outputs(outputs, cfg.seed)
        problems.append(f"the sink stopped before checking its outputs; the runner checked "
                        f"the {outputs.num_rows} it had kept with the same reference")
    if source is None:
        missing.append("the source's request records")
    if sink is None:
        missing.append("the sink's output records (correctness and latency)")
    end_ns = failed_at
    if failed_at is not None:
        for v in sorted({p.offset_ns for p in plan if p.kind == "skew"}):
            ph = [p for p in plan if p.kind == "skew" and p.offset_ns == v]
            want = sum(p.seconds for p in ph)
            got = sum(max(0.0, (min(p.end_ns, failed_at) - p.start_ns) / 1e9) for p in ph)
            if got < want - 1e-9:
                missing.append(f"skew {format_duration(v)}: {got:.2f}s of {want:.2f}s recorded")
        for p in plan:
            if p.kind == "drift" and failed_at < p.end_ns:
                got = max(0.0, (failed_at - p.start_ns) / 1e9)
                missing.append(f"drift ramp: {got:.2f}s of {p.seconds:.2f}s recorded")
    view, daemon_line = _daemon_view(cfg, daemons, logs, plan, missing, end_ns)
    analysis = analyse(spans, source, sink, cfg.skew_stage, plan, daemon=view,
                       drift_windows=cfg.drift_windows, end_ns=end_ns)
    slow = [s for s in analysis.skews
            if cfg.rate > 0 and s.throughput_rps is not None and s.seconds > 0
            and s.throughput_rps < 0.9 * cfg.rate]
    if slow and failed_at is None:
        analysis = replace(analysis, notes=analysis.notes + (
            f"the pipeline fell behind the offered {cfg.rate:g} requests/s at "
            f"{len(slow)} skew(s): this host was too busy for that rate; try a lower --rate",))
    return ExperimentResult(
        config=asdict(cfg), transport={"kind": spec.kind, **spec.settings},
        hosts=namespaces.describe() if namespaces else {"mode": "local", "address": "127.0.0.1"},
        analysis=analysis, complete=failed_at is None and not missing and not problems,
        problems=tuple(problems), missing=tuple(missing), nodes=tuple(outcomes),
        plan=tuple(plan), started_ns=t0, ended_ns=ended, out_dir=cfg.out_dir, cpu=cpu,
        **({"daemon": daemon_line, "daemons": daemons.describe()} if daemons else {}))


def _daemon_view(cfg, daemons, logs, plan, missing, end_ns=None):
    """(what the daemons measured of the skewed stage, a line saying how),
    from their offset logs in `logs`, up to end_ns where the run stopped
    early; (None, None) without daemons."""
    import warnings
    if daemons is None:
        return None, None
    from skewd import offsetlog
    from skewd.experiment import measured
    for node, why in daemons.start_failures.items():
        missing.append(f"the daemon of node {node} did not start: {why}")
    table = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = offsetlog.read(logs)
        except SkewdError as e:
            missing.append(f"offset logs unreadable: {e}")
    missing.extend(f"offset log: {w.message}" for w in caught)
    view = measured.measure(table, cfg.skew_stage, plan, end_ns=end_ns)
    if view.exchanges == 0:
        missing.append(f"no daemon measured stage {cfg.skew_stage}: its offset columns are empty")
    stamps = sorted({m for m in daemons.stamps.values()}) or ["?"]
    line = (f"a skewd daemon beside each of the {len(daemons.running())}/{len(daemons.specs)} "
            f"nodes (probes every {format_duration(cfg.daemon_interval_ns)}, {'/'.join(stamps)} "
            f"stamps, reference {cfg.reference()}; offset logs in logs/). Daemon offset: the "
            f"median of the {view.exchanges} single exchanges of the other nodes with "
            f"{cfg.skew_stage} that lie inside a slot, per skew; each exchange measures the "
            f"clock at that instant, while an estimate smooths over seconds and cannot follow "
            f"skews that change every {format_duration(cfg.slot_ns)}")
    if daemons.late:
        line += "; " + "; ".join(f"the daemon of {n} {w}" for n, w in daemons.late.items())
    if view.track is not None:
        line += ("; drift runs: the daemon's estimator fed the exchanges inside the ramp's "
                 "slots (what a daemon watching only the drifting clock reports)")
    return view, line
