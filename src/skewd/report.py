"""What `skewd check` found, as a terminal table, JSON, or one HTML file.

The HTML report is self-contained: its plots are inline SVG drawn with
matplotlib (violation rate per node pair and per stage edge, violation
magnitudes, rate over time, estimated against known skew), no script, no
external file.
"""
from __future__ import annotations

import html
import io
import math

import numpy as np

from skewd.benchmarks import table as _table
from skewd.units import format_duration


def _fmt(ns) -> str:
    if ns is None:
        return "-"
    if isinstance(ns, float) and not math.isfinite(ns):
        return "+inf" if ns > 0 else "-inf"
    return format_duration(ns)


def _rates(det, which: str):
    """Rows (from, to, edges, violating, rate) for node pairs or stage edges."""
    if which == "nodes":
        names, e, v = det.nodes, det.pair_edges, det.pair_viol
    else:
        if det.stage_edges is None:
            return []
        names, e, v = det.stages, det.stage_edges, det.stage_viol
    rows = []
    for i, j in zip(*np.nonzero(e)):
        rows.append((str(names[i]), str(names[j]), int(e[i, j]), int(v[i, j]),
                     float(v[i, j]) / float(e[i, j])))
    rows.sort(key=lambda r: (-r[4], -r[2]))
    return rows


def as_dict(res, violations=None) -> dict:
    """The JSON form (violations: optional check.violations_table rows)."""
    det = res.detection
    est = res.estimate

    def pairs(e):
        if e is None:
            return []
        return [{"a": p.a, "b": p.b, "est_ns": p.est_ns,
                 "lo_ns": p.lo_ns if math.isfinite(p.lo_ns) else None,
                 "hi_ns": p.hi_ns if math.isfinite(p.hi_ns) else None,
                 "bound": p.sided, "drift_ppb": p.drift_ppb, "source": p.source,
                 "edges": p.n_edges, "known_ns": p.known_ns} for p in e.pairs]
    out = {
        "spans": det.n_spans, "edges": det.n_edges, "edges_by_type": det.edges_by_type,
        "violations": det.counts(),
        "violation_rate": (int((~det.v_same_node).sum()) / det.n_edges) if det.n_edges else 0.0,
        "by_node_pair": [dict(zip(("from", "to", "edges", "violating", "rate"), r))
                         for r in _rates(det, "nodes")],
        "by_stage_edge": [dict(zip(("from", "to", "edges", "violating", "rate"), r))
                          for r in _rates(det, "stages")],
        "over_time": {"window_ns": det.window_ns,
                      "start_ns": det.window_start_ns.tolist(),
                      "edges": det.window_edges.tolist(), "violating": det.window_viol.tolist()},
        "skew": {"source": sorted(set(est.source)), "t0_ns": est.t0_ns,
                 "pairs": pairs(est), "traces": pairs(res.trace_estimate),
                 "daemon": pairs(res.daemon_estimate), "slack_ns": est.slack_ns,
                 "notes": est.notes,
                 "nodes": [{"node": n, "offset_ns": float(est.theta[i]) if est.known[i] else None,
                            "drift_ppb": float(est.rate[i] * 1e9),
                            "reference": est.nodes[est.reference[i]], "source": est.source[i]}
                           for i, n in enumerate(est.nodes)]},
        "after_correction": res.after.counts() if res.after is not None else None,
        "after_offsets_only": (res.after_offsets_only.counts()
                               if res.after_offsets_only is not None else None),
        "prediction": res.prediction,
        "warnings": res.warnings.as_dict(),
    }
    if violations is not None:
        rows = violations.to_pylist()
        for r in rows:
            for k in ("trace_id", "span_id", "parent_id"):
                r[k] = r[k].hex() if r[k] is not None else None
        out["largest_violations"] = rows
    return out


