"""Find, explain and correct causality violations in a span table.

Everything here works on whole columns (numpy/pyarrow) or in one C pass
over the rows (csrc/spancheck.c, csrc/strcodes.c, on two threads over row
ranges); there is no Python loop per span. The steps, each a function a
test can call:

1. `SpanArrays.from_table`: the columns as numpy arrays (ids as uint64 words,
   nodes and kinds as small integer codes, per-node clock resolution); ids and
   times are views of the table's Arrow buffers, not copies.
2. `link_parents`: the parent row of every span. Merged tables are grouped by
   trace and ordered by start, so a parent is almost always the row before its
   child or one of that row's ancestors: the join walks that chain, then the
   child's trace group (sequential, cache-friendly), then joins whatever is
   left by sorting the 64-bit ids (any order of input works; it is only
   slower).
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

from skewd import _spancheck
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


def _pool_run(tasks: list) -> list:
    """Run callables on the worker threads (the C loops release the GIL)."""
    if len(tasks) <= 1:
        return [t() for t in tasks]
    with ThreadPoolExecutor(_threads()) as ex:
        futs = [ex.submit(t) for t in tasks]
        return [f.result() for f in futs]


def _row_ranges(n: int, parts: int) -> list[tuple[int, int]]:
    b = [n * i // parts for i in range(parts + 1)]
    return [(b[i], b[i + 1]) for i in range(parts) if b[i + 1] > b[i]]


def _one(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A column as one Array, without a copy when it is one chunk already."""
    if isinstance(col, pa.ChunkedArray):
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col


def _fixed_words(col: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """fixed_size_binary(width) -> (n, width//8) uint64 view (zero-copy when one chunk)."""
    arr = _one(col)
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
    """Where a column is not null, as bools (from its validity bitmap, in C)."""
    if col.null_count == 0:
        return np.ones(len(col), bool)
    arr = _one(col)
    vb = arr.buffers()[0] if arr.buffers() else None
    if vb is None:
        return pc.is_valid(arr).to_numpy(zero_copy_only=False)
    out = np.empty(len(arr), bool)
    _spancheck.bits(np.frombuffer(vb, np.uint8), arr.offset, out)
    return out


def _int64(col, fill: int = 0) -> np.ndarray:
    if col.null_count:
        col = pc.fill_null(col, fill)
    arr = _one(col)
    return arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _values(col) -> np.ndarray:
    """An int64 column's values as a read-only view of its buffer: nothing is
    copied, and null slots hold whatever the buffer holds there (read them
    only where the column is valid)."""
    arr = _one(col)
    if arr.type != pa.int64():
        arr = arr.cast(pa.int64())
    buf = arr.buffers()[1]
    n = len(arr)
    if buf is None or n == 0:
        return np.zeros(n, np.int64)
    return np.frombuffer(buf, dtype=np.int64, count=n, offset=arr.offset * 8)


#: most distinct values a string column is encoded with in C (more: pyarrow)
_STR_CAP = 65536
#: a string column is encoded in pieces on threads from this many rows
_STR_SPLIT = 1 << 20


class _StringCodes:
    """Integer codes of a string column in first-appearance order (null
    last), encoded in C in `parts` row ranges that may run on threads
    (`tasks`), then unified (`finish`)."""

    def __init__(self, col, parts: int = 1):
        arr = _one(col)
        if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type) or \
                not (pa.types.is_string(arr.type) or pa.types.is_binary(arr.type)):
            arr = arr.cast(pa.string())
        self.arr = arr
        self.n = n = len(arr)
        vb, ob, db = arr.buffers()[:3]
        self.offsets = np.frombuffer(ob, np.int32, count=n + 1, offset=arr.offset * 4) \
            if ob is not None and n else np.zeros(n + 1, np.int32)
        self.data = np.frombuffer(db, np.uint8) if db is not None and db.size else \
            np.zeros(1, np.uint8)
        self.valid = np.frombuffer(vb, np.uint8) if vb is not None and arr.null_count else None
        self.codes = np.empty(n, np.int32)
        self.ranges = _row_ranges(n, parts if n >= _STR_SPLIT else 1)
        self.dicts = [_spancheck.StrCodes(_STR_CAP) for _ in self.ranges]
        self.ok = [False] * len(self.ranges)

    def tasks(self) -> list:
        def enc(i):
            lo, hi = self.ranges[i]
            self.ok[i] = self.dicts[i].encode(self.offsets, self.data, self.valid, self.arr.offset,
                                              lo, hi, self.codes[lo:hi])
        return [lambda i=i: enc(i) for i in range(len(self.ranges))]

    def finish(self) -> tuple[np.ndarray, list]:
        if not all(self.ok):     # too many distinct values for the C dictionary
            return _codes_arrow(self.arr)
        index: dict = {}
        for (lo, hi), d in zip(self.ranges, self.dicts):
            vals = [None if c == d.null_code else self.arr[int(d.first[c])].as_py()
                    for c in range(d.n)]
            lut = np.array([index.setdefault(v, len(index)) for v in vals], np.int32)
            if lut.size and not (lut == np.arange(lut.size)).all():
                _spancheck.remap(self.codes[lo:hi], lut)
        values = list(index)
        if None in index and values[-1] is not None:     # null last
            k = index[None]
            lut = np.arange(len(values), dtype=np.int32)
            lut[k + 1:] -= 1
            lut[k] = len(values) - 1
            _spancheck.remap(self.codes, lut)
            values = values[:k] + values[k + 1:] + [None]
        return self.codes, values


