"""Synthetic traces with known clocks, for tests and benchmarks.

Two shapes, both built vectorised over traces (one numpy pass per span
position in the template, never a Python loop per span):

- `pipeline`: a chain of stages (source -> ... -> sink), each stage on a
  node, joined by producer/consumer messages. Message edges are one-way: they
  bound the receiver's clock from above only.
- `rpc`: trees of client/server calls. A client span on node A nests a server
  span on node B (request latency, work, response latency), so every call
  bounds B's clock against A's from both sides.

Each node's clock reads  true + offset + drift * (true - epoch), rounded down
to its resolution; `Truth` knows that function and answers what the skew
between two nodes was at any time. `injected_offset_ns` carries that ground
truth per span (at its start), as the injector does in real runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from skewd.errors import UsageError
from skewd.schema import KINDS, SPAN_SCHEMA, with_metadata

_KIND_TYPE = SPAN_SCHEMA.field("kind").type


@dataclass(frozen=True)
class NodeClock:
    """One node's clock against true time."""
    offset_ns: int = 0
    drift_ppb: float = 0.0
    resolution_ns: int = 1
    uncertainty_ns: int | None = None   # fills est_uncertainty_ns when set
    name: str = "realtime"              # the `clock` column


@dataclass(frozen=True)
class Latency:
    """floor + exponential(mean - floor): the shape of a transport's one-way delay."""
    floor_ns: int = 20_000
    mean_ns: int = 60_000

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        extra = max(self.mean_ns - self.floor_ns, 0)
        out = np.full(n, self.floor_ns, dtype=np.int64)
        if extra:
            out += rng.exponential(extra, n).astype(np.int64)
        return out


@dataclass(frozen=True)
class Truth:
    """The clocks a generated table was recorded with."""
    clocks: dict[str, NodeClock]
    epoch_ns: int

    def offset_ns(self, node: str, t_ns) -> np.ndarray:
        c = self.clocks.get(node, NodeClock())
        t = np.asarray(t_ns, dtype=np.float64)
        return c.offset_ns + c.drift_ppb * 1e-9 * (t - self.epoch_ns)

    def skew_ns(self, a: str, b: str, t_ns) -> np.ndarray:
        """theta_b - theta_a: how far b's clock is ahead of a's at true time t."""
        return self.offset_ns(b, t_ns) - self.offset_ns(a, t_ns)


