"""The C loops behind skewd.check (csrc/spancheck.c, csrc/strcodes.c via
skewd._spancheck), each against a plain Python reference."""
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from skewd import _spancheck
from skewd import check as ck
from skewd import tracegen as g
from skewd.diagnostics import Warnings

# short and long (> 8 bytes) values, empty, embedded NUL, non-ASCII, None
VALUES = st.one_of(st.none(), st.sampled_from(["", "a", "ab", "n1", "n12345678", "\0", "a\0",
                                               "stage-with-a-long-name", "é", "ümlaut-long-x"]),
                   st.text(max_size=12))


def _first_appearance(values):
    seen = {}
    for v in values:
        if v is not None:
            seen.setdefault(v, len(seen))
    return list(seen) + ([None] if None in values else [])


@settings(max_examples=150, deadline=None)
@given(st.lists(VALUES, max_size=60), st.integers(0, 9), st.integers(1, 3), st.booleans())
def test_string_codes_match_the_values_in_first_appearance_order(values, cut, parts, small_cap):
    arr = pa.array(["x"] * cut + values, pa.string()).slice(cut)
    old_split, old_cap = ck._STR_SPLIT, ck._STR_CAP
    ck._STR_SPLIT = 1                       # pieces even for a short column
    if small_cap:
        ck._STR_CAP = 3                     # too small: falls back on pyarrow
    try:
        job = ck._StringCodes(arr, parts)
        for t in job.tasks():
            t()
        codes, vals = job.finish()
    finally:
        ck._STR_SPLIT, ck._STR_CAP = old_split, old_cap
    assert [vals[c] for c in codes] == values
    assert vals == _first_appearance(values)


def test_string_codes_of_chunked_dictionary_and_large_columns():
    vals = ["n2", None, "n1", "n2", "a-much-longer-node-name", "n1"]
    for col in (pa.chunked_array([vals[:3], vals[3:]]), pa.array(vals, pa.large_string()),
                pa.array(vals).dictionary_encode()):
        codes, values = ck._codes(col)
        assert [values[c] for c in codes] == vals


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), max_size=100), st.integers(0, 17))
def test_validity_bits_to_bools(valid, cut):
    mask = [False] * cut + [not v for v in valid]
    arr = pa.array(np.arange(len(mask)), mask=np.array(mask, bool)).slice(cut)
    got = ck._valid(arr)
    assert got.dtype == bool and got.tolist() == valid


def test_remap_and_cross_reject_codes_out_of_range():
    codes = np.array([0, 1, 2], np.int32)
    with pytest.raises(ValueError):
        _spancheck.remap(codes, np.array([5, 6], np.int32))
    with pytest.raises(ValueError):
        _spancheck.cross(codes, codes, 2, 3, np.zeros(6, np.int64))
    counts = np.zeros(9, np.int64)
    _spancheck.cross(np.array([0, 1, 2], np.int32), np.array([2, 2, 0], np.int32), 3, 3, counts)
    assert counts.reshape(3, 3).tolist() == [[0, 0, 1], [0, 0, 1], [1, 0, 0]]


def _random_forest(rng, n_traces, order):
    """Traces of random trees; span ids repeat across traces (never within
    one); some parents missing (orphans) and some spans their own parent."""
    rows = []
    for t in range(n_traces):
        size = int(rng.integers(1, 40))
        ids = rng.permutation(60)[:size] + 1          # ids shared between traces
        for i in range(size):
            p = int(rng.integers(0, i)) if i else -1
            pid = int(ids[p]) if p >= 0 else None
            r = rng.random()
            if i and r < 0.03:
                pid = 10_000 + int(rng.integers(0, 5))   # orphan
            elif i and r < 0.05:
                pid = int(ids[i])                          # names itself
            rows.append((t, int(ids[i]), pid, i))
    if order == "shuffle":
        rows = [rows[i] for i in rng.permutation(len(rows))]
    elif order == "reversed":
        rows = rows[::-1]
    return rows


