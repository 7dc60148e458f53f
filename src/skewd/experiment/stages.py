"""The pipeline's stages, each a separate process (a "node"):

    source → preprocess → model → postprocess → sink

Run one with `python -m skewd.experiment.stages CONFIG.json`. The runner
starts all five, waits for a line "READY" on each one's stdout, then writes
"GO <t0_ns> <t_end_ns>" to the source's stdin: the source sends requests
(evenly spaced at the configured rate, or as fast as the pipeline takes them
with rate 0) from t0 until t_end on CLOCK_REALTIME, then an end-of-stream
message that each stage forwards before it exits. SIGTERM or SIGINT ends a
stage early, its span log flushed.

Each stage records, with skewd's tracer on its own skewed clock, a consumer
span per message received (carrying the producer's send time) and a producer
span per message sent. A message that comes without a trace context is passed
on without one, untraced: the source sends such messages when told to trace
only every other window of time (trace_windows_ns), so that a benchmark can
compare traced and untraced windows in the same processes. The payload
carries the request id and the source's send time on the unskewed clock, so
the sink's end-to-end latency is true latency whatever skew is injected. The
sink checks every output against workload.Reference once the stream has
ended and keeps a record per request (sink.arrow: ids, times, whether the
output was correct and whether the request came traced).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from skewd import clocks
from skewd.errors import SkewdError
from skewd.experiment import workload
from skewd.experiment.transports.base import Message, TransportSpec, open_transport

STAGES = ("source", "preprocess", "model", "postprocess", "sink")
EDGES = tuple(f"{a}->{b}" for a, b in zip(STAGES, STAGES[1:]))
EOS_HEADER = "skewd-eos"
#: exit status of a stage that could not start (its reason is on stderr)
EXIT_SETUP = 3


def edges_of(stage: str) -> tuple[str | None, str | None]:
    """(edge into the stage, edge out of it); None at the ends."""
    i = STAGES.index(stage)
    return (EDGES[i - 1] if i > 0 else None, EDGES[i] if i < len(EDGES) else None)


@dataclass(frozen=True)
class NodeConfig:
    node: str
    stage: str
    transport: TransportSpec
    status_dir: str
    log_dir: str | None = None          # None: uninstrumented, no spans
    seed: int = 1
    rate: float = 300.0                 # source: requests/s; 0 = as fast as taken
    cpus: list[int] | None = None       # run only on these CPUs (None: anywhere)
    #: source, traced: trace only the requests sent in every other window of
    #: this length (0: every request); a relay traces what comes traced
    trace_windows_ns: int = 0
    fault_after: int | None = None      # testing: die (no flush) after this many messages

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> "NodeConfig":
        d = json.loads(text)
        d["transport"] = TransportSpec(**d["transport"])
        return NodeConfig(**d)


@dataclass
class NodeStatus:
    node: str
    stage: str
    received: int = 0
    sent: int = 0
    end: str = "running"                # eos | terminated | error
    error: str | None = None
    extra: dict = field(default_factory=dict)


class _Stop:
    def __init__(self):
        self.flag = threading.Event()
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, lambda *_: self.flag.set())


def _eos(msg: Message) -> bool:
    return msg.header(EOS_HEADER) is not None


def _eos_message() -> Message:
    return Message(payload=b"", headers=[(EOS_HEADER, b"1")])


class _Tracing:
    """The stage's view of the tracer: nothing at all when uninstrumented."""

    def __init__(self, cfg: NodeConfig):
        self.tracer = None
        if cfg.log_dir is not None:
            from skewd import Tracer
            # drains every 100 ms (the most the tracer allows): each drain has a
            # fixed cost, and a killed stage loses at most that much of its spans
            self.tracer = Tracer(node=cfg.node, stage=cfg.stage, log_dir=cfg.log_dir,
                                 flush_interval=0.1)
            from skewd.tracer import extract_headers, inject_headers
            self.inject, self.extract = inject_headers, extract_headers

    def close(self, st: "NodeStatus") -> None:
        if self.tracer is not None:
            self.tracer.close()
            t = self.tracer.stats()
            st.extra["tracing"] = {"spans": t["spans"], "dropped": t["dropped"],
                                   "drain_cpu_s": round(t["drain_cpu_s"], 6)}


class _Fault:
    def __init__(self, after: int | None):
        self.left = after

    def tick(self) -> None:
        if self.left is not None:
            self.left -= 1
            if self.left <= 0:
                os._exit(17)  # a crash: nothing flushed


_SEND_SPAN = {e: f"send {e}" for e in EDGES}


def _send(tracer, tx, edge: str, payload: bytes, parent=None) -> None:
    if tracer is None:
        tx.send(Message(payload))
        return
    p = tracer.producer(_SEND_SPAN[edge], parent)  # started, in one C call
    try:
        # the span itself carries its context: no SpanContext object per
        # message, and the transport writes it with the send time in one call
        tx.send(Message(payload, None, (p, p.mark_send())))
    finally:
        p.end()


