# cython: language_level=3, boundscheck=False, wraparound=False
# distutils: sources = csrc/tsock.c csrc/responder.c csrc/sha256.c csrc/statepage.c csrc/clock.c
# distutils: include_dirs = csrc
"""Thin wrappers over csrc/tsock.c and csrc/responder.c. The user-facing API
is skewd.tsock (and ProbeServer(native=True) in skewd.probe)."""
from libc.stdint cimport int64_t, uint32_t, uintptr_t
from libc.string cimport memcpy
from cpython.exc cimport PyErr_CheckSignals
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from skewd.ctsock cimport *
import os

FAMILY_INET = AF_INET
FAMILY_INET6 = AF_INET6
MODE_NONE = SKW_TS_NONE
MODE_SOFTWARE = SKW_TS_SOFTWARE
MODE_HARDWARE = SKW_TS_HARDWARE
SRC_MISSING = SKW_SRC_MISSING
SRC_USER = SKW_SRC_USER
SRC_KERNEL = SKW_SRC_KERNEL
SRC_HARDWARE = SKW_SRC_HARDWARE
TSTAMP_SND = SCM_TSTAMP_SND
TSTAMP_SCHED = SCM_TSTAMP_SCHED
TSTAMP_ACK = SCM_TSTAMP_ACK
#: what recv returns when its wake_fd (or a signal) ended the wait
WOKEN = "woken"

#: SOF_TIMESTAMPING_* bits by the names `ethtool -T` prints
SOF_FLAGS = {
    "hardware-transmit": SOF_TIMESTAMPING_TX_HARDWARE,
    "software-transmit": SOF_TIMESTAMPING_TX_SOFTWARE,
    "hardware-receive": SOF_TIMESTAMPING_RX_HARDWARE,
    "software-receive": SOF_TIMESTAMPING_RX_SOFTWARE,
    "software-system-clock": SOF_TIMESTAMPING_SOFTWARE,
    "hardware-legacy-clock": SOF_TIMESTAMPING_SYS_HARDWARE,
    "hardware-raw-clock": SOF_TIMESTAMPING_RAW_HARDWARE,
    "option-id": SOF_TIMESTAMPING_OPT_ID,
    "sched-transmit": SOF_TIMESTAMPING_TX_SCHED,
    "ack-transmit": SOF_TIMESTAMPING_TX_ACK,
    "option-cmsg": SOF_TIMESTAMPING_OPT_CMSG,
    "option-tsonly": SOF_TIMESTAMPING_OPT_TSONLY,
    "option-stats": SOF_TIMESTAMPING_OPT_STATS,
    "option-pktinfo": SOF_TIMESTAMPING_OPT_PKTINFO,
    "option-tx-swhw": SOF_TIMESTAMPING_OPT_TX_SWHW,
}
#: HWTSTAMP_TX_* values
TX_TYPES = {"off": HWTSTAMP_TX_OFF, "on": HWTSTAMP_TX_ON,
            "onestep-sync": HWTSTAMP_TX_ONESTEP_SYNC, "onestep-p2p": HWTSTAMP_TX_ONESTEP_P2P}
#: HWTSTAMP_FILTER_* values
RX_FILTERS = {
    "none": HWTSTAMP_FILTER_NONE, "all": HWTSTAMP_FILTER_ALL, "some": HWTSTAMP_FILTER_SOME,
    "ptpv1-l4-event": HWTSTAMP_FILTER_PTP_V1_L4_EVENT,
    "ptpv1-l4-sync": HWTSTAMP_FILTER_PTP_V1_L4_SYNC,
    "ptpv1-l4-delay-req": HWTSTAMP_FILTER_PTP_V1_L4_DELAY_REQ,
    "ptpv2-l4-event": HWTSTAMP_FILTER_PTP_V2_L4_EVENT,
    "ptpv2-l4-sync": HWTSTAMP_FILTER_PTP_V2_L4_SYNC,
    "ptpv2-l4-delay-req": HWTSTAMP_FILTER_PTP_V2_L4_DELAY_REQ,
    "ptpv2-l2-event": HWTSTAMP_FILTER_PTP_V2_L2_EVENT,
    "ptpv2-l2-sync": HWTSTAMP_FILTER_PTP_V2_L2_SYNC,
    "ptpv2-l2-delay-req": HWTSTAMP_FILTER_PTP_V2_L2_DELAY_REQ,
    "ptpv2-event": HWTSTAMP_FILTER_PTP_V2_EVENT,
    "ptpv2-sync": HWTSTAMP_FILTER_PTP_V2_SYNC,
    "ptpv2-delay-req": HWTSTAMP_FILTER_PTP_V2_DELAY_REQ,
    "ntp-all": HWTSTAMP_FILTER_NTP_ALL,
}


