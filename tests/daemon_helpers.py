"""Running real `skewd daemon` processes for tests: configs, start, status."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from skewd import control
from skewd.config import render


def write_config(path, node, listen, peers, *, log_dir, sock, reference=None, schedule=None,
                 interval="100ms", metrics=None, extra=None, unreachable="1s", flush="200ms",
                 rotate_age="1h"):
    """extra: more top-level settings, as a dict."""
    top = {"node": node, "listen": listen, "probe_interval": interval,
           "control_socket": str(sock), "unreachable_after": unreachable}
    if reference:
        top["reference"] = reference
    top.update(extra or {})
    tables = {}
    if schedule:
        tables["inject"] = {"schedule": schedule}
    tables["log"] = {"dir": str(log_dir), "flush": flush, "rotate_age": rotate_age}
    tables["metrics"] = {"address": metrics} if metrics else {"enabled": False}
    with open(path, "w") as f:
        f.write(render(top, peers, tables))
    return str(path)


def start(config_path, *, prefix=(), env=None, stderr=None):
    e = dict(os.environ)
    e.update(env or {})
    if stderr is None:   # keep the daemon's log beside its config, for failures
        stderr = open(str(config_path) + ".log", "ab")
    return subprocess.Popen([*prefix, sys.executable, "-m", "skewd.cli", "daemon", "--config",
                             str(config_path)], env=e, stdout=subprocess.DEVNULL,
                            stderr=stderr, start_new_session=True)


def status(sock, timeout=5.0):
    return control.request(str(sock), {"cmd": "status"}, timeout=timeout)["status"]


def wait_for(pred, timeout, what, interval=0.2):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # the daemon may not be up yet
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def stop(procs):
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
