"""The `skewd` command: one entry point, one function per subcommand.

Each subcommand is `cmd_<name>(args) -> int` registered with @command; tests
call main([...]) or the functions directly."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

from skewd.errors import SkewdError
from skewd.units import format_duration, parse_duration, parse_rate

#: how long before each request `skewd probe` sends its warm-up packet (the
#: daemon's `presend` setting has the same default)
PRESEND_DEFAULT = "200us"

_COMMANDS: list[tuple[str, str, callable, callable]] = []


def command(name: str, help: str, description: str | None = None):
    """Register cmd_<name>: the decorated function takes a subparser to fill
    and returns the function that runs the command."""
    def deco(add_args):
        _COMMANDS.append((name, help, description or help, add_args))
        return add_args
    return deco


def _progress(label: str):
    """A one-line progress bar on stderr (only when it is a terminal)."""
    tty = sys.stderr.isatty()

    def show(frac: float):
        if tty:
            n = int(max(0.0, min(1.0, frac)) * 30)
            sys.stderr.write(f"\r{label} [{'#' * n}{'.' * (30 - n)}] {frac * 100:3.0f}%")
            if frac >= 1:
                sys.stderr.write("\n")
            sys.stderr.flush()
    return show


def _dump(obj) -> str:
    from dataclasses import asdict, is_dataclass

    def default(o):
        if is_dataclass(o):
            return asdict(o)
        raise TypeError(type(o).__name__)
    return json.dumps(obj, indent=2, default=default)


# --- skewd clocks ----------------------------------------------------------------

@command("clocks", "show every clock: resolution, read cost, value; PHCs; TSC",
         "Show every clock skewd can read on this host: its resolution, the measured "
         "cost of one read (median, C loop) and its current value; the PTP hardware "
         "clocks found (/dev/ptp*) with a cross-timestamp against CLOCK_REALTIME; the "
         "TSC's invariance and calibrated frequency.")
def _clocks_args(p):
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--interfaces", action="store_true",
                   help="also show each network interface's timestamping capabilities")
    return cmd_clocks


def cmd_clocks(args) -> int:
    from skewd import clocks
    from skewd.benchmarks import table
    info = clocks.survey()
    ifaces = None
    if getattr(args, "interfaces", False):
        try:
            from skewd import tsock  # provided by the measurement layer
            ifaces = tsock.interface_capabilities()
        except ImportError:
            ifaces = {"error": "interface capabilities need skewd.tsock, not built"}
        info["interfaces"] = ifaces
    if args.json:
        print(_dump(info))
        return 0
    rows = [[c.name, f"{c.resolution_ns} ns" if c.resolution_ns is not None else "-",
             f"{c.read_cost_ns:.1f} ns" if c.read_cost_ns is not None else "-",
             str(c.value_ns) if c.value_ns is not None else (c.error or "-")]
            for c in info["clocks"]]
    print(table(rows, ["clock", "resolution", "read cost", "value (ns)"]))
    print(f"\nclocksource: {info['clocksource'] or 'unknown'}")
    if info["phcs"]:
        for p in info["phcs"]:
            if "error" in p:
                print(f"PHC {p['path']}: {p['error']}")
            else:
                print(f"PHC {p['path']} ({p['name'] or '?'}): {p['value_ns']} ns, "
                      f"offset to REALTIME {format_duration(p['offset_ns'])} "
                      f"(window {p['window_ns']} ns, {p['method']})")
    else:
        print("PHCs: none (no /dev/ptp*): hardware clock paths are unavailable on this host")
    t = info["tsc"]
    if t["invariant"] and "hz" in t:
        print(f"TSC: invariant, {t['hz'] / 1e9:.6f} GHz, read+convert {t['read_cost_ns']:.1f} ns")
    else:
        print(f"TSC: not used: {t.get('error') or t['reason']}")
    if ifaces is not None:
        print()
        if isinstance(ifaces, dict) and "error" in ifaces:
            print(f"interfaces: {ifaces['error']}")
        else:
            from skewd import tsock
            print(tsock.format_capabilities(ifaces))
    return 0


# --- skewd inject ------------------------------------------------------------

@command("inject", "inject a clock offset, drift or schedule into a node's skewed clock",
         "Set, show or clear the offset injected into a node's skewed clock (its "
         "clock-state page). Only skewd's own clock moves: the system clock is never "
         "touched.")
def _inject_args(p):
    from skewd.inject import SCHEDULE_HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = ("schedules:\n" + SCHEDULE_HELP +
                "\n\nexamples:\n  skewd inject --node model --offset 5ms\n"
                "  skewd inject --node model --offset 0 --drift 100ppm\n"
                "  skewd inject --node model --schedule sine:amplitude=1ms,period=60s --follow\n"
                "  skewd inject --node model --show\n  skewd inject --node model --clear")
    p.add_argument("--node", required=True, help="node whose skewed clock to change")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--offset", help="constant offset, e.g. 5ms; negative ones as --offset=-250us")
    g.add_argument("--schedule", help="a schedule (see below)")
    g.add_argument("--clear", action="store_true", help="remove any injection")
    g.add_argument("--show", action="store_true", help="print the node's page")
    p.add_argument("--drift", help="with --offset: frequency error, e.g. 20ppm")
    p.add_argument("--follow", action="store_true",
                   help="stay running to feed a non-linear schedule's segments")
    p.add_argument("--duration", help="with --follow: stop after this long (default: until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="with --show: print JSON")
    p.add_argument("--socket", metavar="PATH",
                   help="hand the injection to the running daemon on this control socket "
                        "(e.g. /run/skewd/control.sock) instead of writing the page here")
    return cmd_inject


def cmd_inject(args) -> int:
    from skewd import clocks
    from skewd.errors import UsageError
    from skewd.inject import Injector, Ramp, Step, parse_schedule
    from skewd.statepage import StatePage, validate_node

    validate_node(args.node)
    if args.show:
        with StatePage(args.node) as page:
            st = page.snapshot()
        now = clocks.realtime_ns()
        if args.json:
            print(_dump({"node": args.node, "path": page.path, "state": st,
                         "injected_offset_now_ns": st.injected_offset_at(now)}))
            return 0
        print(f"node {args.node}  page {page.path}  generation {st.generation}")
        if st.injected:
            print(f"injected offset now: {format_duration(st.injected_offset_at(now))}"
                  f"  (segment: offset {format_duration(st.cur.offset_ns)}, "
                  f"drift {st.cur.drift_ppb / 1000:g} ppm, epoch {st.cur.epoch_ns})")
            if st.next.start_ns != 2**63 - 1:
                print(f"next segment from {st.next.start_ns}: offset "
                      f"{format_duration(st.next.offset_ns)}, drift {st.next.drift_ppb / 1000:g} ppm")
        else:
            print("injected offset: none")
        if st.measurement:
            m = st.measurement
            print(f"measured offset to reference: {format_duration(m.offset_ns)} "
                  f"± {format_duration(m.uncertainty_ns)}, drift {m.drift_ppb / 1000:g} ppm")
        else:
            print("measured offset: none (no daemon has written one)")
        return 0
    if args.drift and args.offset is None:
        raise UsageError("--drift goes with --offset (use --offset 0 --drift 20ppm for drift only)")
    if (args.follow or args.duration) and not args.schedule:
        raise UsageError("--follow and --duration go with --schedule")

    if args.socket and not args.show:
        return _inject_via_daemon(args)
    now = clocks.realtime_ns()
    if args.clear:
        sched = None
    elif args.schedule:
        sched = parse_schedule(args.schedule, now)
    else:
        off = parse_duration(args.offset)
        sched = Ramp(parse_rate(args.drift), off, now) if args.drift else Step(off, now)
    if sched is not None and not sched.linear and not args.follow:
        raise UsageError(
            f"schedule {args.schedule!r} changes shape over time and needs a feeder: "
            f"add --follow (or let the daemon run it)")
    until = now + parse_duration(args.duration) if args.duration else None

    with StatePage(args.node, writable=True) as page:
        if sched is None:
            page.clear_injection()
            print(f"node {args.node}: injection cleared")
            return 0
        inj = Injector(page, sched)
        inj.start()
        print(f"node {args.node}: injected {args.schedule or args.offset}"
              f"{' drift ' + args.drift if args.drift else ''}"
              f" (max segment error {sched.max_error_ns:.0f} ns)")
        if args.follow:
            stop = threading.Event()
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, lambda *_: stop.set())
            inj.run(stop, until)
            print(f"node {args.node}: schedule feeder stopped; last segment stays in place")
    return 0


# --- skewd spans -------------------------------------------------------------

@command("spans", "inspect span logs or export them to OTLP JSON",
         "Work with the Arrow span logs a skewd.Tracer writes: 'inspect' shows each "
         "file's rows, batches, time range, nodes, schema version and any torn tail; "
         "'export' writes the spans as OTLP JSON for OpenTelemetry tools.")
def _spans_args(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    i = sub.add_parser("inspect", help="summarise span log files",
                       description="Summarise span log files (a torn tail is reported, "
                                   "not an error).")
    i.add_argument("files", nargs="+", metavar="FILE", help="span log file or directory")
    i.add_argument("--json", action="store_true", help="print JSON")
    e = sub.add_parser("export", help="export span logs to OTLP JSON")
    e.add_argument("files", nargs="+", metavar="FILE", help="span log file or directory")
    e.add_argument("-o", "--output", required=True, help="OTLP JSON file to write")
    return cmd_spans


def cmd_spans(args) -> int:
    import warnings

    from skewd import otlp, spanlog
    from skewd.units import format_duration as fd
    if args.action == "export":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", spanlog.SpanLogWarning)
            n = otlp.export(args.files, args.output)
        for w in caught:
            print(f"skewd spans: warning: {w.message}", file=sys.stderr)
        print(f"wrote {n} spans to {args.output}")
        return 0
    infos = [spanlog.inspect(f) for f in spanlog._expand(args.files)]
    if args.json:
        print(_dump(infos))
        return 0
    for k, info in enumerate(infos):
        if k:
            print()
        print(f"{info.path}")
        print(f"  size            {info.size} bytes, "
              f"{'complete (footer)' if info.complete else 'no footer (writer running or killed)'}")
        print(f"  schema version  {info.schema_version if info.schema_version is not None else '-'}")
        md = info.metadata
        print(f"  written by      node {md.get('skewd.node', '-')}, stage "
              f"{md.get('skewd.stage') or '-'}, clock {md.get('skewd.clock', '-')}, "
              f"host {md.get('skewd.host', '-')}, pid {md.get('skewd.pid', '-')}")
        print(f"  rows            {info.rows} in {info.batches} batches")
        if info.start_ns is not None:
            print(f"  time range      {info.start_ns} .. {info.end_ns} ns "
                  f"({fd(info.end_ns - info.start_ns)})")
        print(f"  nodes           {', '.join(info.nodes) or '-'}")
        print(f"  stages          {', '.join(info.stages) or '-'}")
        if info.kinds:
            print("  kinds           " + ", ".join(f"{k} {v}" for k, v in sorted(info.kinds.items())))
        if info.torn_offset is not None:
            print(f"  torn tail       cut at byte {info.torn_offset} of {info.size} "
                  f"({info.size - info.torn_offset} bytes dropped: {info.torn_reason})")
        else:
            print("  torn tail       none")
    return 0


# --- skewd merge / check -------------------------------------------------------

@command("merge", "merge every node's span logs (and offset logs) into one table",
         "Read span logs (Arrow IPC, Parquet), OTLP or Jaeger JSON traces and daemon offset "
         "logs, from files or directories; write one span table grouped by trace (offsets "
         "go to OUT's .offsets sidecar). Torn or foreign files are reported, not fatal.")
def _merge_args(p):
    p.add_argument("logs", nargs="+", help="log files or directories")
    p.add_argument("-o", "--output", required=True, help="merged.arrow or merged.parquet")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return cmd_merge


def cmd_merge(args) -> int:
    from skewd import merge
    m = merge.merge(args.logs, progress=_progress("merge"))
    written = merge.write(m, args.output)
    summary = {"spans": m.spans.num_rows,
               "offset_rows": m.offsets.num_rows if m.offsets is not None else 0,
               "files": [{"path": f.path, "kind": f.kind, "rows": f.rows} for f in m.files],
               "written": written, "warnings": m.warnings.as_dict()}
    if args.json:
        print(_dump(summary))
        return 0
    kinds = {}
    for f in m.files:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    print(f"merged {summary['spans']} spans and {summary['offset_rows']} offset rows from "
          f"{len(m.files)} file(s) ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))})")
    print("wrote " + ", ".join(written))
    for line in m.warnings.lines():
        print(f"warning: {line}")
    return 0


@command("check", "find, explain and correct causality violations in merged spans",
         "Check every parent/child edge for causality violations (negative transport, "
         "child before parent, synchronous child ending after its parent), rate them per "
         "node pair, stage edge and time window, estimate each node's clock offset and "
         "drift from the traces (or daemon offset logs), correct the spans and report.")
def _check_args(p):
    p.add_argument("inputs", nargs="+", help="a merged table, or logs to merge first")
    p.add_argument("--offsets", nargs="+", metavar="PATH",
                   help="daemon offset logs (files or directories)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="write the report as JSON (to stdout without FILE)")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--corrected", metavar="FILE",
                   help="write the spans with correction columns (.arrow or .parquet)")
    p.add_argument("--export-otlp", metavar="FILE", help="write the corrected spans as OTLP JSON")
    p.add_argument("--baseline", nargs="+", metavar="PATH",
                   help="logs of a run without skew, for the predicted rate F_L(s)")
    p.add_argument("--predict", metavar="SKEWS",
                   help="skews for the prediction, e.g. 0,1ms,2ms,5ms")
    p.add_argument("--min-latency", default="0ns",
                   help="least true one-way message latency assumed (default 0)")
    p.add_argument("--min-rpc-latency", default="0ns",
                   help="least true latency of an RPC leg assumed (default 0)")
    p.add_argument("--resolution", action="append", default=[], metavar="CLOCK=DUR",
                   help="clock resolution, e.g. realtime=1us or '*=1us' (repeatable)")
    p.add_argument("--windows", type=int, default=20, help="time windows for the rate over time")
    p.add_argument("--top", type=int, default=20, help="largest violations listed")
    p.add_argument("--no-correct", action="store_true", help="skip the correction")
    p.add_argument("--fail-on-violation", action="store_true",
                   help="exit 1 when a definite cross-node violation is found")
    return cmd_check


def cmd_check(args) -> int:
    from skewd import check, importers, merge, report
    from skewd.errors import UsageError
    res_map = {}
    for item in args.resolution:
        if "=" not in item:
            raise UsageError(f"--resolution {item!r}: write CLOCK=DURATION, e.g. realtime=1us")
        k, v = item.split("=", 1)
        res_map[k.strip()] = parse_duration(v)
    opts = check.CheckOptions(min_msg_latency_ns=parse_duration(args.min_latency),
                              min_rpc_latency_ns=parse_duration(args.min_rpc_latency),
                              resolution_ns=res_map or None, windows=max(1, args.windows))
    m = merge.load(args.inputs, args.offsets, progress=_progress("read"))
    if m.spans.num_rows == 0:
        raise UsageError("no spans in the input (only offsets?): nothing to check")
    baseline = merge.load(args.baseline).spans if args.baseline else None
    skews = ([0 if x.strip() == "0" else parse_duration(x)
              for x in args.predict.split(",") if x.strip()]
             if args.predict else None)
    res = check.run(m.spans, offsets=m.offsets, opts=opts, do_correct=not args.no_correct,
                    baseline=baseline, predict_skews_ns=skews, warnings=m.warnings)
    top = check.violations_table(m.spans, res.detection, args.top)
    if args.json == "-":
        print(_dump(report.as_dict(res, top)))
    else:
        print(report.text(res, top))
        if args.json:
            with open(args.json, "w") as f:
                f.write(_dump(report.as_dict(res, top)))
    if args.html:
        with open(args.html, "w") as f:
            f.write(report.html_report(res, top))
    if (args.corrected or args.export_otlp) and res.correction is not None:
        corrected = check.with_corrections(m.spans, res.correction)
        if args.corrected:
            merge.write_table(corrected, args.corrected)
        if args.export_otlp:
            importers.export_otlp(corrected, args.export_otlp)
    definite = sum(v["definite"] for v in res.detection.counts().values())
    return 1 if (args.fail_on_violation and definite) else 0


# --- skewd daemon / status ----------------------------------------------------

@command("daemon", "run the per-node measurement daemon (under systemd)",
         "Probe every configured peer and answer their probes, estimate offset and drift "
         "per peer, write this node's offset to its reference into the clock-state page, "
         "apply the injection schedule, log every exchange and estimate (Arrow), export "
         "Prometheus metrics and serve a local control socket. Notifies systemd "
         "(READY, STATUS, WATCHDOG); SIGHUP reloads the config, SIGTERM flushes and exits.")
def _daemon_args(p):
    p.add_argument("--config", default="/etc/skewd/skewd.toml",
                   help="TOML config (default /etc/skewd/skewd.toml; see systemd/skewd.toml.example)")
    p.add_argument("--check", action="store_true", help="only check the config and exit")
    return cmd_daemon


def cmd_daemon(args) -> int:
    from skewd import config
    if args.check:
        cfg = config.load(args.config)
        print(f"config {args.config}: ok (node {cfg.node}, {len(cfg.peers)} peer(s))")
        return 0
    from skewd.daemon import run_daemon
    return run_daemon(args.config)


@command("status", "show a running daemon's peers, offsets and health",
         "Ask the local daemon (over its control socket) for its state: every peer's "
         "offset, uncertainty, drift, delay and reachability, drops by reason, the "
         "offset log's health and the transitivity check.")
def _status_args(p):
    p.add_argument("--socket", default="/run/skewd/control.sock", help="daemon control socket")
    p.add_argument("--json", action="store_true", help="print JSON")
    return cmd_status


def cmd_status(args) -> int:
    from skewd import control
    from skewd.benchmarks import table
    st = control.request(args.socket, {"cmd": "status"})["status"]
    if args.json:
        print(_dump(st))
        return 0
    print(f"node {st['node']}: {st['summary']}")
    rows = []
    for name, p in sorted(st["peers"].items()):
        fmt = lambda v: format_duration(v) if v is not None else "-"
        rows.append([name, p["address"], "yes" if p["reachable"] else "NO", fmt(p["offset_ns"]),
                     fmt(p["uncertainty_ns"]),
                     f"{p['drift_ppm']:+.3f}" if p["drift_ppm"] is not None else "-",
                     fmt(p["delay_ns"]), str(p["samples"]), p["stamp_source"] or "-"])
    if rows:
        print(table(rows, ["peer", "address", "up", "offset", "±", "drift ppm", "delay",
                           "samples", "stamps"]))
    from skewd.probe import NOT_DROPS
    drops = {f"{side}.{k}": v for side in ("server", "client") for k, v in st[side].items()
             if k not in NOT_DROPS and v}
    print("drops: " + (", ".join(f"{k}={v}" for k, v in sorted(drops.items())) or "none"))
    lg = st["log"]
    print(f"offset log: {lg['error'] or 'ok'} ({lg['rows_written']} rows written, "
          f"{lg['rows_waiting']} waiting)")
    if st.get("transitivity"):
        print(st["transitivity"]["summary"])
    if st["clock_steps"]:
        print(f"clock steps detected: {st['clock_steps']}")
    return 0


# --- skewd probe / serve -------------------------------------------------------

@command("probe", "measure a peer's clock offset, drift and delay with timestamped probes",
         "Exchange timestamped probes with a peer running `skewd serve` (or, with --ntp, any "
         "NTP server) and print the peer's clock minus ours: offset with its uncertainty, "
         "drift, delay, jitter and which stamps (hardware, kernel, user) made it.")
def _probe_args(p):
    p.add_argument("peer", help="HOST[:PORT] or [IPV6]:PORT (default port 7319, 123 with --ntp)")
    p.add_argument("--count", type=int, default=20, help="exchanges (default 20)")
    p.add_argument("--interval", default="100ms", help="time between exchanges (default 100ms)")
    p.add_argument("--timeout", default="200ms", help="wait for each answer (default 200ms)")
    p.add_argument("--presend", default=PRESEND_DEFAULT,
                   help="send a warm-up packet this long before each request, so the request "
                        "does not find a cold path and arrive later than its answer returns "
                        f"(a bias of up to half the delay); 0 turns it off (default "
                        f"{PRESEND_DEFAULT}; skewd peers only, not with --ntp)")
    p.add_argument("--key-file", help="keys file (ID HMAC-SHA256 HEX:...) to authenticate with")
    p.add_argument("--key-id", type=int, help="which key of --key-file to use")
    p.add_argument("--ntp", action="store_true", help="query a standard NTP server (mode 3)")
    p.add_argument("--node", help="our node: stamps go on its skewed clock (default: none)")
    p.add_argument("--stamps", default="software", choices=["software", "hardware", "auto", "none"],
                   help="timestamping: kernel software (default), NIC hardware, auto, or none")
    p.add_argument("--interface", help="interface to bind to (needed for hardware stamps)")
    p.add_argument("--no-interleave", action="store_true",
                   help="basic mode: use the responder's user-space t3, not its TX stamp")
    p.add_argument("--json", action="store_true", help="print JSON with every exchange")
    return cmd_probe


def cmd_probe(args) -> int:
    from skewd import probe
    from skewd.errors import UsageError
    from skewd.skewclock import SkewedClock
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    if (args.key_file is None) != (args.key_id is None):
        raise UsageError("--key-file and --key-id go together")
    if args.ntp and args.key_file:
        raise UsageError("--ntp does not authenticate (NTP MACs are not supported)")
    presend = parse_duration(args.presend)
    if presend < 0:
        raise UsageError("--presend must not be negative")
    interval = parse_duration(args.interval)
    if presend and presend >= interval and args.count > 1 and not args.ntp:
        raise UsageError(f"--presend {args.presend} must be shorter than --interval "
                         f"{args.interval}")
    peer = probe.parse_peer(args.peer, probe.NTP_PORT if args.ntp else probe.DEFAULT_PORT)
    clock = SkewedClock(args.node) if args.node else None
    sock = probe.open_socket(peer[0], stamps=args.stamps, interface=args.interface)
    with sock:
        if args.ntp:
            client = probe.NtpClient(sock, clock)
        else:
            keys = probe.load_keys(args.key_file) if args.key_file else None
            client = probe.ProbeClient(sock, keys, args.key_id, clock,
                                       interleaved=not args.no_interleave)
        rep = probe.measure(client, peer, args.count, interval,
                            parse_duration(args.timeout),
                            progress=None if args.json else _progress("probe"),
                            presend_ns=presend)
        e = rep.estimate
        if args.json:
            print(_dump({"peer": f"{peer[0]}:{peer[1]}", "protocol": "ntp" if args.ntp else "skewd",
                         "stamps": sock.mode, "degraded": sock.degraded, "estimate": e,
                         "counters": rep.counters, "estimator": rep.estimator,
                         "socket": rep.socket, "wall_s": rep.wall_s,
                         "exchanges": rep.exchanges}))
            return 0 if e else 1
    c = rep.counters
    print(f"peer {peer[0]} port {peer[1]} ({'NTP' if args.ntp else 'skewd'}): "
          f"{c['answered']}/{c['sent']} answered, stamps {sock.mode}"
          + (f" ({sock.degraded})" if sock.degraded else ""))
    if e is None:
        print("no usable answer: is the peer serving, and the key right?")
        return 1
    es = rep.estimator
    print(f"offset       {e.offset_ns / 1e6:+.6f} ms ± {format_duration(e.uncertainty_ns)}"
          f"  (peer minus us)")
    print(f"drift        {e.drift_ppm:+.3f} ppm")
    print(f"delay        {format_duration(e.delay_ns)}")
    print(f"jitter       {format_duration(e.jitter_ns)}")
    print(f"stamps       {e.stamp_source}")
    print(f"samples      {e.samples} in the fit; rejected: delay {es['rejected_delay']}, "
          f"causality {es['causality_failures']}, invalid {es['rejected_invalid']}")
    if c["dropped"] or c["timeouts"]:
        print(f"dropped      {c['dropped']} answers, {c['timeouts']} timeouts")
    return 0


@command("serve", "answer timestamped probes (the daemon embeds the same server)",
         "Answer `skewd probe` requests with kernel (or NIC) timestamps on this node's skewed "
         "clock. Malformed, unauthenticated, replayed and over-rate packets are dropped and "
         "counted; the counters print on exit (SIGINT/SIGTERM or --duration).")
def _serve_args(p):
    p.add_argument("--listen", default="0.0.0.0", help="address to bind (default 0.0.0.0; :: for IPv6)")
    p.add_argument("--port", type=int, default=7319, help="UDP port (default 7319)")
    p.add_argument("--node", help="node whose skewed clock stamps the answers")
    p.add_argument("--key-file", help="keys file: requests must be signed with one of its keys")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="with --key-file: also answer unsigned requests")
    p.add_argument("--rate", type=float, default=1000.0, help="requests per second per source")
    p.add_argument("--burst", type=int, default=200, help="burst per source")
    p.add_argument("--stamps", default="software", choices=["software", "hardware", "auto", "none"])
    p.add_argument("--interface", help="interface to bind to (needed for hardware stamps)")
    p.add_argument("--duration", help="stop after this long (default: until signalled)")
    p.add_argument("--json", action="store_true", help="print the counters as JSON on exit")
    return cmd_serve


def cmd_serve(args) -> int:
    from skewd import probe
    from skewd.skewclock import SkewedClock
    keys = probe.load_keys(args.key_file) if args.key_file else None
    clock = SkewedClock(args.node) if args.node else None
    sock = probe.open_socket(bind=(args.listen, args.port), stamps=args.stamps,
                             interface=args.interface)
    with sock:
        server = probe.ProbeServer(sock, keys, clock,
                                   require_auth=bool(keys) and not args.allow_unauthenticated,
                                   rate=args.rate, burst=args.burst)
        stop = threading.Event()
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, lambda *_: stop.set())
        until = (time.monotonic_ns() + parse_duration(args.duration)) if args.duration else None
        print(f"serving probes on {args.listen} port {sock.port}, stamps {sock.mode}"
              + (f" ({sock.degraded})" if sock.degraded else "")
              + (f", node {args.node}" if args.node else ""), flush=True)
        server.serve(stop, until)
        counters = probe.counters_dict(server.counters)
        counters["socket"] = sock.stats()
    if args.json:
        print(_dump(counters), flush=True)
    else:
        print("counters: " + ", ".join(f"{k} {v}" for k, v in counters.items() if k != "socket"),
              flush=True)
    return 0


def _inject_via_daemon(args) -> int:
    """The daemon owns the page while it runs: ask it to apply the schedule."""
    from skewd import control
    from skewd.inject import parse_schedule
    if args.clear:
        control.request(args.socket, {"cmd": "inject", "clear": True})
        print(f"node {args.node}: injection cleared by the daemon")
        return 0
    if args.schedule:
        spec = args.schedule
    else:
        parse_duration(args.offset)
        spec = (f"ramp:offset={args.offset},drift={args.drift}" if args.drift
                else f"step:offset={args.offset}")
    parse_schedule(spec, 0)          # refuse a bad schedule here, with the usual message
    status = control.request(args.socket, {"cmd": "status"})["status"]
    if status["node"] != args.node:
        from skewd.errors import UsageError
        raise UsageError(f"the daemon on {args.socket} runs node {status['node']!r}, not {args.node!r}")
    control.request(args.socket, {"cmd": "inject", "schedule": spec})
    print(f"node {args.node}: the daemon now injects {spec}")
    return 0


# --- skewd bench -------------------------------------------------------------

BENCHES = {"clocks": "skewd.benchmarks.clocks", "spans": "skewd.benchmarks.spans",
           "check": "skewd.benchmarks.check", "daemon": "skewd.benchmarks.daemon"}


@command("bench", "measure what clocks and timestamping cost on this host",
         "Run a benchmark and print its table (medians over repeats, with the peer "
         "measured in the same run and the budget).")
def _bench_args(p):
    p.add_argument("which", choices=sorted(BENCHES), help="which benchmark")
    p.add_argument("--repeats", type=int, default=15, help="repeats (median taken)")
    p.add_argument("--quick", action="store_true", help="fewer repeats, shorter TSC check")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    return cmd_bench


def cmd_bench(args) -> int:
    import importlib
    mod = importlib.import_module(BENCHES[args.which])
    kw = {"repeats": 5 if args.quick else args.repeats}
    if args.which == "clocks":
        kw["tsc_seconds"] = 2.0 if args.quick else 10.0
    if args.which == "daemon":
        kw["repeats"] = 1 if args.quick else min(kw["repeats"], 3)
        kw["seconds"] = 5.0 if args.quick else 20.0
    if args.which == "experiment-daemons":
        kw["repeats"] = 2 if args.quick else min(kw["repeats"], 5)
    if args.which == "check":
        kw["repeats"] = min(kw["repeats"], 3)
        if args.quick:
            kw["spans"] = 5_000_000
    res = mod.run(progress=_progress(f"bench {args.which}"), **kw)
    print(mod.format(res))
    if args.json:
        with open(args.json, "w") as f:
            f.write(_dump(res))
    return 0 if res.get("all_ok", True) else 1


# --- skewd experiment ---------------------------------------------------------

@command("experiment", "inject skew at one stage of a real pipeline; see when its traces break",
         "Run the inference pipeline source -> preprocess -> model -> postprocess -> sink, "
         "each stage a separate process (a node), over a transport, with skew injected into "
         "one stage's skewed clock: a sweep over skews, and/or a drift run. Per skew it "
         "reports the negative-span rate on that stage's edges against the rate predicted "
         "from the skew-0 latency distribution, throughput, output correctness, end-to-end "
         "latency, and the skew estimated from the traces; it writes results.json, PNG plots, "
         "a self-contained report.html and the Arrow span logs into --out.")
def _experiment_args(p):
    from skewd.experiment import DEFAULT_SKEWS, transport_names
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = ("examples:\n  skewd experiment\n"
                "  skewd experiment --skews 0,100us,1ms --duration 5s --out /tmp/exp\n"
                "  skewd experiment --drift 100ppm --duration 20s\n"
                "  sudo skewd experiment --hosts netns")
    p.add_argument("--transport", default="zmq",
                   help=f"transport between stages: {', '.join(transport_names())}, or both "
                        "(ZeroMQ then Kafka, compared in one report) (default zmq)")
    p.add_argument("--skew-stage", default="model",
                   help="stage whose clock is skewed: source, preprocess, model, postprocess "
                        "or sink (default model)")
    p.add_argument("--skews", help=f"comma-separated skews (default {DEFAULT_SKEWS}); skew 0, "
                                   "the prediction's baseline, is always run")
    p.add_argument("--duration", help="time spent at each skew, or the length of the drift "
                                      "ramp (default 3s; 20s for a drift-only run)")
    p.add_argument("--rate", default="400",
                   help="requests per second, evenly spaced (default 400); max: as fast as "
                        "the pipeline takes them (ZeroMQ queues of 64 hold the source back)")
    p.add_argument("--drift", help="a drift run: the stage's clock drifts at this rate, e.g. "
                                   "100ppm (with --skews, the sweep runs too)")
    p.add_argument("--out", default="skewd-experiment",
                   help="directory for results.json, plots, report.html and span logs "
                        "(default ./skewd-experiment)")
    p.add_argument("--hosts", default="local",
                   help="local: plain processes (default); netns: each node in its own "
                        "network namespace joined by veth links (root)")
    p.add_argument("--port", default="0",
                   help="first TCP port of the edges with local hosts (default 0: free ports)")
    p.add_argument("--slot", default=None,
                   help="how long each skew is held before the next; skews are visited in "
                        "interleaved rounds so all see the same machine load (default 20ms; "
                        "500ms over Kafka)")
    p.add_argument("--seed", default="1", help="seed of the model weights, inputs and order")
    p.add_argument("--daemons", action=argparse.BooleanOptionalAction, default=None,
                   help="run a skewd daemon beside every node, measuring the skewed stage's "
                        "offset (the table's daemon column) and drift. Default on, as they "
                        "cost little at an offered rate (five processes probing every 100ms: "
                        "about 8%% of one core, +5%% on the e2e p50 at 400 requests/s); off "
                        "with --rate max, where that CPU comes out of the pipeline's capacity "
                        "(`skewd bench experiment-daemons` measures both)")
    p.add_argument("--daemon-reference", metavar="STAGE",
                   help="the node every daemon measures against (default source; sink when "
                        "the source is skewed)")
    p.add_argument("--daemon-interval", default="100ms",
                   help="how often each daemon probes its peers (default 100ms)")
    p.add_argument("--cpus", metavar="STAGE=CPUS[;...]",
                   help="pin stages to CPUs, e.g. 'model=1;rest=0' (rest: the stages not "
                        "named): a bottleneck stage with a core of its own runs as it would "
                        "on a host of its own (default: the scheduler places every stage)")
    p.add_argument("--json", action="store_true", help="print results as JSON, not a table")
    p.add_argument("--fault", help=argparse.SUPPRESS)
    from skewd.kafkacli import add_args as add_kafka_args
    add_kafka_args(p)
    return cmd_experiment


def _whole(flag: str, text: str, low: int, high: int) -> int:
    from skewd.errors import UsageError
    try:
        v = int(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a whole number") from None
    if not low <= v <= high:
        raise UsageError(f"{flag} {v} is out of range ({low}..{high})")
    return v


def _duration(flag: str, text: str) -> int:
    from skewd.errors import UsageError
    try:
        return parse_duration(text)
    except UsageError as e:
        raise UsageError(f"{flag}: {e}") from None


def experiment_config(args):
    """The ExperimentConfig the command line describes (UsageError if not one)."""
    from skewd.errors import UsageError
    from skewd.experiment import runner
    rate_text = args.rate.strip().removesuffix("/s")
    try:
        rate = 0.0 if rate_text == "max" else float(rate_text)
    except ValueError:
        raise UsageError(f"--rate {args.rate!r}: give requests per second, e.g. 400 "
                         f"(or max)") from None
    drift = parse_rate(args.drift) if args.drift else None
    skews = runner.parse_skews(args.skews) if args.skews else (
        None if drift is not None else runner.parse_skews(runner.DEFAULT_SKEWS))
    default_dur = "20s" if skews is None else "3s"
    duration = parse_duration(args.duration or default_dur)
    runner.parse_stage(args.skew_stage)
    from skewd import kafkacli
    transport = "zmq" if args.transport == "both" else args.transport
    runner.parse_transport(transport)
    cfg = runner.ExperimentConfig(
        out_dir=args.out, transport=transport, skew_stage=args.skew_stage,
        skews_ns=skews, duration_ns=duration, rate=rate, drift_ppb=drift, hosts=args.hosts,
        port=_whole("--port", args.port, 0, 65535), slot_ns=parse_duration(args.slot or "20ms"),
        seed=_whole("--seed", args.seed, 0, 2**31 - 1),
        drift_windows=20 if drift is not None else 10, fault=args.fault,
        daemons=args.daemons if args.daemons is not None else rate > 0,
        daemon_reference=args.daemon_reference,
        daemon_interval_ns=_duration("--daemon-interval", args.daemon_interval),
        cpus=runner.parse_cpus(args.cpus) if args.cpus else {}).validate()
    return kafkacli.adjust_config(args, cfg).validate()


def cmd_experiment(args) -> int:
    from skewd.experiment import report, runner
    cfg = experiment_config(args)
    from skewd import kafkacli
    if kafkacli.wants_kafka(args):
        return kafkacli.cmd_experiment(args, cfg, _progress)
    result = runner.run(cfg, progress=_progress("experiment"))
    files = report.write(result)
    if args.json:
        print(report.to_json(result))
    else:
        print(report.format_table(result))
        print(f"\nreport: {files['html']}\nresults: {files['json']}   span logs: "
              f"{os.path.join(cfg.out_dir, 'logs')}")
    if not result.complete:
        print("skewd experiment: the run is incomplete (see above and the report)",
              file=sys.stderr)
        return 1
    return 0


BENCHES["experiment"] = "skewd.benchmarks.experiment"
BENCHES["experiment-daemons"] = "skewd.benchmarks.experiment_daemons"
BENCHES["stage-loop"] = "skewd.benchmarks.stage_loop"
BENCHES["measure"] = "skewd.benchmarks.measure"
BENCHES["estimate"] = "skewd.benchmarks.estimate"


# --- entry point ---------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skewd",
        description="skewd measures, injects and checks clock skew across the nodes "
                    "of a distributed inference pipeline.",
        epilog="Run 'skewd COMMAND --help' for a command's options.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_, desc, add_args in _COMMANDS:
        sp = sub.add_parser(name, help=help_, description=desc)
        sp.set_defaults(func=add_args(sp))
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except SkewdError as e:
        print(f"skewd {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"skewd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
