"""The daemon's configuration (TOML). Every mistake is reported with the key,
the line where it can be found, and what is expected:

    config /etc/skewd/skewd.toml line 12: peers[1].address "10.0.0.x:3190" is not an IP address

Example (systemd/skewd.toml.example has every key with its default):

    node = "gpu-a"
    listen = "0.0.0.0:3190"
    reference = "gpu-b"
    keys_file = "/etc/skewd/keys"
    probe_interval = "100ms"

    [[peers]]
    name = "gpu-b"
    address = "10.0.0.2:3190"
"""
from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field

from skewd.errors import ConfigError, SkewdError
from skewd.statepage import validate_node
from skewd.units import parse_duration

DEFAULT_PORT = 3190
_SIZE = {"": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2,
         "mb": 1000**2, "g": 1024**3, "gib": 1024**3, "gb": 1000**3}


@dataclass(frozen=True)
class Peer:
    name: str
    host: str
    port: int
    key_id: int | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


@dataclass(frozen=True)
class Config:
    node: str
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT
    peers: tuple[Peer, ...] = ()
    reference: str | None = None
    keys_file: str | None = None
    key_id: int | None = None
    probe_interval_ns: int = 100_000_000
    #: a warm-up packet goes this long before each probe (0: none); see
    #: probe.WARMUP
    presend_ns: int = 200_000
    interface: str | None = None
    hardware_timestamps: bool = False
    inject_schedule: str | None = None
    log_dir: str = "/var/log/skewd"
    log_rotate_bytes: int = 64 * 1024**2
    log_rotate_age_ns: int = 3600 * 10**9
    log_flush_ns: int = 1_000_000_000
    metrics_host: str | None = "127.0.0.1"
    metrics_port: int | None = 9469
    control_socket: str = "/run/skewd/control.sock"
    state_dir: str | None = None
    unreachable_after_ns: int = 3_000_000_000
    path: str = field(default="<config>", compare=False)


def parse_size(text, where: str) -> int:
    if isinstance(text, int):
        return text
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$", str(text))
    if not m or m.group(2).lower() not in _SIZE:
        raise ConfigError(f"{where} {text!r} is not a size (e.g. 64MiB, 500KB)")
    return int(float(m.group(1)) * _SIZE[m.group(2).lower()])