def _arrays(rows):
    n = len(rows)
    trace = np.zeros((n, 2), np.uint64)
    trace[:, 0] = [r[0] + 1 for r in rows]
    trace[:, 1] = 7
    span = np.array([r[1] for r in rows], np.uint64)
    has_parent = np.array([r[2] is not None for r in rows])
    parent = np.array([r[2] or 0 for r in rows], np.uint64)
    z = np.zeros(n, np.int64)
    return ck.SpanArrays(n=n, trace=trace, span=span, parent=parent, has_parent=has_parent,
                         start=z, end=z, send=z, has_send=np.zeros(n, bool),
                         kind=np.zeros(n, np.int8), node=np.zeros(n, np.int32), nodes=["a"],
                         res_node=np.ones(1, np.int64), unc=None)


@pytest.mark.parametrize("order", ["trace", "shuffle", "reversed"])
@pytest.mark.parametrize("seed", [1, 2])
def test_parent_join_matches_a_dictionary_join(order, seed):
    rng = np.random.default_rng(seed)
    rows = _random_forest(rng, 300, order)
    at = {(r[0], r[1]): i for i, r in enumerate(rows)}
    want = np.array([at.get((r[0], r[2]), -1) if r[2] is not None else -1
                     for r in rows])
    selfp = int(sum(want[i] == i for i in range(len(rows))))
    want[want == np.arange(len(rows))] = -1
    w = Warnings()
    got = ck.link_parents(_arrays(rows), w)
    assert got.tolist() == want.tolist()
    assert w.counts.get("parent_cycle", 0) == selfp > 0
    assert w.counts["orphan"] == int(sum(r[2] is not None for r in rows) - (want >= 0).sum())


