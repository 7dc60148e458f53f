"""Network namespaces for an experiment run (--hosts netns, root only).

Each node gets a namespace of its own with one veth interface, eth0, whose
other end sits on a bridge in a "hub" namespace: a real network stack per
node, joined like hosts on a switch. Every interface and address lives inside
namespaces the run creates (the veth pairs are made inside the hub and their
node ends moved straight into the node's namespace), so the host's own network
is never touched. close() removes them all, also after a failure; names carry
the creating process id so remove_stale() can clear namespaces whose run was
killed before it could clean up.
"""
from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import subprocess

from skewd.errors import HostError

PREFIX = "skwexp"
SUBNET = "10.77.0.0/24"
_NAME = re.compile(rf"^{PREFIX}-(\d+)-[0-9a-f]+-[A-Za-z0-9._-]+$")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise HostError(f"'ip {' '.join(args)}' failed: {r.stderr.strip() or r.returncode}")
    return r


def available() -> tuple[bool, str]:
    """(True, "") when namespaces can be made here, else (False, why)."""
    if os.geteuid() != 0:
        return False, "--hosts netns needs root (network namespaces and veth links)"
    if shutil.which("ip") is None:
        return False, "--hosts netns needs the 'ip' command (Debian package iproute2)"
    return True, ""


def list_namespaces() -> list[str]:
    r = _ip("netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete this module's namespaces whose creating process is gone."""
    gone = []
    for name in list_namespaces():
        m = _NAME.match(name)
        if m and not _alive(int(m.group(1))):
            if _ip("netns", "del", name, check=False).returncode == 0:
                gone.append(name)
    return gone


class Namespaces:
    """One namespace per node plus a hub with a bridge; use as a context
    manager (or call close()) so they are always removed.

        with Namespaces(["source", "model", "sink"]) as ns:
            ns.address("model")       # "10.77.0.2"
            ns.exec_prefix("model")   # ["ip", "netns", "exec", NAME]
    """

    def __init__(self, nodes: list[str], subnet: str = SUBNET):
        ok, why = available()
        if not ok:
            raise HostError(why)
        net = ipaddress.ip_network(subnet)
        hosts = list(net.hosts())
        if len(nodes) > len(hosts):
            raise HostError(f"subnet {subnet} has room for {len(hosts)} nodes, not {len(nodes)}")
        self.tag = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.hub = f"{self.tag}-hub"
        self.nodes = list(nodes)
        self.prefixlen = net.prefixlen
        self._addr = {n: str(hosts[i]) for i, n in enumerate(nodes)}
        self._ns = {n: f"{self.tag}-{n}" for n in nodes}
        self.created: list[str] = []
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _add(self, name: str) -> None:
        _ip("netns", "add", name)
        self.created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _create(self) -> None:
        self._add(self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for i, node in enumerate(self.nodes):
            ns = self._ns[node]
            self._add(ns)
            port = f"p{i}"
            _ip("-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", self.hub, "link", "set", port, "master", "br0")
            _ip("-n", self.hub, "link", "set", port, "up")
            _ip("-n", ns, "addr", "add", f"{self._addr[node]}/{self.prefixlen}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def name(self, node: str) -> str:
        return self._ns[node]

    def address(self, node: str) -> str:
        return self._addr[node]

    def exec_prefix(self, node: str) -> list[str]:
        return ["ip", "netns", "exec", self._ns[node]]

    def describe(self) -> dict:
        return {"hub": self.hub, "subnet": f"{self._addr[self.nodes[0]]}/{self.prefixlen}",
                "nodes": {n: {"namespace": self._ns[n], "address": self._addr[n]}
                          for n in self.nodes}}

    def close(self) -> list[str]:
        """Remove every namespace this object made; returns any that would
        not go (with the reason), which the caller reports."""
        failed = []
        for name in reversed(self.created):
            r = _ip("netns", "del", name, check=False)
            if r.returncode != 0 and name in list_namespaces():
                failed.append(f"{name}: {r.stderr.strip()}")
        self.created.clear()
        return failed

    def __enter__(self) -> "Namespaces":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
