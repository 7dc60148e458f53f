"""The daemon's local control socket: a Unix stream socket, mode 0660, one
JSON request per line and one JSON reply per line.

    {"cmd": "status"}                               -> {"ok": true, "status": {...}}
    {"cmd": "inject", "schedule": "step:offset=5ms"} -> {"ok": true}
    {"cmd": "inject", "clear": true}                -> {"ok": true}

Callers are checked with SO_PEERCRED: root, the daemon's own user, and
members of the socket's group are served; anyone else is refused (and
filesystem permissions already keep out those without group access).
"""
from __future__ import annotations

import grp
import json
import os
import socket
import struct

from skewd.errors import HostError, PeerError

MAX_REQUEST = 64 * 1024


def peer_allowed(conn: socket.socket, sock_gid: int) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, gid = struct.unpack("3i", creds)
    if uid in (0, os.getuid()) or gid == sock_gid:
        return True
    try:
        import pwd
        name = pwd.getpwuid(uid).pw_name
        return name in grp.getgrgid(sock_gid).gr_mem
    except KeyError:
        return False


class ControlServer:
    """Non-blocking listener; the daemon's loop calls handle_ready() when the
    socket is readable. `handler(request) -> reply dict`."""

    def __init__(self, path: str, handler):
        self.path = path
        self.handler = handler
        self.refused = 0
        d = os.path.dirname(path) or "."
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as e:
            raise HostError(f"cannot create control socket directory {d}: {e.strerror}") from None
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                probe.close()
                raise HostError(f"control socket {path} is in use: is another skewd daemon running?")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)   # stale socket of a daemon that died
            finally:
                probe.close()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o117)
        try:
            self.sock.bind(path)
        except OSError as e:
            raise HostError(f"cannot bind control socket {path}: {e.strerror}") from None
        finally:
            os.umask(old)
        os.chmod(path, 0o660)
        self.gid = os.stat(path).st_gid
        self.sock.listen(16)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def handle_ready(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(1.0)
            if not peer_allowed(conn, self.gid):
                self.refused += 1
                self._reply(conn, {"ok": False, "error": "permission denied"})
                return
            try:
                data = b""
                while b"\n" not in data and len(data) < MAX_REQUEST:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                req = json.loads(data.split(b"\n", 1)[0] or b"{}")
                if not isinstance(req, dict):
                    raise ValueError("request must be a JSON object")
                reply = self.handler(req)
            except (ValueError, UnicodeDecodeError) as e:
                reply = {"ok": False, "error": f"bad request: {e}"}
            except socket.timeout:
                return
            except Exception as e:  # a bad command must never take the daemon down
                reply = {"ok": False, "error": str(e)}
            self._reply(conn, reply)

    @staticmethod
    def _reply(conn, reply) -> None:
        try:
            conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def request(path: str, req: dict, timeout: float = 5.0) -> dict:
    """Send one request to a daemon's control socket and return its reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except FileNotFoundError:
        raise HostError(f"no daemon control socket at {path}: is `skewd daemon` running?") from None
    except PermissionError:
        raise HostError(f"no permission to use {path}: run as root or join the socket's group") from None
    except ConnectionRefusedError:
        raise HostError(f"daemon control socket {path} refused the connection (stale socket?)") from None
    with s:
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    try:
        reply = json.loads(data)
    except ValueError:
        raise PeerError(f"daemon at {path} sent a malformed reply") from None
    if not reply.get("ok"):
        raise PeerError(f"daemon refused: {reply.get('error', 'unknown error')}")
    return reply
