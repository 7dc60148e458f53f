"""What does tracing cost the pipeline? The experiment's pipeline run with
and without skewd's tracer, in alternating runs (so drifts in machine load
hit both alike):

- saturated: the source sends as fast as the pipeline takes requests; the
  throughput counted at the sink is the pipeline's capacity on this host;
- at the operating rate: the experiment's default offered rate; throughput
  is what the pipeline delivers of it.

Each run also gives the CPU time all nodes spent per request over the
measured window. The budget: tracing costs at most 2 % of throughput."""
from __future__ import annotations

import os
import tempfile

from skewd.benchmarks import median, table

BUDGET = 0.02


def _one(out_dir: str, instrumented: bool, rate: float, duration_ns: int, hwm: int) -> dict:
    from skewd.experiment import runner
    cfg = runner.ExperimentConfig(
        out_dir=out_dir, skews_ns=(0,), duration_ns=duration_ns, rate=rate,
        slot_ns=min(duration_ns, 500_000_000), instrumented=instrumented,
        transport_settings={"hwm": hwm} if rate == 0 else {})
    res = runner.run(cfg)
    s = res.analysis.skews[0]
    done = s.received
    return {"throughput_rps": s.throughput_rps, "complete": res.complete,
            "correct": s.correct, "sent": s.sent, "problems": list(res.problems),
            "cpu_s": res.cpu["nodes_s"], "window_s": res.cpu["window_s"],
            "cpu_us_per_request": (sum(res.cpu["nodes_s"].values()) / done * 1e6
                                   * s.seconds / res.cpu["window_s"]) if done else None}


def _series(d: str, name: str, rate: float, repeats: int, duration_s: float, hwm: int,
            step, progress) -> dict:
    runs = {"traced": [], "plain": []}
    for r in range(repeats):
        order = ("plain", "traced") if r % 2 == 0 else ("traced", "plain")
        for mode in order:
            out = os.path.join(d, f"{name}-{mode}-{r}")
            runs[mode].append(_one(out, mode == "traced", rate, int(duration_s * 1e9), hwm))
            step[0] += 1
            if progress:
                progress(step[0] / step[1])
    plain = median([x["throughput_rps"] for x in runs["plain"]])
    traced = median([x["throughput_rps"] for x in runs["traced"]])
    cpu_p = median([x["cpu_us_per_request"] for x in runs["plain"]])
    cpu_t = median([x["cpu_us_per_request"] for x in runs["traced"]])
    return {"rate": rate, "plain_rps": plain, "traced_rps": traced,
            "overhead": 1 - traced / plain,
            "paired_overheads": [1 - t["throughput_rps"] / p["throughput_rps"]
                                 for t, p in zip(runs["traced"], runs["plain"])],
            "cpu_us_per_request_plain": cpu_p, "cpu_us_per_request_traced": cpu_t,
            "cpu_overhead": cpu_t / cpu_p - 1, "runs": runs,
            "all_correct": all(x["correct"] == x["sent"] and x["complete"]
                               for v in runs.values() for x in v)}


def run(repeats: int = 5, duration_s: float = 4.0, rate: float = 400.0, hwm: int = 64,
        progress=None) -> dict:
    step = [0, 4 * repeats]
    with tempfile.TemporaryDirectory(prefix="skewd-bench-exp-") as d:
        sat = _series(d, "sat", 0, repeats, duration_s, hwm, step, progress)
        op = _series(d, "op", rate, repeats, duration_s, hwm, step, progress)
    ok = sat["overhead"] <= BUDGET
    return {"repeats": repeats, "duration_s": duration_s, "hwm": hwm, "budget": BUDGET,
            "saturated": sat, "operating": op, "ok": ok,
            "all_ok": ok and sat["all_correct"] and op["all_correct"],
            "cpus": os.cpu_count()}


def format(res: dict) -> str:
    rows = []
    for key, label in (("saturated", "saturated (as fast as taken)"),
                       ("operating", f"at {res['operating']['rate']:g} requests/s")):
        s = res[key]
        rows.append([label, f"{s['plain_rps']:.0f}/s", f"{s['traced_rps']:.0f}/s",
                     f"{s['overhead'] * 100:+.2f}%", f"{s['cpu_us_per_request_plain']:.0f} µs",
                     f"{s['cpu_us_per_request_traced']:.0f} µs",
                     f"{s['cpu_overhead'] * 100:+.1f}%"])
    sat = res["saturated"]
    pairs = ", ".join(f"{p * 100:+.1f}%" for p in sat["paired_overheads"])
    verdict = "ok" if res["ok"] else "OVER"
    return (table(rows, ["pipeline", "throughput plain", "traced", "overhead",
                         "CPU/request plain", "traced", "CPU overhead"])
            + f"\n\nbudget: saturated throughput overhead <= {res['budget'] * 100:.0f}%: "
              f"{verdict} ({sat['overhead'] * 100:+.2f}%; paired runs: {pairs})"
            + f"\n{res['repeats']} runs per mode, {res['duration_s']:g}s each, alternating; "
              f"{res['cpus']} CPUs; outputs all correct: "
              f"{sat['all_correct'] and res['operating']['all_correct']}")