cdef inline int64_t clock_monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline _raise(long rc, extra=None):
    raise OSError(<int>-rc, os.strerror(<int>-rc), extra)


def mode_flags(int mode):
    return skw_tsock_mode_flags(mode)


cdef class Addr:
    """A resolved socket address (literal IP and port) for one family."""
    cdef sockaddr_storage sa
    cdef socklen_t length
    cdef readonly str ip
    cdef readonly int port

    def __init__(self, int family, str ip, int port):
        cdef bytes b = ip.encode()
        cdef int rc = skw_tsock_addr(family, b, port, &self.sa, &self.length)
        if rc:
            raise ValueError(f"{ip!r} is not an IP address literal (port {port})")
        self.ip = ip
        self.port = port

    def __repr__(self):
        return f"Addr({self.ip!r}, {self.port})"


cdef class Socket:
    """A timestamping UDP socket. Non-blocking; waits are bounded and
    release the GIL."""
    cdef skw_tsock s
    cdef bint is_open
    cdef object _responder

    def __cinit__(self):
        self.is_open = False
        self.s.fd = -1

    def __init__(self, int family):
        cdef int rc = skw_tsock_open(&self.s, family)
        if rc:
            _raise(rc)
        self.is_open = True

    def __dealloc__(self):
        if self.is_open:
            skw_tsock_close(&self.s)

    cdef inline void _check(self) except *:
        if not self.is_open:
            raise ValueError("socket is closed")

    def close(self):
        if self.is_open:
            skw_tsock_close(&self.s)
            self.is_open = False

    @property
    def closed(self):
        return not self.is_open

    def fileno(self):
        self._check()
        return self.s.fd

    @property
    def family(self):
        return self.s.family

    @property
    def mode(self):
        return self.s.mode

    @property
    def next_id(self):
        return self.s.next_id

    def bind(self, str ip, int port):
        self._check()
        cdef bytes b = ip.encode()
        cdef int rc = skw_tsock_bind(&self.s, b, port)
        if rc:
            _raise(rc, f"{ip}:{port}")

    def bind_device(self, str ifname):
        self._check()
        cdef bytes b = ifname.encode()
        cdef int rc = skw_tsock_bind_device(&self.s, b)
        if rc:
            _raise(rc, ifname)

    def local_port(self):
        cdef int port = 0
        self._check()
        cdef int rc = skw_tsock_local_port(&self.s, &port)
        if rc:
            _raise(rc)
        return port

    def set_mode(self, int mode):
        self._check()
        cdef int rc = skw_tsock_set_mode(&self.s, mode)
        if rc:
            _raise(rc)

    def addr(self, str ip, int port):
        return Addr(self.s.family, ip, port)

    def send(self, const unsigned char[::1] data, Addr to):
        """-> (bytes sent, OPT_ID, user-space ns read just before)."""
        cdef uint32_t id = 0
        cdef int64_t user = 0
        cdef long n
        cdef size_t ln = data.shape[0]
        self._check()
        with nogil:
            n = skw_tsock_send(&self.s, &data[0] if ln else NULL, ln, &to.sa, to.length,
                               &id, &user)
        if n < 0:
            _raise(n, f"{to.ip}:{to.port}")
        return n, id, user

    def set_discard(self, const unsigned char[::1] pattern):
        """Datagrams exactly equal to pattern are counted and dropped by recv."""
        self._check()
        cdef size_t ln = pattern.shape[0]
        cdef int rc = skw_tsock_set_discard(&self.s, &pattern[0] if ln else NULL, ln)
        if rc:
            _raise(rc)

    def set_responder(self, Responder r):
        """Answer probe requests in C from now on, inside recv (None: stop).
        The responder is kept alive by this socket."""
        self._check()
        if r is None:
            self.s.hook = NULL
            self.s.hook_ctx = NULL
        else:
            self.s.hook_ctx = &r.r
            self.s.hook = skw_resp_hook
        self._responder = r

    def send_unstamped(self, const unsigned char[::1] data, Addr to):
        """-> bytes sent; the datagram asks for no TX stamp and takes no OPT_ID."""
        cdef long n
        cdef size_t ln = data.shape[0]
        self._check()
        with nogil:
            n = skw_tsock_send_unstamped(&self.s, &data[0] if ln else NULL, ln, &to.sa,
                                         to.length)
        if n < 0:
            _raise(n, f"{to.ip}:{to.port}")
        return n

    def recv(self, unsigned char[::1] buf, int64_t timeout_ns, int wake_fd=-1):
        """-> (length, ip, port, stamp ns, stamp source) or None when nothing
        came within timeout_ns (0: just look; <0: wait forever). With
        wake_fd >= 0: WOKEN when that descriptor turned readable, or a
        signal came, first (the signal's handler has run by then). Without
        it a signal only runs its handler and the wait goes on."""
        cdef sockaddr_storage frm
        cdef socklen_t flen = sizeof(frm)
        cdef skw_stamp st
        cdef long n
        cdef char ip[64]
        cdef int port = 0
        cdef int64_t deadline = clock_monotonic_ns() + timeout_ns
        self._check()
        while True:
            with nogil:
                n = skw_tsock_recv(&self.s, &buf[0], buf.shape[0], &frm, &flen, &st,
                                   timeout_ns, wake_fd)
            if n != -4:  # EINTR
                break
            PyErr_CheckSignals()  # a handler that raises ends the wait here
            if wake_fd >= 0:
                return WOKEN
            if timeout_ns > 0:
                timeout_ns = deadline - clock_monotonic_ns()
                if timeout_ns <= 0:
                    return None
        if n == -11:  # EAGAIN
            return None
        if n == SKW_TSOCK_WOKEN:
            return WOKEN
        if n < 0:
            _raise(n)
        if skw_tsock_addr_str(&frm, ip, sizeof(ip), &port) != 0:
            return n, "", 0, st.ns, st.src
        return n, ip.decode(), port, st.ns, st.src

    def tx_stamp(self, uint32_t id, int64_t timeout_ns):
        """-> (ns, source) of datagram id's TX stamp, or None when it did not
        come within timeout_ns (counted as missing)."""
        cdef skw_stamp st
        cdef int rc
        self._check()
        with nogil:
            rc = skw_tsock_tx_stamp(&self.s, id, timeout_ns, &st)
        if rc == -110 or rc == -42:  # ETIMEDOUT, ENOMSG (stamping off)
            return None
        if rc:
            _raise(rc)
        return st.ns, st.src

    def tx_collect(self):
        self._check()
        return skw_tsock_tx_collect(&self.s)

    def stats(self):
        return dict(sent=self.s.st.sent, sent_unstamped=self.s.st.sent_unstamped,
                    received=self.s.st.received,
                    tx_stamped=self.s.st.tx_stamped, tx_missing=self.s.st.tx_missing,
                    tx_stale=self.s.st.tx_stale, rx_unstamped=self.s.st.rx_unstamped,
                    discarded=self.s.st.discarded,
                    truncated=self.s.st.truncated)


