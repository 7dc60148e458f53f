"""Span logs written without pyarrow: what a tracer's drain thread uses.

A span log is an Arrow IPC file of SPAN_COLUMNS (skewd.schema) named and
rotated by skewd.logfiles; skewd.spanlog reads it (and describes the files).
The tracer's drain copies spans from its rings into column buffers laid out
as Arrow lays them out (skewd._ring.Columns); write_ring() hands the first n
rows of those buffers to the kernel in one writev(), with the record batch's
metadata in front, copying nothing. The node, stage and clock columns hold
one string each for the whole file: their buffers are built once, at the
largest batch seen, and sliced.

Every batch reaches the kernel as it is written, so a process killed with
SIGKILL loses only the spans still in its rings; a file without its footer
reads back as the IPC stream it holds.

This module, and everything it imports, leaves pyarrow out: pyarrow's
libraries put tens of MB into every traced process and, on a busy core,
measurably slow the work around them (README, "Tracing's cost").
"""
from __future__ import annotations

import os
from array import array

from skewd import arrowipc
from skewd.logfiles import ArrowLog
from skewd.schema import SPAN_COLUMNS, metadata

_EMPTY = b""


class _Constant:
    """The buffers of a string column holding `value` in every row (all
    nulls for None), for up to `size` rows; grown when a batch is larger."""

    def __init__(self, value: str | None):
        self.data = b"" if value is None else value.encode()
        self.null = value is None
        self.size = 0
        self._offsets = self._bytes = self._valid = memoryview(b"")

    def buffers(self, n: int) -> tuple[int, list]:
        if n > self.size:
            self.size = max(n, 2 * self.size, 1024)
            step = len(self.data)
            self._offsets = memoryview(array("i", [i * step for i in range(self.size + 1)])
                                       ).cast("B")
            self._bytes = memoryview(self.data * self.size)
            self._valid = memoryview(bytes((self.size + 7) // 8))
        offsets = self._offsets[:4 * (n + 1)]
        if self.null:
            return n, [self._valid[:(n + 7) // 8], offsets, _EMPTY]
        return 0, [_EMPTY, offsets, self._bytes[:len(self.data) * n]]


class SpanLogWriter(ArrowLog):
    """Writes spans to rotated Arrow IPC files in `directory`.
    Not thread-safe: one drain thread (or a caller holding its lock) uses it."""
    columns = SPAN_COLUMNS

    def __init__(self, directory: str, *, node: str, stage: str | None = None,
                 clock: str = "realtime", host: str | None = None,
                 max_bytes: int = 64 << 20, max_age_s: float = 600.0):
        super().__init__(directory, node=node, prefix="spans", host=host,
                         max_bytes=max_bytes, max_age_s=max_age_s, what="span log")
        self.stage = stage
        self.clock = clock
        self._node_col, self._stage_col, self._clock_col = (
            _Constant(node), _Constant(stage), _Constant(clock))

    def metadata(self) -> dict[bytes, bytes]:
        return metadata(node=self.node, stage=self.stage or "", clock=self.clock,
                        host=self.host, pid=os.getpid())

    def write_ring(self, cols, n: int) -> None:
        """Append the first n rows of a drain into cols (skewd._ring.Columns)."""
        if n <= 0:
            return
        nulls = cols.null_counts
        valid = cols.valid
        nb = (n + 7) // 8

        def nullable(i: int, data) -> tuple[int, list]:
            k = int(nulls[i])  # NULLABLE's order in skewd._ring
            return k, [valid[i][:nb] if k else _EMPTY, data]

        self._write(n, [
            (0, [_EMPTY, cols.trace_id[:16 * n]]),
            (0, [_EMPTY, cols.span_id[:8 * n]]),
            nullable(0, cols.parent_id[:8 * n]),
            (0, [_EMPTY, cols.name_offsets[:n + 1], cols.name_data[:int(cols.name_offsets[n])]]),
            (0, [_EMPTY, cols.kind[:n]]),
            self._node_col.buffers(n),
            self._stage_col.buffers(n),
            (0, [_EMPTY, cols.start_ns[:n]]),
            (0, [_EMPTY, cols.end_ns[:n]]),
            nullable(1, cols.send_ns[:n]),
            self._clock_col.buffers(n),
            nullable(2, cols.injected_offset_ns[:n]),
            nullable(3, cols.est_offset_ns[:n]),
            nullable(4, cols.est_uncertainty_ns[:n]),
        ])

    def write_columns(self, column_values: list) -> None:
        """Append a batch given as Python values, a sequence per column of
        SPAN_COLUMNS (None for a null; kind as its name). ValueError on a
        value the schema does not allow."""
        n = len(column_values[0]) if column_values else 0
        if n == 0:
            return
        self._write(n, [arrowipc.column_buffers(c, v)
                        for c, v in zip(SPAN_COLUMNS, column_values, strict=True)])

    def _write(self, n: int, column_buffers: list) -> None:
        self._written(n, self._batch().write_buffers(n, column_buffers))
