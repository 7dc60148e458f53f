# Declarations of csrc/regress.h.
from libc.stdint cimport int64_t

cdef extern from "regress.h" nogil:
    struct skw_regress_line:
        double a
        double b
        double var_a
        double var_b
        double cov_ab
        double jitter

    int skw_regress_inputs(const int64_t *t_ns, const double *delay, size_t n,
                           double noise_floor, double *x, double *w, int *same_time_out)
    int skw_regress_fit(const double *x, const double *y, const double *w, size_t n,
                        skw_regress_line *out)
    double skw_regress_runs_critical(size_t n_pos, size_t n_neg, double z)
    int skw_regress_window_start(const double *x, const double *y, const double *w, size_t n,
                                 size_t min_window, double z, size_t *start_out)