def _codes_arrow(arr: pa.Array) -> tuple[np.ndarray, list]:
    """Integer codes and their values with pyarrow's dictionary encoding."""
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    idx = arr.indices
    codes = pc.fill_null(idx, 0).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    values = arr.dictionary.to_pylist()
    if idx.null_count:
        values = values + [None]
        codes = np.where(_valid(idx), codes, len(values) - 1).astype(np.int32)
    return codes, values


def _codes(col) -> tuple[np.ndarray, list]:
    """Integer codes and their values for a string (or dictionary) column."""
    arr = _one(col)
    if pa.types.is_dictionary(arr.type):
        return _codes_arrow(arr)
    job = _StringCodes(arr, _threads())
    _pool_run(job.tasks())
    return job.finish()


def _kind_codes(col, w: Warnings) -> np.ndarray:
    """Kind codes into KINDS (unknown kinds count as internal, and warn); a
    dictionary column already in KINDS' order is used as it is (a view)."""
    arr = _one(col)
    if pa.types.is_dictionary(arr.type) and arr.null_count == 0 and \
            pa.types.is_integer(arr.indices.type):
        codes, values = arr.indices.to_numpy(zero_copy_only=True), arr.dictionary.to_pylist()
    else:
        codes, values = _codes(arr)
    lut = np.array([_KIND_ALIASES.get(str(v).lower(), -1) if v is not None else -1
                    for v in values], np.int8)
    bad = lut < 0
    if bad.any():
        nbad = int(np.isin(codes, np.flatnonzero(bad)).sum())
        w.add("unknown_kind", f"{[values[i] for i in np.flatnonzero(bad)][:3]}", nbad)
        lut[bad] = INTERNAL
    if not len(lut):
        return np.zeros(len(arr), np.int8)
    if codes.dtype == np.int8 and (lut == np.arange(lut.size)).all():
        return codes
    return lut[codes]


@dataclass
class SpanArrays:
    """The span table as numpy columns (see module docstring). Columns that
    need no conversion are read-only views of the table's Arrow buffers."""
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
        names = table.column_names
        cols = {}
        # views first (no copies), then the work, as tasks on two threads
        cols["trace_id"] = _fixed_words(table.column("trace_id"), 16)
        cols["span_id"] = _fixed_words(table.column("span_id"), 8)[:, 0]
        cols["parent_id"] = _fixed_words(table.column("parent_id"), 8)[:, 0]
        cols["start_ns"] = _values(table.column("start_ns"))
        cols["end_ns"] = _values(table.column("end_ns"))
        if "send_ns" in names:
            cols["send_ns"] = _values(table.column("send_ns"))
        strings = {c: table.column(c) for c in ("node", "stage", "clock")
                   if c in names and (c != "stage" or stages)}
        jobs = {c: _StringCodes(col, _threads()) for c, col in strings.items()
                if not pa.types.is_dictionary(col.type)}
        tasks = [t for j in jobs.values() for t in j.tasks()]

        def put(name, f):
            def task():
                cols[name] = f()
            tasks.append(task)
        put("has_parent", lambda: _valid(table.column("parent_id")))
        if "send_ns" in names:
            put("has_send", lambda: _valid(table.column("send_ns")))
        if "est_uncertainty_ns" in names:
            ucol = table.column("est_uncertainty_ns")
            put("est_uncertainty_ns",
                lambda: None if ucol.null_count == n else np.abs(_int64(ucol)))
        for c, col in strings.items():
            if c not in jobs:
                put(c, lambda col=col: _codes(col))
        _pool_run(tasks)
        for c, j in jobs.items():
            cols[c] = j.finish()
        cols["kind"] = _kind_codes(table.column("kind"), w)
        node_codes, nodes = cols["node"]
        nodes = [x if x is not None else "?" for x in nodes]
        # per node, the coarsest resolution of the clocks it used
        res_node = np.ones(len(nodes), np.int64)
        clocks_by_node: dict[str, list[str]] = {}
        if "clock" in cols:
            ccodes, cvals = cols.pop("clock")
            res_map = dict(CLOCK_RESOLUTION_NS)
            res_map.update(resolution_ns or {})
            counts = np.zeros(len(nodes) * max(1, len(cvals)), np.int64)
            if len(cvals) and len(nodes):
                parts = [(lo, hi, np.zeros_like(counts)) for lo, hi in _row_ranges(n, _threads())]
                _pool_run([lambda p=p: _spancheck.cross(node_codes[p[0]:p[1]], ccodes[p[0]:p[1]],
                                                        len(nodes), len(cvals), p[2])
                           for p in parts])
                counts = sum(p[2] for p in parts)
            del ccodes
            for key in np.flatnonzero(counts):
                nc, cc = divmod(int(key), len(cvals))
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

