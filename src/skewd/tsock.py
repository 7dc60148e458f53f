"""Timestamped UDP sockets and what each network interface can stamp.

    from skewd.tsock import TimestampedSocket
    sock = TimestampedSocket("ipv4", bind=("0.0.0.0", 0), stamps="software")
    addr = sock.address("10.0.0.2", 7319)
    sent = sock.send(b"...", addr)            # -> Sent(nbytes, id, user_ns)
    tx = sock.tx_stamp(sent)                  # -> Stamp(ns, source), bounded wait
    got = sock.recv(timeout_ns=10_000_000)    # -> Datagram(data, ip, port, stamp) | None

Every stamp says where it came from (`StampSource`): HARDWARE (the NIC; turned
into CLOCK_REALTIME through the NIC's PTP clock), KERNEL (software stamps taken
in the kernel, CLOCK_REALTIME) or USER (a clock read in user space beside the
syscall: the fallback when the kernel gave nothing). A TX stamp that never comes
within the wait is replaced by the USER read taken just before the send, and
counted (`stats()["tx_missing"]`).

`interface_capabilities()` and `format_capabilities()` report, like
`ethtool -T`, what each interface supports (ETHTOOL_GET_TS_INFO);
`enable_hardware_stamping()` switches a NIC on (SIOCSHWTSTAMP). Both raise
HostError with a message saying what is missing where the host cannot.
"""
from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass, field
from enum import IntEnum

from skewd import _tsock
from skewd.errors import HostError, PeerError, UsageError

#: bounded wait for a TX stamp by default
DEFAULT_TX_WAIT_NS = 2_000_000
#: what recv() returns when its wake_fd (or a signal) ended the wait
WOKEN = _tsock.WOKEN


class StampSource(IntEnum):
    MISSING = _tsock.SRC_MISSING
    USER = _tsock.SRC_USER
    KERNEL = _tsock.SRC_KERNEL
    HARDWARE = _tsock.SRC_HARDWARE

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {s: s.name.lower() for s in StampSource}
#: by C source code, without the enum's slow call
_SOURCES = {int(s): s for s in StampSource}

MODES = {"none": _tsock.MODE_NONE, "user": _tsock.MODE_NONE,
         "software": _tsock.MODE_SOFTWARE, "kernel": _tsock.MODE_SOFTWARE,
         "hardware": _tsock.MODE_HARDWARE}
MODE_NAMES = {_tsock.MODE_NONE: "none", _tsock.MODE_SOFTWARE: "software",
              _tsock.MODE_HARDWARE: "hardware"}


# Made for every packet: slotted and not frozen, since a frozen dataclass's
# __init__ costs four times as much. Treat them as read-only all the same.
@dataclass(slots=True)
class Stamp:
    ns: int
    source: StampSource


@dataclass(slots=True)
class Sent:
    nbytes: int
    id: int
    user_ns: int


@dataclass(slots=True)
class Datagram:
    data: bytes
    ip: str
    port: int
    stamp: Stamp


def _family(family) -> int:
    if family in ("ipv4", "inet", 4, socket.AF_INET):
        return _tsock.FAMILY_INET
    if family in ("ipv6", "inet6", 6, socket.AF_INET6):
        return _tsock.FAMILY_INET6
    raise UsageError(f"address family {family!r}: use 'ipv4' or 'ipv6'")


def family_of(ip: str) -> str:
    """'ipv4' or 'ipv6' for an address literal; UsageError otherwise."""
    for fam, name in ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")):
        try:
            socket.inet_pton(fam, ip)
            return name
        except OSError:
            pass
    raise UsageError(f"{ip!r} is not an IPv4 or IPv6 address")


class PhcTranslator:
    """Turns NIC (PHC) stamps into CLOCK_REALTIME with a cross-timestamp of
    the interface's PTP clock, refreshed every `refresh_ns`."""

    def __init__(self, phc_index: int, refresh_ns: int = 1_000_000_000):
        from skewd import clocks
        self.phc = clocks.PHC(f"/dev/ptp{phc_index}")
        self.refresh_ns = refresh_ns
        self._realtime = clocks.realtime_ns
        self._offset = 0
        self._at = None

    def to_realtime(self, phc_ns: int) -> int:
        now = self._realtime()
        if self._at is None or now - self._at > self.refresh_ns:
            self._offset = self.phc.cross_timestamp().offset_ns
            self._at = now
        return phc_ns - self._offset

    def close(self) -> None:
        self.phc.close()


