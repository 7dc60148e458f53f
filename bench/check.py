#!/usr/bin/env python3
"""How fast does `skewd check` find causality violations, in how much memory,
against the same check in DuckDB and pandas? Prints a table, writes JSON.

    .venv/bin/python bench/check.py [--spans 50000000] [--repeats 3]
                                    [--pandas-spans 5000000] [--json out.json]
"""
import argparse
import os
import sys

from skewd.benchmarks import check, finish

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--spans", type=int, default=50_000_000, help="table size (default 50M)")
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--pandas-spans", type=int, default=5_000_000,
                help="pandas peer runs on a slice of this many spans")
ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "check.json"))
a = ap.parse_args()
res = check.run(spans=a.spans, repeats=a.repeats, pandas_spans=a.pandas_spans)
sys.exit(finish(check, res, a.json))
