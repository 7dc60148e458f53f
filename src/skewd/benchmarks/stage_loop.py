"""What does tracing cost one pipeline stage, away from the pipeline? The
model stage's loop in one process, without sockets: decode a message, run
the model, pack and encode the output; traced, the same with a consumer
span (parent and send time from the message's header), a producer span and
its header written, a Tracer draining to a span log beside it (flush every
100 ms, as in the stages). Blocks of requests alternate, plain and traced,
order swapped every repeat; the CPU time of the whole process per request
is compared block against block, so the drain thread's work is counted.

The loop runs in a fresh process with one BLAS thread (as the stages do),
on the last CPU alone where the host has two or more. The budget: a traced request costs the stage at most 2 % more CPU (the
pipeline's, bench/experiment.py, is the same budget on throughput)."""
from __future__ import annotations

import os
import tempfile
import time

from skewd.benchmarks import median, quantile, table

BUDGET = 0.02


def _loops(tracer):
    import numpy as np

    from skewd.experiment import workload as W
    from skewd.experiment.transports import zmq as Z
    from skewd.experiment.transports.base import Message

    weights = W.make_weights(1)
    inputs = [W.pack(i, 0, W.preprocess(W.make_input(1, i))) for i in range(64)]
    shape = (W.TOKENS, W.WIDTH)

    def plain(n: int) -> None:
        for i in range(n):
            msg = Z.decode([Z.MAGIC, inputs[i & 63]])
            req, t, body = W.unpack_head(msg.payload)
            out = W.pack(req, t, W.model(weights, W.as_array(body, np.float32, shape)))
            Z.encode(Message(out))

    with tracer.span("send source->model", kind="producer") as p0:
        head = Z.encode(Message(b"", None, (p0, p0.mark_send())))[0]
    consumer, producer = tracer.consumer, tracer.producer

    def traced(n: int) -> None:  # as the stages do it (stages._run_relay, _send)
        for i in range(n):
            msg = Z.decode([head, inputs[i & 63]])
            ctx, send_ns = msg.trace
            c = consumer("recv", ctx, send_ns)
            try:
                req, t, body = W.unpack_head(msg.payload)
                out = W.pack(req, t, W.model(weights, W.as_array(body, np.float32, shape)))
                p = producer("send", c)
                try:
                    Z.encode(Message(out, None, (p, p.mark_send())))
                finally:
                    p.end()
            finally:
                c.end()

    return plain, traced


def _measure(repeats: int, block: int) -> dict:
    """In the child process: pin, loop, count."""
    from skewd import Tracer
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[-1]})
    per = {"plain": [], "traced": []}
    with tempfile.TemporaryDirectory(prefix="skewd-bench-stage-") as d:
        tracer = Tracer(stage="model", log_dir=d, flush_interval=0.1)
        try:
            loops = dict(zip(("plain", "traced"), _loops(tracer)))
            loops["plain"](200)  # warm both paths up
            loops["traced"](200)
            for r in range(repeats):
                for mode in (("plain", "traced") if r % 2 == 0 else ("traced", "plain")):
                    c0 = time.process_time()
                    loops[mode](block)
                    per[mode].append((time.process_time() - c0) / block * 1e6)
        finally:
            tracer.close()
        st = tracer.stats()
    return {"per": per, "cpu": cpus[-1] if len(cpus) >= 2 else None,
            "spans": st["spans"], "dropped": st["dropped"], "drain_cpu_s": st["drain_cpu_s"]}


def run(repeats: int = 20, block: int = 2000, progress=None) -> dict:
    import json
    import subprocess
    import sys
    code = ("import json, sys; from skewd.benchmarks.stage_loop import _measure; "
            "print(json.dumps(_measure(int(sys.argv[1]), int(sys.argv[2]))))")
    # a fresh interpreter, so that numpy's BLAS starts with the one thread the stages give it
    p = subprocess.run([sys.executable, "-c", code, str(repeats), str(block)],
                       env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"),
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"the stage loop failed (exit {p.returncode}): {p.stderr[-2000:]}")
    m = json.loads(p.stdout.splitlines()[-1])
    if progress:
        progress(1.0)
    per = m["per"]
    pairs = [t / p - 1 for t, p in zip(per["traced"], per["plain"])]
    overhead = median(pairs)
    ok = overhead <= BUDGET and m["dropped"] == 0
    return {"repeats": repeats, "block": block, "cpu": m["cpu"],
            "plain_us": median(per["plain"]), "traced_us": median(per["traced"]),
            "overhead": overhead, "pairs": sorted(pairs),
            "drain_us_per_request": m["drain_cpu_s"] / max(1, m["spans"]) * 2e6,  # 2 spans each
            "spans": m["spans"], "dropped": m["dropped"], "budget": BUDGET,
            "ok": ok, "all_ok": ok}


def format(res: dict) -> str:
    q1, q3 = quantile(res["pairs"], 0.25), quantile(res["pairs"], 0.75)
    rows = [["model stage loop, CPU per request", f"{res['plain_us']:.1f} µs",
             f"{res['traced_us']:.1f} µs", f"{res['overhead'] * 100:+.2f}%",
             f"{q1 * 100:+.2f}% … {q3 * 100:+.2f}%", "<= +2%",
             "ok" if res["ok"] else "OVER"]]
    where = f"on CPU {res['cpu']} alone" if res["cpu"] is not None else "on the only CPU"
    return (table(rows, ["what", "plain", "traced", "traced vs plain (median block pair)",
                         "quartiles", "budget", ""])
            + f"\n{res['repeats']} pairs of {res['block']}-request blocks, {where}; "
              f"draining to the span log {res['drain_us_per_request']:.2f} µs a request; "
              f"{res['spans']} spans, {res['dropped']} dropped")
