"""Durations and rates with units: "5ms", "-20us", "1.5s", "20ppm", "150ppb"."""
from __future__ import annotations

import re

from skewd.errors import UsageError

_DURATION = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_RATE = {"ppb": 1, "ppm": 1_000, "ppt": 0.001}
_NUM = r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
_RE = re.compile(r"^\s*" + _NUM + r"\s*([a-zA-Zµμ]*)\s*$")


def _split(text: str, what: str) -> tuple[float, str]:
    if not isinstance(text, str):
        raise UsageError(f"{what} {text!r} must be a string such as '5ms'")
    m = _RE.match(text)
    if not m:
        raise UsageError(f"{what} {text!r} is not a number with a unit")
    return float(m.group(1)), m.group(2)


def parse_duration(text: str, *, default_unit: str | None = None) -> int:
    """Nanoseconds in a duration such as '5ms', '-20us', '1.5s', '250ns'.

    A bare number is accepted only when default_unit is given."""
    value, unit = _split(text, "duration")
    if not unit:
        if value == 0:
            return 0          # zero needs no unit
        if default_unit is None:
            raise UsageError(
                f"duration {text!r} has no unit: write it as e.g. {text.strip()}ms "
                f"(units: ns, us, µs, ms, s, min, h)")
        unit = default_unit
    if unit not in _DURATION:
        raise UsageError(
            f"duration {text!r} has unknown unit {unit!r} (units: ns, us, µs, ms, s, min, h)")
    return int(round(value * _DURATION[unit]))


def parse_rate(text: str) -> float:
    """Parts per billion in a frequency error such as '20ppm' or '150ppb'."""
    value, unit = _split(text, "rate")
    if unit not in _RATE:
        raise UsageError(f"rate {text!r} needs a unit: ppm, ppb or ppt (e.g. 20ppm)")
    return value * _RATE[unit]


def format_duration(ns: float) -> str:
    """A short human form: 1.50ms, 20.0us, 35ns."""
    a = abs(ns)
    if a >= 1e9:
        return f"{ns / 1e9:.3f}s"
    if a >= 1e6:
        return f"{ns / 1e6:.3f}ms"
    if a >= 1e3:
        return f"{ns / 1e3:.2f}us"
    return f"{ns:.0f}ns"
