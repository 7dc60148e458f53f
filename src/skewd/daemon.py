"""`skewd daemon`: on every node, probe every peer and answer their probes,
estimate offset and drift per peer, write this node's offset to its reference
into the clock-state page, apply the injection schedule, log every exchange
and estimate, export metrics, and serve a local control socket.

One thread runs the loop (select over the probe socket and the control
socket, with timers for probes, log flushes, status and the watchdog); the
metrics HTTP server has a thread of its own and only reads a registry.

Faults it survives: a peer that stops answering is marked unreachable after
`unreachable_after` and probed on; forged or malformed packets are dropped and
counted by the probe layer; an unwritable log directory is reported in status
and metrics while rows wait in a bounded buffer; a clock step (CLOCK_REALTIME
jumping against CLOCK_MONOTONIC) restarts every estimator instead of
poisoning it. SIGHUP reloads the configuration keeping the estimators of
peers that stay; SIGTERM flushes the logs and exits 0.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from skewd import clocks, gossip
from skewd.config import Config, Peer
from skewd.errors import HostError, SkewdError
from skewd.estimate import Estimate, Estimator
from skewd.metrics import MetricsServer, Registry
from skewd.probe import TYPE_REQUEST, TYPE_WARMUP
from skewd.sdnotify import Notifier
from skewd.skewclock import SkewedClock
from skewd.statepage import Measurement, StatePage
from skewd.transitivity import Link, check as check_transitivity
from skewd.tsock import WOKEN

log = logging.getLogger("skewd.daemon")

#: rows kept while the log directory cannot be written; older ones are dropped (and counted)
MAX_PENDING_ROWS = 200_000
STEP_THRESHOLD_NS = 1_000_000
#: status line, metrics and reachability are refreshed this often
STATUS_INTERVAL_NS = 500_000_000
#: how often daemons send each other their estimates (for transitivity)
REPORT_INTERVAL_NS = 2_000_000_000
#: systematic error allowed per link in the transitivity check (stamp paths
#: differ by hundreds of ns between kernels and NICs, and software stamps on a
#: busy host by a microsecond or two)
TRANSITIVITY_FLOOR_NS = 2_000.0


def precision_ns(e: Estimate) -> float:
    """The statistical half-width of an offset estimate: three standard
    errors of the mean plus a floor. Unlike the estimate's uncertainty it
    leaves out path asymmetry (delay/2), which is what loops are checked for."""
    import math
    return 3 * e.jitter_ns / math.sqrt(max(1, e.samples)) + TRANSITIVITY_FLOOR_NS


def _paired_read(tries: int = 5) -> tuple[int, int]:
    """(realtime, monotonic) read as one moment: the realtime read bracketed
    by two monotonic reads, tightest of a few tries, so a preemption between
    the reads is not mistaken for a step."""
    mono, rt = clocks.monotonic_ns, clocks.realtime_ns
    best = None
    for _ in range(tries):
        a = mono(); r = rt(); b = mono()
        if best is None or b - a < best[0]:
            best = (b - a, r, (a + b) // 2)
            if b - a < 20_000:
                break
    return best[1], best[2]


class StepDetector:
    """Notices CLOCK_REALTIME stepping against CLOCK_MONOTONIC: their
    difference moves only by slewing (≤ 500 ppm) unless someone steps the
    clock. `read` returns (realtime_ns, monotonic_ns)."""

    def __init__(self, read=None, threshold_ns: int = STEP_THRESHOLD_NS, max_slew_ppm: float = 500.0):
        self.read = read or _paired_read
        self.threshold_ns = threshold_ns
        self.max_slew = max_slew_ppm * 1e-6
        rt, mono = self.read()
        self._base, self._mono = rt - mono, mono
        self.steps = 0
        self.last_step_ns = 0

    def check(self) -> int | None:
        """The size of a step since the last check, or None."""
        rt, mono = self.read()
        base = rt - mono
        jump = base - self._base
        allowed = self.threshold_ns + self.max_slew * max(0, mono - self._mono)
        self._base, self._mono = base, mono
        if abs(jump) > allowed:
            self.steps += 1
            self.last_step_ns = jump
            return jump
        return None


@dataclass
class PeerRuntime:
    peer: Peer
    estimator: Estimator = field(default_factory=Estimator)
    next_probe: int = 0              # monotonic ns
    warmed: bool = False             # its warm-up packet went for the next probe
    last_answer: int | None = None   # monotonic ns
    last_sent: int | None = None
    reachable: bool = False
    ever_answered: bool = False
    estimate: Estimate | None = None
    exchanges: int = 0
    outages: int = 0
    send_errors: int = 0

    @property
    def addr(self) -> tuple[str, int]:
        return self.peer.address


class Daemon:
    def __init__(self, cfg: Config, *, notifier: Notifier | None = None,
                 step_detector: StepDetector | None = None, config_path: str | None = None):
        self.cfg = cfg
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.steps = step_detector or StepDetector()
        self.registry = Registry()
        self._describe_metrics()
        self.peers: dict[str, PeerRuntime] = {}
        self.started_mono = time.monotonic_ns()
        self.ready = False
        self.stop_event = threading.Event()
        self._reload = False
        self._pending: deque[tuple] = deque()
        self.log_error: str | None = None
        self.log_rows_dropped = 0
        self.log_rows_written = 0
        self.log_errors = 0
        self._next_flush = 0
        self._next_status = 0
        self._next_probe = 0
        self._next_watchdog = 0
        self._next_transitivity = 0
        self.transitivity = None
        self.reports: dict[str, tuple[int, gossip.Report]] = {}
        self.reports_dropped = 0
        self.clock_steps_handled = 0
        self._open(cfg)

    # --- setup -------------------------------------------------------------------

    def _open(self, cfg: Config) -> None:
        from skewd import probe
        from skewd.control import ControlServer

        if cfg.state_dir:
            os.environ["SKEWD_STATE_DIR"] = cfg.state_dir
        self.page = StatePage(cfg.node, writable=True)
        self.clock = SkewedClock(cfg.node)
        self.keys = probe.load_keys(cfg.keys_file) if cfg.keys_file else None
        stamps = "auto" if cfg.hardware_timestamps else "software"
        self.sock = probe.open_socket(bind=(cfg.listen_host, cfg.listen_port), stamps=stamps,
                                      interface=cfg.interface)
        self.stamp_mode = self.sock.mode
        self.stamp_note = self.sock.degraded
        self.server = probe.ProbeServer(self.sock, self.keys, self.clock, native=True)
        key_id = cfg.key_id
        if key_id is None and self.keys:
            key_id = min(self.keys)
        self.key_id = key_id
        self.client = probe.ProbeClient(self.sock, self.keys, key_id, self.clock)
        self._set_peers(cfg)
        self.injector = None
        self._apply_schedule(cfg.inject_schedule)
        self.writer = None
        self._open_log(cfg)
        self.control = ControlServer(cfg.control_socket, self.handle_control)
        self.metrics = None
        if cfg.metrics_port is not None:
            try:
                self.metrics = MetricsServer(self.registry, cfg.metrics_host,
                                             cfg.metrics_port).start()
            except OSError as e:
                self.control.close()
                self.sock.close()
                raise HostError(f"metrics address {cfg.metrics_host}:{cfg.metrics_port}: "
                                f"{e.strerror}") from None

    def _open_log(self, cfg: Config) -> None:
        from skewd.offsetlog import OffsetLogWriter
        try:
            self.writer = OffsetLogWriter(cfg.log_dir, node=cfg.node, max_bytes=cfg.log_rotate_bytes,
                                          max_age_s=cfg.log_rotate_age_ns / 1e9)
            self.log_error = None
        except SkewdError as e:
            self.writer = None
            self.log_error = str(e)
            log.error("offset log: %s", e)

    def _set_peers(self, cfg: Config) -> None:
        now = time.monotonic_ns()
        old = self.peers
        self.peers = {}
        for p in cfg.peers:
            rt = old.get(p.name)
            if rt is not None and rt.peer.address == p.address:
                rt.peer = p          # keep the estimator across a reload
            else:
                rt = PeerRuntime(p)
            # Every peer in one round per interval: one wake-up sends all the
            # warm-ups, one all the probes, and the answers come back
            # together, so wake-ups (most of an idle daemon's CPU) do not
            # grow with peers. The stamps are the kernel's, so a probe's
            # place in its round does not bias it.
            rt.next_probe = now
            rt.warmed = False
            self.peers[p.name] = rt
        self._next_probe = now
        self._by_addr = {rt.addr: rt for rt in self.peers.values()}

    def _apply_schedule(self, spec: str | None) -> None:
        from skewd.inject import Injector, parse_schedule
        if spec is None:
            self.injector = None
            return
        sched = parse_schedule(spec, clocks.realtime_ns())
        self.injector = Injector(self.page, sched)
        self.injector.start()

    # --- the loop ----------------------------------------------------------------

    def run(self) -> int:
        cfg = self.cfg
        if not cfg.peers:
            self._set_ready("serving; no peers configured")
        self.notifier.status(f"starting: {len(cfg.peers)} peer(s)")
        # One wait in C for the probe socket, the control socket and
        # signals. The peers' warm-ups are dropped and their probes answered
        # inside it (csrc/responder.c), so only the answers to our own
        # probes, gossip, control requests and timers wake this loop.
        control_fd = self.control.fileno()
        try:
            while not self.stop_event.is_set():
                if self._reload:
                    self._reload = False
                    self.reload()
                timeout_ns = self._timers(time.monotonic_ns())
                d = self.sock.recv(2048, max(1, timeout_ns), control_fd)
                if d is WOKEN:   # a control request, or a signal (its flag is set)
                    self.control.handle_ready()
                elif d is not None:
                    self._drain_socket(d)
        finally:
            self.close()
        return 0

    def _timers(self, now: int) -> int:
        """Do what is due; ns until the next thing is (at most 100 ms)."""
        cfg = self.cfg
        if now >= self._next_probe:
            lead = cfg.presend_ns
            checked = False
            for rt in self.peers.values():
                if lead and not rt.warmed and now >= rt.next_probe - lead:
                    self._warm(rt)
                    # the probe keeps its lead even when the warm-up is late
                    rt.next_probe = max(rt.next_probe, now + lead)
                    continue
                if now >= rt.next_probe:
                    if not checked:
                        # a step is looked for before each round of probes
                        # goes out, so no exchange is stamped across one unnoticed
                        checked = True
                        jump = self.steps.check()
                        if jump is not None:
                            self._clock_stepped(jump)
                    self._probe(rt, now)
                    rt.next_probe = max(rt.next_probe + cfg.probe_interval_ns, now + 1_000_000)
            self._next_probe = min((rt.next_probe - (0 if rt.warmed else lead)
                                    for rt in self.peers.values()),
                                   default=now + 1_000_000_000)
        if self.injector is not None:
            self.injector.advance()
        if now >= self._next_flush:
            self.flush_logs()
            self._next_flush = now + cfg.log_flush_ns
        if now >= self._next_transitivity:
            self._send_reports()
            self._update_transitivity()
            self._next_transitivity = now + REPORT_INTERVAL_NS
        if now >= self._next_status:
            self._check_reachable(now)
            self.notifier.status(self.summary())
            self._update_metrics()
            self._next_status = now + STATUS_INTERVAL_NS
        if self.notifier.watchdog_s and now >= self._next_watchdog:
            self.notifier.watchdog()
            self._next_watchdog = now + int(self.notifier.watchdog_s * 1e9 / 2)
        nxt = min(self._next_probe, self._next_flush, self._next_status)
        return max(0, min(100_000_000, nxt - time.monotonic_ns()))

    def _check_reachable(self, now: int) -> None:
        for rt in self.peers.values():
            if rt.reachable and rt.last_answer is not None and \
                    now - rt.last_answer > self.cfg.unreachable_after_ns:
                rt.reachable = False
                rt.outages += 1
                log.warning("peer %s unreachable: no answer for %.1fs", rt.peer.name,
                            (now - rt.last_answer) / 1e9)

    def _warm(self, rt: PeerRuntime) -> None:
        rt.warmed = True
        try:
            self.client.warm(rt.addr)
        except SkewdError as e:
            log.debug("warm-up %s: %s", rt.peer.name, e)

    def _probe(self, rt: PeerRuntime, now: int) -> None:
        rt.warmed = False
        try:
            self.client.request(rt.addr)
            rt.last_sent = now
        except SkewdError as e:
            rt.send_errors += 1
            log.debug("probe %s: %s", rt.peer.name, e)

    def _drain_socket(self, d) -> None:
        """Handle d and whatever else is queued (at most 512 in a row)."""
        for _ in range(512):
            self._handle(d)
            d = self.sock.recv(2048, 0)
            if d is None:
                return

    def _handle(self, d) -> None:
        if gossip.is_report(d.data):
            self._report(d)
        elif len(d.data) > 5 and d.data[5] in (TYPE_REQUEST, TYPE_WARMUP):
            self.server.handle_datagram(d)
        else:
            res = self.client.handle(d)
            if res is not None:
                rt = self._peer_by_addr((d.ip, d.port))
                if rt is not None:
                    self._sample(rt, res.sample)

    def _peer_by_addr(self, addr) -> PeerRuntime | None:
        rt = self._by_addr.get(addr)
        if rt is None:
            for cand in self.peers.values():
                if cand.addr[1] == addr[1] and _same_ip(cand.addr[0], addr[0]):
                    self._by_addr[addr] = rt = cand
                    break
        return rt

    def _sample(self, rt: PeerRuntime, s) -> None:
        now = time.monotonic_ns()
        if not rt.reachable and rt.ever_answered:
            log.info("peer %s reachable again", rt.peer.name)
        rt.reachable = rt.ever_answered = True
        rt.last_answer = now
        rt.exchanges += 1
        est = rt.estimator.add(s)
        # rows in offsetlog.COLUMNS order
        node, peer = self.cfg.node, rt.peer.name
        self._row((s.time_ns, node, peer, "exchange", s.t1, s.t2, s.t3, s.t4,
                   float(s.offset_ns), float(s.delay_ns), None, None, None, None, s.source,
                   est.verdict if est else "accepted"))
        if est is None:
            return
        rt.estimate = est
        self._row((est.time_ns, node, peer, "estimate", None, None, None, None,
                   float(est.offset_ns), float(est.delay_ns), float(est.uncertainty_ns),
                   float(est.drift_ppm * 1000), est.samples, float(est.jitter_ns),
                   est.stamp_source, est.verdict))
        if self.cfg.reference == rt.peer.name:
            # our offset to the reference: ours minus theirs
            self.page.set_measurement(Measurement(
                offset_ns=-int(round(est.offset_ns)), uncertainty_ns=int(round(est.uncertainty_ns)),
                drift_ppb=-int(round(est.drift_ppm * 1000)), time_ns=est.time_ns))
        if not self.ready:
            self._set_ready(self.summary())

    def _set_ready(self, status: str) -> None:
        self.ready = True
        self.notifier.ready(status)

    def _clock_stepped(self, jump: int) -> None:
        self.clock_steps_handled += 1
        log.warning("clock step of %+.3f ms detected (CLOCK_REALTIME against CLOCK_MONOTONIC): "
                    "restarting %d estimator(s)", jump / 1e6, len(self.peers))
        for rt in self.peers.values():
            rt.estimator.reset()
            rt.estimate = None

    # --- logs --------------------------------------------------------------------

    def _row(self, row: tuple) -> None:
        self._pending.append(row)
        while len(self._pending) > MAX_PENDING_ROWS:
            self._pending.popleft()
            self.log_rows_dropped += 1

    def flush_logs(self) -> None:
        if not self._pending:
            return
        if self.writer is None:
            self._open_log(self.cfg)
            if self.writer is None:
                return
        rows = list(self._pending)
        try:
            self.writer.write(rows)
        except (OSError, SkewdError) as e:
            self.log_errors += 1
            msg = f"cannot write offset log in {self.cfg.log_dir}: {getattr(e, 'strerror', None) or e}"
            if msg != self.log_error:
                log.error("%s (measuring goes on; %d row(s) waiting)", msg, len(rows))
            self.log_error = msg
            try:
                self.writer.abandon()
            except Exception:
                pass
            self.writer = None
            return
        for _ in rows:
            self._pending.popleft()
        self.log_rows_written += len(rows)
        if self.log_error:
            log.info("offset log writable again: %d row(s) written", len(rows))
        self.log_error = None

    # --- status, metrics, control --------------------------------------------------

    def _own_links(self) -> list[gossip.Entry]:
        """Our estimates, each carried forward to now by its drift."""
        now = self.clock.now_ns()
        out = []
        for name, rt in self.peers.items():
            e = rt.estimate
            if e is None or not rt.reachable:
                continue
            drift = e.drift_ppm * 1000
            out.append(gossip.Entry(name, e.offset_ns + drift * (now - e.time_ns) / 1e9, drift,
                                    precision_ns(e), max(0, now - e.time_ns)))
        return out

    def _report(self, d) -> None:
        """A peer's report of its own estimates (gossip.py)."""
        rt = self._peer_by_addr((d.ip, d.port))
        if rt is None:
            self.reports_dropped += 1
            return
        try:
            rep = gossip.decode(d.data, self.keys, require_auth=bool(self.keys))
        except SkewdError:
            self.reports_dropped += 1
            return
        if rep.node != rt.peer.name:
            self.reports_dropped += 1
            return
        self.reports[rep.node] = (time.monotonic_ns(), rep)

    def _send_reports(self) -> None:
        entries = self._own_links()[:gossip.MAX_ENTRIES]
        if not entries:
            return
        key = self.keys.get(self.key_id) if self.keys and self.key_id else None
        data = gossip.encode(gossip.Report(self.cfg.node, clocks.realtime_ns(), tuple(entries)), key)
        for rt in self.peers.values():
            try:
                # no TX stamp: a report is not an exchange
                self.sock.send_unstamped(data, rt.addr)
            except SkewdError:
                rt.send_errors += 1

    def _update_transitivity(self) -> None:
        now = time.monotonic_ns()
        links = [Link(self.cfg.node, e.peer, e.offset_ns, e.precision_ns) for e in self._own_links()]
        for node, (got, rep) in list(self.reports.items()):
            if node not in self.peers or now - got > 3 * REPORT_INTERVAL_NS:
                del self.reports[node]
                continue
            links += [Link(node, e.peer, e.offset_after(now - got), e.precision_ns)
                      for e in rep.entries
                      if e.peer != self.cfg.node]   # our own measurement of that pair wins
        self.transitivity = check_transitivity(links) if len(links) >= 3 else None

    def summary(self) -> str:
        ok = [rt for rt in self.peers.values() if rt.reachable and rt.estimate]
        parts = [f"{len(ok)}/{len(self.peers)} peers measured"]
        ref = self.peers.get(self.cfg.reference) if self.cfg.reference else None
        if ref and ref.estimate:
            parts.append(f"offset to {ref.peer.name} {-ref.estimate.offset_ns / 1000:+.1f}us "
                         f"±{ref.estimate.uncertainty_ns / 1000:.1f}us")
        parts.append(f"stamps {self.stamp_mode}")
        if self.log_error:
            parts.append("LOG ERROR")
        return ", ".join(parts)

    def status(self) -> dict:
        now = time.monotonic_ns()
        peers = {}
        for name, rt in self.peers.items():
            e = rt.estimate
            peers[name] = {
                "address": f"{rt.peer.host}:{rt.peer.port}",
                "reachable": rt.reachable,
                "last_answer_s_ago": None if rt.last_answer is None else (now - rt.last_answer) / 1e9,
                "exchanges": rt.exchanges,
                "outages": rt.outages,
                "send_errors": rt.send_errors,
                "offset_ns": e.offset_ns if e else None,
                "time_ns": e.time_ns if e else None,
                "uncertainty_ns": e.uncertainty_ns if e else None,
                "drift_ppm": e.drift_ppm if e else None,
                "delay_ns": e.delay_ns if e else None,
                "jitter_ns": e.jitter_ns if e else None,
                "samples": e.samples if e else 0,
                "stamp_source": e.stamp_source if e else None,
                "estimator": vars(rt.estimator.stats).copy(),
            }
        from skewd.probe import counters_dict
        st = self.page.snapshot()
        tr = self.transitivity
        return {
            "node": self.cfg.node,
            "ready": self.ready,
            "uptime_s": (now - self.started_mono) / 1e9,
            "summary": self.summary(),
            "stamps": {"mode": self.stamp_mode, "note": self.stamp_note},
            "reference": self.cfg.reference,
            "measurement": None if st.measurement is None else vars(st.measurement),
            "injected_offset_ns": st.injected_offset_at(clocks.realtime_ns()),
            "injection": self.cfg.inject_schedule,
            "peers": peers,
            "server": counters_dict(self.server.counters),
            "client": counters_dict(self.client.counters),
            "log": {"dir": self.cfg.log_dir, "error": self.log_error, "rows_written":
                    self.log_rows_written, "rows_waiting": len(self._pending),
                    "rows_dropped": self.log_rows_dropped,
                    "file": self.writer.path if self.writer else None},
            "clock_steps": self.clock_steps_handled,
            "reports": {"received_from": sorted(self.reports), "dropped": self.reports_dropped},
            "transitivity": None if tr is None else {
                "summary": tr.summary(), "failing": [l.nodes for l in tr.failing],
                "loops": [{"nodes": l.nodes, "closure_ns": l.closure_ns, "bound_ns": l.bound_ns,
                           "ok": l.ok} for l in tr.loops],
                "suspects": [list(s) for s in tr.suspects]},
        }

    def _describe_metrics(self) -> None:
        r = self.registry
        for name, kind, h in [
            ("skewd_peer_offset_ns", "gauge", "Peer's clock minus ours (ns)"),
            ("skewd_peer_uncertainty_ns", "gauge", "Half-width of the offset interval (ns)"),
            ("skewd_peer_drift_ppm", "gauge", "Peer's frequency against ours (ppm)"),
            ("skewd_peer_delay_ns", "gauge", "Minimum round-trip delay (ns)"),
            ("skewd_peer_jitter_ns", "gauge", "Offset jitter (ns)"),
            ("skewd_peer_reachable", "gauge", "1 when the peer answers"),
            ("skewd_peer_exchanges_total", "counter", "Answered exchanges"),
            ("skewd_peer_stamp_source", "gauge", "1 for the stamp source of the latest estimate"),
            ("skewd_drops_total", "counter", "Packets dropped, by side and reason"),
            ("skewd_log_error", "gauge", "1 while the offset log cannot be written"),
            ("skewd_log_rows_dropped_total", "counter", "Offset-log rows lost to a full buffer"),
            ("skewd_clock_steps_total", "counter", "Clock steps detected"),
            ("skewd_transitivity_failing_loops", "gauge", "Loops of three nodes that do not close"),
            ("skewd_transitivity_suspect", "gauge", "1 for a link suspected of an asymmetric path"),
            ("skewd_ready", "gauge", "1 once measuring"),
                ("skewd_probe_send_errors_total", "counter", "Probe requests that could not be sent")]:
            r.describe(name, kind, h)

    def _update_metrics(self) -> None:
        r = self.registry
        r.set("skewd_ready", 1 if self.ready else 0)
        for name, rt in self.peers.items():
            e = rt.estimate
            r.set("skewd_peer_reachable", 1 if rt.reachable else 0, peer=name)
            r.set("skewd_peer_exchanges_total", rt.exchanges, peer=name)
            r.set("skewd_probe_send_errors_total", rt.send_errors, peer=name)
            for metric, val in (("skewd_peer_offset_ns", e and e.offset_ns),
                                ("skewd_peer_uncertainty_ns", e and e.uncertainty_ns),
                                ("skewd_peer_drift_ppm", e and e.drift_ppm),
                                ("skewd_peer_delay_ns", e and e.delay_ns),
                                ("skewd_peer_jitter_ns", e and e.jitter_ns)):
                r.set(metric, val if e else None, peer=name)
            if e:
                r.set("skewd_peer_stamp_source", 1, peer=name, source=e.stamp_source)
        from skewd.probe import NOT_DROPS, counters_dict
        for side, c in (("server", self.server.counters), ("client", self.client.counters)):
            for reason, v in counters_dict(c).items():
                if reason not in NOT_DROPS and v:
                    r.set("skewd_drops_total", v, side=side, reason=reason)
        r.set("skewd_log_error", 1 if self.log_error else 0)
        r.set("skewd_log_rows_dropped_total", self.log_rows_dropped)
        r.set("skewd_clock_steps_total", self.clock_steps_handled)
        tr = self.transitivity
        r.set("skewd_transitivity_failing_loops", len(tr.failing) if tr else 0)
        r.clear("skewd_transitivity_suspect")
        for a, b in (tr.suspects if tr else ()):
            r.set("skewd_transitivity_suspect", 1, link=f"{a}-{b}")

    def handle_control(self, req: dict) -> dict:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "inject":
            if req.get("clear"):
                self.injector = None
                self.page.clear_injection()
                return {"ok": True}
            spec = req.get("schedule")
            if not isinstance(spec, str):
                return {"ok": False, "error": "inject needs 'schedule' (a string) or 'clear'"}
            self._apply_schedule(spec)
            return {"ok": True}
        if cmd == "reload":
            self._reload = True
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {cmd!r} (status, inject, reload)"}

    # --- lifecycle ---------------------------------------------------------------

    def reload(self) -> None:
        from skewd import config as config_mod
        self.notifier.reloading()
        if not self.config_path:
            return
        try:
            new = config_mod.load(self.config_path)
        except SkewdError as e:
            log.error("reload refused, keeping the running configuration: %s", e)
            self.notifier.status(f"reload failed: {e}")
            return
        if (new.node, new.listen_host, new.listen_port, new.control_socket) != (
                self.cfg.node, self.cfg.listen_host, self.cfg.listen_port, self.cfg.control_socket):
            log.warning("reload: node, listen and control_socket need a restart; other changes applied")
        old = self.cfg
        self.cfg = new
        self._set_peers(new)
        if new.inject_schedule != old.inject_schedule:
            if new.inject_schedule is None:
                self.injector = None
                self.page.clear_injection()
            else:
                self._apply_schedule(new.inject_schedule)
        if (new.log_dir, new.log_rotate_bytes, new.log_rotate_age_ns) != (
                old.log_dir, old.log_rotate_bytes, old.log_rotate_age_ns):
            self.flush_logs()
            if self.writer:
                self.writer.close()
            self._open_log(new)
        log.info("configuration reloaded: %d peer(s)", len(new.peers))
        self.notifier.send("READY=1", f"STATUS={self.summary()}")

    def request_reload(self) -> None:
        self._reload = True

    def close(self) -> None:
        self.notifier.stopping()
        try:
            self.flush_logs()
        finally:
            if self.writer:
                try:
                    self.writer.close()
                except (OSError, SkewdError) as e:
                    log.error("closing offset log: %s", e)
            self.control.close()
            if self.metrics:
                self.metrics.close()
            self.sock.close()
            self.page.close()


def _same_ip(a: str, b: str) -> bool:
    import ipaddress
    try:
        return ipaddress.ip_address(a.split("%")[0]) == ipaddress.ip_address(b.split("%")[0])
    except ValueError:
        return a == b


def run_daemon(config_path: str) -> int:
    """The `skewd daemon` entry point: load, start, run until SIGTERM."""
    from skewd import config as config_mod
    logging.basicConfig(level=os.environ.get("SKEWD_LOG_LEVEL", "INFO"),
                        format="skewd[%(process)d] %(levelname)s %(message)s")
    cfg = config_mod.load(config_path)
    d = Daemon(cfg, config_path=config_path)
    signal.signal(signal.SIGTERM, lambda *_: d.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: d.stop_event.set())
    signal.signal(signal.SIGHUP, lambda *_: d.request_reload())
    log.info("node %s listening on %s:%d, %d peer(s), stamps %s%s", cfg.node, cfg.listen_host,
             d.sock.port, len(cfg.peers), d.stamp_mode,
             f" ({d.stamp_note})" if d.stamp_note else "")
    return d.run()