def text(res, violations=None) -> str:
    det = res.detection
    c = det.counts()
    lines = [f"{det.n_spans} spans, {det.n_edges} parent/child edges "
             f"({det.edges_by_type['message']} message, {det.edges_by_type['sync']} synchronous)"]
    rows = [[k.replace("_", " "), str(v["total"]), str(v["definite"]), str(v["possible"]),
             str(v["instrumentation"])] for k, v in c.items()]
    if res.after is not None:
        ca = res.after.counts()
        co = res.after_offsets_only.counts()
        for r, k in zip(rows, c):
            r += [str(co[k]["total"] - co[k]["instrumentation"]),
                  str(ca[k]["total"] - ca[k]["instrumentation"])]
        head = ["violation", "total", "definite", "possible", "instrumentation",
                "after offsets", "after offsets+CLC"]
    else:
        head = ["violation", "total", "definite", "possible", "instrumentation"]
    lines += ["", _table(rows, head)]
    pr = _rates(det, "nodes")
    if pr:
        lines += ["", "by node pair (parent node -> child node)",
                  _table([[a, b, str(e), str(v), f"{r * 100:.2f}%"] for a, b, e, v, r in pr[:20]],
                         ["from", "to", "edges", "violating", "rate"])]
    sr = _rates(det, "stages")
    if sr:
        lines += ["", "by stage edge",
                  _table([[a, b, str(e), str(v), f"{r * 100:.2f}%"] for a, b, e, v, r in sr[:20]],
                         ["from", "to", "edges", "violating", "rate"])]
    we = det.window_edges
    if we.sum():
        rates = np.where(we > 0, det.window_viol / np.maximum(we, 1), np.nan)
        ok = ~np.isnan(rates)
        lines += ["", f"cross-node violation rate over time ({len(we)} windows of "
                      f"{_fmt(det.window_ns)}): first {rates[ok][0] * 100:.2f}%, "
                      f"last {rates[ok][-1] * 100:.2f}%, min {np.nanmin(rates) * 100:.2f}%, "
                      f"max {np.nanmax(rates) * 100:.2f}%"]
    est = res.estimate
    src = ", ".join(sorted(set(s for s in est.source if s != "none"))) or "none"
    if est.pairs:
        prow = []
        for p in est.pairs:
            prow.append([f"{p.a} -> {p.b}", _fmt(p.est_ns), f"[{_fmt(p.lo_ns)}, {_fmt(p.hi_ns)}]",
                         p.sided, f"{p.drift_ppb / 1000:.3f}", _fmt(p.known_ns), p.source,
                         str(p.n_edges)])
        lines += ["", f"skew (b's clock ahead of a's, at t0 = {est.t0_ns}); source used: {src}",
                  _table(prow, ["pair a -> b", "estimate", "interval", "bound", "drift ppm",
                                "known", "source", "edges"])]
    for n in est.notes:
        lines.append(f"note: {n}")
    if res.prediction:
        p = res.prediction
        lines += ["", f"predicted negative-transport rate F_L(s) from {p['n_latencies']} "
                      f"one-way delays ({p['source']})",
                  _table([[_fmt(s), f"{r * 100:.2f}%"] for s, r in zip(p["skew_ns"], p["rate"])],
                         ["receiver behind by s", "expected rate"])]
    if violations is not None and violations.num_rows:
        v = violations.to_pylist()[:10]
        lines += ["", "largest violations",
                  _table([[r["kind"].replace("_", " "), _fmt(r["magnitude_ns"]), r["certainty"],
                           f"{r['parent_node']}/{r['parent_name']}",
                           f"{r['child_node']}/{r['child_name']}", r["trace_id"].hex()[:16]]
                          for r in v],
                         ["violation", "magnitude", "certainty", "parent", "child", "trace"])]
    if res.warnings:
        lines += ["", "input warnings:"] + ["  " + x for x in res.warnings.lines()]
    return "\n".join(lines)


# --- HTML --------------------------------------------------------------------------

def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    s = buf.getvalue()
    return s[s.index("<svg"):]


