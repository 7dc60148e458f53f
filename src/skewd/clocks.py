"""Clocks: the POSIX clocks, PTP hardware clocks and the TSC, read through
skewd's C core.

    >>> from skewd import clocks
    >>> clocks.read("realtime")          # int ns
    >>> clocks.batch("monotonic_raw", 1000)   # numpy int64 array
"""
from __future__ import annotations

import errno
import glob
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from skewd import _clock
from skewd.errors import HostError, UsageError

if TYPE_CHECKING:
    import numpy as np

CLOCK_IDS = {
    "realtime": _clock.ID_REALTIME,
    "monotonic": _clock.ID_MONOTONIC,
    "monotonic_raw": _clock.ID_MONOTONIC_RAW,
    "tai": _clock.ID_TAI,
    "boottime": _clock.ID_BOOTTIME,
}

#: fast no-argument readers, for callers that want the bare function
realtime_ns = _clock.realtime_ns
monotonic_ns = _clock.monotonic_ns
monotonic_raw_ns = _clock.monotonic_raw_ns

XTS_METHODS = {
    _clock.XTS_PRECISE: "precise",
    _clock.XTS_EXTENDED: "extended",
    _clock.XTS_PLAIN: "plain",
}


def clock_id(name: str) -> int:
    """The clockid of a named clock; raises UsageError naming the choices."""
    try:
        return CLOCK_IDS[name.lower().replace("-", "_")]
    except (KeyError, AttributeError):
        raise UsageError(
            f"unknown clock {name!r}: choose one of {', '.join(CLOCK_IDS)}") from None


def read(name: str = "realtime") -> int:
    return _clock.read_ns(clock_id(name))


def resolution(name: str = "realtime") -> int:
    return _clock.resolution_ns(clock_id(name))


def int64_buffer(out: int | np.ndarray) -> np.ndarray:
    """A new int64 array of `out` elements, or `out` itself checked to be
    one the C batch loops can fill. (numpy is imported here, not with the
    module: the daemon reads clocks and never needs it.)"""
    import numpy as np
    buf = np.empty(out, dtype=np.int64) if isinstance(out, (int, np.integer)) else out
    if not (isinstance(buf, np.ndarray) and buf.dtype == np.int64 and buf.flags.c_contiguous):
        raise UsageError("batch buffer must be a contiguous numpy int64 array")
    return buf


def batch(name: str, out: int | np.ndarray) -> np.ndarray:
    """Read a clock len(out) times (or `out` times) in a C loop, into int64."""
    buf = int64_buffer(out)
    _clock.batch(clock_id(name), buf)
    return buf


def read_cost_ns(name: str, n: int = 10000, rounds: int = 21) -> float:
    """Median ns per read of a clock in a C loop."""
    return _clock.cost_ns(clock_id(name), n, rounds)


# --- PTP hardware clocks -----------------------------------------------------

@dataclass(frozen=True)
class CrossTimestamp:
    """A PHC reading and the CLOCK_REALTIME window it was taken in."""
    phc_ns: int
    sys_before_ns: int
    sys_after_ns: int
    method: str
    samples: int

    @property
    def window_ns(self) -> int:
        return self.sys_after_ns - self.sys_before_ns

    @property
    def offset_ns(self) -> int:
        """PHC minus system time at the window's midpoint."""
        return self.phc_ns - (self.sys_before_ns + self.sys_after_ns) // 2


