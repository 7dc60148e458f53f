#!/usr/bin/env python3
"""What does the daemon cost at 10 peers x 10 probes/s? Prints a table, writes JSON.

    .venv/bin/python bench/daemon.py [--peers 10] [--seconds 20] [--repeats 3] [--presend 200us]
"""
import argparse
import os
import sys

from skewd.benchmarks import daemon, finish

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--peers", type=int, default=10)
ap.add_argument("--seconds", type=float, default=20.0)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--presend", default="200us", help="warm-up lead of the daemons (0: none)")
ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "daemon.json"))
a = ap.parse_args()
res = daemon.run(peers=a.peers, seconds=a.seconds, repeats=a.repeats, presend=a.presend)
sys.exit(finish(daemon, res, a.json))
