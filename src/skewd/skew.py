"""Clock offsets and drifts of every node, solved jointly.

Each node n has a clock theta_n(t) = a_n + r_n * (t - t0) ahead of true time
(a reference node per connected group of nodes is fixed at 0: traces only
tell differences). Sources, best first:

- ``daemon``: offset logs written by `skewd daemon` (see skewd.merge for
  the columns): per node pair, a weighted line through the measured offsets;
- ``span-est``: the est_offset_ns column the tracer copied from the node's
  clock-state page;
- ``traces``: the spans alone. Every cross-node edge bounds
  theta_b - theta_a (b: child's node, a: parent's node) at its time t:
  a message edge from above only (``d - min latency``), a synchronous nesting
  (client/server) from both sides. Drift comes first: per pair, the tightest
  bounds in each of several time windows form a series whose slope (Theil-Sen)
  is the pair's relative drift; node drifts are the least-squares solution over
  all pairs. With drift taken out, the bounds of all pairs form one system of
  difference constraints theta_b - theta_a <= w, solved by shortest paths
  (Floyd-Warshall) over all nodes at once: a pair's interval is tightened by
  every path of edges between its nodes, not only by its own edges. A negative
  cycle means the constraints disagree (an assumed latency floor too high, or
  a drift misfit): every constraint is relaxed by the least slack that removes
  it, and the slack is reported. The point estimate is the least-squares fit
  of every node's offset to the pairs' interval midpoints, clipped into the
  intervals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

INF = float("inf")


@dataclass(frozen=True)
class PairSkew:
    """theta_b - theta_a at t0 (how far b's clock is ahead of a's), ns."""
    a: str
    b: str
    est_ns: float | None          # None when the interval is one-sided or empty
    lo_ns: float                  # -inf when unbounded below
    hi_ns: float                  # +inf when unbounded above
    drift_ppb: float
    source: str
    n_edges: int = 0
    known_ns: float | None = None

    @property
    def sided(self) -> str:
        if math.isfinite(self.lo_ns) and math.isfinite(self.hi_ns):
            return "two-sided"
        if math.isfinite(self.hi_ns):
            return "upper bound only"
        if math.isfinite(self.lo_ns):
            return "lower bound only"
        return "unbounded"

    def contains(self, x: float) -> bool:
        return self.lo_ns <= x <= self.hi_ns


@dataclass
class SkewEstimate:
    nodes: list[str]
    t0_ns: int
    theta: np.ndarray              # per node offset at t0 (ns), relative to its reference
    rate: np.ndarray               # per node drift (ns per ns)
    lo: np.ndarray                 # per node interval of theta (relative to reference)
    hi: np.ndarray
    known: np.ndarray              # per node: False where nothing bounds it
    reference: list[int]           # per node: index of its group's reference node
    source: list[str]              # per node
    pairs: list[PairSkew] = field(default_factory=list)
    slack_ns: float = 0.0
    notes: list[str] = field(default_factory=list)

    def offset_at(self, node_codes: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
        """theta of each row's node at its time, ns (float)."""
        th = np.where(self.known, self.theta, 0.0)
        r = np.where(self.known, self.rate, 0.0)
        return th[node_codes] + r[node_codes] * (np.asarray(t_ns, np.float64) - self.t0_ns)

    def pair(self, a: str, b: str) -> PairSkew | None:
        for p in self.pairs:
            if (p.a, p.b) == (a, b):
                return p
            if (p.a, p.b) == (b, a):
                return PairSkew(b, a, None if p.est_ns is None else -p.est_ns, -p.hi_ns,
                                -p.lo_ns, -p.drift_ppb, p.source, p.n_edges,
                                None if p.known_ns is None else -p.known_ns)
        return None