def plots(res) -> dict[str, str]:
    """Inline SVG plots by title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    det = res.detection
    out = {}
    for which, title in (("nodes", "Violation rate per node pair"),
                         ("stages", "Violation rate per stage edge")):
        rows = _rates(det, which)[:25]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
        ax.barh([f"{a} → {b}" for a, b, *_ in rows][::-1], [r[4] * 100 for r in rows][::-1],
                color="#c0392b")
        ax.set_xlabel("violating edges (%)")
        ax.set_title(title)
        out[title] = _svg(fig)
    mags = det.v_mag[~det.v_same_node]
    if mags.size:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        lo, hi = max(1, int(mags.min())), max(2, int(mags.max()))
        bins = np.logspace(np.log10(lo), np.log10(hi) + 1e-9, 40)
        for k, name in enumerate(("negative transport", "child before parent",
                                  "child ends after parent")):
            m = det.v_mag[(det.v_kind == k) & ~det.v_same_node]
            if m.size:
                ax.hist(m, bins=bins, alpha=0.6, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("magnitude (ns)")
        ax.set_ylabel("violations")
        ax.legend()
        ax.set_title("Violation magnitudes (cross-node)")
        out["Violation magnitudes"] = _svg(fig)
    we = det.window_edges
    if we.sum():
        fig, ax = plt.subplots(figsize=(7, 3.2))
        t = (det.window_start_ns - det.window_start_ns[0] + det.window_ns / 2) / 1e9
        r = np.where(we > 0, det.window_viol / np.maximum(we, 1), np.nan) * 100
        ax.plot(t, r, marker="o", label="as recorded")
        if res.after is not None:
            ra = np.where(res.after.window_edges > 0,
                          res.after.window_viol / np.maximum(res.after.window_edges, 1), np.nan)
            ax.plot(t, ra * 100, marker=".", label="after correction")
        ax.set_xlabel("time since first span (s)")
        ax.set_ylabel("violating cross-node edges (%)")
        ax.legend()
        ax.set_title("Violation rate over time")
        out["Violation rate over time"] = _svg(fig)
    pairs = [p for p in res.estimate.pairs if p.est_ns is not None or math.isfinite(p.hi_ns)
             or math.isfinite(p.lo_ns)]
    if pairs:
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(pairs) + 1.5))
        y = np.arange(len(pairs))
        for i, p in enumerate(pairs):
            lo = p.lo_ns if math.isfinite(p.lo_ns) else None
            hi = p.hi_ns if math.isfinite(p.hi_ns) else None
            a = lo if lo is not None else (hi - abs(hi) - 1e6 if hi is not None else 0)
            b = hi if hi is not None else (lo + abs(lo) + 1e6 if lo is not None else 0)
            ax.plot([a / 1e3, b / 1e3], [i, i], color="#2980b9", lw=4, alpha=0.5,
                    label="interval" if i == 0 else None)
            if p.est_ns is not None:
                ax.plot(p.est_ns / 1e3, i, "o", color="#2980b9", label="estimate" if i == 0 else None)
            if p.known_ns is not None:
                ax.plot(p.known_ns / 1e3, i, "x", color="#27ae60", ms=10,
                        label="known" if i == 0 else None)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{p.a} → {p.b} ({p.sided})" for p in pairs])
        ax.set_xlabel("skew, µs (b ahead of a)")
        ax.legend()
        ax.set_title("Estimated vs known skew")
        out["Estimated vs known skew"] = _svg(fig)
    if res.prediction and res.prediction["n_latencies"]:
        p = res.prediction
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.plot(np.array(p["skew_ns"]) / 1e3, np.array(p["rate"]) * 100, marker="o")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("receiver behind by s (µs)")
        ax.set_ylabel("expected violation rate (%)")
        ax.set_title("Predicted F_L(s)")
        out["Predicted violation rate"] = _svg(fig)
    return out


def html_report(res, violations=None, title: str = "skewd check") -> str:
    figs = plots(res)
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}"
             "figure{margin:1.5em 0}svg{max-width:100%;height:auto}</style></head><body>",
             f"<h1>{esc(title)}</h1>"]
    for name, svg in figs.items():
        parts.append(f"<figure><figcaption><b>{esc(name)}</b></figcaption>{svg}</figure>")
    parts.append(f"<h2>Details</h2><pre>{esc(text(res, violations))}</pre></body></html>")
    return "\n".join(parts)
