"""Where violations start on each transport, and why: the comparison that
`skewd experiment --transport both` reports, beside the study's figures.

For a positive skew s at the stage, the recorded delay on its out-edge is
d = L − s, so violations begin once s passes the edge's one-way latency floor
and their rate follows F_L(s). A transport's threshold is therefore its latency
floor: microseconds for ZeroMQ (a socket write and a wake-up), milliseconds for
Kafka, where a message waits for the producer's batch (linger.ms), a broker
append and a consumer fetch.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import asdict, dataclass

from skewd.benchmarks import table
from skewd.units import format_duration

#: what the study saw over Kafka: none up to this skew, clear violations by the next
STUDY_NONE_UP_TO_NS = 3_000_000
STUDY_CLEAR_BY_NS = 5_000_000
#: a rate at or above this is a "clear" violation rate
CLEAR_RATE = 0.01

WHY = {
    "zmq": "no broker: a message costs a socket write, a loopback hop and a wake-up of the "
           "receiving stage, so the floor is tens of microseconds",
    "kafka": "a message waits for the producer's batch (linger.ms={linger}), is appended by "
             "the broker and fetched by the consumer (fetch.wait.max.ms={fetch_wait}, "
             "fetch.min.bytes={fetch_min}): the floor is the fastest of those, the spread "
             "above it mostly linger",
}


@dataclass(frozen=True)
class Threshold:
    transport: str
    settings: dict
    edge: str                       # the skewed stage's out-edge
    floor_ns: int | None            # least one-way delay at skew 0
    p50_ns: float | None
    p99_ns: float | None
    largest_clean_ns: int | None    # the largest swept skew with no violation
    first_violation_ns: int | None  # the smallest swept skew with any
    first_clear_ns: int | None      # the smallest swept skew with rate >= CLEAR_RATE
    worst_gap_pp: float | None      # max |measured − predicted| over skews, points
    throughput_spread: float | None  # max |delivered/offered − 1| over skews
    correctness: float | None       # the lowest over skews
    why: str


def threshold(result) -> Threshold:
    """A run's threshold from its per-skew results (positive skews)."""
    a = result.analysis
    tr = dict(result.transport)
    kind = tr.get("kind", "?")
    base = a.baseline[-1] if a.baseline else None
    pos = sorted((s for s in a.skews if s.skew_ns >= 0), key=lambda s: s.skew_ns)
    clean = [s.skew_ns for s in pos if s.rate is not None and s.rate == 0]
    viol = [s.skew_ns for s in pos if s.rate]
    clear = [s.skew_ns for s in pos if s.rate is not None and s.rate >= CLEAR_RATE]
    first_v = min(viol) if viol else None
    gaps = [abs(s.rate - s.predicted_rate) * 100 for s in a.skews
            if s.rate is not None and s.predicted_rate is not None]
    spread = []
    for s in a.skews:
        if s.throughput_rps and s.sent and s.seconds:
            spread.append(abs(s.throughput_rps / (s.sent / s.seconds) - 1))
    corr = [s.correctness for s in a.skews if s.correctness is not None]
    why = WHY.get(kind, "")
    if kind == "kafka":
        why = why.format(linger=tr.get("linger.ms", "?"), fetch_wait=tr.get("fetch.wait.max.ms", "?"),
                         fetch_min=tr.get("fetch.min.bytes", "?"))
    return Threshold(
        transport=kind, settings={k: v for k, v in tr.items() if k != "kind"},
        edge=base.edge if base else "?",
        floor_ns=base.floor_ns if base else None, p50_ns=base.p50_ns if base else None,
        p99_ns=base.p99_ns if base else None,
        largest_clean_ns=max((c for c in clean if first_v is None or c < first_v), default=None),
        first_violation_ns=first_v, first_clear_ns=min(clear) if clear else None,
        worst_gap_pp=max(gaps) if gaps else None,
        throughput_spread=max(spread) if spread else None,
        correctness=min(corr) if corr else None, why=why)


def _d(ns) -> str:
    return "-" if ns is None else format_duration(ns)


def rows(ths: list[Threshold]) -> tuple[list[str], list[list[str]]]:
    header = ["transport", "latency floor", "delay p50", "no violations up to",
              "first violations", f"≥{CLEAR_RATE * 100:g}% violations", "worst Δ pp",
              "throughput Δ", "correct"]
    out = [[t.transport, _d(t.floor_ns), _d(t.p50_ns), _d(t.largest_clean_ns),
            _d(t.first_violation_ns), _d(t.first_clear_ns),
            "-" if t.worst_gap_pp is None else f"{t.worst_gap_pp:.1f}",
            "-" if t.throughput_spread is None else f"{t.throughput_spread * 100:.1f}%",
            "-" if t.correctness is None else f"{t.correctness * 100:.1f}%"] for t in ths]
    out.append(["study (Kafka)", "-", "-", _d(STUDY_NONE_UP_TO_NS), "-",
                _d(STUDY_CLEAR_BY_NS), "-", "unaffected", "100%"])
    return header, out


