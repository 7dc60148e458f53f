#!/usr/bin/env python3
"""What do the daemons cost the experiment's pipeline? Saturated throughput,
and latency at the operating rate, with and without a skewd daemon beside
every node, alternating runs. Prints a table, writes JSON.

    .venv/bin/python bench/experiment_daemons.py [--repeats 5] [--duration 4] [--rate 400] [--interval 100] [--json out.json]
"""
import argparse
import os
import sys

from skewd.benchmarks import experiment_daemons, finish

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--repeats", type=int, default=5)
ap.add_argument("--duration", type=float, default=4.0, help="seconds per run")
ap.add_argument("--rate", type=float, default=400.0, help="the operating rate (requests/s)")
ap.add_argument("--interval", type=float, default=100.0, help="the daemons' probe interval (ms)")
ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results",
                                               "experiment_daemons.json"))
a = ap.parse_args()
res = experiment_daemons.run(repeats=a.repeats, duration_s=a.duration, rate=a.rate,
                             interval_ms=a.interval)
sys.exit(finish(experiment_daemons, res, a.json))
