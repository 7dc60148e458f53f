"""Timestamped sockets: kernel stamps on loopback, TX stamps by OPT_ID,
bounded waits, cmsg parsing from synthetic buffers, interface capabilities
and the hardware paths' clear refusals."""
import errno
import shutil
import socket
import struct
import subprocess
import time

import pytest

from skewd import _tsock, tsock
from skewd.errors import HostError, UsageError
from skewd.tsock import StampSource, TimestampedSocket


def _has_ipv6_loopback() -> bool:
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("family,ip", [("ipv4", "127.0.0.1"), ("ipv6", "::1")])
def test_loopback_kernel_stamps(family, ip):
    if family == "ipv6" and not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this host")
    with TimestampedSocket(family, bind=(ip, 0)) as a, TimestampedSocket(family, bind=(ip, 0)) as b:
        assert a.mode == "software"
        dst = a.address(ip, b.port)
        # the kernel turns RX stamping on for the first stamping socket from a
        # work queue, so a datagram right after may come unstamped: one
        # unstamped datagram through first
        a.send_unstamped(b"hello", dst)
        assert b.recv(timeout_ns=100_000_000).data == b"hello"
        time.sleep(0.01)
        b_unstamped = b.stats()["rx_unstamped"]
        for i in range(3):
            sent = a.send(b"ping %d" % i, dst)
            assert sent.id == i and sent.nbytes == 6
            tx = a.tx_stamp(sent)
            assert tx.source == StampSource.KERNEL
            assert sent.user_ns <= tx.ns < sent.user_ns + 50_000_000
            d = b.recv(timeout_ns=100_000_000)
            assert d is not None and d.data == b"ping %d" % i
            assert d.stamp.source == StampSource.KERNEL
            assert tx.ns <= d.stamp.ns < tx.ns + 50_000_000
            assert d.port == a.port
        st = a.stats()
        assert st["sent"] == 3 and st["tx_stamped"] == 3 and st["tx_missing"] == 0
        assert b.stats()["received"] == 4 and b.stats()["rx_unstamped"] == b_unstamped


def test_no_stamping_mode_falls_back_to_user_space():
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0), stamps="none") as a:
        sent = a.send(b"x", ("127.0.0.1", a.port))
        tx = a.tx_stamp(sent)
        assert tx == tsock.Stamp(sent.user_ns, StampSource.USER)
        d = a.recv(timeout_ns=100_000_000)
        assert d.stamp.source == StampSource.USER
        assert d.stamp.ns >= sent.user_ns


def test_missing_tx_stamp_is_bounded_and_counted():
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as a:
        t0 = time.monotonic()
        assert a.raw.tx_stamp(12345, 20_000_000) is None  # never sent
        assert time.monotonic() - t0 < 1.0
        assert a.stats()["tx_missing"] == 1
        # through the user API the pre-send read stands in, marked USER
        fake = tsock.Sent(1, 777, 42)
        assert a.tx_stamp(fake, 1_000_000) == tsock.Stamp(42, StampSource.USER)
        assert a.stats()["tx_missing"] == 2


def test_tx_stamps_are_matched_by_id():
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as a:
        dst = ("127.0.0.1", a.port)
        sent = [a.send(b"abc", dst) for _ in range(3)]
        # ask for the last: the two older stamps are met first and discarded
        tx = a.tx_stamp(sent[2])
        assert tx.source == StampSource.KERNEL and tx.ns >= sent[2].user_ns
        assert a.stats()["tx_stale"] == 2
        # a later stamp read while waiting for an earlier one is kept
        more = [a.send(b"abc", dst) for _ in range(2)]
        a.raw.tx_collect()
        assert a.tx_stamp(more[1]).source == StampSource.KERNEL
        assert a.tx_stamp(more[0]).source == StampSource.USER  # discarded: older
        assert a.stats()["tx_missing"] == 1


def test_unstamped_send_takes_no_id_and_leaves_no_stamp():
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as a, \
            TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as b:
        dst = ("127.0.0.1", b.port)
        ids = []
        for _ in range(3):
            assert a.send_unstamped(b"warm", dst) == 4
            sent = a.send(b"real", dst)
            ids.append(sent.id)
            assert a.tx_stamp(sent, 200_000_000).source == StampSource.KERNEL
        # the stamped sends took consecutive ids, and no stamp of an unstamped
        # send was met on the error queue
        assert ids == [ids[0], ids[0] + 1, ids[0] + 2]
        st = a.stats()
        assert st["sent"] == 3 and st["sent_unstamped"] == 3 and st["tx_stale"] == 0
        got = [b.recv(64, 200_000_000).data for _ in range(6)]
        assert got == [b"warm", b"real"] * 3   # and every datagram arrived


