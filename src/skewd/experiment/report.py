"""An experiment's results as a terminal table, JSON, PNG plots and one
self-contained HTML page (plots embedded), written into the run's --out
directory."""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import asdict

from skewd.benchmarks import table
from skewd.units import format_duration

PLOTS = {"rate": "rate_vs_skew.png", "throughput": "throughput_vs_skew.png",
         "drift": "drift_rate.png"}


def _dur(ns) -> str:
    return "-" if ns is None else format_duration(ns)


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _pp(a, b) -> str:
    return "-" if a is None or b is None else f"{(a - b) * 100:+.1f}"


def rows(result) -> tuple[list[str], list[list[str]]]:
    """The per-skew table: header and rows (also used by the HTML page)."""
    header = ["skew", "injected", "daemon", "est. skew (traces)", "negative spans",
              "predicted", "Δ pp", "throughput", "correct", "e2e p50", "e2e p99"]
    out = []
    for s in result.analysis.skews:
        out.append([
            _dur(s.skew_ns), _dur(s.injected_offset_ns),
            _dur(s.daemon_offset_ns) if s.daemon_offset_ns is not None else "n/a",
            _dur(s.est_skew_ns), _pct(s.rate), _pct(s.predicted_rate),
            _pp(s.rate, s.predicted_rate),
            "-" if s.throughput_rps is None else f"{s.throughput_rps:.0f}/s",
            _pct(s.correctness), _dur(s.latency_p50_ns), _dur(s.latency_p99_ns)])
    return header, out


def _ppm(x) -> str:
    return "-" if x is None else f"{x:.1f} ppm"


def drift_rows(result) -> tuple[list[str], list[list[str]]]:
    header = ["t", "injected offset", "daemon offset", "daemon drift", "est. skew (traces)",
              "negative spans", "predicted", "F(daemon offset)", "messages", "throughput"]
    out = [[f"{w.t_s:.1f}s", _dur(w.offset_ns), _dur(w.daemon_offset_ns),
            _ppm(w.daemon_drift_ppm), _dur(w.est_skew_ns), _pct(w.rate),
            _pct(w.predicted_rate), _pct(w.daemon_predicted_rate), str(w.messages),
            "-" if w.throughput_rps is None else f"{w.throughput_rps:.0f}/s"]
           for w in result.analysis.drift]
    return header, out


def daemon_lines(result) -> list[str]:
    """What the daemons measured, in sentences: per skew against the
    injection; for a drift run, the drift and how it explains the rate."""
    a = result.analysis
    stage = result.config["skew_stage"]
    lines = []
    got = [s for s in a.skews if s.daemon_offset_ns is not None]
    if got:
        worst = max(got, key=lambda s: abs(s.daemon_offset_ns - s.skew_ns))
        lines.append(
            f"daemon offset against the injected skew: at most "
            f"{format_duration(abs(worst.daemon_offset_ns - worst.skew_ns))} apart (at "
            f"{format_duration(worst.skew_ns)}), from {min(s.daemon_exchanges for s in got)}"
            f"-{max(s.daemon_exchanges for s in got)} exchanges per skew")
    injected = result.config.get("drift_ppb")
    if a.daemon_drift_ppm is not None and injected:
        inj = injected / 1000
        lines.append(
            f"drift: the daemons measured {stage}'s clock drifting at {a.daemon_drift_ppm:.2f} "
            f"ppm (injected {inj:g} ppm, {(a.daemon_drift_ppm / inj - 1) * 100:+.1f} %; "
            f"median of {a.daemon_drift_nodes} nodes' estimators)")
        ws = [w for w in a.drift if w.daemon_offset_ns is not None and w.rate is not None
              and w.daemon_predicted_rate is not None and w.messages]
        if ws:
            n = sum(w.messages for w in ws)
            meas = sum(w.rate * w.messages for w in ws) / n
            pred = sum(w.daemon_predicted_rate * w.messages for w in ws) / n
            gaps = sorted(abs(w.rate - w.daemon_predicted_rate) for w in ws)
            lines.append(
                f"the drift explains the rate: as the measured offset grew from "
                f"{format_duration(ws[0].daemon_offset_ns)} to "
                f"{format_duration(ws[-1].daemon_offset_ns)}, the negative-span rate went from "
                f"{ws[0].rate * 100:.1f} % to {ws[-1].rate * 100:.1f} %; the rate predicted "
                f"from the measured offset, F(measured offset) with F the skew-0 delays, is "
                f"{pred * 100:.1f} % over the ramp against {meas * 100:.1f} % measured "
                f"({(meas - pred) * 100:+.1f} points; window by window the median gap is "
                f"{gaps[len(gaps) // 2] * 100:.1f} points, the largest {gaps[-1] * 100:.1f})")
    return lines


