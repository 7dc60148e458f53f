"""What does a span cost? skewd's tracer against an OpenTelemetry SDK span
(no-op exporter) measured in the same run, and how fast the drain turns ring
records into Arrow span logs, with the issue's budgets."""
from __future__ import annotations

import os
import platform
import tempfile
import threading
import time

from skewd import _ring
from skewd.benchmarks import median, per_call_ns, table
from skewd.skewclock import SkewedClock
from skewd.spanwriter import SpanLogWriter
from skewd.statepage import Segment, StatePage
from skewd.tracer import SpanContext, Tracer


def _otel_tracer():
    """An OpenTelemetry SDK tracer whose spans go to an exporter that does
    nothing, or None when the SDK is not installed."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (SimpleSpanProcessor, SpanExporter,
                                                    SpanExportResult)
    except ImportError:
        return None

    class NoopExporter(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(NoopExporter()))
    return provider.get_tracer("skewd-bench")


def _drain_rate(d: str, n: int, repeats: int, write: bool) -> list[float]:
    """Spans/s through the drain path a Tracer runs (ring -> Arrow column
    buffers -> one writev() of a record batch to the IPC file), on this thread
    only; write=False stops at the column buffers."""
    core = _ring.Core(None, n)
    cols = _ring.Columns(65536)
    log = SpanLogWriter(d, node="bench", max_bytes=1 << 30) if write else None
    rates = []
    try:
        for _ in range(repeats):
            got = core.fill(n)
            t0 = time.perf_counter_ns()
            done = 0
            while True:
                k = core.drain(cols)
                if k == 0:
                    break
                if log is not None:
                    log.write_ring(cols, k)
                done += k
            dt = time.perf_counter_ns() - t0
            assert done == got
            rates.append(done / (dt / 1e9))
            if log is not None:
                log.rotate()
                for f in log.stats.files:
                    os.unlink(f)
                log.stats.files.clear()
    finally:
        if log is not None:
            log.close()
        core.close()
    return rates


def run(repeats: int = 15, number: int = 100_000, drain_spans: int = 500_000,
        progress=None) -> dict:
    rows = {k: [] for k in ("skewd", "skewd_consumer", "loop", "otel")}
    with tempfile.TemporaryDirectory() as d:
        page = StatePage("bench", writable=True, directory=d)
        page.set_injection(Segment(0, 5_000_000, 20_000, time.time_ns()))
        clock = SkewedClock("bench", directory=d)
        tr = Tracer(node="bench", stage="bench", clock=clock, log_dir=os.path.join(d, "logs"),
                    ring_size=max(65536, 2 * number))
        span = tr.span
        ctx = SpanContext(os.urandom(16), os.urandom(8), True)
        sent = time.time_ns()
        otel = _otel_tracer()
        onumber = max(1000, number // 20)

        def one():
            with span("infer"):
                pass

        def consumer():
            with span("infer", kind="consumer", parent=ctx, send_ns=sent):
                pass

        lock = threading.Lock()

        def loop():
            with lock:
                pass

        if otel is not None:
            ospan = otel.start_as_current_span

            def other():
                with ospan("infer"):
                    pass
        for fn in (one, consumer):  # warm up
            per_call_ns(fn, 1000, 1)
        tr.flush()
        for r in range(repeats):
            # interleaved so drifts in machine load hit every contender alike
            rows["skewd"] += per_call_ns(one, number, 1)
            tr.flush()
            rows["skewd_consumer"] += per_call_ns(consumer, number, 1)
            tr.flush()
            rows["loop"] += per_call_ns(loop, number, 1)
            if otel is not None:
                rows["otel"] += per_call_ns(other, onumber, 1)
            if progress:
                progress((r + 1) / repeats * 0.6)
        st = tr.stats()
        tr.close()
        clock._page.close()
        page.close()
        # a producer thread that does nothing but make spans, with the drain
        # thread writing the log beside it (they share the GIL)
        busy = Tracer(node="bench", clock=SkewedClock("bench", directory=d),
                      log_dir=os.path.join(d, "busy"))
        bspan = busy.span
        nbusy = 10 * number
        t0 = time.perf_counter_ns()
        for _ in range(nbusy):
            with bspan("infer"):
                pass
        busy_ns = (time.perf_counter_ns() - t0) / nbusy
        busy.close()
        bst = busy.stats()
        busy.clock._page.close()
        drain_reps = max(3, repeats // 3)
        drain = _drain_rate(os.path.join(d, "drain"), drain_spans, drain_reps, True)
        if progress:
            progress(0.8)
        buffers_only = _drain_rate(os.path.join(d, "drain2"), drain_spans, drain_reps, False)
        if progress:
            progress(1.0)

    med = {k: (median(v) if v else None) for k, v in rows.items()}
    results = [
        dict(name="span from Python (enter+exit, ids, 2 skewed-clock reads, ring append)",
             value=med["skewd"], unit="ns", peer="-", peer_value=None, ratio=None,
             budget="<= 500 ns", ok=med["skewd"] <= 500),
        dict(name="consumer span with parent and send_ns", value=med["skewd_consumer"],
             unit="ns", peer="-", peer_value=None, ratio=None, budget="<= 500 ns",
             ok=med["skewd_consumer"] <= 500),
        dict(name="`with threading.Lock()` (a C context manager, for scale)",
             value=med["loop"], unit="ns", peer="skewd span", peer_value=med["skewd"],
             ratio=med["skewd"] / med["loop"], budget="(none)", ok=True),
    ]
    if med["otel"] is not None:
        ratio = med["otel"] / med["skewd"]
        results.append(dict(
            name="OpenTelemetry SDK span, no-op exporter", value=med["otel"], unit="ns",
            peer="skewd span", peer_value=med["skewd"], ratio=ratio,
            budget=">= 20x skewd", ok=ratio >= 20))
    results.append(dict(
        name=f"drain: ring -> Arrow -> IPC file ({drain_spans} spans, one thread)",
        value=median(drain), unit="spans/s", peer="-", peer_value=None, ratio=None,
        budget=">= 1M spans/s", ok=median(drain) >= 1e6))
    results.append(dict(
        name=f"back-to-back spans from one thread, drain writing beside it "
             f"({bst['dropped'] / nbusy:.1%} dropped, ring 65536)",
        value=busy_ns, unit="ns", peer="-", peer_value=None, ratio=None,
        budget="(none)", ok=True))
    results.append(dict(
        name="drain: ring -> Arrow column buffers only (no file)", value=median(buffers_only),
        unit="spans/s", peer="-", peer_value=None, ratio=None, budget="(none)", ok=True))
    return {
        "benchmark": "spans",
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "cpus": os.cpu_count(), "kernel": platform.release()},
        "repeats": repeats, "spans_per_repeat": number,
        "otel_spans_per_repeat": onumber if otel is not None else None,
        "otel_available": otel is not None,
        "tracer_stats": {k: st[k] for k in ("spans", "dropped", "batches", "written")},
        "busy_producer": {"spans": nbusy, "ns_per_span": busy_ns,
                          **{k: bst[k] for k in ("spans", "dropped", "written")}},
        "results": results,
        "all_ok": all(r["ok"] for r in results) and otel is not None,
    }


def _fmt(v, unit):
    if v is None:
        return "-"
    if unit == "spans/s":
        return f"{v / 1e6:.2f} M/s"
    return f"{v:.1f} ns" if v < 10_000 else f"{v / 1000:.2f} us"


def format(res: dict) -> str:
    out = []
    for r in res["results"]:
        out.append([r["name"], _fmt(r["value"], r["unit"]),
                    r["peer"] + (f" ({_fmt(r['peer_value'], r['unit'])})" if r["peer_value"] else ""),
                    f"{r['ratio']:.1f}x" if r["ratio"] is not None else "-",
                    r["budget"], "ok" if r["ok"] else "OVER"])
    head = (f"span costs, medians of {res['repeats']} repeats "
            f"({res['host']['machine']}, Python {res['host']['python']})")
    if not res["otel_available"]:
        head += "\nOpenTelemetry SDK not installed: the ratio budget could not be checked"
    return head + "\n" + table(out, ["what", "cost", "peer (same run)", "ratio", "budget", ""])