def parse_hostport(text: str, where: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """'10.0.0.2:3190', '[fe80::1%veth0]:3190', '10.0.0.2' -> (host, port)."""
    if not isinstance(text, str):
        raise ConfigError(f"{where} must be a string like \"10.0.0.2:{default_port}\"")
    s = text.strip()
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif s.count(":") == 1:
        host, port = s.split(":")
    else:
        host, port = s, ""
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        raise ConfigError(f"{where} {text!r} is not an IP address (with optional :port)") from None
    if port:
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise ConfigError(f"{where} {text!r} has port {port!r}: expected 1-65535")
        return host, int(port)
    return host, default_port


class _Loc:
    """Finds the line of a key in the TOML text, for error messages."""

    def __init__(self, text: str, path: str):
        self.lines = text.splitlines()
        self.path = path

    def line_of(self, key: str, table: str | None = None, index: int = 0) -> int | None:
        section, count = None, -1
        for i, line in enumerate(self.lines, 1):
            s = line.strip()
            if s.startswith("[["):
                section = s.strip("[] ")
                if section == table:
                    count += 1
                continue
            if s.startswith("["):
                section = s.strip("[] ")
                continue
            if re.match(rf"^{re.escape(key)}\s*=", s):
                if table is None and section is None:
                    return i
                if table is not None and section == table and count in (index, -1):
                    return i
        return None

    def err(self, msg: str, key: str, table: str | None = None, index: int = 0) -> ConfigError:
        n = self.line_of(key, table, index)
        where = f"config {self.path}" + (f" line {n}" if n else "")
        return ConfigError(f"{where}: {msg}")


_TOP_KEYS = {"node", "listen", "peers", "reference", "keys_file", "key_id", "probe_interval",
             "presend", "interface", "hardware_timestamps", "inject", "log", "metrics",
             "control_socket", "state_dir", "unreachable_after"}


def loads(text: str, path: str = "<config>") -> Config:
    loc = _Loc(text, path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path}: not valid TOML: {e}") from None

    def need(cond, msg, key, table=None, index=0):
        if not cond:
            raise loc.err(msg, key, table, index)

    unknown = set(raw) - _TOP_KEYS
    if unknown:
        k = sorted(unknown)[0]
        raise loc.err(f"unknown key {k!r} (known: {', '.join(sorted(_TOP_KEYS))})", k)

    need("node" in raw, "missing key 'node' (this node's name)", "node")
    try:
        node = validate_node(raw["node"])
    except SkewdError as e:
        raise loc.err(f"node: {e}", "node") from None

    def dur(key, default, table=None, src=None, zero_ok=False):
        src = raw if src is None else src
        if key not in src:
            return default
        try:
            ns = parse_duration(str(src[key]))
        except SkewdError as e:
            raise loc.err(f"{key}: {e}", key, table) from None
        if zero_ok:
            need(ns >= 0, f"{key} must not be negative", key, table)
        else:
            need(ns > 0, f"{key} must be positive", key, table)
        return ns

    kw: dict = {"node": node, "path": path}
    if "listen" in raw:
        try:
            kw["listen_host"], kw["listen_port"] = parse_hostport(raw["listen"], "listen")
        except ConfigError as e:
            raise loc.err(str(e), "listen") from None
    kw["probe_interval_ns"] = dur("probe_interval", Config.probe_interval_ns)
    need(kw["probe_interval_ns"] >= 1_000_000, "probe_interval must be at least 1ms",
         "probe_interval")
    kw["presend_ns"] = dur("presend", Config.presend_ns, zero_ok=True)
    need(kw["presend_ns"] < kw["probe_interval_ns"] // 2,
         "presend must be under half of probe_interval (0 turns warm-up packets off)",
         "presend")
    kw["unreachable_after_ns"] = dur("unreachable_after", Config.unreachable_after_ns)

    peers, names = [], set()
    plist = raw.get("peers", [])
    need(isinstance(plist, list), "peers must be an array of tables ([[peers]])", "peers")
    for i, p in enumerate(plist):
        need(isinstance(p, dict), f"peers[{i}] must be a table", "peers")
        for k in set(p) - {"name", "address", "key_id"}:
            raise loc.err(f"peers[{i}]: unknown key {k!r} (known: name, address, key_id)",
                          k, "peers", i)
        need("name" in p, f"peers[{i}] needs a name", "address", "peers", i)
        need("address" in p, f"peers[{i}] ({p.get('name')}) needs an address", "name", "peers", i)
        try:
            name = validate_node(p["name"])
        except SkewdError as e:
            raise loc.err(f"peers[{i}].name: {e}", "name", "peers", i) from None
        need(name not in names, f"peers[{i}].name {name!r} appears twice", "name", "peers", i)
        need(name != node, f"peers[{i}].name {name!r} is this node itself", "name", "peers", i)
        names.add(name)
        try:
            host, port = parse_hostport(p["address"], f"peers[{i}].address")
        except ConfigError as e:
            raise loc.err(str(e), "address", "peers", i) from None
        kid = p.get("key_id")
        need(kid is None or (isinstance(kid, int) and 0 < kid < 2**32),
             f"peers[{i}].key_id must be an integer 1..2^32-1", "key_id", "peers", i)
        peers.append(Peer(name, host, port, kid))
    kw["peers"] = tuple(peers)

    if "reference" in raw:
        need(raw["reference"] in names,
             f"reference {raw['reference']!r} is not one of the peers ({', '.join(sorted(names)) or 'none'})",
             "reference")
        kw["reference"] = raw["reference"]
    if "keys_file" in raw:
        need(isinstance(raw["keys_file"], str), "keys_file must be a path", "keys_file")
        kw["keys_file"] = raw["keys_file"]
    if "key_id" in raw:
        need(isinstance(raw["key_id"], int) and raw["key_id"] > 0, "key_id must be a positive integer",
             "key_id")
        kw["key_id"] = raw["key_id"]
    if "interface" in raw:
        need(isinstance(raw["interface"], str) and raw["interface"], "interface must be a name",
             "interface")
        kw["interface"] = raw["interface"]
    if "hardware_timestamps" in raw:
        need(isinstance(raw["hardware_timestamps"], bool), "hardware_timestamps must be true or false",
             "hardware_timestamps")
        kw["hardware_timestamps"] = raw["hardware_timestamps"]
    for key in ("control_socket", "state_dir"):
        if key in raw:
            need(isinstance(raw[key], str) and raw[key], f"{key} must be a path", key)
            kw[key] = raw[key]

    inj = raw.get("inject", {})
    need(isinstance(inj, dict), "inject must be a table ([inject])", "inject")
    for k in set(inj) - {"schedule"}:
        raise loc.err(f"inject: unknown key {k!r} (known: schedule)", k, "inject")
    if "schedule" in inj:
        from skewd.inject import parse_schedule
        try:
            parse_schedule(inj["schedule"], 0)
        except SkewdError as e:
            raise loc.err(f"inject.schedule: {e}", "schedule", "inject") from None
        kw["inject_schedule"] = inj["schedule"]

    log = raw.get("log", {})
    need(isinstance(log, dict), "log must be a table ([log])", "log")
    for k in set(log) - {"dir", "rotate_size", "rotate_age", "flush"}:
        raise loc.err(f"log: unknown key {k!r} (known: dir, rotate_size, rotate_age, flush)",
                      k, "log")
    if "dir" in log:
        kw["log_dir"] = str(log["dir"])
    if "rotate_size" in log:
        try:
            kw["log_rotate_bytes"] = parse_size(log["rotate_size"], "log.rotate_size")
        except ConfigError as e:
            raise loc.err(str(e), "rotate_size", "log") from None
    kw["log_rotate_age_ns"] = dur("rotate_age", Config.log_rotate_age_ns, "log", log)
    kw["log_flush_ns"] = dur("flush", Config.log_flush_ns, "log", log)

    met = raw.get("metrics", {})
    need(isinstance(met, dict), "metrics must be a table ([metrics])", "metrics")
    for k in set(met) - {"address", "enabled"}:
        raise loc.err(f"metrics: unknown key {k!r} (known: address, enabled)", k, "metrics")
    if met.get("enabled", True) is False:
        kw["metrics_host"] = kw["metrics_port"] = None
    elif "address" in met:
        try:
            kw["metrics_host"], kw["metrics_port"] = parse_hostport(
                met["address"], "metrics.address", 9469)
        except ConfigError as e:
            raise loc.err(str(e), "address", "metrics") from None
    return Config(**kw)


def load(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"config {path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not UTF-8 text") from None
    return loads(text, os.path.abspath(path))


# --- writing -------------------------------------------------------------------

def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(settings: dict, peers=(), tables: dict | None = None,
           comment: str | None = None) -> str:
    """A daemon config's text, for programs that start daemons (the
    experiment, the benchmarks, the tests): top-level settings, then a
    [[peers]] entry per (name, "host:port"), then tables such as
    {"log": {"dir": ...}, "metrics": {"enabled": False}}. Strings are
    quoted and escaped; what loads() reads back is what was given."""
    lines = [f"# {comment}"] if comment else []
    lines += [f"{k} = {_value(v)}" for k, v in settings.items()]
    for name, address in peers:
        lines += ["", "[[peers]]", f"name = {_value(name)}", f"address = {_value(address)}"]
    for table, kv in (tables or {}).items():
        lines += ["", f"[{table}]"] + [f"{k} = {_value(v)}" for k, v in kv.items()]
    return "\n".join(lines) + "\n"
