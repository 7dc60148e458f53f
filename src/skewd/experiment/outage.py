"""A broker restart in the middle of a run, and what it did to the pipeline.

    restart = BrokerRestart(broker, at=0.5, down_s=2.0)
    result = runner.run(cfg, progress=restart.progress(show))
    report = restart_report(result, restart.outage())

The restart is triggered from the runner's progress callback (a fraction of
the run), on a thread of its own so the runner's schedule is not held up.
The report checks the sink against the source (every request id exactly once,
count and ids) and shows the pause: sink arrivals and end-to-end latency in
short windows across the outage.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from skewd.errors import SkewdError

#: at most this many missing or duplicated ids are listed by value
LIST_IDS = 20


@dataclass(frozen=True)
class Outage:
    """When the broker was told to stop, when it had stopped, and when it
    answered again (CLOCK_REALTIME ns)."""
    stopping_ns: int | None
    stopped_ns: int | None
    back_ns: int | None
    down_s: float
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        if self.stopping_ns is None or self.back_ns is None:
            return None
        return (self.back_ns - self.stopping_ns) / 1e9


class BrokerRestart:
    """Restart `broker` (a kafkabroker.KafkaBroker) once the run is `at`
    (0..1) of the way through, staying down `down_s` seconds."""

    def __init__(self, broker, at: float = 0.5, down_s: float = 2.0):
        if not 0.0 < at < 1.0:
            raise ValueError(f"restart point {at} must lie strictly between 0 and 1")
        self.broker = broker
        self.at = at
        self.down_s = down_s
        self._thread: threading.Thread | None = None
        self._outage: Outage | None = None

    def progress(self, inner=None):
        """A progress callback for runner.run that also fires the restart."""
        def show(frac: float) -> None:
            if inner is not None:
                inner(frac)
            if self._thread is None and frac >= self.at:
                self._thread = threading.Thread(target=self._restart, daemon=True,
                                                name="broker-restart")
                self._thread.start()
        return show

    def _restart(self) -> None:
        stopping = time.time_ns()
        stopped = back = None
        try:
            self.broker.stop()
            stopped = time.time_ns()
            time.sleep(self.down_s)
            self.broker.start()
            back = time.time_ns()
            self._outage = Outage(stopping, stopped, back, self.down_s)
        except SkewdError as e:
            self._outage = Outage(stopping, stopped, back, self.down_s, error=str(e))

    def outage(self, timeout_s: float = 180.0) -> Outage:
        """The restart's times, once it is over (an error when it never ran)."""
        if self._thread is None:
            return Outage(None, None, None, self.down_s,
                          error="the run ended before the restart point")
        self._thread.join(timeout_s)
        if self._outage is None:
            return Outage(None, None, None, self.down_s,
                          error="the restart did not finish in time")
        return self._outage


@dataclass(frozen=True)
class SinkAudit:
    """The sink's outputs against the source's requests, by request id."""
    sent: int
    received: int
    missing: int
    duplicated: int
    missing_ids: tuple[int, ...]
    duplicated_ids: tuple[int, ...]
    wrong: int

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.duplicated == 0 and self.wrong == 0 and \
            self.received == self.sent


def audit_sink(source, sink) -> SinkAudit:
    """source: table (req_id, ...); sink: table (req_id, ..., correct)."""
    sent_ids = np.asarray(source.column("req_id").to_numpy(zero_copy_only=False)) \
        if source is not None else np.zeros(0, np.int64)
    got = np.asarray(sink.column("req_id").to_numpy(zero_copy_only=False)) \
        if sink is not None else np.zeros(0, np.int64)
    ok = np.asarray(sink.column("correct").to_numpy(zero_copy_only=False), dtype=bool) \
        if sink is not None else np.zeros(0, bool)
    ids, counts = np.unique(got, return_counts=True)
    dup = ids[counts > 1]
    missing = np.setdiff1d(np.unique(sent_ids), ids)
    return SinkAudit(sent=int(len(sent_ids)), received=int(len(got)),
                     missing=int(len(missing)), duplicated=int((counts - 1)[counts > 1].sum()),
                     missing_ids=tuple(int(i) for i in missing[:LIST_IDS]),
                     duplicated_ids=tuple(int(i) for i in dup[:LIST_IDS]),
                     wrong=int((~ok).sum()))


