# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# distutils: sources = csrc/regress.c
# distutils: include_dirs = csrc
# distutils: extra_compile_args = -ffp-contract=off
"""Thin wrappers over csrc/regress.c. The user-facing API is skewd.estimate.

Series holds the estimator's accepted samples in fixed C buffers, so a refit
after each sample crosses into C without building arrays."""
from libc.stdint cimport int64_t
from libc.string cimport memmove
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from skewd.cregress cimport *

import os


cdef inline _check(int rc):
    if rc:
        raise ValueError(os.strerror(-rc))


def runs_critical(size_t n_pos, size_t n_neg, double z=1.645):
    """Fewest sign runs a random sequence of n_pos + n_neg residuals shows at
    the one-sided level z (normal approximation of the Wald–Wolfowitz test);
    what the window sizing uses."""
    return skw_regress_runs_critical(n_pos, n_neg, z)


def _same_length(x, y, w):
    if not (len(x) == len(y) == len(w)) or len(x) == 0:
        raise ValueError("x, y and w must be non-empty and of one length")


def fit(const double[::1] x, const double[::1] y, const double[::1] w):
    """(a, b, var_a, var_b, cov_ab, jitter) of the weighted line fit."""
    cdef skw_regress_line f
    _same_length(x, y, w)
    _check(skw_regress_fit(&x[0], &y[0], &w[0], x.shape[0], &f))
    return f.a, f.b, f.var_a, f.var_b, f.cov_ab, f.jitter


def window_start(const double[::1] x, const double[::1] y, const double[::1] w,
                 size_t min_window, double z=1.645):
    """Index of the oldest sample the runs test keeps."""
    cdef size_t start
    _same_length(x, y, w)
    _check(skw_regress_window_start(&x[0], &y[0], &w[0], x.shape[0], min_window, z, &start))
    return start


def inputs(const int64_t[::1] t_ns, const double[::1] delay, double noise_floor):
    """(x, w, same_time): the fit inputs of samples at t_ns with these delays."""
    from array import array
    cdef Py_ssize_t n = t_ns.shape[0]
    cdef int same
    if n == 0 or delay.shape[0] != n:
        raise ValueError("t_ns and delay must be non-empty and of one length")
    xs, ws = array("d", [0.0]) * n, array("d", [0.0]) * n
    cdef double[::1] x = xs, w = ws
    _check(skw_regress_inputs(&t_ns[0], &delay[0], n, noise_floor, &x[0], &w[0], &same))
    return xs, ws, bool(same)


cdef class Series:
    """The newest `capacity` samples, oldest first: time (ns), offset and
    delay, and the fit inputs x and w that prepare() derives from them."""
    cdef int64_t *t
    cdef double *y
    cdef double *d
    cdef double *x
    cdef double *w
    cdef readonly Py_ssize_t capacity
    cdef readonly Py_ssize_t n

    def __cinit__(self, Py_ssize_t capacity):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.n = 0
        self.t = <int64_t *>PyMem_Malloc(capacity * sizeof(int64_t))
        self.y = <double *>PyMem_Malloc(4 * capacity * sizeof(double))
        if self.t == NULL or self.y == NULL:
            raise MemoryError()
        self.d = self.y + capacity
        self.x = self.d + capacity
        self.w = self.x + capacity

    def __dealloc__(self):
        PyMem_Free(self.t)
        PyMem_Free(self.y)

    def __len__(self):
        return self.n

    def clear(self):
        self.n = 0

    def push(self, int64_t t_ns, double offset, double delay):
        """Append a sample, dropping the oldest when full."""
        cdef Py_ssize_t k = self.n
        if k == self.capacity:
            k -= 1
            memmove(self.t, self.t + 1, k * sizeof(int64_t))
            memmove(self.y, self.y + 1, k * sizeof(double))
            memmove(self.d, self.d + 1, k * sizeof(double))
        self.t[k] = t_ns
        self.y[k] = offset
        self.d[k] = delay
        self.n = k + 1

    def prepare(self, double noise_floor):
        """Compute x and w (skw_regress_inputs); True when all times are
        equal, so no slope can be fitted."""
        cdef int same
        _check(skw_regress_inputs(self.t, self.d, self.n, noise_floor, self.x, self.w, &same))
        return bool(same)

    def least_delayed(self):
        """(offset, delay) of the first sample with the smallest delay."""
        cdef Py_ssize_t i, best = 0
        if self.n == 0:
            raise ValueError("no samples")
        for i in range(1, self.n):
            if self.d[i] < self.d[best]:
                best = i
        return self.y[best], self.d[best]

    def window_start(self, size_t min_window, double z):
        """skw_regress_window_start over all samples (after prepare)."""
        cdef size_t start
        _check(skw_regress_window_start(self.x, self.y, self.w, self.n, min_window, z, &start))
        return start

    def fit(self, Py_ssize_t start):
        """Fit samples start.. (after prepare): (a, b, var_a, var_b, cov_ab,
        jitter, mean delay, smallest delay)."""
        cdef skw_regress_line f
        cdef Py_ssize_t i, m = self.n - start
        cdef double dsum = 0, dmin
        if start < 0 or m < 1:
            raise ValueError("start out of range")
        _check(skw_regress_fit(self.x + start, self.y + start, self.w + start, m, &f))
        dmin = self.d[start]
        for i in range(start, self.n):
            dsum += self.d[i]
            if self.d[i] < dmin:
                dmin = self.d[i]
        return f.a, f.b, f.var_a, f.var_b, f.cov_ab, f.jitter, dsum / m, dmin