class _Records:
    """Rows appended to an Arrow stream file, written in batches so a crash
    loses at most the last batch (a torn tail is cut off on read)."""

    def __init__(self, path: str, columns: dict, batch: int = 256):
        import pyarrow as pa
        self.pa = pa
        self.schema = pa.schema(list(columns.items()))
        self.rows: dict[str, list] = {k: [] for k in columns}
        self.batch = batch
        self._f = pa.OSFile(path, "wb")
        self._w = pa.ipc.new_stream(self._f, self.schema)

    def add(self, **row) -> None:
        for k, v in row.items():
            self.rows[k].append(v)
        if len(self.rows[self.schema.names[0]]) >= self.batch:
            self.flush()

    def extend(self, **cols) -> None:
        for k, v in cols.items():
            self.rows[k].extend(v)
        if len(self.rows[self.schema.names[0]]) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.rows[self.schema.names[0]]:
            return
        arrays = [self.pa.array(self.rows[f.name], f.type) for f in self.schema]
        self._w.write_batch(self.pa.record_batch(arrays, schema=self.schema))
        self._f.flush()
        for v in self.rows.values():
            v.clear()

    def close(self) -> None:
        self.flush()
        self._w.close()
        self._f.close()


def _run_source(cfg, tr, tx, st, stop) -> None:
    import pyarrow as pa
    out_edge = edges_of("source")[1]
    line = sys.stdin.readline().split()
    if len(line) != 3 or line[0] != "GO":
        st.end = "terminated"
        return
    t0, t_end = int(line[1]), int(line[2])
    now = clocks.realtime_ns
    next_ns = t0
    req = 0
    fault = _Fault(cfg.fault_after)
    rec = _Records(os.path.join(cfg.status_dir, "source.arrow"),
                   {"req_id": pa.int64(), "t_source_ns": pa.int64()})
    window = cfg.trace_windows_ns
    try:
        while not stop.flag.is_set():
            t = now()
            if cfg.rate > 0 and t < next_ns:
                time.sleep(min(0.05, (next_ns - t) / 1e9))
                continue
            if t >= t_end:
                break
            x = workload.make_input(cfg.seed, req)
            t = now()
            tracer = tr.tracer if not window or (t - t0) // window % 2 == 0 else None
            _send(tracer, tx, out_edge, workload.pack(req, t, x), parent=False)
            rec.add(req_id=req, t_source_ns=t)
            st.sent += 1
            req += 1
            fault.tick()
            if cfg.rate > 0:
                next_ns = t0 + int(req * 1e9 / cfg.rate)
    finally:
        rec.close()
    st.extra["requests"] = req


class _Checker:
    """The sink's check of every output against workload.Reference. Outputs
    are kept as they arrive and checked in large batches once the stream has
    ended, so the check's CPU does not compete with the pipeline it measures;
    one record per request goes to sink.arrow (outputs.arrow holds the
    outputs meanwhile, so a crash loses at most a batch of them)."""
    BATCH = 256

    def __init__(self, cfg: NodeConfig):
        import pyarrow as pa
        self.cfg = cfg
        self.ids: list[int] = []
        self.t_src: list[int] = []
        self.t_sink: list[int] = []
        self.traced: list[bool] = []
        self.tops: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []
        self.out = _Records(os.path.join(cfg.status_dir, "outputs.arrow"),
                            {"req_id": pa.int64(), "t_source_ns": pa.int64(),
                             "t_sink_ns": pa.int64(), "output": pa.binary()})
        self.correct = 0
        self.wrong = 0

    def put(self, req: int, t_src: int, t_sink: int, body: memoryview, traced: bool) -> None:
        top, probs = workload.unpack_output(body)
        self.ids.append(req)
        self.t_src.append(t_src)
        self.t_sink.append(t_sink)
        self.traced.append(traced)
        self.tops.append(top)
        self.probs.append(probs)
        self.out.add(req_id=req, t_source_ns=t_src, t_sink_ns=t_sink, output=bytes(body))

    def finish(self) -> None:
        import pyarrow as pa
        self.out.close()
        ref = workload.Reference(self.cfg.seed)
        rec = _Records(os.path.join(self.cfg.status_dir, "sink.arrow"),
                       {"req_id": pa.int64(), "t_source_ns": pa.int64(),
                        "t_sink_ns": pa.int64(), "correct": pa.bool_(),
                        "traced": pa.bool_()}, batch=self.BATCH)
        try:
            for a in range(0, len(self.ids), self.BATCH):
                b = a + self.BATCH
                ok = ref.check(self.ids[a:b], np.stack(self.tops[a:b]),
                               np.stack(self.probs[a:b]))
                self.correct += int(ok.sum())
                self.wrong += int(len(ok) - ok.sum())
                rec.extend(req_id=self.ids[a:b], t_source_ns=self.t_src[a:b],
                           t_sink_ns=self.t_sink[a:b], correct=ok.tolist(),
                           traced=self.traced[a:b])
        finally:
            rec.close()