def parse_cmsgs(const unsigned char[::1] control):
    """Parse a raw control-message buffer as recvmsg fills it:
    -> (rc, stamp ns, stamp source, OPT_ID, tstamp type)."""
    cdef skw_stamp st
    cdef uint32_t id = 0
    cdef int tstype = -1
    cdef size_t n = control.shape[0]
    cdef int rc = skw_tsock_parse_cmsgs(&control[0] if n else NULL, n, &st, &id, &tstype)
    return rc, st.ns, st.src, id, tstype


def ts_info(str ifname):
    """ETHTOOL_GET_TS_INFO -> (so_timestamping, phc_index, tx_types, rx_filters)."""
    cdef skw_ts_info info
    cdef bytes b = ifname.encode()
    cdef const char *name = b
    cdef int rc
    with nogil:
        rc = skw_tsock_ts_info(name, &info)
    if rc:
        _raise(rc, ifname)
    return info.so_timestamping, info.phc_index, info.tx_types, info.rx_filters


def hwtstamp_set(str ifname, int tx_type, int rx_filter):
    """SIOCSHWTSTAMP -> (tx_type, rx_filter) the driver applied."""
    cdef bytes b = ifname.encode()
    cdef const char *name = b
    cdef int rc
    with nogil:
        rc = skw_tsock_hwtstamp_set(name, &tx_type, &rx_filter)
    if rc:
        _raise(rc, ifname)
    return tx_type, rx_filter


