# cython: language_level=3, boundscheck=False, wraparound=False
# distutils: sources = csrc/clock.c
# distutils: include_dirs = csrc
"""Thin wrappers over csrc/clock.c. The user-facing API is skewd.clocks."""
from libc.stdint cimport int64_t, uint64_t
from posix.types cimport clockid_t
from posix.time cimport CLOCK_REALTIME, CLOCK_MONOTONIC
from skewd.cclock cimport *

cdef extern from "<time.h>" nogil:
    enum:
        CLOCK_MONOTONIC_RAW
        CLOCK_TAI
        CLOCK_BOOTTIME

import os

ID_REALTIME = CLOCK_REALTIME
ID_MONOTONIC = CLOCK_MONOTONIC
ID_MONOTONIC_RAW = CLOCK_MONOTONIC_RAW
ID_TAI = CLOCK_TAI
ID_BOOTTIME = CLOCK_BOOTTIME
XTS_PRECISE = SKW_XTS_PRECISE
XTS_EXTENDED = SKW_XTS_EXTENDED
XTS_PLAIN = SKW_XTS_PLAIN


cdef inline _raise(int rc):
    raise OSError(-rc, os.strerror(-rc))


def realtime_ns():
    cdef int64_t v
    skw_clock_read(CLOCK_REALTIME, &v)
    return v


def monotonic_ns():
    cdef int64_t v
    skw_clock_read(CLOCK_MONOTONIC, &v)
    return v


def monotonic_raw_ns():
    cdef int64_t v
    skw_clock_read(CLOCK_MONOTONIC_RAW, &v)
    return v


def read_ns(int clk):
    cdef int64_t v
    cdef int rc = skw_clock_read_checked(<clockid_t>clk, &v)
    if rc:
        _raise(rc)
    return v


def resolution_ns(int clk):
    cdef int64_t v
    cdef int rc = skw_clock_resolution(<clockid_t>clk, &v)
    if rc:
        _raise(rc)
    return v


def batch(int clk, int64_t[::1] buf):
    cdef int rc
    cdef size_t n = buf.shape[0]
    if n == 0:
        return
    with nogil:
        rc = skw_clock_batch(<clockid_t>clk, &buf[0], n)
    if rc:
        _raise(rc)


def cost_ns(int clk, size_t n=10000, int rounds=21):
    cdef double v
    cdef int rc
    with nogil:
        rc = skw_clock_cost(<clockid_t>clk, n, rounds, &v)
    if rc:
        _raise(rc)
    return v


def phc_open(path):
    cdef bytes p = os.fsencode(path)
    cdef int fd
    cdef clockid_t clk
    cdef int rc = skw_phc_open(p, &fd, &clk)
    if rc:
        _raise(rc)
    return fd, <int>clk


def phc_close(int fd):
    cdef int rc = skw_phc_close(fd)
    if rc:
        _raise(rc)


def phc_clockid(int fd):
    return <int>skw_phc_clockid(fd)


def phc_cross(int fd, int nsamples=9):
    """(phc_ns, sys_before_ns, sys_after_ns, method, samples)."""
    cdef skw_xts x
    cdef int rc
    with nogil:
        rc = skw_phc_cross(fd, nsamples, &x)
    if rc:
        _raise(rc)
    return x.phc_ns, x.sys_before_ns, x.sys_after_ns, x.method, x.samples


def xts_pick(const int64_t[:, ::1] triples):
    """Narrowest (before, phc, after) of an (n, 3) array, as phc_cross returns."""
    cdef skw_xts x
    if triples.shape[1] != 3:
        raise ValueError("triples must have shape (n, 3)")
    if triples.shape[0] == 0:
        raise ValueError("no samples")
    cdef int rc = skw_xts_pick(&triples[0, 0], <int>triples.shape[0], &x)
    if rc:
        _raise(rc)
    return x.phc_ns, x.sys_before_ns, x.sys_after_ns, 0, x.samples


def tsc_invariant():
    cdef char reason[256]
    cdef int ok = skw_tsc_invariant(reason, sizeof(reason))
    return bool(ok), reason.decode()


cdef class TscClock:
    """The TSC, calibrated against CLOCK_MONOTONIC_RAW into mult/shift."""
    cdef skw_tsc_cal cal

    def __init__(self, int64_t duration_ns=500_000_000):
        cdef int rc
        with nogil:
            rc = skw_tsc_calibrate(duration_ns, &self.cal)
        if rc:
            _raise(rc)

    @property
    def hz(self):
        return self.cal.hz

    @property
    def mult(self):
        return self.cal.mult

    @property
    def shift(self):
        return self.cal.shift

    @property
    def window_ns(self):
        return self.cal.window_ns

    def now_ns(self):
        return skw_tsc_ns(&self.cal)

    def raw(self):
        return skw_tsc_raw()

    def to_ns(self, uint64_t tsc):
        return skw_tsc_to_ns(&self.cal, tsc)

    def batch(self, int64_t[::1] buf):
        cdef size_t n = buf.shape[0]
        if n == 0:
            return
        with nogil:
            skw_tsc_batch(&self.cal, &buf[0], n)

    def cost_ns(self, size_t n=10000, int rounds=21):
        cdef double v
        cdef int rc
        with nogil:
            rc = skw_tsc_cost(&self.cal, n, rounds, &v)
        if rc:
            _raise(rc)
        return v
