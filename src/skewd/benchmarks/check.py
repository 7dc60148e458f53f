"""How fast does `skewd check` find violations, and in how much memory?

A table of N generated spans (pipelines and RPC trees over six nodes, one
node skewed so that violations exist) is written to an Arrow file; a fresh
worker process loads it, then times violation detection (column extraction,
the parent join, every edge checked, rates per node pair, stage edge and
window, the cross-node bounds kept for skew estimation) and records its peak
resident memory against the table's size. In the same worker, the same check
is written the way a user would in DuckDB (a self-join on span id, grouped by
node pair) and, on a slice of at most `pandas_spans`, in pandas (merge +
vectorised conditions); the violation counts of all three must agree.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time


from skewd.benchmarks import median, table

BUDGET_SPANS_PER_S = 10e6
BUDGET_MEMORY_RATIO = 2.0


def make_table_file(path: str, spans: int, seed: int = 1, progress=None) -> int:
    """Write about `spans` generated spans to an Arrow IPC file."""
    import pyarrow.ipc as ipc

    from skewd import tracegen as g
    clocks = {"n1": g.NodeClock(offset_ns=-60_000), "n3": g.NodeClock(offset_ns=25_000,
                                                                        drift_ppb=5_000)}
    stages = [("source", "n0"), ("pre", "n1"), ("model", "n2"), ("post", "n3"), ("sink", "n0")]
    calls = [("n4", "n2", "B"), ("n2", "n5", "C"), ("n4", "n3", "D")]
    piece = 4_000_000
    made, i = 0, 0
    writer = None
    try:
        while made < spans:   # piece by piece, so the generator never holds the whole table
            want = min(piece, spans - made)
            t0 = 1_700_000_000_000_000_000 + i * 10**12
            if i % 2 == 0:
                t, _ = g.pipeline(max(1, want // 14), stages, clocks=clocks, seed=seed + i,
                                  start_ns=t0, interval_ns=20_000)
            else:
                t, _ = g.rpc(max(1, want // 11), calls, clocks=clocks, seed=seed + i,
                             start_ns=t0, interval_ns=20_000)
            if writer is None:
                writer = ipc.new_file(path, t.schema)
            writer.write_table(t, max_chunksize=t.num_rows)
            made += t.num_rows
            i += 1
            del t
            if progress:
                progress(min(made / spans, 1.0) * 0.3)
    finally:
        if writer is not None:
            writer.close()
    return made


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


DUCKDB_SQL = """
SELECT p.node AS pnode, c.node AS cnode, count(*) AS edges,
  sum(CASE WHEN p.kind = 'producer' AND c.kind = 'consumer'
            AND c.start_ns - coalesce(p.send_ns, c.send_ns, p.start_ns) < 0 THEN 1 ELSE 0 END) AS neg,
  sum(CASE WHEN NOT (p.kind = 'producer' AND c.kind = 'consumer')
            AND c.start_ns < p.start_ns THEN 1 ELSE 0 END) AS before,
  sum(CASE WHEN c.kind IN ('internal', 'client', 'server') AND p.kind <> 'producer'
            AND c.end_ns > p.end_ns THEN 1 ELSE 0 END) AS after