@dataclass(frozen=True)
class Window:
    t_s: float                      # window start, seconds from the run's start
    arrivals: int                   # outputs reaching the sink in the window
    latency_p50_ns: float | None    # end-to-end, of the outputs arriving in it
    latency_max_ns: float | None


@dataclass(frozen=True)
class RestartReport:
    outage: Outage
    audit: SinkAudit
    windows: tuple[Window, ...]
    window_s: float
    pause_s: float | None           # longest gap between sink arrivals near the outage
    latency_max_ns: float | None    # the worst end-to-end latency near the outage
    latency_p50_ns: float | None    # typical end-to-end latency before the outage
    started_ns: int = 0             # the run's start, where windows count from

    @property
    def ok(self) -> bool:
        return self.outage.error is None and self.audit.ok


def restart_report(source, sink, started_ns: int, ended_ns: int, outage: Outage,
                   window_s: float = 0.25) -> RestartReport:
    """What the restart did: the sink audit, sink arrivals and latency per
    window across the run, and the pause around the outage."""
    audit = audit_sink(source, sink)
    if sink is None or sink.num_rows == 0:
        return RestartReport(outage, audit, (), window_s, None, None, None, started_ns)
    t_sink = np.asarray(sink.column("t_sink_ns").to_numpy(zero_copy_only=False), np.int64)
    t_src = np.asarray(sink.column("t_source_ns").to_numpy(zero_copy_only=False), np.int64)
    lat = (t_sink - t_src).astype(float)
    width = int(window_s * 1e9)
    n = max(1, int(np.ceil((max(ended_ns, int(t_sink.max()) + 1) - started_ns) / width)))
    k = np.clip((t_sink - started_ns) // width, 0, n - 1)
    windows = []
    for w in range(n):
        sel = k == w
        lw = lat[sel]
        windows.append(Window(w * window_s, int(sel.sum()),
                              float(np.median(lw)) if len(lw) else None,
                              float(lw.max()) if len(lw) else None))
    pause = lmax = None
    typical = float(np.median(lat))
    if outage.stopping_ns is not None:
        before = t_src < outage.stopping_ns - 1_000_000_000
        if before.any():
            typical = float(np.median(lat[before]))
        # from a little before the stop to a little after the broker is back
        a = outage.stopping_ns - 2_000_000_000
        b = (outage.back_ns or ended_ns) + 10_000_000_000
        order = np.sort(t_sink[(t_sink >= a) & (t_sink <= b)])
        if len(order) > 1:
            pause = float(np.diff(order).max()) / 1e9
        near = (t_src >= a) & (t_src <= b)
        if near.any():
            lmax = float(lat[near].max())
    return RestartReport(outage, audit, tuple(windows), window_s, pause, lmax, typical,
                         started_ns)


def restart_report_for(result, outage: Outage, window_s: float = 0.25) -> RestartReport:
    """restart_report from a runner.ExperimentResult's files."""
    from skewd.experiment.runner import read_records
    nodes = os.path.join(result.out_dir, "nodes")
    return restart_report(read_records(os.path.join(nodes, "source.arrow")),
                          read_records(os.path.join(nodes, "sink.arrow")),
                          result.started_ns, result.ended_ns, outage, window_s)


def format_restart(r: RestartReport) -> str:
    """A few lines for the terminal."""
    a, o = r.audit, r.outage
    lines = []
    if o.error:
        lines.append(f"broker restart: FAILED: {o.error}")
    else:
        lines.append(f"broker restart: away {o.seconds:.2f}s (a clean stop "
                     f"{(o.stopped_ns - o.stopping_ns) / 1e9:.2f}s, {o.down_s:g}s down, then "
                     f"a start on the same port {(o.back_ns - o.stopped_ns) / 1e9 - o.down_s:.2f}s)")
    lines.append(f"sink: {a.received} outputs for {a.sent} requests; {a.missing} missing, "
                 f"{a.duplicated} duplicated, {a.wrong} wrong"
                 + (" - every id exactly once" if a.ok else ""))
    if a.missing_ids:
        lines.append(f"  missing ids: {', '.join(map(str, a.missing_ids))}"
                     + (" ..." if a.missing > len(a.missing_ids) else ""))
    if a.duplicated_ids:
        lines.append(f"  duplicated ids: {', '.join(map(str, a.duplicated_ids))}"
                     + (" ..." if a.duplicated > len(a.duplicated_ids) else ""))
    if r.pause_s is not None:
        lines.append(f"pause: no output reached the sink for {r.pause_s:.2f}s; worst end-to-end "
                     f"latency {r.latency_max_ns / 1e9:.2f}s (typical "
                     f"{r.latency_p50_ns / 1e6:.1f}ms)")
    return "\n".join(lines)


def plot(r: RestartReport) -> bytes:
    """Sink arrivals and end-to-end latency per window, the outage shaded."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [w.t_s for w in r.windows]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(t, [w.arrivals / r.window_s for w in r.windows], width=r.window_s, align="edge",
           color="tab:blue", alpha=0.7, label="outputs at the sink (/s)")
    ax.set_xlabel("time since the run began (s)")
    ax.set_ylabel("outputs per second")
    ax2 = ax.twinx()
    ax2.plot([w.t_s + r.window_s / 2 for w in r.windows],
             [None if w.latency_max_ns is None else w.latency_max_ns / 1e6 for w in r.windows],
             ".-", color="tab:red", lw=1, label="worst end-to-end latency (ms)")
    ax2.set_yscale("log")
    ax2.set_ylabel("latency (ms)")
    o = r.outage
    if o.stopping_ns is not None and o.back_ns is not None:
        ax.axvspan((o.stopping_ns - r.started_ns) / 1e9, (o.back_ns - r.started_ns) / 1e9,
                   color="grey", alpha=0.25, label="broker away")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=8)
    ax.set_title("Kafka broker restart mid-run (shaded: broker away)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def to_html(r: RestartReport, png: bytes) -> str:
    """A report section: the restart, the sink audit, the pause plot."""
    import base64
    import html
    lines = "".join(f"<li>{html.escape(l)}</li>" for l in format_restart(r).splitlines())
    cls = "" if r.ok else ' class="bad"'
    return (f"<h2>Broker restart</h2><ul{cls}>{lines}</ul>"
            f'<img alt="sink arrivals across the broker restart" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def add_to_report(r: RestartReport, out_dir: str) -> None:
    """Put the restart into the run's results.json (key "broker_restart")
    and report.html (a section with its plot)."""
    import json
    from dataclasses import asdict
    from skewd.experiment.report import _clean
    path = os.path.join(out_dir, "results.json")
    with open(path) as f:
        data = json.load(f)
    d = asdict(r)
    d["ok"] = r.ok
    d["audit"]["ok"] = r.audit.ok
    data["broker_restart"] = _clean(d)
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=2)
    os.replace(path + ".tmp", path)
    path = os.path.join(out_dir, "report.html")
    with open(path) as f:
        page = f.read()
    section = to_html(r, plot(r))
    at = page.find("<h2>Notes</h2>")
    page = page[:at] + section + page[at:] if at >= 0 else page.replace(
        "</body>", section + "</body>")
    with open(path + ".tmp", "w") as f:
        f.write(page)
    os.replace(path + ".tmp", path)