class TimestampedSocket:
    """A UDP socket that stamps every datagram in and out.

    stamps: "software" (kernel stamps), "hardware" (NIC stamps; needs
    `interface`, enables NIC stamping, falls back per packet to kernel stamps),
    "auto" (hardware when the interface can, else software; the reason is in
    `.degraded`), or "none" (user-space reads only)."""

    def __init__(self, family="ipv4", *, bind: tuple[str, int] | None = None,
                 stamps: str = "software", interface: str | None = None,
                 tx_wait_ns: int = DEFAULT_TX_WAIT_NS):
        self.tx_wait_ns = tx_wait_ns
        self.interface = interface
        self.degraded: str | None = None
        self._phc: PhcTranslator | None = None
        self._addrs: dict[tuple[str, int], _tsock.Addr] = {}
        try:
            self._s = _tsock.Socket(_family(family))
        except OSError as e:
            raise HostError(f"cannot open a UDP {family} socket: {e.strerror}") from None
        try:
            if bind is not None:
                self.bind(*bind)
            if interface:
                try:
                    self._s.bind_device(interface)
                except OSError as e:
                    raise HostError(f"cannot bind the socket to interface {interface}: "
                                    f"{e.strerror}") from None
            self._set_stamps(stamps)
        except BaseException:
            self._s.close()
            raise

    def _set_stamps(self, stamps: str) -> None:
        want = stamps.lower()
        if want == "auto":
            if not self.interface:
                want, self.degraded = "software", "no interface named: kernel stamps"
            else:
                try:
                    self._enable_hw()
                    want = "hardware"
                except HostError as e:
                    want, self.degraded = "software", str(e)
        elif want == "hardware":
            if not self.interface:
                raise UsageError("hardware stamps need an interface (the NIC to switch on)")
            self._enable_hw()
        if want not in MODES:
            raise UsageError(f"stamps {stamps!r}: choose hardware, software, auto or none")
        try:
            self._s.set_mode(MODES[want])
        except OSError as e:
            raise HostError(f"SO_TIMESTAMPING ({want}) refused: {e.strerror}") from None

    def _enable_hw(self) -> None:
        enable_hardware_stamping(self.interface)
        caps = interface_info(self.interface)
        if caps.phc_index < 0:
            raise HostError(f"interface {self.interface} stamps in hardware but has no "
                            f"PTP clock to translate its stamps: using kernel stamps")
        self._phc = PhcTranslator(caps.phc_index)

    # --- plumbing ---------------------------------------------------------------

    def bind(self, ip: str, port: int) -> None:
        try:
            self._s.bind(ip, port)
        except OSError as e:
            raise HostError(f"cannot bind UDP {ip}:{port}: {e.strerror}") from None
        except UnicodeError:
            raise UsageError(f"bad bind address {ip!r}") from None

    @property
    def port(self) -> int:
        return self._s.local_port()

    @property
    def mode(self) -> str:
        return MODE_NAMES[self._s.mode]

    @property
    def raw(self) -> "_tsock.Socket":
        return self._s

    def fileno(self) -> int:
        return self._s.fileno()

    def address(self, ip: str, port: int) -> "_tsock.Addr":
        key = (ip, port)
        a = self._addrs.get(key)
        if a is None:
            try:
                a = self._s.addr(ip, port)
            except ValueError:
                raise UsageError(f"{ip!r} is not an IP address this socket can reach "
                                 f"(family {'ipv6' if self._s.family == _tsock.FAMILY_INET6 else 'ipv4'})") from None
            if len(self._addrs) > 4096:
                self._addrs.clear()
            self._addrs[key] = a
        return a

    # --- datagrams --------------------------------------------------------------

    def send(self, data: bytes, addr) -> Sent:
        if not isinstance(addr, _tsock.Addr):
            addr = self.address(*addr)
        try:
            n, i, u = self._s.send(data, addr)
        except OSError as e:
            raise PeerError(f"sending to {addr.ip} port {addr.port} failed: "
                            f"{e.strerror}") from None
        return Sent(n, i, u)

    def discard(self, pattern: bytes) -> None:
        """From now on, datagrams exactly equal to pattern (at most 16 bytes;
        b"" for none) are counted (stats()["discarded"]) and dropped in C,
        never returned by recv."""
        self._s.set_discard(pattern)

    def set_responder(self, responder) -> None:
        """Have recv answer probe requests in C (a skewd._tsock.Responder;
        None: stop). See ProbeServer(native=True)."""
        self._s.set_responder(responder)

    def send_unstamped(self, data: bytes, addr) -> int:
        """Send a datagram that asks for no TX stamp (a warm-up packet);
        bytes sent."""
        if not isinstance(addr, _tsock.Addr):
            addr = self.address(*addr)
        try:
            return self._s.send_unstamped(data, addr)
        except OSError as e:
            raise PeerError(f"sending to {addr.ip} port {addr.port} failed: "
                            f"{e.strerror}") from None

    def _stamp(self, ns: int, src: int) -> Stamp:
        if src == _tsock.SRC_HARDWARE and self._phc is not None:
            ns = self._phc.to_realtime(ns)
        return Stamp(ns, _SOURCES[src])

    def tx_stamp(self, sent: Sent, timeout_ns: int | None = None) -> Stamp:
        """The TX stamp of a sent datagram, waiting at most timeout_ns; the
        user-space read before the send when none came."""
        if self._s.mode == _tsock.MODE_NONE:
            return Stamp(sent.user_ns, StampSource.USER)
        got = self._s.tx_stamp(sent.id, self.tx_wait_ns if timeout_ns is None else timeout_ns)
        if got is None:
            return Stamp(sent.user_ns, StampSource.USER)
        return self._stamp(*got)

    def recv(self, bufsize: int = 2048, timeout_ns: int = 0, wake_fd: int = -1):
        """The next datagram, or None when none came within timeout_ns (0:
        just look; <0: wait forever). wake_fd >= 0 is watched as well: WOKEN
        is returned when it turns readable, or a signal arrives, first (a
        daemon's one wait for packets, its control socket and signals;
        discarded warm-ups never end it)."""
        buf = bytearray(bufsize)
        got = self._s.recv(buf, timeout_ns, wake_fd)
        if got is None or got is WOKEN:
            return got
        n, ip, port, ns, src = got
        return Datagram(bytes(buf[:min(n, bufsize)]), ip, port, self._stamp(ns, src))

    def stats(self) -> dict:
        return self._s.stats()

    def close(self) -> None:
        self._s.close()
        if self._phc:
            self._phc.close()
            self._phc = None

    def __enter__(self) -> "TimestampedSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- interfaces -----------------------------------------------------------------

