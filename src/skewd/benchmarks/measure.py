"""How well does skewd measure a peer, against the standard tools, on the same
link? Two test hosts (network namespaces joined by a veth pair) share one
physical clock, so the true offset between them is zero and any spread is
measurement error.

- a real chronyd (-x: it never steers a clock) serves NTP in host A; host B
  queries it with `skewd probe --ntp` and with ntplib, the same number of
  exchanges at the same pace: the spread of the offsets, as a ratio;
- `skewd serve` / `skewd probe` (the skewd protocol, interleaved kernel stamps);
- ptp4l (software stamps, both ends free_running) on the same veth pair: its
  path delay and offset spread beside skewd's;
- the cost of one timestamped datagram and one probe exchange against plain
  UDP, in process on loopback.

Needs root (namespaces), chronyd, ptp4l and ntplib; a part whose tool is
missing is reported as skipped.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
import threading
import time

import numpy as np

from skewd.benchmarks import median, table
from skewd.benchmarks.testhosts import TwoHosts, available

PY = sys.executable

NTPLIB_SCRIPT = """
import json, sys, time
import ntplib
ip, n, iv = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
c = ntplib.NTPClient()
c.request(ip, version=4, timeout=1)   # warm-up (ARP), not counted
out, t0 = [], time.monotonic()
for k in range(n):
    w = t0 + k * iv - time.monotonic()
    if w > 0:
        time.sleep(w)
    try:
        r = c.request(ip, version=4, timeout=1)
        out.append([r.offset * 1e9, r.delay * 1e9])
    except ntplib.NTPException:
        pass
