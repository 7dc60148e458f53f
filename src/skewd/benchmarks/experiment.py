"""What does tracing cost the pipeline? The experiment's pipeline run with
and without skewd's tracer, in pairs of runs that alternate which goes
first (so drifts in machine load hit both alike):

- saturated: the source sends as fast as the pipeline takes requests; the
  throughput counted at the sink is the pipeline's capacity on this host;
- at the operating rate: the experiment's default offered rate; throughput
  is what the pipeline delivers of it.

Two metrics, each compared within a pair (traced against the plain run next
to it) and summarised by the median of the pairs with their spread:

- throughput (requests/s at the sink);
- CPU per request: the CPU time (user + system) of all five stage processes
  over the measured window, per request completed. On a small shared host
  this is the steadier of the two: a busy neighbour slows both runs' wall
  clock but barely changes the CPU each request takes.

The budget: tracing costs at most 2 % of saturated throughput; it is
checked on both metrics (CPU per request at saturation and at the
operating rate)."""
from __future__ import annotations

import os
import tempfile

from skewd.benchmarks import median, table
from skewd.experiment.transports.zmq import SATURATED_SETTINGS  # the runner's at max rate

BUDGET = 0.02


def _one(out_dir: str, instrumented: bool, rate: float, duration_ns: int) -> dict:
    from skewd.experiment import runner
    cfg = runner.ExperimentConfig(
        out_dir=out_dir, skews_ns=(0,), duration_ns=duration_ns, rate=rate,
        slot_ns=min(duration_ns, 500_000_000), instrumented=instrumented, daemons=False)
    res = runner.run(cfg)
    s = res.analysis.skews[0]
    done = s.received
    return {"throughput_rps": s.throughput_rps, "complete": res.complete,
            "correct": s.correct, "sent": s.sent, "problems": list(res.problems),
            "cpu_s": res.cpu["nodes_s"], "window_s": res.cpu["window_s"],
            "cpu_us_per_request": (sum(res.cpu["nodes_s"].values()) / done * 1e6
                                   * s.seconds / res.cpu["window_s"]) if done else None}


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    i = int(k)
    return xs[i] if i + 1 >= len(xs) else xs[i] + (xs[i + 1] - xs[i]) * (k - i)


def _spread(xs: list[float]) -> dict:
    """Median, quartiles and range of paired overheads (fractions)."""
    return {"median": median(xs), "q1": _quantile(xs, 0.25), "q3": _quantile(xs, 0.75),
            "min": min(xs), "max": max(xs), "pairs": xs}


def _series(d: str, name: str, rate: float, repeats: int, duration_s: float,
            step, progress) -> dict:
    runs = {"traced": [], "plain": []}
    for r in range(repeats):
        order = ("plain", "traced") if r % 2 == 0 else ("traced", "plain")
        for mode in order:
            out = os.path.join(d, f"{name}-{mode}-{r}")
            runs[mode].append(_one(out, mode == "traced", rate, int(duration_s * 1e9)))
            step[0] += 1
            if progress:
                progress(step[0] / step[1])
    pairs = list(zip(runs["traced"], runs["plain"]))
    # tracing's cost as a positive fraction: throughput lost, CPU per request added
    thr = _spread([1 - t["throughput_rps"] / p["throughput_rps"] for t, p in pairs
                   if p["throughput_rps"]])
    cpu = _spread([t["cpu_us_per_request"] / p["cpu_us_per_request"] - 1 for t, p in pairs
                   if t["cpu_us_per_request"] and p["cpu_us_per_request"]])
    return {"rate": rate,
            "plain_rps": median([x["throughput_rps"] for x in runs["plain"]]),
            "traced_rps": median([x["throughput_rps"] for x in runs["traced"]]),
            "overhead": thr["median"], "throughput_overhead": thr,
            "cpu_us_per_request_plain": median([x["cpu_us_per_request"] for x in runs["plain"]]),
            "cpu_us_per_request_traced": median([x["cpu_us_per_request"]
                                                 for x in runs["traced"]]),
            "cpu_overhead": cpu["median"], "cpu_overhead_spread": cpu,
            "runs": runs,
            "all_correct": all(x["correct"] == x["sent"] and x["complete"]
                               for v in runs.values() for x in v)}


def run(repeats: int = 5, duration_s: float = 4.0, rate: float = 400.0,
        progress=None) -> dict:
    step = [0, 4 * repeats]
    with tempfile.TemporaryDirectory(prefix="skewd-bench-exp-") as d:
        sat = _series(d, "sat", 0, repeats, duration_s, step, progress)
        op = _series(d, "op", rate, repeats, duration_s, step, progress)
    checks = {"saturated throughput": sat["overhead"] <= BUDGET,
              "saturated CPU per request": sat["cpu_overhead"] <= BUDGET,
              "operating CPU per request": op["cpu_overhead"] <= BUDGET}
    ok = checks["saturated throughput"]
    return {"repeats": repeats, "duration_s": duration_s, "hwm": SATURATED_SETTINGS["hwm"],
            "budget": BUDGET,
            "saturated": sat, "operating": op, "checks": checks, "ok": ok,
            "all_ok": ok and sat["all_correct"] and op["all_correct"],
            "cpus": os.cpu_count()}


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def _range(s: dict, sign: int = 1) -> str:
    """Quartiles and range of the pairs; sign=-1 shows a throughput loss as
    the (negative) change it is."""
    lo, q1, q3, hi = (sign * s[k] for k in (("min", "q1", "q3", "max") if sign > 0
                                            else ("max", "q3", "q1", "min")))
    return f"{_pct(q1)} … {_pct(q3)} (all {_pct(lo)} … {_pct(hi)})"


def format(res: dict) -> str:
    rows = []
    for key, label in (("saturated", "saturated (as fast as taken)"),
                       ("operating", f"at {res['operating']['rate']:g} requests/s")):
        s = res[key]
        rows.append([label, "throughput", f"{s['plain_rps']:.0f}/s", f"{s['traced_rps']:.0f}/s",
                     _pct(-s["overhead"]), _range(s["throughput_overhead"], -1)])
        rows.append(["", "CPU per request", f"{s['cpu_us_per_request_plain']:.0f} µs",
                     f"{s['cpu_us_per_request_traced']:.0f} µs", _pct(s["cpu_overhead"]),
                     _range(s["cpu_overhead_spread"])])
    checks = "; ".join(f"{k}: {'ok' if v else 'OVER'}" for k, v in res["checks"].items())
    sat = res["saturated"]
    return (table(rows, ["pipeline", "metric", "plain", "traced", "traced vs plain (median pair)",
                         "pairs: quartiles (range)"])
            + f"\n\nbudget: tracing costs <= {res['budget'] * 100:.0f}%: {checks}"
            + f"\n(throughput {_pct(-sat['overhead'])}, CPU per request "
              f"{_pct(sat['cpu_overhead'])} at saturation; CPU per request "
              f"{_pct(res['operating']['cpu_overhead'])} at the operating rate)"
            + f"\n{res['repeats']} pairs per pipeline, {res['duration_s']:g}s a run, order "
              f"alternating within pairs; {res['cpus']} CPUs; outputs all correct: "
              f"{sat['all_correct'] and res['operating']['all_correct']}")
