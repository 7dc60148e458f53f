/*
 * regress.c - weighted line fits and the runs-test window (see regress.h).
 *
 * The arithmetic follows the formulas in regress.h operation by operation,
 * in IEEE double; _regress.pyx builds this file with -ffp-contract=off so
 * that no multiply-add is fused and a result is the same on every host.
 */
#include "regress.h"

#include <errno.h>
#include <math.h>

int skw_regress_inputs(const int64_t *t_ns, const double *delay, size_t n,
                       double noise_floor, double *x, double *w, int *same_time_out)
{
    double dmin, sig, xmin, xmax;
    int64_t t_ref;
    size_t i;

    if (!t_ns || !delay || !x || !w || !same_time_out || n == 0)
        return -EINVAL;
    t_ref = t_ns[n - 1];
    dmin = delay[0];
    for (i = 1; i < n; i++)
        if (delay[i] < dmin)
            dmin = delay[i];
    xmin = xmax = 0.0;
    for (i = 0; i < n; i++) {
        x[i] = (double)(t_ns[i] - t_ref) / 1e9;
        if (x[i] < xmin)
            xmin = x[i];
        if (x[i] > xmax)
            xmax = x[i];
        sig = noise_floor + (delay[i] - dmin) / 2;
        w[i] = 1.0 / (sig * sig);
    }
    *same_time_out = xmax - xmin == 0.0;
    return 0;
}

struct sums {
    double sw, swx, swy, swxx, swxy;
};

/* The weighted sums over [lo, hi), first to last, or last to first when
 * backwards (as a reversed cumulative sum adds them). */
static void sum_over(const double *x, const double *y, const double *w, size_t lo, size_t hi,
                     int backwards, struct sums *s)
{
    double wx;
    size_t k, i;

    s->sw = s->swx = s->swy = s->swxx = s->swxy = 0;
    for (k = lo; k < hi; k++) {
        i = backwards ? hi - 1 - (k - lo) : k;
        wx = w[i] * x[i];
        s->sw += w[i];
        s->swx += wx;
        s->swy += w[i] * y[i];
        s->swxx += wx * x[i];
        s->swxy += wx * y[i];
    }
}

/* The line a + b x through the sums (flat where they fix no slope); returns
 * the determinant. */
static double line_of(const struct sums *s, double *a, double *b)
{
    double det = s->sw * s->swxx - s->swx * s->swx;
    *b = det > 0 ? (s->sw * s->swxy - s->swx * s->swy) / det : 0.0;
    *a = (s->swy - *b * s->swx) / s->sw;
    return det;
}

int skw_regress_fit(const double *x, const double *y, const double *w, size_t n,
                    struct skw_regress_line *out)
{
    struct sums s;
    double det, a, b, r, s2 = 0, rr = 0, inv_w = 0, xmin, xmax, span2;
    size_t i;

    if (!x || !y || !w || !out || n == 0)
        return -EINVAL;
    sum_over(x, y, w, 0, n, 0, &s);
    det = line_of(&s, &a, &b);
    xmin = xmax = x[0];
    for (i = 0; i < n; i++) {
        r = y[i] - (a + b * x[i]);
        s2 += w[i] * r * r;
        rr += r * r;
        inv_w += 1.0 / w[i];
        if (x[i] < xmin)
            xmin = x[i];
        if (x[i] > xmax)
            xmax = x[i];
    }
    out->a = a;
    out->b = b;
    if (n > 2 && det > 0) {
        /* the weights are relative; the residuals give their scale */
        s2 /= (double)(n - 2);
        out->var_a = s2 * s.swxx / det;
        out->var_b = s2 * s.sw / det;
        out->cov_ab = -s2 * s.swx / det;
    } else {
        out->var_a = inv_w / (double)n;
        span2 = (xmax - xmin) * (xmax - xmin);
        out->var_b = out->var_a / (span2 < 1e-9 ? 1e-9 : span2);
        out->cov_ab = 0.0;
    }
    out->jitter = n > 1 ? sqrt(rr / (double)n) : 0.0;
    return 0;
}

double skw_regress_runs_critical(size_t n_pos, size_t n_neg, double z)
{
    double n = (double)n_pos + (double)n_neg, mu, var;

    if (n_pos == 0 || n_neg == 0 || n < 3)
        return 1.0;
    mu = 2.0 * (double)n_pos * (double)n_neg / n + 1.0;
    var = (mu - 1.0) * (mu - 2.0) / (n - 1.0);
    return mu - z * sqrt(var > 0.0 ? var : 0.0);
}

/* Does the suffix from `start` pass the runs test? Its sums run from the
 * newest sample back, as a reversed cumulative sum would. */
static int suffix_passes(const double *x, const double *y, const double *w, size_t n,
                         size_t start, double z)
{
    struct sums s;
    double a, b;
    size_t i, n_pos = 0, runs = 1;
    int sign, prev = 0;

    sum_over(x, y, w, start, n, 1, &s);
    line_of(&s, &a, &b);
    for (i = start; i < n; i++) {
        sign = y[i] - (a + b * x[i]) >= 0;
        n_pos += (size_t)sign;
        if (i > start && sign != prev)
            runs++;
        prev = sign;
    }
    return (double)runs >= skw_regress_runs_critical(n_pos, n - start - n_pos, z);
}

int skw_regress_window_start(const double *x, const double *y, const double *w, size_t n,
                             size_t min_window, double z, size_t *start_out)
{
    size_t start, last;

    if (!x || !y || !w || !start_out || min_window == 0 || min_window > n)
        return -EINVAL;
    last = n - min_window;
    for (start = 0; start < last; start++)
        if (suffix_passes(x, y, w, n, start, z))
            break;
    *start_out = start;
    return 0;
}
