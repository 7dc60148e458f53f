import json
import os
import socket
import threading
import urllib.request

import pytest

from skewd import control
from skewd.errors import HostError, PeerError
from skewd.metrics import MetricsServer, Registry
from skewd.sdnotify import Notifier


def test_notifier_sends_to_a_listening_socket(tmp_path):
    path = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(2)
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.enabled and n.watchdog_s == 2.0
    n.ready("measuring 2 peers")
    assert srv.recv(4096) == b"READY=1\nSTATUS=measuring 2 peers"
    n.watchdog()
    assert srv.recv(4096) == b"WATCHDOG=1"
    n.stopping()
    assert srv.recv(4096) == b"STOPPING=1"
    srv.close()


def test_notifier_abstract_socket_and_disabled():
    name = f"skewd-test-{os.getpid()}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind("\0" + name)
    srv.settimeout(2)
    Notifier({"NOTIFY_SOCKET": "@" + name}).status("x")
    assert srv.recv(100) == b"STATUS=x"
    srv.close()
    off = Notifier({})
    assert not off.enabled and off.ready("x") is False
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_s is None


def test_registry_renders_prometheus_text():
    r = Registry()
    r.describe("skewd_offset_ns", "gauge", "Offset of peer")
    r.set("skewd_offset_ns", 5000.0, peer="b", source="kernel")
    r.set("skewd_offset_ns", -1.5, peer='q"x')
    r.describe("skewd_drops_total", "counter", "Dropped packets")
    r.set("skewd_drops_total", 3, reason="bad_mac")
    text = r.render()
    assert "# TYPE skewd_offset_ns gauge" in text
    assert 'skewd_offset_ns{peer="b",source="kernel"} 5000.0' in text
    assert 'peer="q\\"x"' in text
    assert 'skewd_drops_total{reason="bad_mac"} 3.0' in text
    r.set("skewd_offset_ns", None, peer="b", source="kernel")
    assert 'peer="b"' not in r.render()


def test_metrics_server_serves():
    r = Registry()
    r.set("skewd_up", 1)
    s = MetricsServer(r, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{s.address[1]}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        assert "skewd_up 1.0" in body
        with pytest.raises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{s.address[1]}/nope", timeout=5)
    finally:
        s.close()


def test_control_socket_roundtrip_and_permissions(tmp_path):
    path = str(tmp_path / "run" / "control.sock")
    calls = []

    def handler(req):
        calls.append(req)
        if req.get("cmd") == "status":
            return {"ok": True, "status": {"node": "a"}}
        return {"ok": False, "error": f"unknown command {req.get('cmd')!r}"}

    srv = control.ControlServer(path, handler)
    assert oct(os.stat(path).st_mode & 0o777) == "0o660"
    stop = threading.Event()

    def loop():
        import select
        while not stop.is_set():
            r, _, _ = select.select([srv], [], [], 0.05)
            if r:
                srv.handle_ready()

    t = threading.Thread(target=loop)
    t.start()
    try:
        assert control.request(path, {"cmd": "status"})["status"] == {"node": "a"}
        with pytest.raises(PeerError, match="unknown command 'boom'"):
            control.request(path, {"cmd": "boom"})
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(b"not json\n")
        assert json.loads(s.recv(1000))["ok"] is False
        s.close()
        with pytest.raises(HostError, match="in use"):
            control.ControlServer(path, handler)
    finally:
        stop.set()
        t.join(5)
        srv.close()
    assert not os.path.exists(path)
    with pytest.raises(HostError, match="is `skewd daemon` running"):
        control.request(path, {"cmd": "status"})


def test_control_refuses_other_users(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="skewd-ctl-")     # reachable by user nobody
    os.chmod(d, 0o777)
    path = os.path.join(d, "c.sock")
    srv = control.ControlServer(path, lambda r: {"ok": True})
    os.chmod(path, 0o666)   # even with the file open to all, the credential check refuses
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534); os.setuid(65534)
            s = socket.socket(socket.AF_UNIX); s.connect(path)
            try:
                s.sendall(b'{"cmd":"status"}\n')
            except (BrokenPipeError, ConnectionResetError):
                pass   # refused before the request was read: the reply is waiting
            os._exit(0 if json.loads(s.recv(1000)) == {"ok": False, "error": "permission denied"} else 1)
        except BaseException as e:
            with open(os.path.join(d, "child-error"), "w") as f:
                f.write(repr(e))
            os._exit(2)
    import select
    select.select([srv], [], [], 5)
    srv.handle_ready()
    _, status = os.waitpid(pid, 0)
    srv.close()
    err = open(os.path.join(d, "child-error")).read() if os.path.exists(os.path.join(d, "child-error")) else ""
    shutil.rmtree(d, ignore_errors=True)
    assert os.WEXITSTATUS(status) == 0 and srv.refused == 1, err


def test_notifier_never_blocks_on_a_full_socket(tmp_path):
    path = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)                       # bound, never read
    n = Notifier({"NOTIFY_SOCKET": path})
    import time
    t0 = time.monotonic()
    for _ in range(5000):
        n.status("x" * 200)
    assert time.monotonic() - t0 < 5
    assert n.errors > 0 and n.sent > 0
    srv.close()
