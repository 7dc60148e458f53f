"""The daemon's offset logs: every exchange and every estimate, as Arrow IPC
files written, rotated and read back exactly like span logs (skewd.spanlog:
one write per batch, footer and fsync on rotation, torn tails cut on read).

Columns (schema version in the metadata as b"skewd.offsets_version"):

    time_ns         our clock (the node's skewed clock), midpoint of the exchange
    node            the node that measured
    peer            the peer measured
    record          "exchange" or "estimate"
    t1, t2, t3, t4  exchange stamps (t1, t4 ours; t2, t3 the peer's); null for estimates
    offset_ns       peer's clock minus ours (exchange: its own; estimate: the fit's)
    delay_ns        round-trip delay less the peer's turnaround
    uncertainty_ns  half-width of the estimate's interval; null for exchanges
    drift_ppb       estimated frequency of the peer against us; null for exchanges
    samples, jitter_ns, source, verdict

The merger reads `node, peer, time_ns, offset_ns, uncertainty_ns` from these.
"""
from __future__ import annotations

import glob
import os

import pyarrow as pa

from skewd import spanlog
from skewd.errors import InputFileError

OFFSETS_VERSION = 1
META_VERSION = b"skewd.offsets_version"

OFFSET_SCHEMA = pa.schema([
    pa.field("time_ns", pa.int64(), nullable=False),
    pa.field("node", pa.string(), nullable=False),
    pa.field("peer", pa.string(), nullable=False),
    pa.field("record", pa.string(), nullable=False),
    pa.field("t1", pa.int64()), pa.field("t2", pa.int64()),
    pa.field("t3", pa.int64()), pa.field("t4", pa.int64()),
    pa.field("offset_ns", pa.float64(), nullable=False),
    pa.field("delay_ns", pa.float64()),
    pa.field("uncertainty_ns", pa.float64()),
    pa.field("drift_ppb", pa.float64()),
    pa.field("samples", pa.int32()),
    pa.field("jitter_ns", pa.float64()),
    pa.field("source", pa.string()),
    pa.field("verdict", pa.string()),
])
COLUMNS = OFFSET_SCHEMA.names


class OffsetLogWriter(spanlog.SpanLogWriter):
    """Rotated, crash-safe offset logs named offsets-<node>-<time>-<pid>-<n>.arrow."""
    prepare = staticmethod(lambda batch: batch)

    def __init__(self, directory: str, *, node: str, **kw):
        super().__init__(directory, node=node, prefix="offsets", **kw)

    def schema(self) -> pa.Schema:
        return OFFSET_SCHEMA.with_metadata({
            META_VERSION: str(OFFSETS_VERSION).encode(), b"skewd.node": self.node.encode(),
            b"skewd.host": self.host.encode(), b"skewd.pid": str(os.getpid()).encode()})


def batch_from_tuples(rows: list[tuple]) -> pa.RecordBatch:
    """Rows as tuples in COLUMNS order (the daemon's hot path) into a batch."""
    cols = list(zip(*rows)) if rows else [()] * len(COLUMNS)
    return pa.RecordBatch.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(cols, OFFSET_SCHEMA)], schema=OFFSET_SCHEMA)


def batch_from_rows(rows: list[dict]) -> pa.RecordBatch:
    """Rows as dicts keyed by column (missing keys are nulls) into a batch."""
    return batch_from_tuples([tuple(r.get(name) for name in COLUMNS) for r in rows])


def read(paths) -> pa.Table:
    """Every row of the given offset logs (files or directories); torn tails
    are cut with a warning, like span logs."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for p in map(os.fspath, paths):
        if os.path.isdir(p):
            files.extend(sorted(glob.glob(os.path.join(p, "offsets-*.arrow"))))
        else:
            files.extend(spanlog._expand(p))
    batches = []
    for path in files:
        fr = spanlog.read_file(path)
        spanlog._warn_torn(fr, 2)
        if fr.schema is None:
            continue
        v = (fr.schema.metadata or {}).get(META_VERSION)
        if v is None:
            raise InputFileError(f"offset log {path}: not a skewd offset log (no version metadata)")
        if int(v) != OFFSETS_VERSION:
            raise InputFileError(f"offset log {path}: version {int(v)}, this skewd reads "
                                 f"{OFFSETS_VERSION}")
        batches.extend(b.replace_schema_metadata(None) for b in fr.batches)
    if not batches:
        return OFFSET_SCHEMA.empty_table()
    return pa.Table.from_batches(batches, schema=OFFSET_SCHEMA)
