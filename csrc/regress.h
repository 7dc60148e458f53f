/*
 * regress.h - the per-peer estimator's regression: a weighted least-squares
 * line through offset against time, and the window of newest samples a
 * runs test says the line still fits.
 *
 * The estimator (src/skewd/estimate.py) keeps its accepted samples oldest
 * first and, after each one, calls skw_regress_inputs to turn their times
 * and delays into x and weights, skw_regress_window_start every few samples
 * to size the window, and skw_regress_fit over the window.
 *
 * Nothing here allocates, locks, prints or makes a system call; every
 * function returns 0 or a negative errno (-EINVAL for bad arguments).
 * Sums run in a fixed order, so a result depends only on the inputs.
 */
#ifndef SKW_REGRESS_H
#define SKW_REGRESS_H

#include <stddef.h>
#include <stdint.h>

/* One fit of y = a + b·x with weights w. var_a, var_b and cov_ab are the
 * variances and covariance of a and b: from the weighted residuals when more
 * than two points span some x (the weights are taken as relative), otherwise
 * from the weights alone (var_a = mean 1/w, var_b = var_a / max(span², 1e-9),
 * cov_ab = 0). With all x equal the slope is 0 and a is the weighted mean.
 * jitter is the RMS residual (0 for one point). */
struct skw_regress_line {
    double a;
    double b;
    double var_a;
    double var_b;
    double cov_ab;
    double jitter;
};

/* The estimator's fit inputs from n samples (oldest first, n >= 1): x[i],
 * seconds from the newest sample, (t_ns[i] - t_ns[n-1]) / 1e9; w[i] = 1/σ²
 * with σ = noise_floor + (delay[i] - the smallest delay of the n) / 2, so a
 * sample that queued counts less. *same_time_out is set to 1 when every
 * t_ns is the same (no slope can be fitted), else 0. */
int skw_regress_inputs(const int64_t *t_ns, const double *delay, size_t n,
                       double noise_floor, double *x, double *w, int *same_time_out);

/* Fit the n >= 1 points (x[i], y[i]) with weights w[i] > 0. */
int skw_regress_fit(const double *x, const double *y, const double *w, size_t n,
                    struct skw_regress_line *out);

/* Fewest sign runs n_pos positive and n_neg negative residuals of a good fit
 * show, at the one-sided level z: the Wald-Wolfowitz runs test in its normal
 * approximation, mean µ = 2·n_pos·n_neg/n + 1 and variance
 * (µ-1)(µ-2)/(n-1), critical value µ - z·σ. 1 when either count is 0 or
 * n < 3. */
double skw_regress_runs_critical(size_t n_pos, size_t n_neg, double z);

/* The window: the smallest start (0 <= start <= n - min_window) whose suffix
 * x[start..n-1] fitted alone leaves residual signs (a residual >= 0 counts
 * positive) with at least skw_regress_runs_critical runs; n - min_window
 * when none does. Too few runs mean the line does not fit (the frequency
 * changed), so the oldest samples go. Each suffix's sums run from the newest
 * sample back; the cost is O(n) per start tried, O(n²) at worst.
 * Needs 1 <= min_window <= n. */
int skw_regress_window_start(const double *x, const double *y, const double *w, size_t n,
                             size_t min_window, double z, size_t *start_out);

#endif
