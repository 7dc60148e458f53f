"""Find, explain and correct causality violations in a span table.

Everything here works on whole columns (numpy/pyarrow); there is no Python
loop per span. The steps, each a function a test can call:

1. `SpanArrays.from_table`: the columns as numpy arrays (ids as uint64 words,
   nodes and kinds as small integer codes, per-node clock resolution).
2. `link_parents`: the parent row of every span. Merged tables are grouped by
   trace and ordered by start, so a parent is almost always a few rows before
   its child: the join first compares each span with its near neighbours
   (sequential, cache-friendly), then joins whatever is left by sorting the
   64-bit ids (any order of input works; it is only slower).
3. `detect`: every parent/child edge classified and checked:
     message edge  producer P -> consumer C: d = C.start - P.send; d < 0 is a
                   *negative_transport* of magnitude -d;
     any edge      C.start < P.start is *child_before_parent*;
     synchronous   C of kind internal/client/server under a non-producer
                   parent: C.end > P.end is *child_ends_after_parent*.
   A difference smaller than the coarser of the two clocks' resolutions is
   never a violation. Two spans on one node share a clock, so a violation
   between them is an *instrumentation* bug, not skew. A cross-node violation
   is *definite* when its magnitude exceeds the two spans' combined
   uncertainty (est_uncertainty_ns, or the daemon offset logs), *possible*
   otherwise.
4. `estimate_skew` (see skewd.skew) solves every node's offset and drift
   jointly from the edges; `correct` applies it and then a
   controlled-logical-clock pass; `predict` turns a latency distribution into
   the violation rate expected at each skew.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from skewd.diagnostics import Warnings
from skewd.errors import InputFileError
from skewd.schema import KINDS

INTERNAL, PRODUCER, CONSUMER, CLIENT, SERVER = range(5)

#: the three violation kinds, indexed by their code
VIOLATION_KINDS = ("negative_transport", "child_before_parent", "child_ends_after_parent")
NEG_TRANSPORT, BEFORE_PARENT, ENDS_AFTER = range(3)

#: edge types: message (producer->consumer), synchronous nesting, start-only
EDGE_TYPES = ("message", "sync", "start")
E_MSG, E_SYNC, E_START = range(3)

#: resolution of clocks whose name says it (ns); every other clock: 1 ns.
#: Jaeger and Zipkin carry microseconds.
CLOCK_RESOLUTION_NS = {"jaeger_us": 1_000, "zipkin_us": 1_000, "us": 1_000, "ms": 1_000_000}

_KIND_ALIASES = {k: i for i, k in enumerate(KINDS)}
_KIND_ALIASES.update({f"span_kind_{k}": i for i, k in enumerate(KINDS)})
_KIND_ALIASES.update({"unspecified": INTERNAL, "span_kind_unspecified": INTERNAL, "": INTERNAL})


def _threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _fixed_words(col: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """fixed_size_binary(width) -> (n, width//8) uint64 view (zero-copy when one chunk)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_fixed_size_binary(arr.type) or arr.type.byte_width != width:
        arr = arr.cast(pa.binary(width))
    n = len(arr)
    buf = arr.buffers()[1]
    words = width // 8
    if buf is None or n == 0:
        return np.zeros((n, words), np.uint64)
    return np.frombuffer(buf, dtype=np.uint64, count=n * words,
                         offset=arr.offset * width).reshape(n, words)


def _valid(col) -> np.ndarray:
    if col.null_count == 0:
        return np.ones(len(col), bool)
    return pc.is_valid(col).to_numpy(zero_copy_only=False)


def _int64(col, fill: int = 0) -> np.ndarray:
    if col.null_count:
        col = pc.fill_null(col, fill)
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _codes(col) -> tuple[np.ndarray, list]:
    """Integer codes and their values for a string (or dictionary) column;
    long columns are encoded in pieces on two threads, then unified."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if n > 4 * _CHUNK and not pa.types.is_dictionary(arr.type):
        pieces = [arr.slice(i, 2 * _CHUNK) for i in range(0, n, 2 * _CHUNK)]
        with ThreadPoolExecutor(_threads()) as ex:
            enc = list(ex.map(_codes, pieces))
        values: list = []
        index: dict = {}
        out = np.empty(n, np.int32)
        pos = 0
        for codes, vals in enc:
            lut = np.array([index.setdefault(v, len(index)) for v in vals], np.int32)
            out[pos:pos + codes.size] = lut[codes] if lut.size else 0
            pos += codes.size
        values = list(index)
        return out, values
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    idx = arr.indices
    codes = pc.fill_null(idx, 0).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    values = arr.dictionary.to_pylist()
    if idx.null_count:
        values = values + [None]
        codes = np.where(_valid(idx), codes, len(values) - 1).astype(np.int32)
    return codes, values


@dataclass
class SpanArrays:
    """The span table as numpy columns (see module docstring)."""
    n: int
    trace: np.ndarray          # (n, 2) uint64
    span: np.ndarray           # (n,) uint64
    parent: np.ndarray         # (n,) uint64, meaningful where has_parent
    has_parent: np.ndarray     # bool
    start: np.ndarray
    end: np.ndarray
    send: np.ndarray           # int64, meaningful where has_send
    has_send: np.ndarray
    kind: np.ndarray           # int8 codes into KINDS
    node: np.ndarray           # int32 codes into nodes
    nodes: list[str]
    res_node: np.ndarray       # per node: coarsest clock resolution on it (ns)
    unc: np.ndarray | None     # est_uncertainty_ns (0 where null) or None when all null
    stage: np.ndarray | None = None
    stages: list | None = None
    clocks_by_node: dict = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: pa.Table, *, resolution_ns: dict[str, int] | None = None,
                   warnings: Warnings | None = None, stages: bool = True) -> "SpanArrays":
        w = warnings if warnings is not None else Warnings()
        need = ("trace_id", "span_id", "parent_id", "kind", "node", "start_ns", "end_ns")
        missing = [c for c in need if c not in table.column_names]
        if missing:
            raise InputFileError(f"span table lacks column(s) {', '.join(missing)}; "
                                 f"merge the logs with 'skewd merge' first")
        n = table.num_rows
        cols = {}

        def load(name):
            col = table.column(name)
            if name == "trace_id":
                cols[name] = _fixed_words(col, 16)
            elif name in ("span_id", "parent_id"):
                cols[name] = _fixed_words(col, 8)[:, 0]
                if name == "parent_id":
                    cols["has_parent"] = _valid(col)
            elif name == "kind":
                codes, values = _codes(col)
                lut = np.array([_KIND_ALIASES.get(str(v).lower(), -1) if v is not None else -1
                                for v in values], np.int8)
                bad = lut < 0
                if bad.any():
                    nbad = int(np.isin(codes, np.flatnonzero(bad)).sum())
                    w.add("unknown_kind", f"{[values[i] for i in np.flatnonzero(bad)][:3]}", nbad)
                    lut[bad] = INTERNAL
                cols[name] = lut[codes] if len(lut) else np.zeros(n, np.int8)
            elif name in ("node", "stage", "clock"):
                cols[name] = _codes(col)
            elif name == "send_ns":
                cols["has_send"] = _valid(col)
                cols[name] = _int64(col)
            elif name == "est_uncertainty_ns":
                cols[name] = None if col.null_count == n else np.abs(_int64(col))
            else:
                cols[name] = _int64(col)
        names = list(need) + [c for c in ("send_ns", "clock", "est_uncertainty_ns")
                              if c in table.column_names]
        if stages and "stage" in table.column_names:
            names.append("stage")
        with ThreadPoolExecutor(_threads()) as ex:
            list(ex.map(load, names))
        node_codes, nodes = cols["node"]
        nodes = [x if x is not None else "?" for x in nodes]
        # per node, the coarsest resolution of the clocks it used
        res_node = np.ones(len(nodes), np.int64)
        clocks_by_node: dict[str, list[str]] = {}
        if "clock" in cols:
            ccodes, cvals = cols["clock"]
            res_map = dict(CLOCK_RESOLUTION_NS)
            res_map.update(resolution_ns or {})
            if len(cvals) == 1:
                pairs = np.unique(node_codes) * 1 + 0
                pairs = np.stack([pairs, np.zeros_like(pairs)], 1)
            else:
                key = node_codes.astype(np.int64) * len(cvals) + ccodes
                u = np.unique(key)
                pairs = np.stack([u // len(cvals), u % len(cvals)], 1)
            for nc, cc in pairs:
                name = cvals[cc] if cvals[cc] is not None else "unknown"
                r = int(res_map.get(name, 1))
                res_node[nc] = max(res_node[nc], r)
                clocks_by_node.setdefault(nodes[nc], []).append(name)
        elif resolution_ns and "*" in resolution_ns:
            res_node[:] = int(resolution_ns["*"])
        has_send = cols.get("has_send", np.zeros(n, bool))
        st = cols.get("stage")
        return cls(n=n, trace=cols["trace_id"], span=cols["span_id"], parent=cols["parent_id"],
                   has_parent=cols["has_parent"], start=cols["start_ns"], end=cols["end_ns"],
                   send=cols.get("send_ns", np.zeros(n, np.int64)), has_send=has_send,
                   kind=cols["kind"], node=node_codes, nodes=nodes, res_node=res_node,
                   unc=cols.get("est_uncertainty_ns"),
                   stage=st[0] if st else None, stages=st[1] if st else None,
                   clocks_by_node=clocks_by_node)


# --- the parent join ----------------------------------------------------------------

def _match_at(sa: SpanArrays, idx: np.ndarray, k: int) -> np.ndarray:
    """Which children idx have their parent exactly k rows earlier (k<0: later)."""
    j = idx - k
    ok = (j >= 0) & (j < sa.n)
    jj = np.where(ok, j, 0)
    m = ok & (sa.span[jj] == sa.parent[idx])
    if m.any():
        sel = np.flatnonzero(m)
        same = (sa.trace[idx[sel], 0] == sa.trace[jj[sel], 0]) & \
               (sa.trace[idx[sel], 1] == sa.trace[jj[sel], 1])
        m[sel[~same]] = False
    return m


def _near_join(sa: SpanArrays, idx: np.ndarray, prow: np.ndarray, max_k: int) -> np.ndarray:
    """Fill prow for children idx found near them; return the rest.

    In a trace ordered by start (pre-order), a span's parent is the row before
    it or one of that row's ancestors: after the k=1 pass, walk up the
    ancestors of the row before (one vectorised step per level). Spans whose
    parent starts after them (violations) are looked for a few rows later."""
    m = _match_at(sa, idx, 1)
    hit = idx[m]
    prow[hit] = hit - 1
    idx = idx[~m]
    anc = idx - 1
    left = []
    for _ in range(64):
        if idx.size == 0:
            break
        a = np.maximum(anc, 0)
        nxt = np.where(anc >= 0, prow[a], -1)
        step = nxt >= 0
        # an ancestor whose own parent is not found yet: wait a round
        wait = (anc >= 0) & ~step & sa.has_parent[a]
        a2 = np.where(step, nxt, 0)
        m = step & (sa.span[a2] == sa.parent[idx])
        if m.any():
            sel = np.flatnonzero(m)
            same = (sa.trace[idx[sel], 0] == sa.trace[a2[sel], 0]) & \
                   (sa.trace[idx[sel], 1] == sa.trace[a2[sel], 1])
            m[sel[~same]] = False
        prow[idx[m]] = a2[m]
        go = step & ~m & sa.has_parent[a2]
        stay = wait & ~m
        left.append(idx[~m & ~go & ~stay])
        if not go.any() and not m.any():
            left.append(idx[stay])
            idx = idx[:0]
            break
        idx, anc = np.concatenate([idx[go], idx[stay]]), np.concatenate([a2[go], anc[stay]])
    left.append(idx)
    left = np.concatenate(left)
    for k in range(-1, -max_k - 1, -1):
        if left.size == 0:
            break
        m = _match_at(sa, left, k)
        hit = left[m]
        prow[hit] = hit - k
        left = left[~m]
    return left


def _sort_join(sa: SpanArrays, idx: np.ndarray, prow: np.ndarray, w: Warnings) -> None:
    """Parents of children idx by sorting span ids (general input order)."""
    if idx.size == 0:
        return
    # restrict the span side to traces that still have unresolved children
    bits = 24 if sa.n > (1 << 20) else 16
    mask = np.uint64((1 << bits) - 1)
    table = np.zeros(1 << bits, bool)
    table[(sa.trace[idx, 0] & mask).astype(np.int64)] = True
    cand = np.flatnonzero(table[(sa.trace[:, 0] & mask).astype(np.int64)])
    keys = sa.span[cand]
    order = np.argsort(keys, kind="stable")
    skeys = keys[order]
    srows = cand[order]
    want = sa.parent[idx]
    pos = np.searchsorted(skeys, want)
    todo = np.arange(idx.size)
    for _ in range(8):   # same span id in several traces: look at the next few
        if todo.size == 0:
            break
        p = pos[todo]
        inb = p < skeys.size
        pp = np.where(inb, p, 0)
        hit = inb & (skeys[pp] == want[todo])
        rows = srows[pp]
        c = idx[todo]
        same = hit & (sa.trace[rows, 0] == sa.trace[c, 0]) & (sa.trace[rows, 1] == sa.trace[c, 1])
        prow[c[same]] = rows[same]
        todo = todo[hit & ~same]
        pos[todo] += 1
    if todo.size:
        w.add("parent_in_other_trace", None, int(todo.size))


def link_parents(sa: SpanArrays, warnings: Warnings | None = None, *,
                 near: int = 4) -> np.ndarray:
    """Row of each span's parent (same trace, parent_id == span_id), -1 if none."""
    w = warnings if warnings is not None else Warnings()
    prow = np.full(sa.n, -1, np.int64)
    kids = np.flatnonzero(sa.has_parent)
    # the near pass, split across threads by row range
    parts = np.array_split(kids, max(1, -(-kids.size // _CHUNK)))
    with ThreadPoolExecutor(_threads()) as ex:
        rest = list(ex.map(lambda p: _near_join(sa, p, prow, near), parts))
    rest = np.concatenate(rest) if rest else kids[:0]
    _sort_join(sa, rest, prow, w)
    self_parent = sa.has_parent & (prow == np.arange(sa.n))
    if self_parent.any():
        w.add("parent_cycle", "span is its own parent", int(self_parent.sum()))
        prow[self_parent] = -1
    orphans = int((sa.has_parent & (prow < 0)).sum())
    if orphans:
        w.add("orphan", f"{orphans} span(s) whose parent is in no log given", orphans)
    return prow


# --- detection ---------------------------------------------------------------------

INF = np.int64(1 << 62)


@dataclass(frozen=True)
class CheckOptions:
    """min_*_latency_ns: the least true latency assumed for a message and for an
    RPC leg (0 = only "sent before received"); resolution_ns: clock name ->
    resolution overrides ("*" for every clock); windows: time windows for rates."""
    min_msg_latency_ns: int = 0
    min_rpc_latency_ns: int = 0
    resolution_ns: dict | None = None
    windows: int = 20
    keep_edges: bool = True


@dataclass
class Edges:
    """Cross-node edges as bounds on theta[b] - theta[a] (a: parent's node,
    b: child's node) at time t (child start): l <= theta_b - theta_a <= u.
    +-INF where a side is unbounded."""
    a: np.ndarray
    b: np.ndarray
    t: np.ndarray
    u: np.ndarray
    l: np.ndarray
    etype: np.ndarray

    @classmethod
    def empty(cls) -> "Edges":
        z = np.zeros(0, np.int64)
        return cls(z.astype(np.int32), z.astype(np.int32), z, z, z, z.astype(np.int8))

    def __len__(self) -> int:
        return len(self.a)


@dataclass
class Detection:
    """What `detect` found. Violation arrays are parallel (one row per violation)."""
    nodes: list[str]
    stages: list
    n_spans: int
    n_edges: int
    edges_by_type: dict[str, int]
    prow: np.ndarray
    v_child: np.ndarray
    v_parent: np.ndarray
    v_kind: np.ndarray
    v_mag: np.ndarray
    v_definite: np.ndarray
    v_same_node: np.ndarray
    pair_edges: np.ndarray          # (K, K) edges parent node x child node
    pair_viol: np.ndarray           # (K, K) violating edges
    stage_edges: np.ndarray | None  # (S, S)
    stage_viol: np.ndarray | None
    window_start_ns: np.ndarray     # (W,) start of each window
    window_ns: int
    window_edges: np.ndarray        # cross-node edges per window
    window_viol: np.ndarray         # cross-node violating edges per window
    msg_pair: np.ndarray            # cross-node message edges: a*K+b
    msg_d: np.ndarray               # their recorded one-way delay d
    edges: Edges
    warnings: Warnings

    @property
    def n_violations(self) -> int:
        return int(len(self.v_kind))

    def counts(self) -> dict:
        k, same, dfn = self.v_kind, self.v_same_node, self.v_definite
        out = {}
        for i, name in enumerate(VIOLATION_KINDS):
            m = k == i
            out[name] = {"total": int(m.sum()),
                         "definite": int((m & ~same & dfn).sum()),
                         "possible": int((m & ~same & ~dfn).sum()),
                         "instrumentation": int((m & same).sum())}
        return out


_CHUNK = 1 << 20


def _detect_range(sa: SpanArrays, prow: np.ndarray, lo: int, hi: int, opts: CheckOptions,
                  node_unc: np.ndarray | None, tmin: int, wns: int, nwin: int) -> dict:
    K = len(sa.nodes)
    c = np.flatnonzero(prow[lo:hi] >= 0) + lo
    p = prow[c]
    kc, kp = sa.kind[c], sa.kind[p]
    nc, npn = sa.node[c], sa.node[p]
    sc, sp = sa.start[c], sa.start[p]
    uni_res = bool((sa.res_node <= 1).all())
    thr = np.int64(1) if uni_res else np.maximum(sa.res_node[nc], sa.res_node[npn])
    is_msg = (kp == PRODUCER) & (kc == CONSUMER)
    is_sync = ((kc == INTERNAL) | (kc == CLIENT) | (kc == SERVER)) & (kp != PRODUCER)

    vrows, vkind, vmag = [], [], []
    # child starts before its parent (message edges are judged by their transport)
    mag_b = sp - sc
    vb = np.flatnonzero((mag_b >= thr) & ~is_msg)
    vrows.append(vb); vkind.append(np.full(vb.size, BEFORE_PARENT, np.int8)); vmag.append(mag_b[vb])
    # negative transport
    mi = np.flatnonzero(is_msg)
    pm, cm = p[mi], c[mi]
    sendv = np.where(sa.has_send[pm], sa.send[pm], np.where(sa.has_send[cm], sa.send[cm], sp[mi]))
    d = sc[mi] - sendv
    thr_m = thr if uni_res else thr[mi]
    vm = np.flatnonzero(-d >= thr_m)
    vrows.append(mi[vm]); vkind.append(np.full(vm.size, NEG_TRANSPORT, np.int8)); vmag.append(-d[vm])
    # synchronous child ends after its parent
    si = np.flatnonzero(is_sync)
    ec, ep = sa.end[c[si]], sa.end[p[si]]
    mag_e = ec - ep
    ve = np.flatnonzero(mag_e >= (thr if uni_res else thr[si]))
    vrows.append(si[ve]); vkind.append(np.full(ve.size, ENDS_AFTER, np.int8)); vmag.append(mag_e[ve])

    vr = np.concatenate(vrows)
    vk = np.concatenate(vkind)
    vmg = np.concatenate(vmag)
    vc, vp = c[vr], p[vr]
    same = nc[vr] == npn[vr]
    if sa.unc is not None:
        u = sa.unc[vc] + sa.unc[vp]
    elif node_unc is not None:
        u = node_unc[sa.node[vc]] + node_unc[sa.node[vp]]
    else:
        u = np.zeros(vr.size, np.int64)
    definite = same | (vmg > u)

    pair = npn.astype(np.int64) * K + nc
    pair_edges = np.bincount(pair, minlength=K * K)
    viol_edge = np.zeros(c.size, bool)
    viol_edge[vr] = True
    pair_viol = np.bincount(pair[viol_edge], minlength=K * K)
    out = dict(v_child=vc, v_parent=vp, v_kind=vk, v_mag=vmg, v_definite=definite,
               v_same=same, pair_edges=pair_edges, pair_viol=pair_viol,
               n_edges=c.size, n_msg=mi.size, n_sync=si.size)
    if sa.stage is not None:
        S = len(sa.stages)
        sq = sa.stage[p].astype(np.int64) * S + sa.stage[c]
        out["stage_edges"] = np.bincount(sq, minlength=S * S)
        out["stage_viol"] = np.bincount(sq[viol_edge], minlength=S * S)
    cross = nc != npn
    wi = np.clip((sc - tmin) // wns, 0, nwin - 1)
    out["win_edges"] = np.bincount(wi[cross], minlength=nwin)
    out["win_viol"] = np.bincount(wi[cross & viol_edge], minlength=nwin)
    xm = cross[mi]
    out["msg_pair"] = pair[mi][xm]
    out["msg_d"] = d[xm]
    if opts.keep_edges:
        # message edges: u = d - floor; sync: both sides; others: start only
        xi = np.flatnonzero(cross & ~is_msg)
        xs = is_sync[xi]
        u = sc[xi] - sp[xi]
        l = np.where(xs, sa.end[c[xi]] - sa.end[p[xi]] + opts.min_rpc_latency_ns, -INF)
        u -= np.where(xs, opts.min_rpc_latency_ns, 0)
        et = np.where(xs, E_SYNC, E_START).astype(np.int8)
        xmi = mi[xm]
        out["edges"] = Edges(np.concatenate([npn[xmi], npn[xi]]), np.concatenate([nc[xmi], nc[xi]]),
                             np.concatenate([sc[xmi], sc[xi]]),
                             np.concatenate([d[xm] - opts.min_msg_latency_ns, u]),
                             np.concatenate([np.full(xmi.size, -INF), l]),
                             np.concatenate([np.full(xmi.size, E_MSG, np.int8), et]))
    return out


def detect(sa: SpanArrays, prow: np.ndarray | None = None, opts: CheckOptions = CheckOptions(),
           *, node_unc: np.ndarray | None = None, warnings: Warnings | None = None) -> Detection:
    """Check every parent/child edge of the table (see module docstring)."""
    w = warnings if warnings is not None else Warnings()
    if prow is None:
        prow = link_parents(sa, w)
    K = len(sa.nodes)
    if sa.n:
        tmin, tmax = int(sa.start.min()), int(sa.start.max())
    else:
        tmin = tmax = 0
    nwin = max(1, int(opts.windows))
    wns = max(1, -(-(tmax - tmin + 1) // nwin))
    # cache-sized row ranges, two threads
    bounds = np.unique(np.append(np.arange(0, sa.n, _CHUNK, dtype=np.int64), sa.n))
    with ThreadPoolExecutor(_threads()) as ex:
        parts = list(ex.map(lambda i: _detect_range(sa, prow, int(bounds[i]), int(bounds[i + 1]),
                                                    opts, node_unc, tmin, wns, nwin),
                            range(len(bounds) - 1)))

    def cat(k):
        return np.concatenate([q[k] for q in parts])

    def add(k):
        return sum(q[k] for q in parts)
    if opts.keep_edges:
        es = [q["edges"] for q in parts]
        edges = Edges(*(np.concatenate([getattr(e, f) for e in es])
                        for f in ("a", "b", "t", "u", "l", "etype")))
    else:
        edges = Edges.empty()
    n_edges = add("n_edges")
    S = len(sa.stages) if sa.stages is not None else 0
    return Detection(
        nodes=sa.nodes, stages=sa.stages or [], n_spans=sa.n, n_edges=int(n_edges),
        edges_by_type={"message": int(add("n_msg")), "sync": int(add("n_sync")),
                       "start": int(n_edges - add("n_msg") - add("n_sync"))},
        prow=prow, v_child=cat("v_child"), v_parent=cat("v_parent"), v_kind=cat("v_kind"),
        v_mag=cat("v_mag"), v_definite=cat("v_definite"), v_same_node=cat("v_same"),
        pair_edges=add("pair_edges").reshape(K, K), pair_viol=add("pair_viol").reshape(K, K),
        stage_edges=add("stage_edges").reshape(S, S) if S else None,
        stage_viol=add("stage_viol").reshape(S, S) if S else None,
        window_start_ns=tmin + np.arange(nwin, dtype=np.int64) * wns, window_ns=int(wns),
        window_edges=add("win_edges"), window_viol=add("win_viol"),
        msg_pair=cat("msg_pair"), msg_d=cat("msg_d"), edges=edges, warnings=w)


# --- correction ---------------------------------------------------------------------

def depths(prow: np.ndarray, warnings: Warnings | None = None) -> np.ndarray:
    """Depth of each span below its root (pointer jumping, O(log depth) passes);
    spans in or under a parent cycle get depth 0 and are counted."""
    n = prow.size
    jump = np.append(np.where(prow >= 0, prow, n), n)
    dist = np.append((prow >= 0).astype(np.int64), 0)
    for _ in range(max(2, int(np.ceil(np.log2(n + 2))) + 2)):
        if (jump[:n] == n).all():
            break
        dist = dist + dist[jump]
        jump = jump[jump]
    stuck = jump[:n] != n
    if stuck.any():
        if warnings is not None:
            warnings.add("parent_cycle", f"{int(stuck.sum())} span(s) in or under a parent cycle",
                         int(stuck.sum()))
        dist[:n][stuck] = 0
    return dist[:n]


@dataclass
class Correction:
    """Extra columns; the raw times stay as they are. Each timestamp is moved
    by minus its node's offset at that moment (drift included, so a node's own
    timestamps keep their order), then by the span's CLC shift."""
    start_ns: np.ndarray        # corrected times
    end_ns: np.ndarray
    send_ns: np.ndarray
    offset_ns: np.ndarray       # minus the node's estimated offset at the span's start
    clc_ns: np.ndarray          # the controlled-logical-clock shift on top
    lo_ns: np.ndarray           # interval of offset_ns (float, +-inf where unbounded)
    hi_ns: np.ndarray
    method: np.ndarray          # codes into methods
    methods: list[str]

    def columns(self, has_send: np.ndarray | None = None) -> dict[str, pa.Array]:
        def ints(x):
            ok = np.isfinite(x)
            return pa.array(np.where(ok, x, 0).astype(np.int64), mask=~ok)
        return {
            "corr_start_ns": pa.array(self.start_ns),
            "corr_end_ns": pa.array(self.end_ns),
            "corr_send_ns": pa.array(self.send_ns, mask=None if has_send is None else ~has_send),
            "corr_offset_ns": pa.array(self.offset_ns),
            "corr_clc_ns": pa.array(self.clc_ns),
            "corr_method": pa.DictionaryArray.from_arrays(pa.array(self.method, pa.int32()),
                                                          pa.array(self.methods)),
            "corr_lo_ns": ints(self.lo_ns),
            "corr_hi_ns": ints(self.hi_ns),
        }


def correct(sa: SpanArrays, prow: np.ndarray, est, opts: CheckOptions = CheckOptions(),
            warnings: Warnings | None = None) -> Correction:
    """Apply the estimated offsets, then a forward controlled-logical-clock pass.

    The CLC pass walks the trees level by level: a cross-node child is moved
    forward just enough to follow its parent (a consumer after the send plus
    the message floor; a synchronous child inside its parent where it fits);
    a child on its parent's node takes its parent's shift, so a node's own
    spans keep their intervals; every span keeps its duration."""
    def fix(t):
        return t - np.rint(est.offset_at(sa.node, t)).astype(np.int64)
    s1 = fix(sa.start)
    shift = s1 - sa.start
    e1 = fix(sa.end)
    x1 = fix(np.where(sa.has_send, sa.send, sa.start))
    clc = np.zeros(sa.n, np.int64)
    dep = depths(prow, warnings)
    order = np.argsort(dep, kind="stable")
    ds = dep[order]
    bounds = np.flatnonzero(np.r_[True, ds[1:] != ds[:-1], True])
    for s, e in zip(bounds[:-1], bounds[1:]):
        if ds[s] == 0:
            continue
        r = order[s:e]
        p = prow[r]
        ok = p >= 0
        r, p = r[ok], p[ok]
        dp = clc[p]
        same = sa.node[r] == sa.node[p]
        kc, kp = sa.kind[r], sa.kind[p]
        is_msg = (kp == PRODUCER) & (kc == CONSUMER)
        is_sync = ((kc == INTERNAL) | (kc == CLIENT) | (kc == SERVER)) & (kp != PRODUCER)
        lower = np.where(is_msg, x1[p] + dp + opts.min_msg_latency_ns - s1[r],
                         s1[p] + dp + np.where(is_sync, opts.min_rpc_latency_ns, 0) - s1[r])
        upper = np.where(is_sync, e1[p] + dp - opts.min_rpc_latency_ns - e1[r], INF)
        fit = lower <= upper
        d = np.where(fit, np.clip(0, lower, upper), lower)
        clc[r] = np.where(same, dp, d)
    th_lo = est.lo[sa.node] + est.rate[sa.node] * (sa.start - est.t0_ns)
    th_hi = est.hi[sa.node] + est.rate[sa.node] * (sa.start - est.t0_ns)
    methods = []
    mcode = np.zeros(len(sa.nodes), np.int32)
    for i, src in enumerate(est.source):
        name = f"offset:{src}" if est.known[i] else "none"
        if name not in methods:
            methods.append(name)
        mcode[i] = methods.index(name)
    base = len(methods)
    methods = methods + [m + "+clc" for m in methods]
    method = mcode[sa.node] + np.where(clc != 0, base, 0).astype(np.int32)
    return Correction(start_ns=s1 + clc, end_ns=e1 + clc, send_ns=x1 + clc, offset_ns=shift,
                      clc_ns=clc, lo_ns=-th_hi, hi_ns=-th_lo, method=method, methods=methods)


def corrected_arrays(sa: SpanArrays, corr: Correction, clc: bool = True) -> SpanArrays:
    """The spans as corrected (clc=False: offsets only)."""
    from dataclasses import replace
    k = 0 if clc else 1
    return replace(sa, start=corr.start_ns - k * corr.clc_ns, end=corr.end_ns - k * corr.clc_ns,
                   send=corr.send_ns - k * corr.clc_ns)


# --- prediction ----------------------------------------------------------------------

def predict(latencies_ns: np.ndarray, skews_ns) -> np.ndarray:
    """Expected negative-transport rate when the receiver's clock is behind by
    s: F_L(s) = P(L < s), from one-way delays measured without skew."""
    d = np.sort(np.asarray(latencies_ns, np.int64))
    s = np.asarray(skews_ns, np.int64)
    if d.size == 0:
        return np.full(s.shape, np.nan)
    return np.searchsorted(d, s, side="left") / d.size


# --- the whole check -----------------------------------------------------------------

@dataclass
class CheckResult:
    """Everything `skewd check` reports."""
    detection: Detection
    estimate: object                      # skew.SkewEstimate used for correction
    trace_estimate: object
    daemon_estimate: object | None
    known: object | None                  # from injected_offset_ns (ground truth) if present
    after: Detection | None               # after offsets + CLC
    after_offsets_only: Detection | None  # after offsets, before CLC
    correction: Correction | None
    prediction: dict | None
    warnings: Warnings
    arrays: SpanArrays
    options: CheckOptions


def _pairs_of(det: Detection) -> list[tuple[int, int, int]]:
    K = len(det.nodes)
    e = det.pair_edges
    out = []
    for a in range(K):
        for b in range(a + 1, K):
            n = int(e[a, b] + e[b, a])
            if n:
                out.append((a, b, n))
    return out


def run(table: pa.Table, *, offsets: pa.Table | None = None,
        opts: CheckOptions = CheckOptions(), do_correct: bool = True,
        baseline: pa.Table | None = None, predict_skews_ns=None,
        warnings: Warnings | None = None) -> CheckResult:
    """Detect, estimate, correct and predict (see module docstring)."""
    from skewd import skew
    w = warnings if warnings is not None else Warnings()
    sa = SpanArrays.from_table(table, resolution_ns=opts.resolution_ns, warnings=w)
    prow = link_parents(sa, w)
    t0 = int((int(sa.start.min()) + int(sa.start.max())) // 2) if sa.n else 0
    K = len(sa.nodes)
    node_unc = None
    det0 = detect(sa, prow, opts, warnings=w)
    pairs_of = _pairs_of(det0)
    daemon = skew.from_offset_log(offsets, sa.nodes, t0, pairs_of) if offsets is not None else None
    if daemon is not None and sa.unc is None:
        node_unc = np.rint(np.where(daemon.known, (daemon.hi - daemon.lo) / 2, 0)).astype(np.int64)
        det0 = detect(sa, prow, opts, node_unc=node_unc, warnings=Warnings())
    trace_est = skew.from_edges(det0.edges, sa.nodes)
    # the daemon's view copied into the spans
    span_est = None
    if "est_offset_ns" in table.column_names and table.column("est_offset_ns").null_count < sa.n:
        col = table.column("est_offset_ns")
        c, r, has = skew.per_node_lines(sa.node, sa.start, _int64(col), _valid(col), K, t0)
        unc = np.zeros(K)
        if sa.unc is not None:
            for k in range(K):
                m = sa.node == k
                unc[k] = float(np.median(sa.unc[m])) if m.any() else 0.0
        span_est = skew.from_node_lines(sa.nodes, t0, c, r, has, unc, "span-est", pairs_of)
    known = None
    if "injected_offset_ns" in table.column_names and \
            table.column("injected_offset_ns").null_count < sa.n:
        col = table.column("injected_offset_ns")
        c, r, has = skew.per_node_lines(sa.node, sa.start, _int64(col), _valid(col), K, t0)
        known = skew.from_node_lines(sa.nodes, t0, c, r, has, np.zeros(K), "known", pairs_of)
    # the best source that covers every node of the traces
    used = trace_est
    for cand in (daemon, span_est):
        if cand is not None and cand.known[np.unique(sa.node)].all():
            used = cand
            break
    # attach known skew to the pairs of every estimate
    if known is not None:
        for e in (trace_est, daemon, span_est):
            if e is None:
                continue
            from dataclasses import replace
            e.pairs = [replace(p, known_ns=(kp.est_ns if (kp := known.pair(p.a, p.b)) else None))
                       for p in e.pairs]
    after = after_off = corr = None
    if do_correct and sa.n:
        corr = correct(sa, prow, used, opts, w)
        q = replace_opts(opts)
        after_off = detect(corrected_arrays(sa, corr, clc=False), prow, q, node_unc=node_unc,
                           warnings=Warnings())
        after = detect(corrected_arrays(sa, corr), prow, q, node_unc=node_unc, warnings=Warnings())
    prediction = None
    if baseline is not None or predict_skews_ns is not None:
        if baseline is not None:
            bsa = SpanArrays.from_table(baseline, warnings=Warnings(), stages=False)
            bdet = detect(bsa, None, replace_opts(opts), warnings=Warnings())
            lat, src = bdet.msg_d, "baseline run"
        elif after_off is not None:
            lat, src = after_off.msg_d, "this run, offsets removed"
        else:
            lat, src = det0.msg_d, "this run, as recorded"
        skews = np.asarray(predict_skews_ns if predict_skews_ns is not None else
                           [0, 1_000, 10_000, 100_000, 1_000_000, 2_000_000, 3_000_000,
                            4_000_000, 5_000_000, 10_000_000], np.int64)
        prediction = {"source": src, "n_latencies": int(lat.size), "skew_ns": skews.tolist(),
                      "rate": predict(lat, skews).tolist(),
                      "latency_p50_ns": float(np.median(lat)) if lat.size else None,
                      "latency_min_ns": int(lat.min()) if lat.size else None}
    return CheckResult(detection=det0, estimate=used, trace_estimate=trace_est,
                       daemon_estimate=daemon or span_est, known=known, after=after,
                       after_offsets_only=after_off, correction=corr, prediction=prediction,
                       warnings=w, arrays=sa, options=opts)


def replace_opts(opts: CheckOptions) -> CheckOptions:
    """The same options without keeping edges (re-checks only count)."""
    from dataclasses import replace
    return replace(opts, keep_edges=False)


def violations_table(table: pa.Table, det: Detection, limit: int | None = None) -> pa.Table:
    """The violations as rows: ids, nodes, stages, kind, magnitude, certainty,
    largest first."""
    order = np.argsort(-det.v_mag, kind="stable")
    if limit is not None:
        order = order[:limit]
    c, p = det.v_child[order], det.v_parent[order]
    same = det.v_same_node[order]
    cat = np.where(same, "instrumentation", np.where(det.v_definite[order], "definite", "possible"))
    tk = lambda name, rows: table.column(name).take(pa.array(rows))  # noqa: E731
    return pa.table({
        "trace_id": tk("trace_id", c), "span_id": tk("span_id", c),
        "parent_id": tk("span_id", p),
        "kind": pa.array([VIOLATION_KINDS[k] for k in det.v_kind[order]]),
        "magnitude_ns": pa.array(det.v_mag[order]),
        "certainty": pa.array(cat),
        "parent_node": tk("node", p), "child_node": tk("node", c),
        "parent_stage": tk("stage", p), "child_stage": tk("stage", c),
        "parent_name": tk("name", p), "child_name": tk("name", c),
        "child_start_ns": tk("start_ns", c),
    })


def with_corrections(table: pa.Table, corr: Correction) -> pa.Table:
    """The table with the correction columns appended (raw columns untouched)."""
    has_send = _valid(table.column("send_ns")) if "send_ns" in table.column_names else None
    for name, arr in corr.columns(has_send).items():
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, arr)
    return table
