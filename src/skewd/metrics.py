"""Prometheus text exposition (format 0.0.4) of the daemon's state, served
over plain HTTP on the configured address."""
from __future__ import annotations

import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Registry:
    """Gauges and counters with labels, rendered on demand."""

    def __init__(self):
        self._lock = threading.Lock()
        self._meta: dict[str, tuple[str, str]] = {}
        self._values: dict[str, dict[tuple, float]] = {}

    def describe(self, name: str, kind: str, help_: str) -> None:
        self._meta[name] = (kind, help_)
        self._values.setdefault(name, {})

    def set(self, name: str, value: float | None, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            vals = self._values.setdefault(name, {})
            if value is None:
                vals.pop(key, None)
            else:
                vals[key] = float(value)

    def clear(self, name: str) -> None:
        with self._lock:
            self._values.get(name, {}).clear()

    def render(self) -> str:
        out = []
        with self._lock:
            for name in sorted(self._values):
                kind, help_ = self._meta.get(name, ("gauge", name))
                out.append(f"# HELP {name} {help_}")
                out.append(f"# TYPE {name} {kind}")
                for key, v in sorted(self._values[name].items()):
                    lab = ",".join(f'{k}="{_esc(x)}"' for k, x in key)
                    val = "NaN" if math.isnan(v) else ("+Inf" if v == math.inf else repr(v))
                    out.append(f"{name}{{{lab}}} {val}" if lab else f"{name} {val}")
        return "\n".join(out) + "\n"


class MetricsServer:
    """Serves GET /metrics from a thread; start() raises OSError when the
    address is taken."""

    def __init__(self, registry: Registry, host: str, port: int, before_render=None):
        reg = registry
        hook = before_render

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                if hook:
                    hook()
                body = reg.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.address = self.httpd.server_address
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="skewd-metrics",
                                        daemon=True)

    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
