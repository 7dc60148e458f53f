#!/usr/bin/env python3
"""What does a clock read cost on this host? Prints a table, writes JSON.

    .venv/bin/python bench/clocks.py [--repeats 15] [--tsc-seconds 10] [--json out.json]
"""
import argparse
import os
import sys

from skewd.benchmarks import clocks, finish

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--repeats", type=int, default=15)
ap.add_argument("--tsc-seconds", type=float, default=10.0)
ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "clocks.json"))
a = ap.parse_args()
res = clocks.run(repeats=a.repeats, tsc_seconds=a.tsc_seconds)
sys.exit(finish(clocks, res, a.json))
