#!/usr/bin/env python3
"""What does tracing cost one pipeline stage? The model stage's loop in one
process (no sockets), plain and traced in alternating blocks: CPU per
request, the median block pair. Prints a table, writes JSON.

    .venv/bin/python bench/stage_loop.py [--repeats 20] [--block 2000] [--json out.json]
"""
import argparse
import os
import sys

from skewd.benchmarks import finish, stage_loop

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--repeats", type=int, default=20, help="pairs of blocks")
ap.add_argument("--block", type=int, default=2000, help="requests per block")
ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "stage_loop.json"))
a = ap.parse_args()
res = stage_loop.run(repeats=a.repeats, block=a.block)
sys.exit(finish(stage_loop, res, a.json))
