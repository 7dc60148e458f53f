"""The daemon's offset logs: every exchange and every estimate, as Arrow IPC
files rotated and read back like span logs (one write per batch, footer and
fsync on rotation, torn tails cut on read), written without pyarrow
(skewd.arrowipc) so that the daemon never loads it.

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

import functools
import glob
import os

from skewd import arrowipc
from skewd.arrowipc import FLOAT64, INT32, INT64, UTF8, Column
from skewd.errors import InputFileError
from skewd.logfiles import ArrowLog

OFFSETS_VERSION = 1
META_VERSION = b"skewd.offsets_version"

#: the file's columns; this module writes them without pyarrow (the daemon
#: imports it), and builds OFFSET_SCHEMA, the pyarrow schema, only when asked
OFFSET_COLUMNS = (
    Column("time_ns", INT64, False), Column("node", UTF8, False), Column("peer", UTF8, False),
    Column("record", UTF8, False),
    Column("t1", INT64), Column("t2", INT64), Column("t3", INT64), Column("t4", INT64),
    Column("offset_ns", FLOAT64, False), Column("delay_ns", FLOAT64),
    Column("uncertainty_ns", FLOAT64), Column("drift_ppb", FLOAT64),
    Column("samples", INT32), Column("jitter_ns", FLOAT64),
    Column("source", UTF8), Column("verdict", UTF8),
)
COLUMNS = [c.name for c in OFFSET_COLUMNS]


@functools.cache
def _schema():
    """OFFSET_COLUMNS as a pyarrow schema (pyarrow imported on first use)."""
    import pyarrow as pa
    return pa.schema(arrowipc.pyarrow_fields(OFFSET_COLUMNS))


def __getattr__(name: str):
    if name == "OFFSET_SCHEMA":   # offsetlog.OFFSET_SCHEMA, built when first asked for
        return _schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class OffsetLogWriter(ArrowLog):
    """Rotated, crash-safe offset logs named offsets-<node>-<time>-<pid>-<n>.arrow:
    one write() per batch of rows, footer and fsync on rotation and close."""
    columns = OFFSET_COLUMNS

    def __init__(self, directory: str, *, node: str, host: str | None = None,
                 max_bytes: int = 64 << 20, max_age_s: float = 600.0):
        super().__init__(directory, node=node, prefix="offsets", host=host,
                         max_bytes=max_bytes, max_age_s=max_age_s, what="offset log")

    def metadata(self) -> dict:
        return {META_VERSION: str(OFFSETS_VERSION).encode(), b"skewd.node": self.node.encode(),
                b"skewd.host": self.host.encode(), b"skewd.pid": str(os.getpid()).encode()}

    def write(self, rows: list[tuple]) -> None:
        """Append rows (tuples in COLUMNS order) as one batch; rotate when due."""
        if not rows:
            return
        self._written(len(rows), self._batch().write_rows(rows))


def batch_from_tuples(rows: list[tuple]):
    """Rows as tuples in COLUMNS order into a pyarrow record batch."""
    import pyarrow as pa
    schema = _schema()
    cols = list(zip(*rows)) if rows else [()] * len(COLUMNS)
    return pa.RecordBatch.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(cols, schema)], schema=schema)


def batch_from_rows(rows: list[dict]):
    """Rows as dicts keyed by column (missing keys are nulls) into a batch."""
    return batch_from_tuples([tuple(r.get(name) for name in COLUMNS) for r in rows])


def read(paths):
    """Every row of the given offset logs (files or directories); torn tails
    are cut with a warning, like span logs; a pyarrow Table."""
    import pyarrow as pa
    from skewd import spanlog
    schema = _schema()
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
        return schema.empty_table()
    return pa.Table.from_batches(batches, schema=schema)
