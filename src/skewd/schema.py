"""The span table's Arrow schema, shared by the span log, the merger, the
checker and the importers (see ../shared/ARCHITECTURE.md, "Span schema").

Times are int64 ns since the Unix epoch as the node's skewed clock read them.

The schema is written down once, as skewd.arrowipc columns (SPAN_COLUMNS):
the tracer writes span logs from those without pyarrow. SPAN_FIELDS and
SPAN_SCHEMA, the same in pyarrow's terms, are derived from them on first
use, so importing this module does not import pyarrow.
"""
from __future__ import annotations

from skewd import arrowipc
from skewd.arrowipc import FIXED, INT64, UTF8, Column

#: bump when a column is added, removed or changes meaning; stored in the
#: file metadata as b"skewd.schema_version"
SCHEMA_VERSION = 1

KINDS = ("internal", "producer", "consumer", "client", "server")
KIND_CODES = {k: i for i, k in enumerate(KINDS)}

SPAN_COLUMNS = (
    Column("trace_id", FIXED, False, width=16),
    Column("span_id", FIXED, False, width=8),
    Column("parent_id", FIXED, True, width=8),       # null at a root
    Column("name", UTF8, False),
    Column("kind", UTF8, False, dictionary=KINDS),  # int8 indices into KINDS
    Column("node", UTF8, False),
    Column("stage", UTF8, True),
    Column("start_ns", INT64, False),
    Column("end_ns", INT64, False),
    Column("send_ns", INT64, True),                  # producer: sent; consumer: carried
    Column("clock", UTF8, False),
    Column("injected_offset_ns", INT64, True),
    Column("est_offset_ns", INT64, True),
    Column("est_uncertainty_ns", INT64, True),
)

META_VERSION = b"skewd.schema_version"
META_NODE = b"skewd.node"
META_CLOCK = b"skewd.clock"
META_HOST = b"skewd.host"


def metadata(**meta) -> dict[bytes, bytes]:
    """A span log's schema metadata: the schema version and skewd.<key> = value."""
    md = {META_VERSION: str(SCHEMA_VERSION).encode()}
    md.update({f"skewd.{k}".encode(): str(v).encode() for k, v in meta.items()})
    return md


def with_metadata(schema, **meta: str):
    """The pyarrow schema with a span log's metadata."""
    return schema.with_metadata(metadata(**meta))


def schema_version(schema) -> int | None:
    md = schema.metadata or {}
    v = md.get(META_VERSION)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def __getattr__(name: str):
    if name in ("SPAN_FIELDS", "SPAN_SCHEMA"):
        import pyarrow as pa
        fields = arrowipc.pyarrow_fields(SPAN_COLUMNS)
        globals().update(SPAN_FIELDS=fields, SPAN_SCHEMA=pa.schema(fields))
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
