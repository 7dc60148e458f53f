"""The span table's Arrow schema, shared by the span log, the merger, the
checker and the importers (see ../shared/ARCHITECTURE.md, "Span schema").

Times are int64 ns since the Unix epoch as the node's skewed clock read them.
"""
from __future__ import annotations

import pyarrow as pa

#: bump when a column is added, removed or changes meaning; stored in the
#: file metadata as b"skewd.schema_version"
SCHEMA_VERSION = 1

KINDS = ("internal", "producer", "consumer", "client", "server")
KIND_CODES = {k: i for i, k in enumerate(KINDS)}

SPAN_FIELDS = [
    pa.field("trace_id", pa.binary(16), nullable=False),
    pa.field("span_id", pa.binary(8), nullable=False),
    pa.field("parent_id", pa.binary(8), nullable=True),   # null at a root
    pa.field("name", pa.string(), nullable=False),
    pa.field("kind", pa.dictionary(pa.int8(), pa.string()), nullable=False),
    pa.field("node", pa.string(), nullable=False),
    pa.field("stage", pa.string(), nullable=True),
    pa.field("start_ns", pa.int64(), nullable=False),
    pa.field("end_ns", pa.int64(), nullable=False),
    pa.field("send_ns", pa.int64(), nullable=True),       # producer: sent; consumer: carried
    pa.field("clock", pa.string(), nullable=False),
    pa.field("injected_offset_ns", pa.int64(), nullable=True),
    pa.field("est_offset_ns", pa.int64(), nullable=True),
    pa.field("est_uncertainty_ns", pa.int64(), nullable=True),
]

SPAN_SCHEMA = pa.schema(SPAN_FIELDS)

META_VERSION = b"skewd.schema_version"
META_NODE = b"skewd.node"
META_CLOCK = b"skewd.clock"
META_HOST = b"skewd.host"


def with_metadata(schema: pa.Schema, **meta: str) -> pa.Schema:
    md = {META_VERSION: str(SCHEMA_VERSION).encode()}
    md.update({f"skewd.{k}".encode(): str(v).encode() for k, v in meta.items()})
    return schema.with_metadata(md)


def schema_version(schema: pa.Schema) -> int | None:
    md = schema.metadata or {}
    v = md.get(META_VERSION)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None
