#!/usr/bin/env python3
"""What does a span cost against OpenTelemetry, and how fast does the drain
write spans to Arrow? Prints a table, writes JSON.

    .venv/bin/python bench/spans.py [--repeats 15] [--number 100000] [--json out.json]
"""
import argparse
import os
import sys

from skewd.benchmarks import spans, finish

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--repeats", type=int, default=15)
ap.add_argument("--number", type=int, default=100_000, help="skewd spans per repeat")
ap.add_argument("--drain-spans", type=int, default=500_000, help="spans per drain run")
ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "spans.json"))
a = ap.parse_args()
res = spans.run(repeats=a.repeats, number=a.number, drain_spans=a.drain_spans)
sys.exit(finish(spans, res, a.json))