@dataclass(frozen=True)
class InterfaceCaps:
    """What one interface can stamp (ETHTOOL_GET_TS_INFO, decoded)."""
    name: str
    capabilities: list[str] = field(default_factory=list)
    phc_index: int = -1
    tx_types: list[str] = field(default_factory=list)
    rx_filters: list[str] = field(default_factory=list)
    hardware_current: dict | None = None
    error: str | None = None

    @property
    def hardware(self) -> bool:
        return "hardware-transmit" in self.capabilities and "hardware-receive" in self.capabilities

    @property
    def software(self) -> bool:
        return "software-transmit" in self.capabilities and "software-receive" in self.capabilities


def _bits(value: int, names: dict[str, int], shift: bool) -> list[str]:
    out = []
    for name, v in names.items():
        bit = (1 << v) if shift else v
        if bit and value & bit:
            out.append(name)
    unknown = value
    for v in names.values():
        unknown &= ~((1 << v) if shift else v)
    if unknown:
        out.append(f"unknown(0x{unknown:x})")
    return out


def decode_ts_info(name: str, so_timestamping: int, phc_index: int, tx_types: int,
                   rx_filters: int) -> InterfaceCaps:
    """Decode the raw ETHTOOL_GET_TS_INFO words into names as ethtool -T shows them."""
    return InterfaceCaps(
        name=name,
        capabilities=_bits(so_timestamping, _tsock.SOF_FLAGS, shift=False),
        phc_index=phc_index,
        tx_types=_bits(tx_types, _tsock.TX_TYPES, shift=True),
        rx_filters=_bits(rx_filters, _tsock.RX_FILTERS, shift=True),
    )


def _if_error(name: str, e: OSError, what: str) -> str:
    if e.errno == errno.ENODEV:
        return f"no interface named {name}"
    if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY):
        return f"the driver of {name} cannot {what}"
    if e.errno == errno.EPERM:
        return f"{what} on {name} needs CAP_NET_ADMIN (run as root)"
    return f"{what} on {name}: {e.strerror}"


