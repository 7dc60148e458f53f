#!/usr/bin/env python3
"""What does one Estimator.add cost? Prints a table, writes JSON.

    .venv/bin/python bench/estimate.py [--samples 3000] [--repeats 5]
"""
import argparse
import os
import sys

from skewd.benchmarks import estimate, finish

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--samples", type=int, default=3000)
ap.add_argument("--repeats", type=int, default=5)
ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "estimate.json"))
a = ap.parse_args()
res = estimate.run(count=a.samples, repeats=a.repeats)
sys.exit(finish(estimate, res, a.json))