@dataclass
class _Builder:
    """Columns of one generated table, appended one span position at a time."""
    n_traces: int
    trace_ids: np.ndarray                  # (n_traces, 2) uint64
    cols: dict = field(default_factory=lambda: {k: [] for k in (
        "trace", "span", "parent", "name", "kind", "node", "stage",
        "start", "end", "send")})
    next_id: int = 0
    rng: np.random.Generator | None = None

    def new_ids(self) -> np.ndarray:
        # unique, random-looking 64-bit ids: a bijective mix of a counter
        base = np.arange(self.next_id, self.next_id + self.n_traces, dtype=np.uint64)
        self.next_id += self.n_traces
        x = base * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019)
        x ^= x >> np.uint64(31)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(29)
        return x

    def add(self, name, kind, node, stage, start, end, parent=None, send=None) -> np.ndarray:
        sid = self.new_ids()
        c = self.cols
        c["trace"].append(np.arange(self.n_traces))
        c["span"].append(sid)
        c["parent"].append(parent)
        c["name"].append(name)
        c["kind"].append(KINDS.index(kind))
        c["node"].append(node)
        c["stage"].append(stage)
        c["start"].append(np.asarray(start, dtype=np.int64))
        c["end"].append(np.asarray(end, dtype=np.int64))
        c["send"].append(None if send is None else np.asarray(send, dtype=np.int64))
        return sid

    def table(self, truth: Truth, order: str, rng: np.random.Generator) -> pa.Table:
        c = self.cols
        m, k = self.n_traces, len(c["span"])
        n = m * k
        # position-major arrays (position p of trace t at p*m + t)
        trace_row = np.concatenate(c["trace"])
        span = np.concatenate(c["span"])
        has_parent = np.concatenate([np.full(m, p is not None) for p in c["parent"]])
        parent = np.concatenate([p if p is not None else np.zeros(m, np.uint64)
                                 for p in c["parent"]])
        has_send = np.concatenate([np.full(m, s is not None) for s in c["send"]])
        send_true = np.concatenate([s if s is not None else np.zeros(m, np.int64)
                                    for s in c["send"]])
        start_true = np.concatenate(c["start"])
        end_true = np.concatenate(c["end"])
        pos = np.repeat(np.arange(k), m)

        names = sorted(set(c["name"]))
        nodes = sorted(set(c["node"]))
        stages = sorted(set(c["stage"]))
        name_code = np.array([names.index(x) for x in c["name"]], np.int32)[pos]
        node_code = np.array([nodes.index(x) for x in c["node"]], np.int32)[pos]
        stage_code = np.array([stages.index(x) for x in c["stage"]], np.int32)[pos]
        kind_code = np.array(c["kind"], np.int8)[pos]

        # each node's clock applied to the true times
        off = np.array([truth.clocks.get(x, NodeClock()).offset_ns for x in nodes], np.float64)
        drift = np.array([truth.clocks.get(x, NodeClock()).drift_ppb for x in nodes]) * 1e-9
        res = np.array([max(1, truth.clocks.get(x, NodeClock()).resolution_ns) for x in nodes],
                       np.int64)
        unc = [truth.clocks.get(x, NodeClock()).uncertainty_ns for x in nodes]
        clock_names = [truth.clocks.get(x, NodeClock()).name for x in nodes]
        o, d, r = off[node_code], drift[node_code], res[node_code]

        def read(t):
            v = t + np.rint(o + d * (t - truth.epoch_ns)).astype(np.int64)
            return v - np.mod(v, r)
        start, end = read(start_true), read(end_true)
        send = read(send_true)
        injected = np.rint(o + d * (start_true - truth.epoch_ns)).astype(np.int64)

        if order == "trace":
            perm = np.lexsort((start_true, trace_row))
        elif order == "node":
            perm = np.lexsort((end_true, node_code))
        elif order == "shuffle":
            perm = rng.permutation(n)
        elif order == "position":
            perm = None
        else:
            raise UsageError(f"order {order!r}: use trace, node, shuffle or position")

        def pick(a):
            return a if perm is None else a[perm]
        trace_row, span, parent, has_parent = map(pick, (trace_row, span, parent, has_parent))
        start, end, send, has_send, injected = map(pick, (start, end, send, has_send, injected))
        name_code, node_code, stage_code, kind_code = map(
            pick, (name_code, node_code, stage_code, kind_code))

        tid = self.trace_ids[trace_row]
        unc_arr = None
        if any(u is not None for u in unc):
            ua = np.array([u if u is not None else 0 for u in unc], np.int64)
            um = np.array([u is not None for u in unc])
            unc_arr = pa.array(ua[node_code], mask=~um[node_code])
        cols = {
            "trace_id": _fixed(tid, 16),
            "span_id": _fixed(span, 8),
            "parent_id": _fixed(parent, 8, valid=has_parent),
            "name": _strings(name_code, names),
            "kind": pa.DictionaryArray.from_arrays(pa.array(kind_code, pa.int8()),
                                                   pa.array(KINDS)),
            "node": _strings(node_code, nodes),
            "stage": _strings(stage_code, stages),
            "start_ns": pa.array(start),
            "end_ns": pa.array(end),
            "send_ns": pa.array(send, mask=~has_send),
            "clock": _strings(node_code, clock_names),
            "injected_offset_ns": pa.array(injected),
            "est_offset_ns": pa.nulls(n, pa.int64()),
            "est_uncertainty_ns": unc_arr if unc_arr is not None else pa.nulls(n, pa.int64()),
        }
        return pa.Table.from_arrays([cols[f.name] for f in SPAN_SCHEMA],
                                    schema=with_metadata(SPAN_SCHEMA, source="tracegen"))


def _fixed(words: np.ndarray, width: int, valid: np.ndarray | None = None) -> pa.Array:
    """uint64 words (n,) or (n, 2) -> fixed_size_binary(width), zero-copy."""
    buf = pa.py_buffer(np.ascontiguousarray(words).view(np.uint8))
    n = words.shape[0]
    vbuf = None
    if valid is not None and not valid.all():
        vbuf = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.binary(width), n, [vbuf, buf])


def _strings(codes: np.ndarray, values: list[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()),
                                          pa.array(values)).cast(pa.string())


def _setup(n_traces, seed, clocks, start_ns, epoch_ns):
    if n_traces < 1:
        raise UsageError("n_traces must be at least 1")
    rng = np.random.default_rng(seed)
    tids = rng.integers(0, 2**63, (n_traces, 2), dtype=np.int64).view(np.uint64)
    truth = Truth(dict(clocks or {}), epoch_ns if epoch_ns is not None else start_ns)
    b = _Builder(n_traces, tids)
    b.next_id = int(rng.integers(0, 2**62))    # ids differ between seeds
    return rng, b, truth


