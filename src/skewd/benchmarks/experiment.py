"""What does tracing cost the pipeline? The experiment's pipeline run with
and without skewd's tracer, in pairs of runs that alternate which goes
first (so drifts in machine load hit both alike):

- saturated: the source sends as fast as the pipeline takes requests; the
  throughput counted at the sink is the pipeline's capacity on this host;
- saturated, bottleneck pinned: the same, with the model (the stage that
  sets the pipeline's capacity) alone on one CPU and the other four stages,
  and the runner, on the rest (`--cpus model=N;rest=...`). On a host with
  fewer cores than stages, every µs any traced stage adds takes CPU from the
  model; pinned, the model runs as on a host of its own, as in the
  multi-node deployments skewd is for;
- at the operating rate: the experiment's default offered rate; throughput
  is what the pipeline delivers of it.

Two metrics, each compared within a pair (traced against the plain run next
to it) and summarised by the median of the pairs with their spread:

- throughput (requests/s at the sink);
- CPU per request: the CPU time (user + system) of all five stage processes
  over the measured window, per request completed.

Separate runs differ by a few per cent even when both are plain (where the
kernel places a run's memory, what the host's neighbours do meanwhile), as
much as the budget itself. So the budget is checked within runs: saturated
runs (pinned where the host has two CPUs or more) whose source traces only
the requests of every other window (0.5 s), the stages passing untraced
requests on untraced. Requests reach the sink in runs of one kind; each
traced run's rate is compared with the untraced runs beside it, in the same
processes a second apart (window_overheads), and the median over all
traced windows, pooled over the runs, is the figure checked: tracing
costs at most 2 % of saturated throughput. The same windowed runs with all
five stages on shared CPUs, and the separate-run pairs, are reported beside
it (with each windowed run's own median, as runs differ among themselves).

Besides, from the traced runs: what draining the span rings to the Arrow
log cost each stage (the tracer's drain_cpu_s) per request, and the
model's own CPU per request traced against plain in the pinned pairs."""
from __future__ import annotations

import os
import tempfile

from skewd.benchmarks import median, quantile, table
from skewd.experiment.transports.zmq import SATURATED_SETTINGS  # the runner's at max rate

BUDGET = 0.02