def _theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Median pairwise slope and a rough standard error of it."""
    i, j = np.triu_indices(len(x), 1)
    dx = x[j] - x[i]
    ok = dx != 0
    if not ok.any():
        return 0.0, 0.0
    s = (y[j] - y[i])[ok] / dx[ok]
    m = float(np.median(s))
    mad = float(np.median(np.abs(s - m))) * 1.4826
    return m, mad / math.sqrt(len(x))


def _components(K: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    comp = np.arange(K)

    def find(x):
        while comp[x] != x:
            comp[x] = comp[comp[x]]
            x = comp[x]
        return x
    # each node pair once (a component's root is its smallest node whatever
    # the order the pairs come in)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    if K <= 4096:
        seen = np.zeros((K, K), bool)
        seen[a, b] = True
        a, b = np.nonzero(seen)
    else:
        u = np.unique(a * K + b)
        a, b = u // K, u % K
    for x, y in zip(a.tolist(), b.tolist()):
        rx, ry = find(x), find(y)
        if rx != ry:
            comp[max(rx, ry)] = min(rx, ry)
    return np.array([find(i) for i in range(K)])


def _ls_nodes(K: int, a, b, target, weight, comp) -> np.ndarray:
    """x[b] - x[a] ~ target in weighted least squares; each group's smallest
    node index fixed at 0."""
    x = np.zeros(K)
    if len(a) == 0:
        return x
    for c in np.unique(comp):
        members = np.flatnonzero(comp == c)
        if members.size < 2:
            continue
        sel = np.isin(a, members)
        if not sel.any():
            continue
        col = {m: i for i, m in enumerate(members[1:])}
        A = np.zeros((int(sel.sum()), members.size - 1))
        rows = np.flatnonzero(sel)
        for r_i, e in enumerate(rows):
            if b[e] in col:
                A[r_i, col[b[e]]] += 1
            if a[e] in col:
                A[r_i, col[a[e]]] -= 1
        sw = np.sqrt(weight[rows])
        sol, *_ = np.linalg.lstsq(A * sw[:, None], target[rows] * sw, rcond=None)
        x[members[1:]] = sol
    return x


def _floyd(D: np.ndarray) -> np.ndarray:
    D = D.copy()
    for m in range(D.shape[0]):
        D = np.minimum(D, D[:, m:m + 1] + D[m:m + 1, :])
    return D


def from_edges(edges, nodes: list[str], *, windows: int = 16, min_windows: int = 4) -> SkewEstimate:
    """Trace-only estimate from check.Edges (see module docstring)."""
    K = len(nodes)
    notes: list[str] = []
    a0, b0 = edges.a.astype(np.int64), edges.b.astype(np.int64)
    t = edges.t.astype(np.float64)
    big = float(1 << 61)
    u = np.where(np.abs(edges.u) >= big, INF, edges.u.astype(np.float64))
    l = np.where(np.abs(edges.l) >= big, -INF, edges.l.astype(np.float64))
    flip = a0 > b0
    a = np.where(flip, b0, a0)
    b = np.where(flip, a0, b0)
    u, l = np.where(flip, -l, u), np.where(flip, -u, l)
    if len(a):
        tmin, tmax = float(t.min()), float(t.max())
    else:
        tmin = tmax = 0.0
    t0 = int((tmin + tmax) // 2)
    q = a * K + b
    pairs_present = np.unique(q)

    # 1. relative drift per pair from per-window extreme bounds
    nw = max(2, windows)
    width = max((tmax - tmin) / nw, 1.0)
    wi = np.clip(((t - tmin) / width).astype(np.int64), 0, nw - 1)
    key = q * nw + wi
    order = np.argsort(key, kind="stable")
    ks = key[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]]) if len(ks) else np.zeros(0, int)
    Umin = np.minimum.reduceat(u[order], starts) if len(ks) else np.zeros(0)
    Lmax = np.maximum.reduceat(l[order], starts) if len(ks) else np.zeros(0)
    seg_q = ks[starts] // nw if len(ks) else np.zeros(0, int)
    seg_w = ks[starts] % nw if len(ks) else np.zeros(0, int)
    centers = tmin + (seg_w + 0.5) * width
    d_a, d_b, d_s, d_wt, d_se = [], [], [], [], []
    for pq in pairs_present:
        m = seg_q == pq
        U, L, x = Umin[m], Lmax[m], centers[m]
        both = np.isfinite(U) & np.isfinite(L)
        for sel, y in ((both, (U + L) / 2), (np.isfinite(U), U), (np.isfinite(L), L)):
            if sel.sum() >= min_windows:
                s, se = _theil_sen(x[sel], y[sel])
                d_a.append(pq // K); d_b.append(pq % K); d_s.append(s)
                d_wt.append(float(sel.sum())); d_se.append(se)
                break
    comp = _components(K, a, b)
    if d_a:
        da, db = np.array(d_a), np.array(d_b)
        rate = _ls_nodes(K, da, db, np.array(d_s), np.array(d_wt), comp)
        se_pair = {(x, y): s for x, y, s in zip(d_a, d_b, d_se)}
    else:
        rate = np.zeros(K)
        se_pair = {}

    # 2. detrended bounds per pair
    rd = rate[b] - rate[a]
    us = u - rd * (t - t0)
    ls = l - rd * (t - t0)
    order = np.argsort(q, kind="stable")
    qs = q[order]
    st = np.flatnonzero(np.r_[True, qs[1:] != qs[:-1]]) if len(qs) else np.zeros(0, int)
    W = np.minimum.reduceat(us[order], st) if len(qs) else np.zeros(0)
    Lb = np.maximum.reduceat(ls[order], st) if len(qs) else np.zeros(0)
    cnt = np.diff(np.r_[st, len(qs)])
    pq_list = qs[st] if len(qs) else np.zeros(0, int)
    half_span = (tmax - tmin) / 2
    margin = np.array([2 * se_pair.get((int(x) // K, int(x) % K), 0.0) * half_span
                       for x in pq_list])

    # 3. difference constraints, all nodes jointly
    D = np.full((K, K), INF)
    np.fill_diagonal(D, 0.0)
    pa_, pb_ = pq_list // K, pq_list % K
    D[pa_, pb_] = np.minimum(D[pa_, pb_], W + margin)
    D[pb_, pa_] = np.minimum(D[pb_, pa_], -Lb + margin)
    S = _floyd(D)
    slack = 0.0
    if K and (np.diag(S) < 0).any():
        fin = np.isfinite(D) & ~np.eye(K, dtype=bool)
        hi_s = float(np.abs(D[fin]).max()) * 2 + 1.0
        lo_s = 0.0
        for _ in range(60):
            mid = (lo_s + hi_s) / 2
            if (np.diag(_floyd(np.where(fin, D + mid, D))) < 0).any():
                lo_s = mid
            else:
                hi_s = mid
        slack = hi_s
        S = _floyd(np.where(fin, D + slack, D))
        notes.append(f"the edges' bounds disagree by up to {slack:.0f} ns (assumed latency "
                     f"floors too high, drift, or instrumentation): intervals widened by that")

    # 4. point estimate: least squares to interval midpoints, clipped
    ia, ib, tg, wt = [], [], [], []
    for x, y in zip(pa_.tolist(), pb_.tolist()):
        hi, lo = S[x, y], -S[y, x]
        if math.isfinite(hi) and math.isfinite(lo):
            ia.append(x); ib.append(y); tg.append((hi + lo) / 2)
            wt.append(1.0 / ((hi - lo) / 2 + 1000.0) ** 2)
        else:
            ia.append(x); ib.append(y); tg.append(min(max(0.0, lo), hi))
            wt.append(1e-30)
    theta = _ls_nodes(K, np.array(ia, int), np.array(ib, int), np.array(tg), np.array(wt), comp)
    ref = [int(np.flatnonzero(comp == comp[i])[0]) for i in range(K)]
    lo_n = np.array([-S[i, ref[i]] for i in range(K)]) if K else np.zeros(0)
    hi_n = np.array([S[ref[i], i] for i in range(K)]) if K else np.zeros(0)
    theta = np.clip(theta, lo_n, hi_n)
    theta = np.where(np.isfinite(theta), theta, 0.0)
    known = np.array([comp[i] != i or (comp == i).sum() > 1 for i in range(K)], bool)

    pairs = []
    for x, y, n_e in zip(pa_.tolist(), pb_.tolist(), cnt.tolist()):
        hi, lo = float(S[x, y]), float(-S[y, x])
        est = None
        if math.isfinite(hi) and math.isfinite(lo):
            est = float(np.clip(theta[y] - theta[x], lo, hi))
        pairs.append(PairSkew(nodes[x], nodes[y], est, lo, hi,
                              float((rate[y] - rate[x]) * 1e9), "traces", int(n_e)))
    return SkewEstimate(nodes=list(nodes), t0_ns=t0, theta=theta, rate=rate, lo=lo_n, hi=hi_n,
                        known=known, reference=ref, source=["traces"] * K, pairs=pairs,
                        slack_ns=slack, notes=notes)


def _line(t: np.ndarray, y: np.ndarray, t0: int, w: np.ndarray | None = None) -> tuple[float, float]:
    """Weighted least-squares line y = c + r (t - t0); (c, r)."""
    x = t.astype(np.float64) - t0
    if w is None:
        w = np.ones_like(x)
    if len(x) < 2 or np.ptp(x) == 0:
        return float(np.average(y, weights=w)) if len(y) else 0.0, 0.0
    A = np.stack([np.ones_like(x), x], 1) * np.sqrt(w)[:, None]
    sol, *_ = np.linalg.lstsq(A, y.astype(np.float64) * np.sqrt(w), rcond=None)
    return float(sol[0]), float(sol[1])


def per_node_lines(node_codes: np.ndarray, t: np.ndarray, y: np.ndarray, valid: np.ndarray,
                   K: int, t0: int, max_points: int = 20_000):
    """(c, r, has) per node: a line through y over t (e.g. injected or
    daemon-estimated offsets copied into spans)."""
    c = np.zeros(K); r = np.zeros(K); has = np.zeros(K, bool)
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return c, r, has
    order = np.argsort(node_codes[idx], kind="stable")
    idx = idx[order]
    nc = node_codes[idx]
    bounds = np.flatnonzero(np.r_[True, nc[1:] != nc[:-1], True])
    for s, e in zip(bounds[:-1], bounds[1:]):
        sel = idx[s:e]
        if sel.size > max_points:
            sel = sel[np.linspace(0, sel.size - 1, max_points).astype(np.int64)]
        k = int(node_codes[sel[0]])
        c[k], r[k] = _line(t[sel], y[sel], t0)
        has[k] = True
    return c, r, has


def from_node_lines(nodes: list[str], t0: int, c: np.ndarray, r: np.ndarray, has: np.ndarray,
                    unc: np.ndarray, source: str, pairs_of: list[tuple[int, int, int]]) -> SkewEstimate:
    """An estimate from per-node offset lines (span-est or known offsets)."""
    K = len(nodes)
    ref = [int(np.flatnonzero(has)[0]) if has.any() else i for i in range(K)]
    pairs = []
    for x, y, n_e in pairs_of:
        if has[x] and has[y]:
            est = float(c[y] - c[x])
            u = float(unc[x] + unc[y])
            pairs.append(PairSkew(nodes[x], nodes[y], est, est - u, est + u,
                                  float((r[y] - r[x]) * 1e9), source, n_e))
    return SkewEstimate(nodes=list(nodes), t0_ns=t0, theta=np.where(has, c, 0.0),
                        rate=np.where(has, r, 0.0), lo=c - unc, hi=c + unc, known=has.copy(),
                        reference=ref, source=[source if h else "none" for h in has], pairs=pairs)


def from_offset_log(offsets, nodes: list[str], t0: int,
                    pairs_of: list[tuple[int, int, int]]) -> SkewEstimate | None:
    """An estimate from daemon offset logs (pyarrow table: node, peer, time_ns,
    offset_ns = peer's clock minus node's clock, uncertainty_ns)."""
    if offsets is None or offsets.num_rows == 0:
        return None
    K = len(nodes)
    idx = {n: i for i, n in enumerate(nodes)}
    node = offsets.column("node").to_pylist()
    peer = offsets.column("peer").to_pylist()
    tt = offsets.column("time_ns").to_numpy(zero_copy_only=False).astype(np.float64)
    off = offsets.column("offset_ns").to_numpy(zero_copy_only=False).astype(np.float64)
    unc = np.abs(offsets.column("uncertainty_ns").to_numpy(zero_copy_only=False)
                 .astype(np.float64))
    ai = np.array([idx.get(x, -1) for x in node])
    bi = np.array([idx.get(x, -1) for x in peer])
    ok = (ai >= 0) & (bi >= 0) & (ai != bi) & np.isfinite(off) & np.isfinite(tt)
    if not ok.any():
        return None
    ai, bi, tt, off, unc = ai[ok], bi[ok], tt[ok], off[ok], unc[ok]
    flip = ai > bi
    a = np.where(flip, bi, ai); b = np.where(flip, ai, bi)
    off = np.where(flip, -off, off)
    q = a * K + b
    la, lb, lc, lr, lu, lw = [], [], [], [], [], []
    for pq in np.unique(q):
        m = q == pq
        w = 1.0 / (unc[m] + 100.0) ** 2
        c0, r0 = _line(tt[m], off[m], t0, w)
        la.append(pq // K); lb.append(pq % K); lc.append(c0); lr.append(r0)
        lu.append(float(np.median(unc[m]))); lw.append(1.0 / (float(np.median(unc[m])) + 100.0) ** 2)
    la, lb = np.array(la), np.array(lb)
    comp = _components(K, la, lb)
    theta = _ls_nodes(K, la, lb, np.array(lc), np.array(lw), comp)
    rate = _ls_nodes(K, la, lb, np.array(lr), np.array(lw), comp)
    covered = np.zeros(K, bool); covered[la] = True; covered[lb] = True
    pu = {(x, y): (c0, u0, r0) for x, y, c0, u0, r0 in zip(la.tolist(), lb.tolist(), lc, lu, lr)}
    pairs = []
    for x, y, n_e in pairs_of:
        key, sgn = ((x, y), 1) if x < y else ((y, x), -1)
        if key in pu:
            c0, u0, r0 = pu[key]
            pairs.append(PairSkew(nodes[x], nodes[y], sgn * c0, sgn * c0 - u0, sgn * c0 + u0,
                                  sgn * r0 * 1e9, "daemon", n_e))
    ref = [int(np.flatnonzero(comp == comp[i])[0]) for i in range(K)]
    node_unc = np.zeros(K)
    for (x, y), (_, u0, _) in pu.items():
        node_unc[x] = max(node_unc[x], u0 / 2); node_unc[y] = max(node_unc[y], u0 / 2)
    return SkewEstimate(nodes=list(nodes), t0_ns=t0, theta=theta, rate=rate,
                        lo=theta - node_unc, hi=theta + node_unc, known=covered, reference=ref,
                        source=["daemon" if c else "none" for c in covered], pairs=pairs)
