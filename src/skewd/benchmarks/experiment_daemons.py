"""What do the daemons cost the experiment's pipeline? The same pipeline
(traced, skew 0) with and without a `skewd daemon` beside every node, in
alternating runs so drifts in the machine's load hit both alike:

- saturated: the source sends as fast as the pipeline takes requests; the
  throughput at the sink is the pipeline's capacity on this host;
- at the operating rate: end-to-end latency p50/p99 and the one-way delay
  out of the model stage (p50), the figures the violation rates hang on.

Each run also gives the CPU the daemons used, as a share of one core over
the measured window. Budget: the daemons cost at most 5 % of the saturated
throughput."""
from __future__ import annotations

import os
import tempfile

from skewd.benchmarks import median, table
from skewd.experiment.transports.zmq import SATURATED_SETTINGS  # the runner's at max rate

BUDGET = 0.05


def _one(out_dir: str, daemons: bool, rate: float, duration_ns: int, interval_ns: int) -> dict:
    from skewd.experiment import runner
    cfg = runner.ExperimentConfig(
        out_dir=out_dir, skews_ns=(0,), duration_ns=duration_ns, rate=rate,
        slot_ns=min(duration_ns, 500_000_000), daemons=daemons,
        daemon_interval_ns=interval_ns)
    res = runner.run(cfg)
    s = res.analysis.skews[0]
    out = [b for b in res.analysis.baseline if b.edge.startswith(cfg.skew_stage)]
    window = res.cpu.get("window_s") or 0
    return {"throughput_rps": s.throughput_rps, "complete": res.complete,
            "correct": s.correct, "sent": s.sent, "problems": list(res.problems),
            "e2e_p50_us": s.latency_p50_ns / 1e3 if s.latency_p50_ns else None,
            "e2e_p99_us": s.latency_p99_ns / 1e3 if s.latency_p99_ns else None,
            "out_delay_p50_us": out[0].p50_ns / 1e3 if out and out[0].p50_ns else None,
            "daemon_offset_ns": s.daemon_offset_ns,
            "daemons_core": (sum(res.cpu.get("daemons_s", {}).values()) / window)
            if window else None,
            "nodes_core": sum(res.cpu.get("nodes_s", {}).values()) / window if window else None}


def _med(runs, key):
    v = [r[key] for r in runs if r[key] is not None]
    return median(v) if v else None


def _series(d: str, name: str, rate: float, repeats: int, duration_s: float, interval_ns: int,
            step, progress) -> dict:
    runs = {"without": [], "with": []}
    for r in range(repeats):
        order = ("without", "with") if r % 2 == 0 else ("with", "without")
        for mode in order:
            out = os.path.join(d, f"{name}-{mode}-{r}")
            runs[mode].append(_one(out, mode == "with", rate, int(duration_s * 1e9),
                                   interval_ns))
            step[0] += 1
            if progress:
                progress(step[0] / step[1])
    res = {"rate": rate, "runs": runs,
           "all_correct": all(x["correct"] == x["sent"] and x["complete"]
                              for v in runs.values() for x in v)}
    for key in ("throughput_rps", "e2e_p50_us", "e2e_p99_us", "out_delay_p50_us",
                "daemons_core", "nodes_core"):
        res[key] = {m: _med(runs[m], key) for m in runs}
    w, o = res["throughput_rps"]["without"], res["throughput_rps"]["with"]
    res["throughput_cost"] = 1 - o / w if w and o else None
    res["paired_costs"] = [1 - b["throughput_rps"] / a["throughput_rps"]
                           for a, b in zip(runs["without"], runs["with"])
                           if a["throughput_rps"] and b["throughput_rps"]]
    return res


def run(repeats: int = 5, duration_s: float = 4.0, rate: float = 400.0,
        interval_ms: float = 100.0, progress=None) -> dict:
    step = [0, 4 * repeats]
    iv = int(interval_ms * 1e6)
    with tempfile.TemporaryDirectory(prefix="skewd-bench-expd-") as d:
        sat = _series(d, "sat", 0, repeats, duration_s, iv, step, progress)
        op = _series(d, "op", rate, repeats, duration_s, iv, step, progress)
    ok = sat["throughput_cost"] is not None and sat["throughput_cost"] <= BUDGET
    return {"repeats": repeats, "duration_s": duration_s, "interval_ms": interval_ms,
            "hwm": SATURATED_SETTINGS["hwm"], "budget": BUDGET, "saturated": sat,
            "operating": op, "ok": ok,
            "all_ok": ok and sat["all_correct"] and op["all_correct"],
            "cpus": os.cpu_count()}


def _f(v, fmt, unit=""):
    return "-" if v is None else f"{v:{fmt}}{unit}"


def format(res: dict) -> str:
    sat, op = res["saturated"], res["operating"]
    rows = []
    for label, s, key, fmt, unit in (
            ("saturated throughput", sat, "throughput_rps", ".0f", "/s"),
            (f"e2e p50 at {op['rate']:g}/s", op, "e2e_p50_us", ".0f", " µs"),
            (f"e2e p99 at {op['rate']:g}/s", op, "e2e_p99_us", ".0f", " µs"),
            ("one-way delay out of the model, p50", op, "out_delay_p50_us", ".0f", " µs"),
            ("daemons' CPU (share of one core)", op, "daemons_core", ".1%", ""),
            ("pipeline's CPU (share of one core)", op, "nodes_core", ".1%", "")):
        a, b = s[key]["without"], s[key]["with"]
        change = "-" if a in (None, 0) or b is None or key == "daemons_core" \
            else f"{(b / a - 1) * 100:+.1f}%"
        rows.append([label, _f(a, fmt, unit), _f(b, fmt, unit), change])
    pairs = ", ".join(f"{p * 100:+.1f}%" for p in sat["paired_costs"])
    verdict = "ok" if res["ok"] else "OVER"
    cost = sat["throughput_cost"]
    return (table(rows, ["pipeline (medians)", "without daemons", "with daemons", "change"])
            + f"\n\nbudget: saturated throughput cost <= {res['budget'] * 100:.0f}%: {verdict} "
              f"({_f(None if cost is None else cost * 100, '+.2f', '%')}; paired runs: {pairs})"
            + f"\n{res['repeats']} runs per mode, {res['duration_s']:g}s each, alternating; "
              f"daemons probe every {res['interval_ms']:g} ms; {res['cpus']} CPUs; outputs all "
              f"correct: {sat['all_correct'] and op['all_correct']}")
