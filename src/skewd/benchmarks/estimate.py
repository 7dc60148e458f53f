"""What does one Estimator.add cost? The per-peer estimator fed a synthetic
peer (5 ms ahead, 20 ppm fast, queueing jitter on a 30 us path, 10 probes/s),
timed sample by sample: the median and 99th percentile of µs per add (wall clock), and
the mean CPU time per add, which the daemon pays once per exchange."""
from __future__ import annotations

import random
import time

from skewd.benchmarks import median, table

BASE = 1_700_000_000_000_000_000


def samples(count: int = 3000, seed: int = 1) -> list:
    """A deterministic synthetic exchange stream."""
    from skewd.estimate import Sample
    rng = random.Random(seed)
    out = []
    for k in range(count):
        t1 = BASE + k * 100_000_000 + rng.randrange(1000)
        off = 5_000_000 + (t1 - BASE) * 20 // 1_000_000   # 20 ppm
        fwd = 15_000 + int(rng.expovariate(1 / 3000))
        back = 15_000 + int(rng.expovariate(1 / 3000))
        t2 = t1 + fwd + off + int(rng.gauss(0, 50))
        t3 = t2 + 8_000
        t4 = t3 - off + back + int(rng.gauss(0, 50))
        out.append(Sample(t1, t2, t3, t4, source="kernel", seq=k))
    return out


def run(count: int = 3000, repeats: int = 5, progress=None) -> dict:
    from skewd.estimate import Estimator
    stream = samples(count)
    clock = time.perf_counter_ns
    medians, means, p99s, verdicts = [], [], [], {}
    for r in range(repeats):
        est = Estimator()
        per = []
        cpu0 = time.process_time()
        for s in stream:
            t0 = clock()
            e = est.add(s)
            per.append(clock() - t0)
            if r == 0 and e is not None:
                verdicts[e.verdict] = verdicts.get(e.verdict, 0) + 1
        # CPU time, so that the machine's other work does not count
        means.append((time.process_time() - cpu0) / len(stream) * 1e6)
        per.sort()
        medians.append(per[len(per) // 2] / 1000)
        p99s.append(per[int(len(per) * 0.99)] / 1000)
        if progress:
            progress((r + 1) / repeats)
    med, mean, p99 = median(medians), median(means), median(p99s)
    return {
        "benchmark": "estimate", "samples": count, "repeats": repeats,
        "add_us_median": med, "add_us_mean": mean, "add_us_p99": p99, "verdicts": verdicts,
        "runs": [{"median_us": m, "mean_us": a, "p99_us": p}
                 for m, a, p in zip(medians, means, p99s)],
        "results": [
            dict(name="Estimator.add, median", value=f"{med:.1f} us", budget="<= 20 us",
                 ok=med <= 20),
            dict(name="Estimator.add, mean CPU time (incl. timing)", value=f"{mean:.1f} us",
             budget="", ok=True),
        dict(name="Estimator.add, 99th percentile", value=f"{p99:.1f} us", budget="",
                 ok=True),
        ],
        "all_ok": med <= 20,
    }


def format(res: dict) -> str:
    rows = [[r["name"], r["value"], r["budget"], "ok" if r["ok"] else "OVER"]
            for r in res["results"]]
    return (f"estimator cost over {res['samples']} synthetic samples, median of "
            f"{res['repeats']} runs\n" + table(rows, ["what", "measured", "budget", ""]))
