#!/usr/bin/env python3
"""What does tracing cost the experiment's pipeline? Throughput and CPU per
request with and without skewd's tracer, saturated and at the operating rate,
in pairs of runs (order alternating), with the median pair and the spread of
the pairs. Prints a table, writes JSON.

    .venv/bin/python bench/experiment.py [--repeats 5] [--duration 4] [--rate 400] [--json out.json]
"""
import argparse
import os
import sys

from skewd.benchmarks import experiment, finish

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--repeats", type=int, default=5)
ap.add_argument("--duration", type=float, default=4.0, help="seconds per run")
ap.add_argument("--rate", type=float, default=400.0, help="the operating rate (requests/s)")
ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "experiment.json"))
a = ap.parse_args()
res = experiment.run(repeats=a.repeats, duration_s=a.duration, rate=a.rate)
sys.exit(finish(experiment, res, a.json))
