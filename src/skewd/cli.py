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
    g.add_argument("--offset", help="constant offset, e.g. 5ms, -250us")
    g.add_argument("--schedule", help="a schedule (see below)")
    g.add_argument("--clear", action="store_true", help="remove any injection")
    g.add_argument("--show", action="store_true", help="print the node's page")
    p.add_argument("--drift", help="with --offset: frequency error, e.g. 20ppm")
    p.add_argument("--follow", action="store_true",
                   help="stay running to feed a non-linear schedule's segments")
    p.add_argument("--duration", help="with --follow: stop after this long (default: until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="with --show: print JSON")
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


# --- skewd bench -------------------------------------------------------------

BENCHES = {"clocks": "skewd.benchmarks.clocks", "spans": "skewd.benchmarks.spans"}


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
    res = mod.run(progress=_progress(f"bench {args.which}"), **kw)
    print(mod.format(res))
    if args.json:
        with open(args.json, "w") as f:
            f.write(_dump(res))
    return 0 if res.get("all_ok", True) else 1


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