def _summary_lines(result) -> list[str]:
    cfg = result.config
    a = result.analysis
    lines = [f"skew injected at stage {cfg['skew_stage']!r} over {result.transport['kind']}, "
             f"{cfg['hosts']} hosts, "
             + (f"{cfg['rate']:g} requests/s" if cfg["rate"] else "requests as fast as taken")]
    for b in a.baseline:
        lines.append(f"one-way delay at skew 0, {b.edge}: floor {_dur(b.floor_ns)}, "
                     f"p50 {_dur(b.p50_ns)}, p99 {_dur(b.p99_ns)} ({b.messages} messages)")
    lines.append("negative spans: per request crossing the stage, in-edge plus out-edge; "
                 "predicted: F(±skew) from the skew-0 delays")
    lines.append(f"est. skew: {a.estimator}")
    lines.append(f"daemon: {result.daemon}")
    lines.extend(daemon_lines(result))
    lines.extend(a.notes)
    return lines


def format_table(result) -> str:
    parts = []
    if result.analysis.skews:
        h, r = rows(result)
        parts.append(table(r, h))
    if result.analysis.drift:
        h, r = drift_rows(result)
        drift = result.config.get("drift_ppb") or 0
        parts.append(f"drift run: {drift / 1000:g} ppm at stage {result.config['skew_stage']}\n"
                     + table(r, h))
    parts.append("\n".join(_summary_lines(result)))
    if not result.complete:
        parts.append("INCOMPLETE RUN\n" + "\n".join(
            [f"  problem: {p}" for p in result.problems] +
            [f"  missing: {m}" for m in result.missing]))
    return "\n\n".join(parts)


# --- JSON -----------------------------------------------------------------------------

def _clean(o):
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item") and callable(o.item):  # numpy scalars
        return _clean(o.item())
    return o


def to_json(result) -> str:
    return json.dumps(_clean(asdict(result)), indent=2)


# --- plots ----------------------------------------------------------------------------

