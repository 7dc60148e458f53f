import json
import re

import numpy as np

from skewd import check as ck
from skewd import report
from skewd import tracegen as g


def _result():
    clocks = {"b": g.NodeClock(offset_ns=-120_000, drift_ppb=10_000),
              "c": g.NodeClock(offset_ns=40_000)}
    t1, _ = g.rpc(800, [("a", "b", "B"), ("b", "c", "C")], clocks=clocks)
    t2, _ = g.pipeline(800, [("s", "a"), ("p", "b")], clocks=clocks, seed=2)
    t = g.concat(t1, t2)
    res = ck.run(t, predict_skews_ns=[0, 50_000, 100_000])
    return t, res


def test_text_json_html():
    t, res = _result()
    top = ck.violations_table(t, res.detection, 5)
    txt = report.text(res, top)
    assert "negative transport" in txt and "a -> b" in txt and "largest violations" in txt
    d = report.as_dict(res, top)
    json.dumps(d)
    assert d["spans"] == t.num_rows and len(d["largest_violations"]) == 5
    assert {p["bound"] for p in d["skew"]["pairs"]} == {"two-sided"}
    assert d["after_correction"]["child_before_parent"]["total"] == 0
    html = report.html_report(res, top)
    # self-contained: inline SVG plots, nothing fetched
    assert html.count("<svg") >= 5
    assert not re.search(r"""(src|href)=["']https?:""", html)
    assert "Estimated vs known skew" in html and "Violation rate over time" in html


def test_plots_survive_a_clean_run():
    t, _ = g.pipeline(200, [("s", "a"), ("p", "b")])
    res = ck.run(t)
    html = report.html_report(res)
    assert "<html" in html
    assert np.isfinite(report.as_dict(res)["violation_rate"])
