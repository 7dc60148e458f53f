"""The skewed clock: base clock + injected offset + drift·(t − epoch), read
from the node's clock-state page. Every span, probe and experiment uses it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from skewd import _page
from skewd.clocks import int64_buffer
from skewd.statepage import StatePage

if TYPE_CHECKING:
    import numpy as np


class SkewedClock:
    """A node's skewed clock. With node=None it is the plain base clock
    (CLOCK_REALTIME) through the same code path, so costs compare fairly.

        clock = SkewedClock("model")
        t = clock.now_ns()
    """

    def __init__(self, node: str | None = None, *, directory: str | None = None):
        self.node = node
        if node is None:
            self._page = None
            raw = _page.Page(None)
        else:
            self._page = StatePage(node, directory=directory)
            raw = self._page.raw
        self._raw = raw
        #: the hot path: one C call, a seqlock read and one vDSO clock read
        self.now_ns = raw.now_ns

    def now_with_offset(self) -> tuple[int, int]:
        """(skewed time, injected offset applied), from one consistent read."""
        return self._raw.now_with_offset()

    def offset_ns(self) -> int:
        return self._raw.now_with_offset()[1]

    def batch(self, out: int | np.ndarray) -> np.ndarray:
        buf = int64_buffer(out)
        self._raw.batch(buf)
        return buf

    def read_cost_ns(self, n: int = 10000, rounds: int = 21) -> float:
        return self._raw.cost_ns(n, rounds)

    def measurement(self):
        """The daemon's latest measurement of this node, or None."""
        if self._page is None:
            return None
        return self._page.snapshot().measurement