class PHC:
    """A PTP hardware clock opened by path, e.g. PHC("/dev/ptp0")."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.fd, self.clockid = _clock.phc_open(path)
        except OSError as e:
            if e.errno == errno.ENOENT:
                found = find_phcs()
                where = (f"this host has {', '.join(found)}" if found
                         else "this host has no PTP hardware clock (no /dev/ptp*)")
                raise HostError(f"PTP hardware clock {path} does not exist: {where}") from None
            if e.errno == errno.ENOTTY:
                raise HostError(f"{path} is not a PTP hardware clock") from None
            if e.errno in (errno.EACCES, errno.EPERM):
                raise HostError(
                    f"no permission to open {path}: run as root or add the user "
                    f"to the group that owns it") from None
            raise HostError(f"cannot open PTP hardware clock {path}: {e.strerror}") from None

    def read(self) -> int:
        return _clock.read_ns(self.clockid)

    def resolution(self) -> int:
        return _clock.resolution_ns(self.clockid)

    def cross_timestamp(self, samples: int = 9) -> CrossTimestamp:
        """PHC against CLOCK_REALTIME: PRECISE, else EXTENDED (narrowest of
        `samples`), else plain PTP_SYS_OFFSET."""
        if not 1 <= samples <= 25:
            raise UsageError(f"samples {samples} must be between 1 and 25")
        try:
            phc, a, b, method, n = _clock.phc_cross(self.fd, samples)
        except OSError as e:
            raise HostError(f"cross-timestamp of {self.path} failed: {e.strerror}") from None
        return CrossTimestamp(phc, a, b, XTS_METHODS[method], n)

    def close(self) -> None:
        if self.fd >= 0:
            _clock.phc_close(self.fd)
            self.fd = -1

    def __enter__(self) -> "PHC":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pick_narrowest(triples: np.ndarray) -> CrossTimestamp:
    """The (before, phc, after) sample with the narrowest window, as the
    EXTENDED and plain methods choose; samples where the system clock ran
    backwards are ignored."""
    import numpy as np
    arr = np.ascontiguousarray(triples, dtype=np.int64)
    try:
        phc, a, b, _, n = _clock.xts_pick(arr)
    except OSError:
        raise UsageError("every sample has a negative window (the system clock stepped)") from None
    return CrossTimestamp(phc, a, b, "extended", n)


def find_phcs() -> list[str]:
    return sorted(glob.glob("/dev/ptp[0-9]*"))


def phc_name(path: str) -> str | None:
    """The driver's name for a PHC (from sysfs), if it has one."""
    base = os.path.basename(path)
    try:
        with open(f"/sys/class/ptp/{base}/clock_name") as f:
            return f.read().strip()
    except OSError:
        return None


# --- TSC -----------------------------------------------------------------------

def tsc_invariant() -> tuple[bool, str]:
    """(True, why) when the TSC is invariant; (False, reason) otherwise."""
    return _clock.tsc_invariant()


class TSC:
    """The TSC calibrated against CLOCK_MONOTONIC_RAW; refuses a TSC that is
    not invariant, with the reason."""

    def __init__(self, calibration_ns: int = 500_000_000):
        ok, why = tsc_invariant()
        if not ok:
            raise HostError(f"refusing to use the TSC: {why}")
        try:
            self._c = _clock.TscClock(calibration_ns)
        except OSError as e:
            raise HostError(f"TSC calibration failed: {e.strerror}") from None
        self.now_ns = self._c.now_ns

    hz = property(lambda self: self._c.hz)
    mult = property(lambda self: self._c.mult)
    shift = property(lambda self: self._c.shift)
    window_ns = property(lambda self: self._c.window_ns)

    def to_ns(self, tsc: int) -> int:
        return self._c.to_ns(tsc)

    def raw(self) -> int:
        return self._c.raw()

    def batch(self, out: int | np.ndarray) -> np.ndarray:
        buf = int64_buffer(out)
        self._c.batch(buf)
        return buf

    def read_cost_ns(self, n: int = 10000, rounds: int = 21) -> float:
        return self._c.cost_ns(n, rounds)


# --- survey (for `skewd clocks`) ----------------------------------------------

@dataclass(frozen=True)
class ClockInfo:
    name: str
    resolution_ns: int | None
    read_cost_ns: float | None
    value_ns: int | None
    error: str | None = None


def survey(tsc_calibration_ns: int = 200_000_000) -> dict:
    """Everything `skewd clocks` shows, as plain data."""
    infos = []
    for name in CLOCK_IDS:
        try:
            infos.append(ClockInfo(name, resolution(name), read_cost_ns(name, 2000, 11), read(name)))
        except OSError as e:
            infos.append(ClockInfo(name, None, None, None, e.strerror))
    phcs = []
    for path in find_phcs():
        entry = {"path": path, "name": phc_name(path)}
        try:
            with PHC(path) as phc:
                x = phc.cross_timestamp()
                entry.update(value_ns=x.phc_ns, offset_ns=x.offset_ns,
                             window_ns=x.window_ns, method=x.method)
        except Exception as e:  # report, never fail the survey
            entry["error"] = str(e)
        phcs.append(entry)
    ok, why = tsc_invariant()
    tsc = {"invariant": ok, "reason": why}
    if ok:
        try:
            t = TSC(tsc_calibration_ns)
            tsc.update(hz=t.hz, read_cost_ns=t.read_cost_ns(2000, 11), value_ns=t.now_ns())
        except HostError as e:
            tsc["error"] = str(e)
    try:
        cs = open("/sys/devices/system/clocksource/clocksource0/current_clocksource").read().strip()
    except OSError:
        cs = None
    return {"clocks": infos, "phcs": phcs, "tsc": tsc, "clocksource": cs}