FROM spans c JOIN spans p ON c.parent_id = p.span_id AND c.trace_id = p.trace_id
GROUP BY 1, 2
"""


def _pandas_check(tab):
    import pandas as pd
    import pyarrow as pa
    df = tab.select(["trace_id", "span_id", "parent_id", "kind", "node", "start_ns", "end_ns",
                     "send_ns"]).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    p = df[["trace_id", "span_id", "kind", "node", "start_ns", "end_ns", "send_ns"]]
    j = df.dropna(subset=["parent_id"]).merge(
        p, left_on=["trace_id", "parent_id"], right_on=["trace_id", "span_id"],
        suffixes=("", "_p"))
    msg = (j["kind_p"] == "producer") & (j["kind"] == "consumer")
    send = j["send_ns_p"].fillna(j["send_ns"]).fillna(j["start_ns_p"])
    neg = msg & (j["start_ns"] - send < 0)
    before = ~msg & (j["start_ns"] < j["start_ns_p"])
    sync = j["kind"].isin(["internal", "client", "server"]) & (j["kind_p"] != "producer")
    after = sync & (j["end_ns"] > j["end_ns_p"])
    return int(neg.sum()), int(before.sum()), int(after.sum()), len(j)


def _ours(tab):
    from skewd import check
    sa = check.SpanArrays.from_table(tab)
    prow = check.link_parents(sa)
    return check.detect(sa, prow)


def worker(path: str, repeats: int, pandas_spans: int) -> dict:
    import pyarrow as pa
    import pyarrow.ipc as ipc
    pa.set_memory_pool(pa.system_memory_pool())   # freed buffers go back to the OS
    with ipc.open_file(path) as r:
        tab = r.read_all()
    tab = tab.combine_chunks()   # one chunk per column, as `skewd merge` writes it
    nbytes = tab.nbytes
    base = _rss("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:   # restart the peak (VmHWM) here
        f.write("5")
    times = []
    det = None
    for _ in range(repeats):
        del det
        det = None
        t0 = time.perf_counter()
        det = _ours(tab)
        times.append(time.perf_counter() - t0)
    peak = _rss("VmHWM")
    c = det.counts()
    ours = (c["negative_transport"]["total"], c["child_before_parent"]["total"],
            c["child_ends_after_parent"]["total"], det.n_edges)
    del det
    out = {"spans": tab.num_rows, "table_bytes": nbytes, "rss_before": base, "peak_rss": peak,
           "ours_s": times, "ours_counts": ours}
    try:
        import duckdb
        con = duckdb.connect(config={"threads": 2})
        con.register("spans", tab)
        dt = []
        for _ in range(max(1, min(repeats, 2))):
            t0 = time.perf_counter()
            rows = con.execute(DUCKDB_SQL).fetchall()
            dt.append(time.perf_counter() - t0)
        out["duckdb_s"] = dt
        out["duckdb_counts"] = (sum(r[3] for r in rows), sum(r[4] for r in rows),
                                sum(r[5] for r in rows), sum(r[2] for r in rows))
        out["duckdb_version"] = duckdb.__version__
        con.close()
    except ImportError:
        out["duckdb_error"] = "duckdb not installed (pip install duckdb)"
    try:
        import pandas as pd
        sl = tab.slice(0, min(pandas_spans, tab.num_rows))
        sl = pa.Table.from_batches(sl.to_batches()).combine_chunks()
        t0 = time.perf_counter()
        ours_sl = _ours(sl)
        t_ours_sl = time.perf_counter() - t0
        t0 = time.perf_counter()
        pc_ = _pandas_check(sl)
        out["pandas_s"] = time.perf_counter() - t0
        out["pandas_spans"] = sl.num_rows
        out["pandas_counts"] = pc_
        cs = ours_sl.counts()
        out["ours_on_pandas_slice_s"] = t_ours_sl
        out["ours_on_pandas_slice_counts"] = (cs["negative_transport"]["total"],
                                              cs["child_before_parent"]["total"],
                                              cs["child_ends_after_parent"]["total"],
                                              ours_sl.n_edges)
        out["pandas_version"] = pd.__version__
    except ImportError:
        out["pandas_error"] = "pandas not installed (pip install pandas)"
    return out


def run(spans: int = 50_000_000, repeats: int = 3, pandas_spans: int = 5_000_000,
        progress=None, workdir: str | None = None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        path = os.path.join(d, "spans.arrow")
        make_table_file(path, spans, progress=progress)
        if progress:
            progress(0.35)
        r = subprocess.run([sys.executable, "-m", "skewd.benchmarks.check", "--worker", path,
                            str(repeats), str(pandas_spans)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"benchmark worker failed: {r.stderr.strip()[-2000:]}")
        w = json.loads(r.stdout.strip().splitlines()[-1])
    if progress:
        progress(1.0)
    t = median(w["ours_s"])
    rate = w["spans"] / t
    mem_ratio = w["peak_rss"] / w["table_bytes"]
    results = [
        dict(name=f"violation detection, {w['spans'] / 1e6:.1f} M spans", seconds=t,
             spans_per_s=rate, peer="-", peer_s=None, ratio=None,
             budget=">= 10 M spans/s", ok=rate >= BUDGET_SPANS_PER_S),
        dict(name="peak memory / table size", seconds=None, spans_per_s=None, peer="-",
             peer_s=None, ratio=mem_ratio, budget="<= 2.0x", ok=mem_ratio <= BUDGET_MEMORY_RATIO),
    ]
    agree = True
    if "duckdb_s" in w:
        ds = median(w["duckdb_s"])
        agree &= tuple(w["duckdb_counts"]) == tuple(w["ours_counts"])
        results.append(dict(name="same check in DuckDB (self-join, 2 threads)", seconds=ds,
                            spans_per_s=w["spans"] / ds, peer="skewd", peer_s=t, ratio=ds / t,
                            budget="(peer)", ok=True))
    if "pandas_s" in w:
        agree &= tuple(w["pandas_counts"]) == tuple(w["ours_on_pandas_slice_counts"])
        results.append(dict(name=f"same check in pandas ({w['pandas_spans'] / 1e6:.1f} M spans)",
                            seconds=w["pandas_s"], spans_per_s=w["pandas_spans"] / w["pandas_s"],
                            peer=f"skewd on the same {w['pandas_spans'] / 1e6:.1f} M",
                            peer_s=w["ours_on_pandas_slice_s"],
                            ratio=w["pandas_s"] / w["ours_on_pandas_slice_s"], budget="(peer)",
                            ok=True))
    results.append(dict(name="violation counts agree across implementations", seconds=None,
                        spans_per_s=None, peer="-", peer_s=None, ratio=None, budget="equal",
                        ok=bool(agree)))
    return {"benchmark": "check",
            "host": {"machine": platform.machine(), "python": platform.python_version(),
                     "cpus": os.cpu_count(), "kernel": platform.release()},
            "spans": w["spans"], "requested_spans": spans, "repeats": repeats,
            "table_bytes": w["table_bytes"], "peak_rss_bytes": w["peak_rss"],
            "rss_before_bytes": w["rss_before"], "worker": w, "results": results,
            "all_ok": all(r["ok"] for r in results)}


def format(res: dict) -> str:
    rows = []
    for r in res["results"]:
        rows.append([r["name"],
                     f"{r['seconds']:.2f} s" if r["seconds"] is not None else "-",
                     f"{r['spans_per_s'] / 1e6:.1f} M/s" if r["spans_per_s"] else "-",
                     r["peer"] + (f" ({r['peer_s']:.2f} s)" if r["peer_s"] else ""),
                     f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-",
                     r["budget"], "ok" if r["ok"] else "OVER"])
    runs = ", ".join(f"{t:.2f}" for t in res["worker"]["ours_s"])
    head = (f"violation detection, medians of {res['repeats']} repeats (each: {runs} s); table "
            f"{res['table_bytes'] / 2**30:.2f} GiB, peak RSS {res['peak_rss_bytes'] / 2**30:.2f} GiB "
            f"({res['host']['cpus']} CPUs, Python {res['host']['python']})")
    return head + "\n" + table(rows, ["what", "time", "throughput", "peer (same run)", "ratio",
                                      "budget", ""])


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--worker":
    res = worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    print(json.dumps(res))
