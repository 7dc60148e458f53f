"""Two test hosts for measurement tests and benchmarks: network namespaces
joined by one veth pair, with addresses that exist only inside them.

    with TwoHosts() as h:
        srv = h.start(h.a, [sys.executable, "-m", "skewd.cli", "serve", ...])
        out = h.run(h.b, [...])
    # namespaces deleted, every process started through h killed

Names carry this process id (and a counter), so parallel runs do not collide;
exit removes everything even when the body failed. Needs root and `ip`.
"""
from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import time

from skewd.errors import HostError

_counter = itertools.count()


def available() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    if shutil.which("ip") is None:
        return False, "needs the 'ip' command (iproute2)"
    return True, ""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise HostError(f"'ip {' '.join(args)}' failed: {r.stderr.strip()}")
    return r


class TwoHosts:
    """Namespaces `a` and `b`, veth `dev_a`/`dev_b`, addresses `ip_a`/`ip_b`."""

    def __init__(self, tag: str = "m"):
        pid = os.getpid()
        n = next(_counter)
        self.a = f"skw{tag}{pid}-{n}a"
        self.b = f"skw{tag}{pid}-{n}b"
        self.dev_a = f"skv{pid % 100000}{n}a"[:15]
        self.dev_b = f"skv{pid % 100000}{n}b"[:15]
        net = 100 + (pid * 7 + n) % 150   # 10.77.100-249.0/24: away from others' 10.77.0.0/24
        self.ip_a = f"10.77.{net}.1"
        self.ip_b = f"10.77.{net}.2"
        self._procs: list[subprocess.Popen] = []
        self._made: list[str] = []

    def __enter__(self) -> "TwoHosts":
        try:
            for ns in (self.a, self.b):
                _ip("netns", "add", ns)
                self._made.append(ns)
            # create the pair inside a, then move one end: nothing on the host's stack
            _ip("-n", self.a, "link", "add", self.dev_a, "type", "veth", "peer", "name", self.dev_b)
            _ip("-n", self.a, "link", "set", self.dev_b, "netns", self.b)
            for ns, dev, ip in ((self.a, self.dev_a, self.ip_a), (self.b, self.dev_b, self.ip_b)):
                _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def argv(self, ns: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def start(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        """Start a process in ns (killed on exit); stdout/stderr piped, text."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        p = subprocess.Popen(self.argv(ns, argv), text=True, start_new_session=True, **kw)
        self._procs.append(p)
        return p

    def run(self, ns: str, argv: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        return subprocess.run(self.argv(ns, argv), text=True, timeout=timeout, **kw)

    @staticmethod
    def wait_for_line(p: subprocess.Popen, needle: str, timeout: float = 20) -> str:
        """Read p's stdout until a line contains needle (HostError if it exits or times out)."""
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                if not sel.select(max(0.0, end - time.monotonic())):
                    continue
                line = p.stdout.readline()
                if not line:
                    break
                if needle in line:
                    return line
        finally:
            sel.close()
        err = p.stderr.read() if p.poll() is not None else ""
        raise HostError(f"{p.args[4:]!r} never printed {needle!r}: {err.strip()[-400:]}")

    @staticmethod
    def stop(p: subprocess.Popen, timeout: float = 10) -> tuple[str, str]:
        """SIGTERM p (its whole session), wait, and return its remaining output."""
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
        return out or "", err or ""

    def close(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                p.communicate(timeout=5)
            except Exception:
                pass
        self._procs.clear()
        for ns in reversed(self._made):
            _ip("netns", "del", ns, check=False)
        self._made.clear()
