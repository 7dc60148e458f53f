#!/usr/bin/env python3
"""How well does skewd measure a peer against chronyd+ntplib and ptp4l on the
same veth link, and what does a timestamped exchange cost? Prints a table,
writes JSON. Needs root (network namespaces), chrony, linuxptp, ntplib.

    .venv/bin/python bench/measure.py [--exchanges 200] [--interval 10ms] [--ptp-seconds 15]
"""
import argparse
import os
import sys

from skewd.benchmarks import measure, finish
from skewd.units import parse_duration

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--exchanges", type=int, default=200)
ap.add_argument("--interval", default="10ms")
ap.add_argument("--ptp-seconds", type=float, default=15.0)
ap.add_argument("--repeats", type=int, default=5)
ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "measure.json"))
a = ap.parse_args()
res = measure.run(repeats=a.repeats, exchanges=a.exchanges,
                  interval_s=parse_duration(a.interval) / 1e9, ptp_seconds=a.ptp_seconds)
sys.exit(finish(measure, res, a.json))