def _reference_detect(sa, prow, opts, node_unc=None):
    """The violation rules of skewd.check, one edge at a time."""
    out, pairs, wins, msgs, edges = [], {}, {}, [], []
    inf = int(ck.INF)
    tmin, tmax = int(sa.start.min()), int(sa.start.max())
    wns = max(1, -(-(tmax - tmin + 1) // opts.windows))
    for c in range(sa.n):
        p = int(prow[c])
        if p < 0:
            continue
        kc, kp = int(sa.kind[c]), int(sa.kind[p])
        nc, np_ = int(sa.node[c]), int(sa.node[p])
        thr = max(int(sa.res_node[nc]), int(sa.res_node[np_]))
        msg = kp == ck.PRODUCER and kc == ck.CONSUMER
        sync = kc in (ck.INTERNAL, ck.CLIENT, ck.SERVER) and kp != ck.PRODUCER
        found = []
        if msg:
            send = sa.send[p] if sa.has_send[p] else sa.send[c] if sa.has_send[c] else sa.start[p]
            d = int(sa.start[c] - send)
            if -d >= thr:
                found.append((ck.NEG_TRANSPORT, -d))
            if nc != np_:
                msgs.append((np_ * len(sa.nodes) + nc, d))
                edges.append((np_, nc, int(sa.start[c]), d - opts.min_msg_latency_ns, -inf,
                              ck.E_MSG))
        elif sa.start[p] - sa.start[c] >= thr:
            found.append((ck.BEFORE_PARENT, int(sa.start[p] - sa.start[c])))
        if sync and sa.end[c] - sa.end[p] >= thr:
            found.append((ck.ENDS_AFTER, int(sa.end[c] - sa.end[p])))
        if not msg and nc != np_:
            r = opts.min_rpc_latency_ns
            du, de = int(sa.start[c] - sa.start[p]), int(sa.end[c] - sa.end[p])
            edges.append((np_, nc, int(sa.start[c]), du - r if sync else du,
                          de + r if sync else -inf, ck.E_SYNC if sync else ck.E_START))
        for k, mag in found:
            u = (int(sa.unc[c] + sa.unc[p]) if sa.unc is not None else
                 int(node_unc[nc] + node_unc[np_]) if node_unc is not None else 0)
            out.append((c, p, k, mag, nc == np_ or mag > u, nc == np_))
        e = pairs.setdefault((np_, nc), [0, 0])
        e[0] += 1
        e[1] += bool(found)
        if nc != np_:
            wi = min(max((int(sa.start[c]) - tmin) // wns, 0), opts.windows - 1)
            x = wins.setdefault(wi, [0, 0])
            x[0] += 1
            x[1] += bool(found)
    return sorted(out), pairs, wins, sorted(msgs), sorted(edges)


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("small_ranges", [False, True])
def test_edge_checks_match_the_rules_one_edge_at_a_time(seed, small_ranges, monkeypatch):
    rng = np.random.default_rng(seed)
    clocks = {"b": g.NodeClock(offset_ns=-30_000, uncertainty_ns=3_000),
              "c": g.NodeClock(offset_ns=20_000, resolution_ns=1000, name="jaeger_us"),
              "d": g.NodeClock(offset_ns=int(rng.integers(-9_000, 9_000)))}
    t1, _ = g.rpc(400, [("a", "b", "B"), ("b", "c", "C"), ("a", "d", "D")], clocks=clocks,
                  seed=seed, order="shuffle")
    t2, _ = g.pipeline(400, [("s", "a"), ("p", "b"), ("m", "c"), ("x", "d")], clocks=clocks,
                       seed=seed + 10)
    t = g.concat(t1, t2)
    if small_ranges:   # many ranges, each writing its piece of the results
        monkeypatch.setattr(ck, "_CHUNK", 97)
    opts = ck.CheckOptions(windows=5, min_msg_latency_ns=2_000, min_rpc_latency_ns=500)
    sa = ck.SpanArrays.from_table(t)
    prow = ck.link_parents(sa)
    for node_unc in (None, np.arange(len(sa.nodes), dtype=np.int64) * 4_000):
        det = ck.detect(sa, prow, opts, node_unc=node_unc)
        want, pairs, wins, msgs, edges = _reference_detect(sa, prow, opts, node_unc)
        got = sorted(zip(det.v_child.tolist(), det.v_parent.tolist(), det.v_kind.tolist(),
                         det.v_mag.tolist(), det.v_definite.tolist(), det.v_same_node.tolist()))
        assert got == want and len(want) > 100
        for (a, b), (e, v) in pairs.items():
            assert det.pair_edges[a, b] == e and det.pair_viol[a, b] == v
        assert det.pair_edges.sum() == det.n_edges == sum(e for e, _ in pairs.values())
        for wi, (e, v) in wins.items():
            assert det.window_edges[wi] == e and det.window_viol[wi] == v
        assert sorted(zip(det.msg_pair.tolist(), det.msg_d.tolist())) == msgs
        e = det.edges
        assert sorted(zip(e.a.tolist(), e.b.tolist(), e.t.tolist(), e.u.tolist(), e.l.tolist(),
                          e.etype.tolist())) == edges


def test_parent_in_another_trace_is_told_apart_from_a_missing_one():
    # trace 1: 5 <- 6; trace 2: 7 <- 8, and 9 names 5 (only in trace 1), 10 names 99 (nowhere)
    rows = [(1, 5, None, 0), (1, 6, 5, 1), (2, 7, None, 0), (2, 8, 7, 1), (2, 9, 5, 2),
            (2, 10, 99, 3)]
    sa = _arrays(rows)
    sa.trace[:, 1] = sa.trace[:, 0]     # trace ids that differ in their second word only
    sa.trace[:, 0] = 1
    w = Warnings()
    assert ck.link_parents(sa, w).tolist() == [-1, 0, -1, 2, -1, -1]
    assert w.counts["parent_in_other_trace"] == 1 and w.counts["orphan"] == 2