#: a trace group of at most this many rows is searched whole for a parent
#: the ancestor walk did not find
_SCAN_MAX = 256


def _trace_span_key(trace: np.ndarray, span: np.ndarray) -> np.ndarray:
    """A 64-bit key of (trace id, span id): span ids that repeat in other
    traces get other keys."""
    with np.errstate(over="ignore"):
        return span ^ (trace[:, 0] * np.uint64(0x9E3779B97F4A7C15)) ^ \
            (trace[:, 1] * np.uint64(0xC2B2AE3D27D4EB4F))


def _sort_join(sa: SpanArrays, idx: np.ndarray, prow: np.ndarray, w: Warnings) -> None:
    """Parents of children idx by sorting (trace, span id) keys (general input
    order)."""
    if idx.size == 0:
        return
    # restrict the span side to traces that still have unresolved children
    bits = 24 if sa.n > (1 << 20) else 16
    mask = np.uint64((1 << bits) - 1)
    table = np.zeros(1 << bits, bool)
    table[(sa.trace[idx, 0] & mask).astype(np.int64)] = True
    cand = np.flatnonzero(table[(sa.trace[:, 0] & mask).astype(np.int64)])
    keys = _trace_span_key(sa.trace[cand], sa.span[cand])
    order = np.argsort(keys, kind="stable")
    skeys = keys[order]
    srows = cand[order]
    want = _trace_span_key(sa.trace[idx], sa.parent[idx])
    pos = np.searchsorted(skeys, want)
    todo = np.arange(idx.size)
    missed = []
    for _ in range(8):   # keys that collide: look at the next few
        if todo.size == 0:
            break
        p = pos[todo]
        inb = p < skeys.size
        pp = np.where(inb, p, 0)
        hit = inb & (skeys[pp] == want[todo])
        rows = srows[pp]
        c = idx[todo]
        same = hit & (sa.trace[rows, 0] == sa.trace[c, 0]) & \
            (sa.trace[rows, 1] == sa.trace[c, 1]) & (sa.span[rows] == sa.parent[c])
        prow[c[same]] = rows[same]
        missed.append(c[~hit])
        todo = todo[hit & ~same]
        pos[todo] += 1
    missed.append(idx[todo])
    missed = np.concatenate(missed)
    if missed.size:   # the parent's span id is there, but in another trace
        ids = np.sort(sa.span[cand])
        q = np.minimum(np.searchsorted(ids, sa.parent[missed]), max(ids.size - 1, 0))
        other = int((ids[q] == sa.parent[missed]).sum()) if ids.size else 0
        if other:
            w.add("parent_in_other_trace", None, other)