def interface_info(name: str) -> InterfaceCaps:
    """One interface's capabilities; HostError when it has none to report."""
    try:
        raw = _tsock.ts_info(name)
    except OSError as e:
        raise HostError(_if_error(name, e, "report timestamping capabilities")) from None
    caps = decode_ts_info(name, *raw)
    try:
        tx, rx = _tsock.hwtstamp_get(name)
        inv_tx = {v: k for k, v in _tsock.TX_TYPES.items()}
        inv_rx = {v: k for k, v in _tsock.RX_FILTERS.items()}
        cur = {"tx": inv_tx.get(tx, str(tx)), "rx": inv_rx.get(rx, str(rx))}
        caps = InterfaceCaps(caps.name, caps.capabilities, caps.phc_index, caps.tx_types,
                             caps.rx_filters, hardware_current=cur)
    except OSError:
        pass  # drivers without hardware stamping refuse SIOCGHWTSTAMP
    return caps


def interface_capabilities(names: list[str] | None = None) -> list[InterfaceCaps]:
    """Capabilities of the named interfaces (default: every interface of this
    network namespace). An interface that cannot report gets `.error`."""
    if names is None:
        names = [n for _, n in socket.if_nameindex()]
    out = []
    for n in names:
        try:
            out.append(interface_info(n))
        except HostError as e:
            out.append(InterfaceCaps(name=n, error=str(e)))
    return out


def format_capabilities(data: list[InterfaceCaps]) -> str:
    """Text like `ethtool -T`, one block per interface."""
    blocks = []
    for c in data:
        lines = [f"Time stamping parameters for {c.name}:"]
        if c.error:
            lines.append(f"\terror: {c.error}")
            blocks.append("\n".join(lines))
            continue
        lines.append("Capabilities:")
        lines += [f"\t{x}" for x in c.capabilities] or ["\tnone"]
        lines.append(f"PTP Hardware Clock: {c.phc_index if c.phc_index >= 0 else 'none'}")
        lines.append("Hardware Transmit Timestamp Modes:" + ("" if c.tx_types else " none"))
        lines += [f"\t{x}" for x in c.tx_types]
        lines.append("Hardware Receive Filter Modes:" + ("" if c.rx_filters else " none"))
        lines += [f"\t{x}" for x in c.rx_filters]
        if c.hardware_current:
            lines.append(f"Hardware stamping now: tx {c.hardware_current['tx']}, "
                         f"rx {c.hardware_current['rx']}")
        best = ("hardware" if c.hardware else "kernel software" if c.software
                else "receive-only kernel" if "software-receive" in c.capabilities
                else "user-space only")
        lines.append(f"skewd stamps: {best}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def enable_hardware_stamping(interface: str, rx: str = "all") -> tuple[str, str]:
    """Switch the NIC's hardware stamping on (TX on, RX filter `rx`, widening
    to ntp-all or ptpv2-event if the driver refuses "all"). Returns the
    (tx, rx) the driver applied. HostError saying why where it cannot."""
    if rx not in _tsock.RX_FILTERS:
        raise UsageError(f"rx filter {rx!r}: one of {', '.join(_tsock.RX_FILTERS)}")
    inv_tx = {v: k for k, v in _tsock.TX_TYPES.items()}
    inv_rx = {v: k for k, v in _tsock.RX_FILTERS.items()}
    last = None
    for f in dict.fromkeys([rx, "all", "ntp-all"]):
        try:
            tx_got, rx_got = _tsock.hwtstamp_set(interface, _tsock.TX_TYPES["on"],
                                                 _tsock.RX_FILTERS[f])
            return inv_tx.get(tx_got, str(tx_got)), inv_rx.get(rx_got, str(rx_got))
        except OSError as e:
            last = e
            if e.errno != errno.ERANGE:
                break
    e = last
    if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY):
        msg = (f"interface {interface} has no hardware timestamping (its driver refuses "
               f"SIOCSHWTSTAMP): use kernel software stamps (--stamps software)")
    elif e.errno == errno.ERANGE:
        msg = f"interface {interface} cannot stamp the packets skewd sends (no usable RX filter)"
    elif e.errno == errno.EPERM:
        msg = f"enabling hardware stamping on {interface} needs CAP_NET_ADMIN (run as root)"
    elif e.errno == errno.ENODEV:
        msg = f"no interface named {interface}"
    else:
        msg = f"enabling hardware stamping on {interface} failed: {os.strerror(e.errno)}"
    raise HostError(msg)
