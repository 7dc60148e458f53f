"""A child process of an experiment run (a pipeline stage or a daemon): in a
session of its own, so that a signal reaches whatever it started, with its
stderr kept in a file whose last error line explains a failure."""
from __future__ import annotations

import os
import subprocess


class ChildProcess:
    #: how much of stderr's end stderr_tail gives when no line is an error
    TAIL = 400

    def __init__(self, argv: list[str], env: dict, stderr_path: str, *, stdin, stdout):
        self.stderr_path = stderr_path
        self._err = open(stderr_path, "wb")
        self.proc = subprocess.Popen(argv, env=env, stdin=stdin, stdout=stdout,
                                     stderr=self._err, start_new_session=True)
        self.died_ns: int | None = None
        self.killed = False

    def signal(self, sig: int) -> None:
        """Send sig to the child's whole session, if it still runs."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def error_of(self, line: str) -> str | None:
        """The error a line of stderr reports, or None: `error: ...` lines."""
        return line[len("error:"):].strip() if line.startswith("error:") else None

    def stderr_tail(self) -> str:
        """The last error stderr reports, else its last TAIL characters."""
        try:
            with open(self.stderr_path, "rb") as f:
                data = f.read().decode(errors="replace").strip()
        except OSError:
            return ""
        for line in reversed(data.splitlines()):
            err = self.error_of(line)
            if err is not None:
                return err
        return data[-self.TAIL:]

    def close_stderr(self) -> None:
        self._err.close()
