#!/usr/bin/env python3
"""What does one Estimator.add cost? Prints a table, writes JSON.

    .venv/bin/python bench/estimate.py [--samples 3000] [--repeats 5]
"""
import argparse
import json
import os
import sys

from skewd.benchmarks import estimate

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--samples", type=int, default=3000)
ap.add_argument("--repeats", type=int, default=5)
ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "estimate.json"))
a = ap.parse_args()
res = estimate.run(count=a.samples, repeats=a.repeats)
print(estimate.format(res))
os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
with open(a.json, "w") as f:
    json.dump(res, f, indent=2)
print(f"wrote {a.json}")
sys.exit(0 if res["all_ok"] else 1)
