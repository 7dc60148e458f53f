"""The per-node clock-state page (layout in csrc/statepage.h and
docs/statepage.md): injected offset segments, the daemon's measurement and a
generation counter, written under a seqlock and read lock-free."""
from __future__ import annotations

import errno
import fcntl
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field

from skewd import _page
from skewd.errors import HostError, InputFileError, UsageError

INT64_MAX = _page.INT64_MAX
LAYOUT_VERSION = _page.PAGE_VERSION
_NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def validate_node(name: str) -> str:
    """A node name must be a safe file name: letters, digits, '.', '_', '-',
    at most 63 characters, not starting with a dot or dash."""
    if not isinstance(name, str) or not _NODE_RE.match(name):
        raise UsageError(
            f"node name {name!r} is not a safe file name: use 1-63 letters, digits, "
            f"'.', '_' or '-', starting with a letter or digit")
    return name


def state_dir() -> str:
    """Where pages live: $SKEWD_STATE_DIR, else /dev/shm/skewd."""
    d = os.environ.get("SKEWD_STATE_DIR")
    if d:
        return d
    return "/dev/shm/skewd" if os.path.isdir("/dev/shm") else f"/tmp/skewd-{os.getuid()}"


def page_path(node: str, directory: str | None = None) -> str:
    return os.path.join(directory or state_dir(), validate_node(node) + ".page")


@dataclass(frozen=True)
class Segment:
    """offset(t) = offset_ns + drift_ppb * (t - epoch_ns) / 1e9, from start_ns on."""
    start_ns: int = 0
    offset_ns: int = 0
    drift_ppb: int = 0
    epoch_ns: int = 0

    def offset_at(self, t: int) -> int:
        return self.offset_ns + int((self.drift_ppb * (t - self.epoch_ns)) / 1_000_000_000)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (int(self.start_ns), int(self.offset_ns), int(self.drift_ppb), int(self.epoch_ns))


NO_SEGMENT = Segment(start_ns=INT64_MAX)


@dataclass(frozen=True)
class Measurement:
    offset_ns: int = 0
    uncertainty_ns: int = 0
    drift_ppb: int = 0
    time_ns: int = 0


@dataclass(frozen=True)
class PageState:
    injected: bool
    measured: bool
    base_clock: int
    generation: int
    cur: Segment
    next: Segment
    measurement: Measurement | None = field(default=None)

    def injected_offset_at(self, t: int) -> int:
        if not self.injected:
            return 0
        seg = self.next if t >= self.next.start_ns else self.cur
        return seg.offset_at(t)


def _map_error(e: OSError, path: str) -> Exception:
    if e.errno == errno.EPROTONOSUPPORT:
        version = getattr(e, "layout_version", "?")
        return InputFileError(
            f"clock-state page {path} has layout version {version}, this skewd reads "
            f"version {LAYOUT_VERSION}: stop the processes using it and remove the file")
    if e.errno == errno.EBADMSG:
        return InputFileError(f"{path} is not a skewd clock-state page (bad magic)")
    if e.errno == errno.EINVAL:
        return InputFileError(f"{path} is too small to be a skewd clock-state page")
    if e.errno in (errno.EACCES, errno.EPERM):
        return HostError(f"no permission to open clock-state page {path}")
    if e.errno == errno.ENOENT:
        return HostError(f"clock-state page {path} does not exist")
    return HostError(f"clock-state page {path}: {e.strerror}")


class StatePage:
    """One node's page. Readers may share it freely; writes take an flock on
    the file so the daemon and `skewd inject` never interleave."""

    def __init__(self, node: str, *, writable: bool = False, create: bool = True,
                 directory: str | None = None, base_clock: int = 0):
        self.node = validate_node(node)
        self.path = page_path(node, directory)
        if create and not os.path.exists(self.path):
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                _page.create(self.path, self.node, base_clock)
            except FileExistsError:
                pass  # another process created it first
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise _map_error(e, self.path) from None
        try:
            self._page = _page.Page(self.path, writable)
        except OSError as e:
            raise _map_error(e, self.path) from None
        self.writable = writable

    @property
    def raw(self) -> "_page.Page":
        return self._page

    def snapshot(self) -> PageState:
        flags, base, gen, cur, nxt, meas = self._page.read()
        return PageState(
            injected=bool(flags & _page.F_INJECT),
            measured=bool(flags & _page.F_MEASURED),
            base_clock=base, generation=gen,
            cur=Segment(*cur), next=Segment(*nxt),
            measurement=Measurement(*meas) if flags & _page.F_MEASURED else None,
        )

    def injected_offset_at(self, t: int) -> int:
        """The injected offset at base-clock time t, from one lock-free read
        (what snapshot().injected_offset_at(t) gives, at a fraction of the cost)."""
        return self._page.offset_at(t)

    @contextmanager
    def _writer(self):
        if not self.writable:
            raise UsageError(f"page {self.path} was opened read-only")
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self._page.repair():
                pass  # a writer died mid-update; its fields are overwritten now
            yield self.snapshot()
        finally:
            os.close(fd)

    def _write(self, injected: bool, measured: bool, base: int, cur: Segment,
               nxt: Segment, meas: Measurement | None) -> None:
        flags = (_page.F_INJECT if injected else 0) | (_page.F_MEASURED if measured else 0)
        m = meas or Measurement()
        self._page.write(flags, base, cur.as_tuple(), nxt.as_tuple(),
                         (m.offset_ns, m.uncertainty_ns, m.drift_ppb, m.time_ns))

    def set_injection(self, cur: Segment, nxt: Segment | None = None) -> None:
        """Replace the injected segments (measurement fields are kept)."""
        nxt = nxt or NO_SEGMENT
        for s in (cur, nxt):
            for v in s.as_tuple():
                if not -2**63 <= v < 2**63:
                    raise UsageError(f"segment value {v} does not fit in 64 bits")
        with self._writer() as st:
            self._write(True, st.measured, st.base_clock, cur, nxt, st.measurement)

    def clear_injection(self) -> None:
        with self._writer() as st:
            self._write(False, st.measured, st.base_clock, Segment(), NO_SEGMENT, st.measurement)

    def set_measurement(self, m: Measurement | None) -> None:
        with self._writer() as st:
            self._write(st.injected, m is not None, st.base_clock, st.cur, st.next, m)

    def close(self) -> None:
        self._page.close()

    def __enter__(self) -> "StatePage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
