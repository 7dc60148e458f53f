"""Rotated log files, whatever writes into them: naming, rotation by size and
age, fsync of the file and its directory when one is finished. Span logs
(skewd.spanwriter) and the daemon's offset logs (skewd.offsetlog), both
written with skewd.arrowipc, stand on this; it imports neither pyarrow nor
numpy, so the daemon and traced processes stay small.

Files are named ``<prefix>-<node>-<UTC time>-<pid>-<seq>.arrow``; the name is
claimed with O_EXCL, so writers may share a directory."""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

from skewd import arrowipc
from skewd.errors import UsageError


@dataclass
class WriterStats:
    files: list[str] = field(default_factory=list)
    batches: int = 0
    rows: int = 0
    bytes: int = 0
    errors: int = 0
    last_error: str | None = None


def fsync_dir(path: str) -> None:
    """Make a directory's entries (a new or renamed file) durable; best effort."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class RotatingLog:
    """The file life cycle. A subclass opens its writer on a claimed path in
    _begin(path); finishes it (footer, flush) in _end(), which returns the
    descriptor to fsync, and closes it in _release(); lets go of it
    unfinished in _drop(). Its write() calls _written() after every batch.
    Not thread-safe."""

    def __init__(self, directory: str, *, node: str, prefix: str, host: str | None = None,
                 max_bytes: int = 64 << 20, max_age_s: float = 600.0, what: str = "log"):
        if max_bytes <= 0 or max_age_s <= 0:
            raise UsageError(f"{what} rotation needs max_bytes > 0 and max_age_s > 0")
        self.directory = os.fspath(directory)
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as e:
            raise UsageError(f"{what} directory {self.directory}: {e.strerror}") from None
        self.node = node
        self.host = host or socket.gethostname()
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self.prefix = prefix
        self.stats = WriterStats()
        self._seq = 0
        self._size = 0
        self._opened = 0.0
        self.path: str | None = None

    # subclass hooks
    def _begin(self, path: str) -> None:
        raise NotImplementedError

    def _end(self) -> int:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _drop(self) -> None:
        raise NotImplementedError

    def _open(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        while True:
            self._seq += 1
            name = f"{self.prefix}-{self.node}-{stamp}-{os.getpid()}-{self._seq:04d}.arrow"
            path = os.path.join(self.directory, name)
            try:  # claim the name; another writer may share the directory
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                 0o644))
                break
            except FileExistsError:
                continue
        self._begin(path)
        self._size = 0
        self._opened = time.monotonic()
        self.path = path
        self.stats.files.append(path)

    def _written(self, rows: int, size: int) -> None:
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.bytes += size
        self._size += size
        self.maybe_rotate()

    def maybe_rotate(self) -> bool:
        if self.path is None:
            return False
        if self._size >= self.max_bytes or time.monotonic() - self._opened >= self.max_age_s:
            self._finish()
            return True
        return False

    def rotate(self) -> None:
        """Close the current file now; the next batch opens a new one."""
        if self.path is not None:
            self._finish()

    def _finish(self) -> None:
        self.path = None
        try:
            os.fsync(self._end())
        finally:
            self._release()
        fsync_dir(self.directory)

    def close(self) -> None:
        self.rotate()

    def abandon(self) -> None:
        """Let go of the current file without finishing it (a forked child
        with its parent's file, or a writer whose file became unwritable):
        what was written stays readable, as a crashed writer's does."""
        if self.path is not None:
            self._drop()
        self.path = None
        self.stats = WriterStats()
        self._seq = 0


class ArrowLog(RotatingLog):
    """A RotatingLog whose files are Arrow IPC files (skewd.arrowipc) of
    `columns`, with the schema metadata a subclass's metadata() gives; a
    subclass writes a batch with self._batch(), which opens the file first
    when none is open."""
    columns: tuple = ()

    def __init__(self, directory: str, **kw):
        super().__init__(directory, **kw)
        self._fd: int | None = None
        self._file: arrowipc.FileWriter | None = None

    def metadata(self) -> dict[bytes, bytes]:
        raise NotImplementedError

    def _batch(self) -> arrowipc.FileWriter:
        if self._file is None:
            self._open()
        return self._file

    def _begin(self, path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            self._file = arrowipc.FileWriter(fd, self.columns, self.metadata())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _end(self) -> int:
        self._file.close()  # the footer
        return self._fd

    def _release(self) -> None:
        fd = self._fd
        self._file = self._fd = None
        os.close(fd)

    def _drop(self) -> None:
        """In a forked child: close the child's copy of the descriptor; the
        parent goes on writing the file."""
        try:
            self._release()
        except OSError:
            pass
