"""What does the daemon cost? One daemon probing 10 peers at 10 probes/s
each (and answering their probes of it, 100 more exchanges/s), measured for
CPU (share of one core) and resident memory against the issue's absolute
budgets; the 10 peers are daemons too, on loopback."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from skewd.benchmarks import median, table


def _free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def _config(path, node, port, peers, d, presend):
    from skewd.config import render
    text = render({"node": node, "listen": f"127.0.0.1:{port}", "probe_interval": "100ms",
                   "control_socket": f"{d}/{node}.sock", "presend": presend},
                  [(name, f"127.0.0.1:{p}") for name, p in peers],
                  {"log": {"dir": f"{d}/logs-{node}"}, "metrics": {"enabled": False}})
    with open(path, "w") as f:
        f.write(text)


def run(peers: int = 10, seconds: float = 20.0, warmup: float = 5.0, repeats: int = 3,
        progress=None, presend: str = "200us") -> dict:
    """presend: the daemons' warm-up lead ("0": no warm-up packets)."""
    import psutil
    from skewd import control
    d = tempfile.mkdtemp(prefix="skewd-bench-daemon-")
    env = dict(os.environ, SKEWD_STATE_DIR=os.path.join(d, "state"))
    ports = {f"p{i}": _free_port() for i in range(peers)}
    mport = _free_port()
    _config(f"{d}/m.toml", "m", mport, list(ports.items()), d, presend)
    for name, p in ports.items():
        _config(f"{d}/{name}.toml", name, p, [("m", mport)], d, presend)
    procs = []
    results = []
    try:
        for name in ["m"] + list(ports):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "skewd.cli", "daemon", "--config", f"{d}/{name}.toml"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
        m = psutil.Process(procs[0].pid)
        time.sleep(warmup)
        for r in range(repeats):
            c0 = m.cpu_times()
            ex0 = sum(p["exchanges"] for p in control.request(
                f"{d}/m.sock", {"cmd": "status"})["status"]["peers"].values())
            t0 = time.monotonic()
            time.sleep(seconds)
            c1 = m.cpu_times()
            wall = time.monotonic() - t0
            st = control.request(f"{d}/m.sock", {"cmd": "status"})["status"]
            ex1 = sum(p["exchanges"] for p in st["peers"].values())
            cpu = (c1.user + c1.system - c0.user - c0.system) / wall
            results.append({"cpu_share": cpu, "rss_bytes": m.memory_info().rss,
                            "exchanges_per_s": (ex1 - ex0) / wall,
                            "answered_per_s": None})
            if progress:
                progress((r + 1) / repeats)
        measured = sum(1 for p in st["peers"].values() if p["offset_ns"] is not None)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(d, ignore_errors=True)
    cpu = median([r["cpu_share"] for r in results])
    rss = max(r["rss_bytes"] for r in results)
    rate = median([r["exchanges_per_s"] for r in results])
    return {
        "benchmark": "daemon", "peers": peers, "probe_rate_per_peer": 10, "presend": presend,
        "seconds": seconds, "repeats": repeats, "peers_measured": measured,
        "cpu_share_of_one_core": cpu, "rss_mb": rss / 1e6, "exchanges_per_s": rate,
        "runs": results,
        "results": [
            dict(name=f"CPU, {peers} peers x 10 probes/s (+ answering theirs)", value=f"{cpu * 100:.2f} %",
                 budget="<= 2 % of one core", ok=cpu <= 0.02),
            dict(name="resident memory (max over runs)", value=f"{rss / 1e6:.1f} MB",
                 budget="<= 80 MB", ok=rss <= 80e6),
            dict(name="exchanges completed per second", value=f"{rate:.0f}/s",
                 budget=f"~{peers * 10}/s", ok=rate >= peers * 10 * 0.8),
        ],
        "all_ok": cpu <= 0.02 and rss <= 80e6 and rate >= peers * 8,
    }


def format(res: dict) -> str:
    rows = [[r["name"], r["value"], r["budget"], "ok" if r["ok"] else "OVER"] for r in res["results"]]
    return (f"daemon cost, median of {res['repeats']} x {res['seconds']:g}s "
            f"({res['peers_measured']}/{res['peers']} peers measured, presend "
            f"{res.get('presend', '200us')})\n"
            + table(rows, ["what", "measured", "budget", ""]))