def _run_relay(cfg, tr, rx, tx, st, stop) -> None:
    """preprocess, model, postprocess and sink: receive, work, pass on."""
    in_edge, out_edge = edges_of(cfg.stage)
    weights = workload.make_weights(cfg.seed) if cfg.stage == "model" else None
    checker = _Checker(cfg) if cfg.stage == "sink" else None
    shape = (workload.TOKENS, workload.WIDTH)
    fault = _Fault(cfg.fault_after)
    now = clocks.realtime_ns
    recv_span = f"recv {in_edge}"

    def work(body):
        if cfg.stage == "preprocess":
            return (workload.preprocess(workload.as_array(body, np.float32, shape)),)
        if cfg.stage == "model":
            return (workload.model(weights, workload.as_array(body, np.float32, shape)),)
        if cfg.stage == "postprocess":
            return workload.postprocess(
                workload.as_array(body, np.float32, (workload.CLASSES,)))
        raise AssertionError(cfg.stage)

    def handle(msg, tracer, parent):
        req, t_src, body = workload.unpack_head(msg.payload)
        if checker:
            checker.put(req, t_src, now(), body, tracer is not None)
        else:
            _send(tracer, tx, out_edge, workload.pack(req, t_src, *work(body)), parent)
            st.sent += 1

    try:
        while not stop.flag.is_set():
            msg = rx.recv(0.1)
            if msg is None:
                continue
            if _eos(msg):
                st.end = "eos"
                if tx is not None:
                    tx.send(_eos_message())
                return
            st.received += 1
            if tr.tracer is None or (msg.trace is None and not msg.headers):
                handle(msg, None, None)  # uninstrumented, or a request sent untraced
            else:
                ctx, send_ns = msg.trace if msg.trace is not None else tr.extract(msg.headers)
                c = tr.tracer.consumer(recv_span, ctx, send_ns)  # started, in one C call
                try:
                    handle(msg, tr.tracer, c)
                finally:
                    c.end()
            fault.tick()
    finally:
        if checker:
            checker.finish()
            st.extra.update(correct=checker.correct, wrong=checker.wrong)


def run_node(cfg: NodeConfig, ready=None) -> NodeStatus:
    """Run one stage until end of stream or SIGTERM; returns its status."""
    stop = _Stop()
    st = NodeStatus(cfg.node, cfg.stage)
    if cfg.cpus:
        # before any thread starts (ZeroMQ's, the tracer's drain): they inherit it
        try:
            os.sched_setaffinity(0, cfg.cpus)
        except (OSError, ValueError) as e:
            raise SkewdError(f"cannot run on CPUs {cfg.cpus}: {e}") from None
        st.extra["cpus"] = sorted(os.sched_getaffinity(0))
    in_edge, out_edge = edges_of(cfg.stage)
    transport = open_transport(cfg.transport)
    tr = _Tracing(cfg)
    rx = transport.receiver(in_edge) if in_edge else None
    tx = transport.sender(out_edge) if out_edge else None
    try:
        if ready:
            ready()
        if cfg.stage == "source":
            _run_source(cfg, tr, tx, st, stop)
            if st.end == "running":
                tx.send(_eos_message())
                st.end = "eos"
        else:
            _run_relay(cfg, tr, rx, tx, st, stop)
        if st.end == "running":
            st.end = "terminated"
    finally:
        tr.close(st)
        if tx is not None:
            tx.flush(2.0)
        transport.close()
    return st


def _write_status(cfg: NodeConfig, st: NodeStatus) -> None:
    import resource
    ru = resource.getrusage(resource.RUSAGE_SELF)
    st.extra["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 3)
    path = os.path.join(cfg.status_dir, f"{cfg.node}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(asdict(st), f)
    os.replace(path + ".tmp", path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m skewd.experiment.stages CONFIG.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        cfg = NodeConfig.from_json(f.read())

    def ready():
        sys.stdout.write("READY\n")
        sys.stdout.flush()
    try:
        st = run_node(cfg, ready)
    except (SkewdError, OSError) as e:
        print(f"error: node {cfg.node}: {e}", file=sys.stderr)
        _write_status(cfg, NodeStatus(cfg.node, cfg.stage, end="error", error=str(e)))
        return EXIT_SETUP
    _write_status(cfg, st)
    return 0


if __name__ == "__main__":
    sys.exit(main())