def pinning() -> dict | None:
    """The model alone on the last usable CPU, the other stages on the rest;
    None on a host with one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {"model": (cpus[-1],), "rest": tuple(cpus[:-1])}


def _one(out_dir: str, instrumented: bool, rate: float, duration_ns: int,
         cpus: dict | None = None, windows_ns: int = 0) -> dict:
    from skewd.experiment import runner
    cfg = runner.ExperimentConfig(
        out_dir=out_dir, skews_ns=(0,), duration_ns=duration_ns, rate=rate,
        slot_ns=min(duration_ns, 500_000_000), instrumented=instrumented, daemons=False,
        cpus=cpus or {}, trace_windows_ns=windows_ns)
    res = runner.run(cfg)
    s = res.analysis.skews[0]
    done = s.received
    # requests done over the CPU window (the window spans more than the skew-0 slots)
    per_window = done * res.cpu["window_s"] / s.seconds if done else 0
    return {"throughput_rps": s.throughput_rps, "complete": res.complete,
            "correct": s.correct, "sent": s.sent, "problems": list(res.problems),
            "cpu_s": res.cpu["nodes_s"], "window_s": res.cpu["window_s"],
            "cpu_us_per_request": (sum(res.cpu["nodes_s"].values()) / per_window * 1e6)
            if done else None,
            "model_cpu_us_per_request": (res.cpu["nodes_s"]["model"] / per_window * 1e6)
            if done else None,
            # drain CPU over the whole run, per request sent through it
            "drain_us_per_request": {n.node: n.tracing["drain_cpu_s"] / s.sent * 1e6
                                     for n in res.nodes if n.tracing and s.sent}}


def window_overheads(t_sink_ns, traced, trim: float = 0.1, min_n: int = 50) -> list[float]:
    """Tracing's cost per traced window of a run that traced every other
    window: requests reach the sink in runs of one kind (the pipeline keeps
    their order); each run's rate is taken over its middle (trim cut from
    both ends, where the previous window's requests may still be in the
    stages), and each traced run is compared with the mean of the untraced
    runs beside it: the throughput lost, as a fraction."""
    import numpy as np
    order = np.argsort(t_sink_ns, kind="stable")
    t = np.asarray(t_sink_ns, dtype=np.int64)[order]
    tr = np.asarray(traced, dtype=bool)[order]
    if len(t) == 0:
        return []
    cuts = [0, *(np.flatnonzero(tr[1:] != tr[:-1]) + 1).tolist(), len(t)]
    runs = []
    for a, b in zip(cuts, cuts[1:]):
        k = int((b - a) * trim)
        lo, hi = a + k, b - k
        if hi - lo >= min_n and t[hi - 1] > t[lo]:
            runs.append((bool(tr[a]), (hi - lo - 1) / ((t[hi - 1] - t[lo]) / 1e9)))
        else:
            runs.append((bool(tr[a]), None))
    if runs:  # the first and last: the pipeline filling up and running dry
        runs[0], runs[-1] = (runs[0][0], None), (runs[-1][0], None)
    out = []
    for i, (is_traced, rate) in enumerate(runs):
        if not is_traced or rate is None:
            continue
        beside = [runs[j][1] for j in (i - 1, i + 1)
                  if 0 <= j < len(runs) and not runs[j][0] and runs[j][1] is not None]
        if beside:
            out.append(1 - rate / (sum(beside) / len(beside)))
    return out


def _tick(step: list, progress) -> None:
    """One run done of step[1]."""
    step[0] += 1
    if progress:
        progress(step[0] / step[1])


def _spread(xs: list[float]) -> dict:
    """Median, quartiles and range of paired overheads (fractions)."""
    return {"median": median(xs), "q1": quantile(xs, 0.25), "q3": quantile(xs, 0.75),
            "min": min(xs), "max": max(xs), "pairs": xs}


def _series(d: str, name: str, rate: float, repeats: int, duration_s: float,
            step, progress, cpus: dict | None = None) -> dict:
    runs = {"traced": [], "plain": []}
    for r in range(repeats):
        order = ("plain", "traced") if r % 2 == 0 else ("traced", "plain")
        for mode in order:
            out = os.path.join(d, f"{name}-{mode}-{r}")
            runs[mode].append(_one(out, mode == "traced", rate, int(duration_s * 1e9), cpus))
            _tick(step, progress)
    pairs = list(zip(runs["traced"], runs["plain"]))
    # tracing's cost as a positive fraction: throughput lost, CPU per request added
    thr = _spread([1 - t["throughput_rps"] / p["throughput_rps"] for t, p in pairs
                   if p["throughput_rps"]])
    cpu = _spread([t["cpu_us_per_request"] / p["cpu_us_per_request"] - 1 for t, p in pairs
                   if t["cpu_us_per_request"] and p["cpu_us_per_request"]])
    model = _spread([t["model_cpu_us_per_request"] / p["model_cpu_us_per_request"] - 1
                     for t, p in pairs
                     if t["model_cpu_us_per_request"] and p["model_cpu_us_per_request"]])
    stages = sorted({k for t in runs["traced"] for k in t["drain_us_per_request"]})
    drain = {k: median([t["drain_us_per_request"][k] for t in runs["traced"]
                        if k in t["drain_us_per_request"]]) for k in stages}
    return {"rate": rate, "cpus": {k: list(v) for k, v in (cpus or {}).items()},
            "model_cpu_overhead": model["median"], "model_cpu_overhead_spread": model,
            "drain_us_per_request": drain,
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


def _windows(d: str, name: str, runs: int, duration_s: float, window_s: float, step,
             progress, cpus: dict | None) -> dict:
    """Saturated runs that trace every other window of window_s: tracing's
    cost per traced window against the untraced windows beside it, pooled
    over the runs (and each run's own median, to show how runs differ)."""
    from skewd.experiment.runner import read_records
    overheads, per_run, all_correct = [], [], True
    for r in range(runs):
        out = os.path.join(d, f"{name}-{r}")
        x = _one(out, True, 0, int(duration_s * 1e9), cpus, int(window_s * 1e9))
        all_correct &= x["correct"] == x["sent"] and x["complete"]
        sink = read_records(os.path.join(out, "nodes", "sink.arrow"))
        if sink is not None and "traced" in sink.column_names:
            mine = window_overheads(sink.column("t_sink_ns").to_numpy(),
                                    sink.column("traced").to_numpy(zero_copy_only=False))
            overheads += mine
            if mine:
                per_run.append(median(mine))
        _tick(step, progress)
    return {"runs": runs, "duration_s": duration_s, "window_s": window_s,
            "cpus": {k: list(v) for k, v in (cpus or {}).items()},
            "overhead": median(overheads) if overheads else float("nan"),
            "throughput_overhead": _spread(overheads) if overheads else None,
            "run_medians": per_run, "all_correct": all_correct}


def run(repeats: int = 5, duration_s: float = 4.0, rate: float = 400.0,
        progress=None, window_s: float = 0.5) -> dict:
    pin = pinning()
    nwin = max(3, repeats)
    step = [0, (6 if pin else 4) * repeats + (2 if pin else 1) * nwin]
    with tempfile.TemporaryDirectory(prefix="skewd-bench-exp-") as d:
        sat = _series(d, "sat", 0, repeats, duration_s, step, progress)
        win_shared = _windows(d, "win-shared", nwin, 2 * duration_s, window_s, step,
                              progress, None)
        pinned = None
        # the runner itself (it polls every 5 ms) stays off the model's CPU too
        mine = os.sched_getaffinity(0)
        if pin:
            os.sched_setaffinity(0, pin["rest"])
        try:
            if pin:
                pinned = _series(d, "pin", 0, repeats, duration_s, step, progress, pin)
                win = _windows(d, "win-pin", nwin, 2 * duration_s, window_s, step, progress,
                               pin)
            else:
                win = win_shared
        finally:
            os.sched_setaffinity(0, mine)
        op = _series(d, "op", rate, repeats, duration_s, step, progress)
    where = "model pinned" if pin else "shared CPUs"
    checks = {f"saturated throughput, traced vs untraced windows ({where})":
              win["overhead"] <= BUDGET}
    if pin:
        checks["saturated throughput, traced vs untraced windows (shared CPUs)"] = (
            win_shared["overhead"] <= BUDGET)
    checks["saturated throughput (shared CPUs)"] = sat["overhead"] <= BUDGET
    if pinned:
        checks["saturated throughput (model pinned)"] = pinned["overhead"] <= BUDGET
        checks["model CPU per request (pinned)"] = pinned["model_cpu_overhead"] <= BUDGET
    checks["saturated CPU per request"] = sat["cpu_overhead"] <= BUDGET
    checks["operating CPU per request"] = op["cpu_overhead"] <= BUDGET
    ok = next(iter(checks.values()))
    series = [sat, op, win, win_shared] + ([pinned] if pinned else [])
    return {"repeats": repeats, "duration_s": duration_s, "hwm": SATURATED_SETTINGS["hwm"],
            "budget": BUDGET, "saturated": sat, "pinned": pinned, "operating": op,
            "windows": win, "windows_shared": win_shared if pin else None,
            "checks": checks, "ok": ok,
            "all_ok": ok and all(x["all_correct"] for x in series),
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
    pinned = res.get("pinned")
    labels = [("saturated", "saturated, shared CPUs")]
    if pinned:
        cpus = pinned["cpus"]
        labels.append(("pinned", f"saturated, model on CPU {','.join(map(str, cpus['model']))}"
                                 f" alone"))
    labels.append(("operating", f"at {res['operating']['rate']:g} requests/s"))
    for key, label in labels:
        s = res[key]
        rows.append([label, "throughput", f"{s['plain_rps']:.0f}/s", f"{s['traced_rps']:.0f}/s",
                     _pct(-s["overhead"]), _range(s["throughput_overhead"], -1)])
        rows.append(["", "CPU per request", f"{s['cpu_us_per_request_plain']:.0f} µs",
                     f"{s['cpu_us_per_request_traced']:.0f} µs", _pct(s["cpu_overhead"]),
                     _range(s["cpu_overhead_spread"])])
        if key == "pinned":
            rows.append(["", "model's CPU per request", "", "", _pct(s["model_cpu_overhead"]),
                         _range(s["model_cpu_overhead_spread"])])
    win = res["windows"]
    for w, where in ((win, ", model alone" if pinned else ""),
                     (res.get("windows_shared"), ", shared CPUs")):
        if w and w["throughput_overhead"]:
            runs = ", ".join(_pct(-x) for x in w["run_medians"])
            rows.append([f"saturated{where}, every other {w['window_s']:g}s traced",
                         "throughput", "", "", _pct(-w["overhead"]),
                         _range(w["throughput_overhead"], -1)
                         + f" over {len(w['throughput_overhead']['pairs'])} windows; "
                           f"per run {runs}"])
    checks = "; ".join(f"{k}: {'ok' if v else 'OVER'}" for k, v in res["checks"].items())
    drain = (pinned or res["saturated"])["drain_us_per_request"]
    series = [res[k] for k, _ in labels] + [w for w in (win, res.get("windows_shared")) if w]
    return (table(rows, ["pipeline", "metric", "plain", "traced", "traced vs plain (median pair)",
                         "pairs: quartiles (range)"])
            + f"\n\nbudget: tracing costs <= {res['budget'] * 100:.0f}% of saturated "
              f"throughput, traced windows against the untraced ones beside them in the "
              f"same processes ({'the pinned pipeline' if pinned else 'shared CPUs'}): "
              f"{'ok' if res['ok'] else 'OVER'}"
            + f"\nchecks: {checks}"
            + "\ndraining spans to the Arrow log, CPU per request (saturated"
              + (", pinned" if pinned else "") + "): "
              + ", ".join(f"{k} {v:.2f} µs" for k, v in drain.items())
            + f"\n{res['repeats']} pairs per pipeline, {res['duration_s']:g}s a run, order "
              f"alternating within pairs; {win['runs']} runs of {win['duration_s']:g}s with "
              f"every other window traced{' (each layout)' if pinned else ''}; "
              f"{res['cpus']} CPUs; outputs all correct: {all(s['all_correct'] for s in series)}")