def _group_split(trace: np.ndarray, n: int, parts: int) -> list[tuple[int, int]]:
    """Row ranges of about n/parts rows, each starting where a trace starts
    (so no trace's rows are split between two ranges unless it is huge)."""
    cuts = [0]
    for lo, _ in _row_ranges(n, parts)[1:]:
        win = trace[lo - 1:min(n, lo + 4096)]
        diff = np.flatnonzero((win[1:, 0] != win[:-1, 0]) | (win[1:, 1] != win[:-1, 1]))
        cut = lo + int(diff[0]) if diff.size else lo
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(n)
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def link_parents(sa: SpanArrays, warnings: Warnings | None = None) -> np.ndarray:
    """Row of each span's parent (same trace, parent_id == span_id), -1 if none.

    In a table grouped by trace and ordered by start (as `skewd merge` writes
    it) a span's parent is the row before it or one of that row's ancestors:
    the C pass (csrc/spancheck.c) walks that chain, then the span's trace
    group, on two threads over row ranges. Whatever it leaves (any other
    input order) is joined by sorting the 64-bit ids: any order works, it is
    only slower."""
    w = warnings if warnings is not None else Warnings()
    prow = np.empty(sa.n, np.int64)
    trace = np.ascontiguousarray(sa.trace, np.uint64)
    span = np.ascontiguousarray(sa.span, np.uint64)
    parent = np.ascontiguousarray(sa.parent, np.uint64)
    has_parent = np.ascontiguousarray(sa.has_parent, bool)
    res = _pool_run([lambda r=r: _spancheck.join(trace, span, parent, has_parent, r[0], r[1],
                                                 _SCAN_MAX, prow)
                     for r in _group_split(trace, sa.n, _threads())])
    left = sum(r[0] for r in res)
    self_parent = sum(r[1] for r in res)
    orphans = self_parent
    if left:
        rest = np.flatnonzero(prow == _spancheck.ELSEWHERE)
        prow[rest] = -1
        _sort_join(sa, rest, prow, w)
        selfp = rest[prow[rest] == rest]
        prow[selfp] = -1
        self_parent += selfp.size
        orphans += int((prow[rest] < 0).sum())
    if self_parent:
        w.add("parent_cycle", "span is its own parent", int(self_parent))
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


def _hists(K: int, S: int, nwin: int) -> dict:
    z = np.zeros
    return {"pair_edges": z(K * K, np.int64), "pair_viol": z(K * K, np.int64),
            "stage_edges": z(S * S, np.int64), "stage_viol": z(S * S, np.int64),
            "win_edges": z(nwin, np.int64), "win_viol": z(nwin, np.int64)}


_EDGE_FIELDS = (("a", np.int32), ("b", np.int32), ("t", np.int64), ("u", np.int64),
                ("l", np.int64), ("type", np.int8))
_V_FIELDS = (("v_child", np.int64), ("v_parent", np.int64), ("v_mag", np.int64),
             ("v_kind", np.int8), ("v_definite", bool), ("v_same", bool))


def _count_range(chk, lo: int, hi: int, K: int, S: int, nwin: int) -> dict:
    """First pass over a range: its histograms, and how much it yields."""
    e64, e32, e8 = np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int8)
    out = {"v_base": [0, 0, 0], "v_cap": [0, 0, 0], "m_cap": 0, "o_cap": 0,
           "v_child": e64, "v_parent": e64, "v_mag": e64, "v_kind": e8,
           "v_definite": np.empty(0, bool), "v_same": np.empty(0, bool),
           "m_pair": e64, "m_d": e64, "me_a": e32, "me_b": e32, "me_t": e64, "me_u": e64,
           "me_l": e64, "me_type": e8, "o_a": e32, "o_b": e32, "o_t": e64, "o_u": e64,
           "o_l": e64, "o_type": e8, **_hists(K, S, nwin)}
    _, vn, mn, on, n_edges, n_msg, n_sync = chk.run(lo, hi, out)
    out.update(v_n=vn, m_n=mn, o_n=on, n_edges=n_edges, n_msg=n_msg, n_sync=n_sync)
    return out