def explain(ths: list[Threshold]) -> list[str]:
    lines = []
    for t in ths:
        lines.append(f"{t.transport}: violations begin where skew passes the one-way latency "
                     f"floor on {t.edge} ({_d(t.floor_ns)}; half the messages take under "
                     f"{_d(t.p50_ns)}): {t.why}")
    lines.append(f"the study saw no violations up to {_d(STUDY_NONE_UP_TO_NS)} and clear ones "
                 f"by {_d(STUDY_CLEAR_BY_NS)} over Kafka: the same rule, with its own "
                 f"pipeline's latency floor")
    return lines


def format_comparison(ths: list[Threshold]) -> str:
    h, r = rows(ths)
    return "where violations start, per transport\n" + table(r, h) + "\n" + "\n".join(explain(ths))


def plot(results: dict) -> bytes:
    """Measured and predicted rate against skew, every transport on one plot,
    with the study's 3 ms / 5 ms marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    nz = []
    for i, (kind, res) in enumerate(results.items()):
        sk = sorted((s for s in res.analysis.skews if s.skew_ns >= 0), key=lambda s: s.skew_ns)
        x = [s.skew_ns / 1e3 for s in sk]
        nz += [v for v in x if v > 0]
        c = f"C{i}"
        ax.plot(x, [None if s.rate is None else 100 * s.rate for s in sk], "o-", color=c,
                label=f"{kind}: measured")
        ax.plot(x, [None if s.predicted_rate is None else 100 * s.predicted_rate for s in sk],
                "s--", color=c, alpha=0.6, label=f"{kind}: predicted")
        th = threshold(res)
        if th.floor_ns:
            ax.axvline(th.floor_ns / 1e3, color=c, lw=0.8, ls=":")
    ax.axvspan(STUDY_NONE_UP_TO_NS / 1e3, STUDY_CLEAR_BY_NS / 1e3, color="grey", alpha=0.15,
               label="study: none ≤3 ms, clear by 5 ms")
    ax.set_xscale("symlog", linthresh=min(nz) if nz else 1.0)
    ax.set_xlabel("injected skew (µs)")
    ax.set_ylabel("negative spans per request (%)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("where violations start: dotted lines are each transport's latency floor")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write(results: dict, out_dir: str) -> dict[str, str]:
    """comparison.json, rate_vs_skew_transports.png and report.html in out_dir,
    each transport's own report in out_dir/<transport>/ (already written)."""
    from skewd.experiment import report
    ths = [threshold(r) for r in results.values()]
    files = {}
    p = os.path.join(out_dir, "comparison.json")
    with open(p, "w") as f:
        json.dump(report._clean({"thresholds": [asdict(t) for t in ths],
                                 "study": {"none_up_to_ns": STUDY_NONE_UP_TO_NS,
                                           "clear_by_ns": STUDY_CLEAR_BY_NS},
                                 "clear_rate": CLEAR_RATE,
                                 "runs": {k: os.path.relpath(r.out_dir, out_dir)
                                          for k, r in results.items()}}), f, indent=2)
    files["json"] = p
    png = plot(results)
    p = os.path.join(out_dir, "rate_vs_skew_transports.png")
    with open(p, "wb") as f:
        f.write(png)
    files["plot"] = p
    parts = ["<h1>skewd experiment: transports compared</h1>"]
    h, r = rows(ths)
    th = "".join(f"<th>{html.escape(x)}</th>" for x in h)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                  for row in r)
    parts.append(f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>")
    parts.append("<ul>" + "".join(f"<li>{html.escape(l)}</li>" for l in explain(ths)) + "</ul>")
    parts.append(f'<img alt="rate against skew, per transport" '
                 f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    for kind, res in results.items():
        rel = os.path.relpath(os.path.join(res.out_dir, "report.html"), out_dir)
        hh, rr = report.rows(res)
        th = "".join(f"<th>{html.escape(x)}</th>" for x in hh)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                      for row in rr)
        settings = html.escape(json.dumps(report._clean(dict(res.transport)), indent=1))
        parts.append(f"<h2>{html.escape(kind)}</h2><p>full report: <a href=\"{html.escape(rel)}\">"
                     f"{html.escape(rel)}</a></p><table><thead><tr>{th}</tr></thead>"
                     f"<tbody>{trs}</tbody></table><pre>{settings}</pre>")
        if not res.complete:
            parts.append("<p class=\"bad\">incomplete run: "
                         + html.escape("; ".join(res.problems + res.missing)) + "</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#f3f3f3}img{max-width:100%;display:block;margin:1em 0}"
             ".bad{border:2px solid #c33;padding:.5em;background:#fff4f4}")
    p = os.path.join(out_dir, "report.html")
    with open(p, "w") as f:
        f.write("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>skewd: transports "
                f"compared</title><style>{style}</style></head><body>{''.join(parts)}"
                "</body></html>\n")
    files["html"] = p
    return files