print(json.dumps(out))
"""

CHRONY_CONF = """allow all
local stratum 1
port 123
cmdport 0
bindcmdaddress /
pidfile {d}/chronyd.pid
driftfile {d}/chrony.drift
"""

PTP_CONF = """[global]
free_running 1
logSyncInterval -4
logMinDelayReqInterval -4
logAnnounceInterval -2
announceReceiptTimeout 3
freq_est_interval 0
summary_interval -4
uds_address {uds}
{extra}"""


def _spread(xs) -> dict:
    a = np.asarray(xs, dtype=float)
    if len(a) == 0:
        return {"n": 0}
    return {"n": int(len(a)), "mean_ns": float(a.mean()), "std_ns": float(a.std()),
            "median_ns": float(np.median(a)),
            "p99_abs_ns": float(np.percentile(np.abs(a - np.median(a)), 99))}


def _skewd_probe(h: TwoHosts, *args: str) -> dict:
    r = h.run(h.b, [PY, "-m", "skewd.cli", "probe", h.ip_a, "--json", *args], timeout=300)
    if not r.stdout.strip():
        raise RuntimeError(f"skewd probe failed: {r.stderr.strip()[-400:]}")
    return json.loads(r.stdout)


def bench_ntp(h: TwoHosts, n: int, interval_s: float, d: str) -> dict:
    if not shutil.which("chronyd"):
        return {"skipped": "chronyd is not installed (Debian package chrony)"}
    conf = os.path.join(d, "chrony.conf")
    with open(conf, "w") as f:
        f.write(CHRONY_CONF.format(d=d))
    # -x: never touch any clock; -d: foreground; -u root: keep our temp dir readable
    p = h.start(h.a, ["chronyd", "-x", "-d", "-u", "root", "-f", conf])
    time.sleep(1.0)
    if p.poll() is not None:
        return {"skipped": f"chronyd exited: {h.stop(p)[1].strip()[-300:]}"}
    try:
        sk = _skewd_probe(h, "--ntp", "--count", str(n + 1), "--interval", f"{interval_s * 1e3:g}ms")
        offs = [x["offset_ns"] for x in sk["exchanges"]][1:]  # first one paid for ARP
        res = {"skewd": _spread(offs), "skewd_estimate": sk["estimate"],
               "skewd_delay_median_ns": float(np.median([x["delay_ns"] for x in sk["exchanges"]]))}
        r = h.run(h.b, [PY, "-c", NTPLIB_SCRIPT, h.ip_a, str(n), str(interval_s)], timeout=300)
        if r.returncode != 0:
            res["ntplib"] = {"skipped": r.stderr.strip()[-300:]}
        else:
            got = json.loads(r.stdout)
            res["ntplib"] = _spread([o for o, _ in got])
            res["ntplib_delay_median_ns"] = float(np.median([dl for _, dl in got]))
            res["ratio"] = res["ntplib"]["std_ns"] / max(res["skewd"]["std_ns"], 1e-9)
    finally:
        h.stop(p)
    return res


def bench_skewd(h: TwoHosts, n: int, interval_s: float) -> dict:
    p = h.start(h.a, [PY, "-m", "skewd.cli", "serve", "--listen", h.ip_a, "--json"])
    try:
        h.wait_for_line(p, "serving probes")
        sk = _skewd_probe(h, "--count", str(n + 1), "--interval", f"{interval_s * 1e3:g}ms")
    finally:
        h.stop(p)
    ex = sk["exchanges"][1:]
    acc = [x for x in ex if x["verdict"] == "accepted"]
    delays = [x["delay_ns"] for x in ex]
    return {"all": _spread([x["offset_ns"] for x in ex]),
            "accepted": _spread([x["offset_ns"] for x in acc]),
            "one_way_delay": _spread([d / 2 for d in delays]),
            "estimate": sk["estimate"], "counters": sk["counters"]}


_OFFSET = re.compile(r"master offset\s+(-?\d+)\s+s\d\s+freq\s+[-+]?\d+\s+path delay\s+(-?\d+)")
_DELAY = re.compile(r"delay\s+filtered\s+(-?\d+)\s+raw\s+(-?\d+)")


def bench_ptp(h: TwoHosts, seconds: float, d: str) -> dict:
    if not shutil.which("ptp4l"):
        return {"skipped": "ptp4l is not installed (Debian package linuxptp)"}
    confs = {}
    for name, extra in (("master", "priority1 1\n"), ("slave", "")):
        confs[name] = os.path.join(d, f"ptp-{name}.cfg")
        with open(confs[name], "w") as f:
            f.write(PTP_CONF.format(uds=os.path.join(d, f"ptp-{name}.uds"), extra=extra))
    # software stamps (-S); free_running 1 at both ends: no clock is ever adjusted
    m = h.start(h.a, ["ptp4l", "-S", "-i", h.dev_a, "-f", confs["master"], "-m", "-q"])
    s = h.start(h.b, ["stdbuf", "-oL", "ptp4l", "-S", "-s", "-i", h.dev_b, "-f", confs["slave"],
                      "-m", "-q", "-l", "7"])
    time.sleep(seconds)
    h.stop(m)
    out, err = h.stop(s)
    offs = [(int(a), int(b)) for a, b in _OFFSET.findall(out)]
    raw = [int(r) for _, r in _DELAY.findall(out)]
    if not offs:
        return {"skipped": f"ptp4l printed no offsets: {(out + err).strip()[-300:]}"}
    return {"seconds": seconds, "offset": _spread([o for o, _ in offs]),
            "path_delay": _spread([pd for _, pd in offs]),
            "raw_path_delay": _spread(raw)}


def bench_cost(n: int, repeats: int) -> dict:
    """Per datagram: plain socket send+recv vs skewd's; per exchange: a
    probe exchange (client and server threads) vs a plain UDP echo."""
    from skewd.probe import ProbeClient, ProbeServer
    from skewd.tsock import TimestampedSocket

    def per_op(fn, count):
        t0 = time.perf_counter_ns()
        for _ in range(count):
            fn()
        return (time.perf_counter_ns() - t0) / count

    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    plain.bind(("127.0.0.1", 0))
    pdst = plain.getsockname()
    ts_sw = TimestampedSocket("ipv4", bind=("127.0.0.1", 0), stamps="software")
    ts_no = TimestampedSocket("ipv4", bind=("127.0.0.1", 0), stamps="none")
    payload = b"x" * 104

    def plain_dgram():
        plain.sendto(payload, pdst)
        plain.recvfrom(2048)

    def ts_dgram(s, dst):
        def f():
            sent = s.send(payload, dst)
            s.tx_stamp(sent)
            s.recv(2048, 100_000_000)
        return f
    rows = {"plain": [], "tsock_none": [], "tsock_kernel": []}
    f_none = ts_dgram(ts_no, ts_no.address("127.0.0.1", ts_no.port))
    f_sw = ts_dgram(ts_sw, ts_sw.address("127.0.0.1", ts_sw.port))
    for _ in range(repeats):
        rows["plain"].append(per_op(plain_dgram, n))
        rows["tsock_none"].append(per_op(f_none, n))
        rows["tsock_kernel"].append(per_op(f_sw, n))

    # exchanges through a server thread
    stop = threading.Event()
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    echo.settimeout(0.1)

    def echo_loop():
        while not stop.is_set():
            try:
                d, a = echo.recvfrom(2048)
            except socket.timeout:
                continue
            echo.sendto(d, a)
    srv_sock = TimestampedSocket("ipv4", bind=("127.0.0.1", 0))
    srv = ProbeServer(srv_sock, rate=0)
    ths = [threading.Thread(target=echo_loop, daemon=True),
           threading.Thread(target=srv.serve, args=(stop,), daemon=True)]
    for t in ths:
        t.start()
    cl_sock = TimestampedSocket("ipv4", bind=("127.0.0.1", 0))
    client = ProbeClient(cl_sock)
    peer = ("127.0.0.1", srv_sock.port)
    edst = echo.getsockname()

    def plain_ex():
        plain.sendto(payload, edst)
        plain.recvfrom(2048)

    def probe_ex():
        client.exchange(peer)
    ex_rows = {"plain_echo": [], "probe": []}
    m = max(50, n // 10)
    try:
        for _ in range(repeats):
            ex_rows["plain_echo"].append(per_op(plain_ex, m))
            ex_rows["probe"].append(per_op(probe_ex, m))
    finally:
        stop.set()
        for t in ths:
            t.join(2)
        for s in (plain, echo):
            s.close()
        for s in (ts_sw, ts_no, srv_sock, cl_sock):
            s.close()
    med = {k: median(v) for k, v in {**rows, **ex_rows}.items()}
    return {"datagram_ns": {k: med[k] for k in rows}, "exchange_ns": {k: med[k] for k in ex_rows},
            "datagram_ratio": med["tsock_kernel"] / med["plain"],
            "exchange_ratio": med["probe"] / med["plain_echo"], "n": n, "repeats": repeats}


def run(repeats: int = 5, exchanges: int = 200, interval_s: float = 0.01,
        ptp_seconds: float = 15.0, progress=None) -> dict:
    ok, why = available()
    res = {"benchmark": "measure",
           "host": {"machine": platform.machine(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "kernel": platform.release()},
           "exchanges": exchanges, "interval_s": interval_s}
    step = lambda f: progress(f) if progress else None
    if not ok:
        res["skipped"] = why
    else:
        with tempfile.TemporaryDirectory() as d, TwoHosts("b") as h:
            res["link"] = f"veth {h.dev_a} ({h.ip_a}) <-> {h.dev_b} ({h.ip_b})"
            res["ntp"] = bench_ntp(h, exchanges, interval_s, d)
            step(0.3)
            res["skewd"] = bench_skewd(h, exchanges, interval_s)
            step(0.5)
            res["ptp"] = bench_ptp(h, ptp_seconds, d)
            step(0.8)
    res["cost"] = bench_cost(2000, max(3, min(repeats, 7)))
    step(1.0)
    ratio = res.get("ntp", {}).get("ratio")
    res["checks"] = {"ntp_10x_tighter_than_ntplib": (ratio is not None and ratio >= 10)}
    res["all_ok"] = all(res["checks"].values())
    return res


def _us(ns) -> str:
    return "-" if ns is None else f"{ns / 1e3:.2f} us"


def format(res: dict) -> str:
    out = [f"measurement on two test hosts ({res.get('link', 'no namespaces')}), "
           f"{res['exchanges']} exchanges every {res['interval_s'] * 1e3:g} ms"]
    if "skipped" in res:
        out.append(f"namespaces skipped: {res['skipped']}")
    rows = []
    ntp = res.get("ntp", {})
    if "skipped" in ntp:
        out.append(f"NTP vs chronyd skipped: {ntp['skipped']}")
    elif ntp:
        sk, nl = ntp["skewd"], ntp.get("ntplib", {})
        rows.append(["skewd probe --ntp (chronyd)", _us(sk["std_ns"]), _us(sk["mean_ns"]),
                     _us(ntp["skewd_delay_median_ns"] / 2), "kernel stamps, our side"])
        if "std_ns" in nl:
            rows.append(["ntplib (chronyd)", _us(nl["std_ns"]), _us(nl["mean_ns"]),
                         _us(ntp["ntplib_delay_median_ns"] / 2), "user-space time.time()"])
    sk = res.get("skewd")
    if sk:
        rows.append(["skewd probe (skewd serve), all", _us(sk["all"]["std_ns"]),
                     _us(sk["all"]["mean_ns"]), _us(sk["one_way_delay"]["median_ns"]),
                     "interleaved kernel stamps"])
        rows.append(["skewd probe, after delay filter", _us(sk["accepted"]["std_ns"]),
                     _us(sk["accepted"]["mean_ns"]), "", f"{sk['accepted']['n']} kept"])
    ptp = res.get("ptp", {})
    if "skipped" in ptp:
        out.append(f"ptp4l skipped: {ptp['skipped']}")
    elif ptp:
        rows.append([f"ptp4l -S, free-running slave ({ptp['offset']['n']} offsets)",
                     _us(ptp["offset"]["std_ns"]), _us(ptp["offset"]["mean_ns"]),
                     _us(ptp["path_delay"]["median_ns"]),
                     f"raw path delay sd {_us(ptp['raw_path_delay'].get('std_ns'))}"])
    if rows:
        out.append(table(rows, ["measurement (true offset 0)", "offset sd", "offset mean",
                                "one-way delay", "note"]))
    if ntp.get("ratio") is not None:
        out.append(f"skewd --ntp is {ntp['ratio']:.0f}x tighter than ntplib "
                   f"(budget >= 10x: {'ok' if res['checks']['ntp_10x_tighter_than_ntplib'] else 'FAILED'})")
    c = res["cost"]
    out.append("")
    out.append(table([
        ["datagram send+recv, plain Python socket", f"{c['datagram_ns']['plain'] / 1e3:.2f} us", "1.00x"],
        ["datagram send+recv, skewd socket, no stamps", f"{c['datagram_ns']['tsock_none'] / 1e3:.2f} us",
         f"{c['datagram_ns']['tsock_none'] / c['datagram_ns']['plain']:.2f}x"],
        ["datagram send+TX stamp+recv, kernel stamps", f"{c['datagram_ns']['tsock_kernel'] / 1e3:.2f} us",
         f"{c['datagram_ratio']:.2f}x"],
        ["exchange: plain UDP echo (thread)", f"{c['exchange_ns']['plain_echo'] / 1e3:.2f} us", "1.00x"],
        ["exchange: skewd probe, stamps both sides", f"{c['exchange_ns']['probe'] / 1e3:.2f} us",
         f"{c['exchange_ratio']:.2f}x"],
    ], ["cost on loopback (median of repeats)", "per op", "vs plain"]))
    return "\n".join(out)