def hwtstamp_get(str ifname):
    """SIOCGHWTSTAMP -> (tx_type, rx_filter) in force."""
    cdef bytes b = ifname.encode()
    cdef const char *name = b
    cdef int tx_type = 0, rx_filter = 0
    cdef int rc
    with nogil:
        rc = skw_tsock_hwtstamp_get(name, &tx_type, &rx_filter)
    if rc:
        _raise(rc, ifname)
    return tx_type, rx_filter


RESPONDER_COUNTERS = ("received", "answered", "malformed", "bad_version", "wrong_type",
                      "unauthenticated", "replayed", "stale", "rate_limited", "oversize",
                      "send_errors", "tx_stamp_missing")


cdef class Responder:
    """csrc/responder.c: answers probe requests inside a Socket's recv.
    page_address: a mapped clock-state page (skewd._page.Page.address) whose
    owner outlives this object, or 0 for CLOCK_REALTIME."""
    cdef skw_responder r
    cdef bint ready
    cdef object _page_owner

    def __cinit__(self):
        self.ready = False

    def __init__(self, keys=(), bint require_auth=False, max_age_ns=None, double rate=0.0,
                 double burst=0.0, int max_sources=4096, int max_sessions=4096,
                 int64_t tx_wait_ns=1000000, page=None):
        cdef int rc = skw_resp_init(&self.r, max_sources, max_sessions)
        if rc:
            _raise(rc)
        self.ready = True
        self.r.require_auth = require_auth
        self.r.max_age_ns = -1 if max_age_ns is None else max_age_ns
        self.r.rate_per_s = rate
        self.r.burst = burst
        self.r.tx_wait_ns = tx_wait_ns
        if page is not None:
            self.r.page = <const skw_page *><uintptr_t>page.address
            self._page_owner = page
        cdef const unsigned char[::1] sec
        for kid, secret in keys:
            sec = secret
            rc = skw_resp_add_key(&self.r, kid, &sec[0] if sec.shape[0] else NULL, sec.shape[0])
            if rc:
                _raise(rc, f"key {kid}")

    def __dealloc__(self):
        if self.ready:
            skw_resp_free(&self.r)

    def stats(self):
        cdef skw_resp_stats *t = &self.r.st
        return dict(zip(RESPONDER_COUNTERS, (
            t.received, t.answered, t.malformed, t.bad_version, t.wrong_type, t.unauthenticated,
            t.replayed, t.stale, t.rate_limited, t.oversize, t.send_errors, t.tx_stamp_missing)))


def hmac_sha256(const unsigned char[::1] key, const unsigned char[::1] msg):
    """csrc/sha256.c's HMAC-SHA256 (the responder's), for tests."""
    cdef unsigned char out[32]
    skw_hmac_sha256(&key[0] if key.shape[0] else NULL, key.shape[0],
                    &msg[0] if msg.shape[0] else NULL, msg.shape[0], out)
    return bytes(out[:32])