def test_discarded_datagrams_never_reach_recv():
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as a, \
            TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as b:
        b.discard(b"drop-me")
        dst = ("127.0.0.1", b.port)
        for data in (b"drop-me", b"keep", b"drop-me", b"drop-me!", b"drop-m"):
            a.send_unstamped(data, dst)
        got = []
        while (d := b.recv(64, 100_000_000)) is not None:
            got.append(d.data)
        assert got == [b"keep", b"drop-me!", b"drop-m"]
        assert b.stats()["discarded"] == 2 and b.stats()["received"] == 3
        b.discard(b"")                       # off again
        a.send_unstamped(b"drop-me", dst)
        assert b.recv(64, 100_000_000).data == b"drop-me"
        with pytest.raises(OSError):
            b.discard(b"x" * 17)


def test_recv_timeout_and_nonblocking():
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as a:
        assert a.recv(timeout_ns=0) is None
        t0 = time.monotonic()
        assert a.recv(timeout_ns=30_000_000) is None
        assert 0.02 <= time.monotonic() - t0 < 1.0


def test_set_mode_restarts_ids():
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as a:
        a.send(b"1", ("127.0.0.1", a.port))
        a.raw.set_mode(_tsock.MODE_SOFTWARE)
        s = a.send(b"2", ("127.0.0.1", a.port))
        assert s.id == 0
        assert a.tx_stamp(s).source == StampSource.KERNEL


def test_bad_addresses_are_usage_errors():
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0)) as a:
        with pytest.raises(UsageError):
            a.address("not-an-ip", 1)
        with pytest.raises(UsageError):
            a.address("::1", 1)  # IPv6 on an IPv4 socket
    with pytest.raises(HostError, match="cannot bind"):
        TimestampedSocket("ipv4", bind=("192.0.2.123", 0))
    with pytest.raises(UsageError):
        TimestampedSocket("ipx")


# --- control messages from synthetic buffers ----------------------------------------

SOL_SOCKET, SO_TIMESTAMPING, SOL_IP, IP_RECVERR, SOL_IPV6, IPV6_RECVERR = 1, 37, 0, 11, 41, 25
HDR = struct.Struct("=Qii")  # struct cmsghdr on LP64: size_t len, int level, int type


def cmsg(level, typ, data: bytes) -> bytes:
    raw = HDR.pack(HDR.size + len(data), level, typ) + data
    return raw + b"\0" * (-len(raw) % 8)


def stamping(sw=(0, 0), hw=(0, 0)) -> bytes:
    return cmsg(SOL_SOCKET, SO_TIMESTAMPING, struct.pack("=qqqqqq", *sw, 0, 0, *hw))


def exterr(errno_=errno.ENOMSG, origin=4, info=0, data=0, level=SOL_IP, typ=IP_RECVERR) -> bytes:
    ee = struct.pack("=IBBBBII", errno_, origin, 0, 0, 0, info, data)
    return cmsg(level, typ, ee + b"\0" * 16)  # + the offender address


def test_cmsg_software_stamp():
    rc, ns, src, id_, tstype = _tsock.parse_cmsgs(stamping(sw=(100, 5)))
    assert (rc, ns, src, id_, tstype) == (0, 100_000_000_005, _tsock.SRC_KERNEL, 0, -1)


def test_cmsg_hardware_stamp_wins():
    rc, ns, src, _, _ = _tsock.parse_cmsgs(stamping(sw=(100, 5), hw=(200, 7)))
    assert (ns, src) == (200_000_000_007, _tsock.SRC_HARDWARE)


@pytest.mark.parametrize("level,typ", [(SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)])
def test_cmsg_error_queue_report(level, typ):
    buf = stamping(sw=(7, 9)) + exterr(info=_tsock.TSTAMP_SND, data=41, level=level, typ=typ)
    rc, ns, src, id_, tstype = _tsock.parse_cmsgs(buf)
    assert (rc, ns, src, id_, tstype) == (1, 7_000_000_009, _tsock.SRC_KERNEL, 41, _tsock.TSTAMP_SND)


def test_cmsg_ignores_other_errors_and_messages():
    buf = cmsg(SOL_SOCKET, 99, b"\1" * 12) + exterr(errno_=errno.ECONNREFUSED, origin=2)
    rc, ns, src, id_, tstype = _tsock.parse_cmsgs(buf)
    assert (rc, src, tstype) == (0, _tsock.SRC_MISSING, -1)
    assert _tsock.parse_cmsgs(b"")[0:3] == (0, 0, _tsock.SRC_MISSING)