def detect(sa: SpanArrays, prow: np.ndarray | None = None, opts: CheckOptions = CheckOptions(),
           *, node_unc: np.ndarray | None = None, warnings: Warnings | None = None) -> Detection:
    """Check every parent/child edge of the table (see module docstring).

    Two passes in C (csrc/spancheck.c) over cache-sized row ranges on two
    threads: the first counts what each range yields (and fills the
    histograms), the second writes each range's violations (before-parent,
    negative transport, ends-after), message delays and cross-node edges
    straight into their place in the result arrays, in row-range order."""
    w = warnings if warnings is not None else Warnings()
    if prow is None:
        prow = link_parents(sa, w)
    K = len(sa.nodes)
    S = len(sa.stages) if sa.stage is not None and sa.stages is not None else 0
    if sa.n:
        tmin, tmax = int(sa.start.min()), int(sa.start.max())
    else:
        tmin = tmax = 0
    nwin = max(1, int(opts.windows))
    wns = max(1, -(-(tmax - tmin + 1) // nwin))
    keep = bool(opts.keep_edges)
    ranges = [(lo, min(sa.n, lo + _CHUNK)) for lo in range(0, sa.n, _CHUNK)] if K else []
    counts = []
    if ranges:
        chk = _spancheck.EdgeCheck(
            np.ascontiguousarray(prow, np.int64), np.ascontiguousarray(sa.kind, np.int8),
            np.ascontiguousarray(sa.node, np.int32),
            np.ascontiguousarray(sa.stage, np.int32) if S else None,
            np.ascontiguousarray(sa.start, np.int64), np.ascontiguousarray(sa.end, np.int64),
            np.ascontiguousarray(sa.send, np.int64), np.ascontiguousarray(sa.has_send, bool),
            None if sa.unc is None else np.ascontiguousarray(sa.unc, np.int64),
            None if node_unc is None else np.ascontiguousarray(node_unc, np.int64),
            np.ascontiguousarray(sa.res_node, np.int64), K, S,
            int(opts.min_msg_latency_ns), int(opts.min_rpc_latency_ns), tmin, int(wns), nwin, keep)
        counts = _pool_run([lambda r=r: _count_range(chk, r[0], r[1], K, S, nwin)
                            for r in ranges])
    # where each range's output goes
    nv = [sum(q["v_n"]) for q in counts]
    nm = [q["m_n"] for q in counts]
    ne = [q["m_n"] + q["o_n"] for q in counts] if keep else [0] * len(counts)
    voff, moff, eoff = (np.concatenate([[0], np.cumsum(x, dtype=np.int64)]).astype(int)
                        for x in (nv or [0], nm or [0], ne or [0]))
    v = {f: np.empty(int(voff[-1]), t) for f, t in _V_FIELDS}
    msg_pair, msg_d = np.empty(int(moff[-1]), np.int64), np.empty(int(moff[-1]), np.int64)
    e = {f: np.empty(int(eoff[-1]) if keep else 0, t) for f, t in _EDGE_FIELDS}

    def fill(i):
        (lo, hi), q = ranges[i], counts[i]
        vn, mn, on = q["v_n"], q["m_n"], q["o_n"] if keep else 0
        out = {"v_base": [0, vn[0], vn[0] + vn[1]], "v_cap": list(vn), "m_cap": mn,
               "o_cap": on, "m_pair": msg_pair[moff[i]:moff[i] + mn],
               "m_d": msg_d[moff[i]:moff[i] + mn], **_hists(K, S, nwin)}
        out.update({f: a[voff[i]:voff[i + 1]] for f, a in v.items()})
        e0 = eoff[i] if keep else 0
        out.update({"me_" + f: a[e0:e0 + (mn if keep else 0)] for f, a in e.items()})
        out.update({"o_" + f: a[e0 + mn:e0 + mn + on] if keep else a for f, a in e.items()})
        if not chk.run(lo, hi, out)[0]:
            raise RuntimeError("edge check: a range yielded more in its second pass")
    if counts:
        _pool_run([lambda i=i: fill(i) for i in range(len(ranges))])
    edges = Edges(e["a"], e["b"], e["t"], e["u"], e["l"], e["type"]) if keep else Edges.empty()

    def add(name, size):
        return sum((q[name] for q in counts), np.zeros(size, np.int64))
    n_edges = sum(q["n_edges"] for q in counts)
    n_msg = sum(q["n_msg"] for q in counts)
    n_sync = sum(q["n_sync"] for q in counts)
    return Detection(
        nodes=sa.nodes, stages=sa.stages or [], n_spans=sa.n, n_edges=int(n_edges),
        edges_by_type={"message": int(n_msg), "sync": int(n_sync),
                       "start": int(n_edges - n_msg - n_sync)},
        prow=prow, v_child=v["v_child"], v_parent=v["v_parent"], v_kind=v["v_kind"],
        v_mag=v["v_mag"], v_definite=v["v_definite"], v_same_node=v["v_same"],
        pair_edges=add("pair_edges", K * K).reshape(K, K),
        pair_viol=add("pair_viol", K * K).reshape(K, K),
        stage_edges=add("stage_edges", S * S).reshape(S, S) if S else None,
        stage_viol=add("stage_viol", S * S).reshape(S, S) if S else None,
        window_start_ns=tmin + np.arange(nwin, dtype=np.int64) * wns, window_ns=int(wns),
        window_edges=add("win_edges", nwin), window_viol=add("win_viol", nwin),
        msg_pair=msg_pair, msg_d=msg_d, edges=edges, warnings=w)


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
