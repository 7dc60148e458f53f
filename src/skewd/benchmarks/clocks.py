"""What does a clock read cost here? skewd's reads against CPython's
time.time_ns(), measured in the same run, as ratios, with the issue's budgets."""
from __future__ import annotations

import os
import platform
import tempfile
import time

import numpy as np

from skewd import _clock, clocks
from skewd.benchmarks import median, per_call_ns, table
from skewd.skewclock import SkewedClock
from skewd.statepage import Segment, StatePage


def _per_stamp(fill, n: int, rounds: int = 5) -> float:
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fill()
        per.append((time.perf_counter_ns() - t0) / n)
    return median(per)


def _tsc_drift(tsc: clocks.TSC, seconds: float, progress=None) -> dict:
    """Max |TSC ns − MONOTONIC_RAW| (relative to the start) over `seconds`."""
    def diff():
        best = None
        for _ in range(32):  # tightest bracket of raw reads around a TSC read
            a = _clock.monotonic_raw_ns()
            t = tsc.now_ns()
            b = _clock.monotonic_raw_ns()
            if best is None or b - a < best[0]:
                best = (b - a, t - (a + b) // 2)
        return best[1]
    d0 = diff()
    worst = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
        worst = max(worst, abs(diff() - d0))
        if progress:
            progress(1 - (end - time.monotonic()) / seconds)
    return {"seconds": seconds, "max_divergence_ns": worst}


def run(repeats: int = 15, number: int = 200_000, tsc_seconds: float = 10.0,
        progress=None) -> dict:
    tt = time.time_ns
    rt = clocks.realtime_ns
    rows = {k: [] for k in ("time_ns", "realtime", "skewed", "batch_rt", "batch_skewed",
                            "c_realtime", "c_tsc")}
    with tempfile.TemporaryDirectory() as d:
        page = StatePage("bench", writable=True, directory=d)
        page.set_injection(Segment(0, 5_000_000, 20_000, time.time_ns()))
        sk = SkewedClock("bench", directory=d)
        skn = sk.now_ns
        ok, why = clocks.tsc_invariant()
        tsc = clocks.TSC(1_000_000_000) if ok else None
        buf = np.empty(10_000, dtype=np.int64)
        for r in range(repeats):
            # interleaved so drifts in machine load hit every contender alike
            rows["time_ns"] += per_call_ns(tt, number, 1)
            rows["realtime"] += per_call_ns(rt, number, 1)
            rows["skewed"] += per_call_ns(skn, number, 1)
            # batches of 10k stamps timed like the C loop it is compared with
            # (5 rounds, the median), so a preemption hits both alike
            rows["batch_rt"].append(_per_stamp(lambda: clocks.batch("realtime", buf), len(buf)))
            rows["batch_skewed"].append(_per_stamp(lambda: sk.batch(buf), len(buf)))
            rows["c_realtime"].append(clocks.read_cost_ns("realtime", 10_000, 5))
            if tsc:
                rows["c_tsc"].append(tsc.read_cost_ns(10_000, 5))
            if progress:
                progress((r + 1) / repeats * (0.5 if tsc and tsc_seconds else 1.0))
        drift = (_tsc_drift(tsc, tsc_seconds,
                            (lambda f: progress(0.5 + f / 2)) if progress else None)
                 if tsc and tsc_seconds > 0 else None)
        page.close()
        sk._page.close()

    med = {k: (median(v) if v else None) for k, v in rows.items()}
    base = med["time_ns"]
    results = [
        dict(name="REALTIME read from Python (skewd)", ns=med["realtime"], peer="time.time_ns()",
             peer_ns=base, ratio=med["realtime"] / base, budget="<= 1.1x peer",
             ok=med["realtime"] <= 1.1 * base),
        dict(name="skewed-clock read from Python (page included)", ns=med["skewed"],
             peer="time.time_ns()", peer_ns=base, ratio=med["skewed"] / base,
             budget="<= 1.5x peer", ok=med["skewed"] <= 1.5 * base),
        dict(name="batch read, REALTIME, per stamp", ns=med["batch_rt"],
             peer="clock_gettime in a C loop", peer_ns=med["c_realtime"],
             ratio=med["batch_rt"] / med["c_realtime"], budget="<= 25 ns",
             ok=med["batch_rt"] <= 25),
        dict(name="batch read, skewed clock, per stamp", ns=med["batch_skewed"],
             peer="clock_gettime in a C loop", peer_ns=med["c_realtime"],
             ratio=med["batch_skewed"] / med["c_realtime"], budget="(none)", ok=True),
    ]
    if tsc:
        results.append(dict(name="TSC read with ns conversion, C loop", ns=med["c_tsc"],
                            peer="clock_gettime in a C loop", peer_ns=med["c_realtime"],
                            ratio=med["c_tsc"] / med["c_realtime"], budget="<= 12 ns",
                            ok=med["c_tsc"] <= 12))
    if drift:
        results.append(dict(name=f"TSC vs MONOTONIC_RAW over {drift['seconds']:g}s (max |diff|)",
                            ns=drift["max_divergence_ns"], peer="-", peer_ns=None, ratio=None,
                            budget="<= 1000 ns", ok=drift["max_divergence_ns"] <= 1000))
    return {
        "benchmark": "clocks",
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "cpus": os.cpu_count(), "kernel": platform.release()},
        "repeats": repeats, "calls_per_repeat": number,
        "tsc": {"invariant": ok, "reason": why, "hz": tsc.hz if tsc else None},
        "results": results,
        "all_ok": all(r["ok"] for r in results),
    }


def format(res: dict) -> str:
    rows = []
    for r in res["results"]:
        rows.append([r["name"], f"{r['ns']:.1f} ns",
                     r["peer"] + (f" ({r['peer_ns']:.1f} ns)" if r["peer_ns"] else ""),
                     f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-",
                     r["budget"], "ok" if r["ok"] else "OVER"])
    head = (f"clock read costs, medians of {res['repeats']} repeats "
            f"({res['host']['machine']}, Python {res['host']['python']})")
    return head + "\n" + table(rows, ["what", "cost", "peer (same run)", "ratio", "budget", ""])