def test_cmsg_malformed_is_refused():
    good = stamping(sw=(1, 1))
    too_long = HDR.pack(4096, SOL_SOCKET, SO_TIMESTAMPING) + good[HDR.size:]
    assert _tsock.parse_cmsgs(too_long)[0] == -errno.EINVAL
    short = cmsg(SOL_SOCKET, SO_TIMESTAMPING, b"\0" * 20)
    assert _tsock.parse_cmsgs(short)[0] == -errno.EINVAL
    tiny = HDR.pack(4, 0, 0)
    assert _tsock.parse_cmsgs(tiny)[0] == -errno.EINVAL


# --- interfaces ---------------------------------------------------------------------

def test_decode_capabilities():
    F = _tsock.SOF_FLAGS
    so = F["hardware-transmit"] | F["software-receive"] | F["hardware-raw-clock"]
    tx = (1 << _tsock.TX_TYPES["off"]) | (1 << _tsock.TX_TYPES["on"])
    rx = (1 << _tsock.RX_FILTERS["none"]) | (1 << _tsock.RX_FILTERS["all"]) | (1 << 31)
    c = tsock.decode_ts_info("eth9", so, 3, tx, rx)
    assert c.capabilities == ["hardware-transmit", "software-receive", "hardware-raw-clock"]
    assert c.phc_index == 3 and c.tx_types == ["off", "on"]
    assert c.rx_filters == ["none", "all", "unknown(0x80000000)"]
    assert not c.hardware and not c.software
    text = tsock.format_capabilities([c])
    assert "PTP Hardware Clock: 3" in text and "\thardware-raw-clock" in text


def test_loopback_capabilities_match_ethtool():
    (lo,) = tsock.interface_capabilities(["lo"])
    assert lo.error is None and lo.phc_index == -1 and lo.software and not lo.hardware
    text = tsock.format_capabilities([lo])
    assert text.startswith("Time stamping parameters for lo:")
    if shutil.which("ethtool"):
        out = subprocess.run(["ethtool", "-T", "lo"], capture_output=True, text=True).stdout
        theirs = [l.strip() for l in out.split("Capabilities:")[1].split("PTP")[0].splitlines()
                  if l.strip()]
        # ethtool names some flags differently in older versions; compare the set we share
        for name in ("software-transmit", "software-receive", "software-system-clock"):
            assert (name in theirs) == (name in lo.capabilities)


def test_unknown_interface_is_reported():
    (c,) = tsock.interface_capabilities(["nosuchif0"])
    assert c.error == "no interface named nosuchif0"
    assert "error: no interface named" in tsock.format_capabilities([c])
    with pytest.raises(HostError, match="no interface named"):
        tsock.interface_info("nosuchif0")


def test_hardware_stamping_refused_on_loopback():
    with pytest.raises(HostError, match="lo has no hardware timestamping"):
        tsock.enable_hardware_stamping("lo")
    with pytest.raises(HostError, match="no hardware timestamping"):
        TimestampedSocket("ipv4", bind=("127.0.0.1", 0), stamps="hardware", interface="lo")
    with pytest.raises(UsageError, match="need an interface"):
        TimestampedSocket("ipv4", stamps="hardware")
    with TimestampedSocket("ipv4", bind=("127.0.0.1", 0), stamps="auto", interface="lo") as s:
        assert s.mode == "software" and "no hardware timestamping" in s.degraded
    with pytest.raises(UsageError):
        tsock.enable_hardware_stamping("lo", rx="everything")


def test_mode_flags_ask_for_ids_and_tsonly():
    sw = _tsock.mode_flags(_tsock.MODE_SOFTWARE)
    F = _tsock.SOF_FLAGS
    for n in ("software-transmit", "software-receive", "software-system-clock",
              "option-id", "option-tsonly"):
        assert sw & F[n]
    hw = _tsock.mode_flags(_tsock.MODE_HARDWARE)
    assert hw & F["hardware-transmit"] and hw & F["hardware-raw-clock"] and hw & F["option-id"]
    assert _tsock.mode_flags(_tsock.MODE_NONE) == 0


def test_clocks_cli_shows_interfaces(capsys):
    from skewd.cli import main
    assert main(["clocks", "--interfaces"]) == 0
    out = capsys.readouterr().out
    assert "Time stamping parameters for lo:" in out and "skewd stamps: kernel software" in out
