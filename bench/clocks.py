#!/usr/bin/env python3
"""What does a clock read cost on this host? Prints a table, writes JSON.

    .venv/bin/python bench/clocks.py [--repeats 15] [--tsc-seconds 10] [--json out.json]
"""
import argparse
import json
import os
import sys

from skewd.benchmarks import clocks

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--repeats", type=int, default=15)
ap.add_argument("--tsc-seconds", type=float, default=10.0)
ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "clocks.json"))
a = ap.parse_args()
res = clocks.run(repeats=a.repeats, tsc_seconds=a.tsc_seconds)
print(clocks.format(res))
os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
with open(a.json, "w") as f:
    json.dump(res, f, indent=2)
print(f"wrote {a.json}")
sys.exit(0 if res["all_ok"] else 1)
