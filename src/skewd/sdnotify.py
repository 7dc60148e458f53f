"""systemd's notify protocol: READY=1, STATUS=..., WATCHDOG=1, STOPPING=1 as
datagrams to $NOTIFY_SOCKET (a path, or an abstract name starting with '@')."""
from __future__ import annotations

import os
import socket


class Notifier:
    """Sends notifications when systemd asked for them; a no-op otherwise."""

    def __init__(self, env: dict | None = None):
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET")
        self.address = None
        if addr:
            self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        self.watchdog_s = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and usec.isascii() and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._sock = None
        self.sent = 0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        if not self.address:
            return False
        try:
            if self._sock is None:
                # non-blocking: a manager that stops reading must never stall the daemon
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                                           | socket.SOCK_NONBLOCK)
            self._sock.sendto("\n".join(fields).encode(), self.address)
            self.sent += 1
            return True
        except OSError:
            self.errors += 1
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1") if self.watchdog_s else False

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

    def close(self) -> None:
        if self._sock:
            self._sock.close()
            self._sock = None