def _symlog_x(ax, skews_ns):
    """Log-like x axis (µs) that still shows skew 0 and negative skews."""
    nz = [abs(s) for s in skews_ns if s]
    lin = min(nz) / 1e3 if nz else 1.0
    ax.set_xscale("symlog", linthresh=lin)
    lo, hi = min(skews_ns) / 1e3, max(skews_ns) / 1e3
    ax.set_xlim(lo * 1.5 if lo < 0 else -lin * 0.3, hi * 1.5 if hi > 0 else lin * 0.3)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plots(result) -> dict[str, bytes]:
    """name -> PNG bytes for the plots this result has data for."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    sk = [s for s in result.analysis.skews]
    title = f"skew at {result.config['skew_stage']} over {result.transport['kind']}"
    if len(sk) > 1:
        x = [s.skew_ns / 1e3 for s in sk]
        fig, ax = plt.subplots(figsize=(6.4, 4))
        ax.plot(x, [None if s.rate is None else 100 * s.rate for s in sk], "o-",
                label="measured")
        if result.analysis.curve:
            ax.plot([c[0] / 1e3 for c in result.analysis.curve],
                    [100 * c[1] for c in result.analysis.curve], "-", color="tab:orange",
                    lw=1, alpha=0.6, label="F(skew) from the skew-0 delays")
        ax.plot(x, [None if s.predicted_rate is None else 100 * s.predicted_rate for s in sk],
                "s", color="tab:orange", mfc="none", label="predicted at each skew")
        for b in result.analysis.baseline:
            if b.floor_ns is not None:
                ax.axvline(b.floor_ns / 1e3, color="grey", lw=0.8, ls=":")
        _symlog_x(ax, [s.skew_ns for s in sk])
        ax.set_xlabel("injected skew (µs)")
        ax.set_ylabel("negative spans per request (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(title + " (dotted: latency floor)")
        out["rate"] = _png(fig)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        ax.plot(x, [s.throughput_rps for s in sk], "o-", label="throughput")
        if result.config["rate"]:
            ax.axhline(result.config["rate"], color="grey", lw=0.8, ls=":", label="offered")
        _symlog_x(ax, [s.skew_ns for s in sk])
        ax.set_xlabel("injected skew (µs)")
        ax.set_ylabel("requests/s")
        top = max([s.throughput_rps or 0 for s in sk] + [result.config["rate"]])
        ax.set_ylim(0, top * 1.15)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        ax.set_title(title)
        out["throughput"] = _png(fig)
        plt.close(fig)
    dr = result.analysis.drift
    if dr:
        t = [w.t_s for w in dr]
        fig, ax = plt.subplots(figsize=(6.4, 4))
        ax.plot(t, [None if w.rate is None else 100 * w.rate for w in dr], "o-",
                label="measured")
        ax.plot(t, [None if w.predicted_rate is None else 100 * w.predicted_rate for w in dr],
                "s--", label="predicted")
        ax.set_xlabel("time since the drift began (s)")
        ax.set_ylabel("negative spans per request (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax2 = ax.twinx()
        ax2.plot(t, [w.offset_ns / 1e3 for w in dr], color="tab:green", lw=1,
                 label="injected offset")
        ax2.plot(t, [None if w.est_skew_ns is None else w.est_skew_ns / 1e3 for w in dr],
                 ".", color="tab:olive", label="est. skew (traces)")
        if any(w.daemon_offset_ns is not None for w in dr):
            ax2.plot(t, [None if w.daemon_offset_ns is None else w.daemon_offset_ns / 1e3
                         for w in dr], "x", color="tab:purple", label="daemon offset")
            ax.plot(t, [None if w.daemon_predicted_rate is None else 100 * w.daemon_predicted_rate
                        for w in dr], ":", color="tab:purple", label="F(daemon offset)")
        ax2.set_ylabel("skew (µs)")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
        title = (f"drift {result.config['drift_ppb'] / 1000:g} ppm at "
                 f"{result.config['skew_stage']}")
        if result.analysis.daemon_drift_ppm is not None:
            title += f" (daemons measured {result.analysis.daemon_drift_ppm:.1f} ppm)"
        ax.set_title(title)
        out["drift"] = _png(fig)
        plt.close(fig)
    return out


# --- HTML ---------------------------------------------------------------------------

def _html_table(header, body) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                  for r in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def to_html(result, images: dict[str, bytes]) -> str:
    a = result.analysis
    parts = [f"<h1>skewd experiment</h1><p>{html.escape(_summary_lines(result)[0])}</p>"]
    if not result.complete:
        items = "".join(f"<li>problem: {html.escape(p)}</li>" for p in result.problems)
        items += "".join(f"<li>missing: {html.escape(m)}</li>" for m in result.missing)
        parts.append(f'<div class="bad"><h2>Incomplete run</h2><ul>{items}</ul></div>')
    if a.skews:
        parts.append("<h2>Per skew</h2>" + _html_table(*rows(result)))
        eh = ["skew", "edge", "messages", "negative", "rate", "predicted", "least delay"]
        er = [[_dur(s.skew_ns), e.edge, str(e.messages), str(e.negative), _pct(e.rate),
               _pct(e.predicted), _dur(e.min_delay_ns)] for s in a.skews for e in s.edges]
        parts.append("<h3>Per edge</h3>" + _html_table(eh, er))
    if a.drift:
        parts.append("<h2>Drift</h2>" + _html_table(*drift_rows(result)) + "".join(
            f"<p>{html.escape(l)}</p>" for l in daemon_lines(result) if l.startswith(
                ("drift:", "the drift explains"))))
    for key in ("rate", "throughput", "drift"):
        if key in images:
            data = base64.b64encode(images[key]).decode()
            parts.append(f'<img alt="{key}" src="data:image/png;base64,{data}">')
    notes = "".join(f"<li>{html.escape(l)}</li>" for l in _summary_lines(result)[1:])
    parts.append(f"<h2>Notes</h2><ul>{notes}</ul>")
    nodes = [[n.node, str(n.exit_code), n.end, str(n.received), str(n.sent),
              str(n.log_files), n.error or ""] for n in result.nodes]
    parts.append("<h2>Nodes</h2>" + _html_table(
        ["node", "exit", "end", "received", "sent", "span logs", "error"], nodes))
    cfg = html.escape(json.dumps(_clean(result.config), indent=2))
    tr = html.escape(json.dumps(_clean(result.transport), indent=2))
    hosts = html.escape(json.dumps(_clean(result.hosts), indent=2))
    dmn = html.escape(json.dumps(_clean(getattr(result, "daemons", {}) or {}), indent=2))
    parts.append(f"<h2>Configuration</h2><pre>{cfg}</pre><h3>Transport</h3><pre>{tr}</pre>"
                 f"<h3>Hosts</h3><pre>{hosts}</pre><h3>Daemons</h3><pre>{dmn}</pre>"
                 f"<p>Span logs: <code>logs/</code>; results: <code>results.json</code>.</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#f3f3f3}img{max-width:100%;display:block;margin:1em 0}"
             ".bad{border:2px solid #c33;padding:0 1em;background:#fff4f4}")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>skewd experiment"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write(result, out_dir: str | None = None) -> dict[str, str]:
    """Write results.json, the PNGs and report.html; returns name -> path."""
    out_dir = out_dir or result.out_dir
    files = {}
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as f:
        f.write(to_json(result))
    files["json"] = path
    images = plots(result)
    for key, data in images.items():
        p = os.path.join(out_dir, PLOTS[key])
        with open(p, "wb") as f:
            f.write(data)
        files[key] = p
    p = os.path.join(out_dir, "report.html")
    with open(p, "w") as f:
        f.write(to_html(result, images))
    files["html"] = p
    return files