def pipeline(n_traces: int, stages: list[tuple[str, str]], *,
             clocks: dict[str, NodeClock] | None = None, latency: Latency = Latency(),
             work_ns: int = 200_000, interval_ns: int = 1_000_000,
             start_ns: int = 1_700_000_000_000_000_000, epoch_ns: int | None = None,
             seed: int = 0, order: str = "trace") -> tuple[pa.Table, Truth]:
    """Traces through a chain of (stage, node) pairs joined by messages.

    Per stage: a consumer span (root `internal` at the source) with an
    internal `process` child and a producer `send` child whose send_ns the
    next stage's consumer carries. Trace i starts at start_ns + i*interval_ns."""
    if len(stages) < 2:
        raise UsageError("a pipeline needs at least two stages")
    rng, b, truth = _setup(n_traces, seed, clocks, start_ns, epoch_ns)
    t0 = start_ns + np.arange(n_traces, dtype=np.int64) * interval_ns
    prev_prod, prev_send = None, None
    for i, (stage, node) in enumerate(stages):
        if i == 0:
            s = t0
            parent, kind, send = None, "internal", None
        else:
            s = prev_send + latency.sample(rng, n_traces)
            parent, kind, send = prev_prod, "consumer", prev_send
        w = (rng.exponential(work_ns, n_traces).astype(np.int64) + work_ns // 4)
        last = i == len(stages) - 1
        e = s + w + (0 if last else 30_000)
        root = b.add(stage if i == 0 else f"{stage} receive", kind, node, stage, s, e,
                     parent=parent, send=send)
        b.add(f"{stage} process", "internal", node, stage, s + w // 10, s + w - w // 10,
              parent=root)
        if not last:
            ps = s + w
            prev_send = ps + 1_000
            prev_prod = b.add(f"{stage} send", "producer", node, stage, ps, ps + 20_000,
                              parent=root, send=prev_send)
    return b.table(truth, order, rng), truth


def rpc(n_traces: int, calls: list[tuple[str, str, str]], *,
        clocks: dict[str, NodeClock] | None = None,
        request: Latency = Latency(), response: Latency = Latency(),
        work_ns: int = 100_000, interval_ns: int = 1_000_000,
        start_ns: int = 1_700_000_000_000_000_000, epoch_ns: int | None = None,
        seed: int = 0, order: str = "trace") -> tuple[pa.Table, Truth]:
    """RPC trees. `calls` lists (caller_node, callee_node, callee_stage) in
    tree order: the first caller is the root node (its root server span is
    created automatically); a later call whose caller_node is a callee already
    created nests under that callee's server span (the last one made), so
    [("a","b","B"), ("b","c","C"), ("a","d","D")] is a -> b -> c and a -> d.
    Calls of one server run one after another inside it."""
    if not calls:
        raise UsageError("rpc needs at least one call")
    rng, b, truth = _setup(n_traces, seed, clocks, start_ns, epoch_ns)
    t0 = start_ns + np.arange(n_traces, dtype=np.int64) * interval_ns
    root_node = calls[0][0]
    # durations: compute each server's total duration bottom-up, then lay out
    children: dict[int, list[int]] = {-1: []}
    owner = {root_node: -1}            # node -> index of its latest server span
    for j, (caller, callee, _) in enumerate(calls):
        if caller not in owner:
            raise UsageError(f"call {j}: caller {caller!r} has no server span yet")
        children.setdefault(owner[caller], []).append(j)
        children.setdefault(j, [])
        owner[callee] = j
    req = {j: request.sample(rng, n_traces) for j in range(len(calls))}
    rsp = {j: response.sample(rng, n_traces) for j in range(len(calls))}
    work = {j: rng.exponential(work_ns, n_traces).astype(np.int64) + 10_000
            for j in [-1] + list(range(len(calls)))}
    gap = 5_000

    dur: dict[int, np.ndarray] = {}

    def server_dur(j):
        d = work[j] + gap
        for c in children[j]:
            d = d + req[c] + server_dur(c) + rsp[c] + gap
        dur[j] = d
        return d
    server_dur(-1)

    def emit(j, s, node, stage, parent):
        kind = "server"
        sid = b.add(f"{stage} handle", kind, node, stage, s, s + dur[j], parent=parent)
        t = s + gap
        for c in children[j]:
            _, callee, cstage = calls[c]
            cs, ce = t, t + req[c] + dur[c] + rsp[c]
            cid = b.add(f"call {cstage}", "client", node, stage, cs, ce, parent=sid)
            emit(c, cs + req[c], callee, cstage, cid)
            t = ce + gap
        b.add(f"{stage} work", "internal", node, stage, t, t + work[j], parent=sid)
    emit(-1, t0, root_node, "frontend", None)
    return b.table(truth, order, rng), truth


def concat(*tables: pa.Table) -> pa.Table:
    return pa.concat_tables(tables).combine_chunks()
