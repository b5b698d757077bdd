"""How well a real-time loop keeps time, in bounded memory: `Histogram` and `TickStats`.

Why and how: docs/internals.md, bms/runtime/timing.py.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from itertools import accumulate

BIN_S = 10e-6
RANGE_S = 0.1


class Histogram:
    """Durations in seconds: count, mean, max and percentiles, in fixed memory."""

    def __init__(self, bin_s: float = BIN_S, range_s: float = RANGE_S):
        self.bin_s = bin_s
        self.n_bins = round(range_s / bin_s)
        self._per_s = 1.0 / bin_s
        self.counts = array("Q", bytes(8 * (self.n_bins + 1)))  # the last one: overflow
        self.count = 0
        self.sum_s = 0.0
        self.max_s = 0.0

    def add(self, x_s: float) -> None:
        """One value; a negative one (a timer a nanosecond early) goes in the first bin."""
        i = int(x_s * self._per_s)
        if i >= self.n_bins:
            i = self.n_bins
        elif i < 0:
            i = 0
        self.counts[i] += 1
        self.count += 1
        self.sum_s += x_s
        if x_s > self.max_s:
            self.max_s = x_s

    @property
    def overflow(self) -> int:
        """Values beyond the range: their percentile is given as the maximum."""
        return self.counts[self.n_bins]

    def percentile_s(self, q: float) -> float | None:
        """The upper edge of the bin holding the q-th percentile (never above the max);
        None when empty."""
        if not self.count:
            return None
        rank = max(1, -(-self.count * q // 100))  # the ceil(q % of count)-th value
        i = bisect_left(list(accumulate(self.counts)), rank)
        return self.max_s if i >= self.n_bins else min((i + 1) * self.bin_s, self.max_s)

    def summary_ms(self) -> dict:
        """count, p50, p99, max and mean in milliseconds (None when empty)."""
        def ms(x_s: float | None) -> float | None:
            return None if x_s is None else round(x_s * 1e3, 3)

        return {"count": self.count, "p50_ms": ms(self.percentile_s(50)),
                "p99_ms": ms(self.percentile_s(99)), "max_ms": ms(self.max_s if self.count
                                                               else None),
                "mean_ms": ms(self.sum_s / self.count if self.count else None),
                "overflow": self.overflow}


class TickStats:
    """One real-time loop's timing (see the module's docstring for what each figure is)."""

    def __init__(self, tick_s: float):
        self.tick_s = tick_s
        self.lateness = Histogram()
        self.work = Histogram()
        self.overruns = 0
        self.skipped = 0
        self.resyncs = 0
        self.due_s = 0.0  # when the tick in progress fell due
        self.latest_due_s: float | None = None  # when the latest tick of all fell due

    def summary(self) -> dict:
        return {"tick_s": self.tick_s, "ticks": self.lateness.count,
                "lateness": self.lateness.summary_ms(), "work": self.work.summary_ms(),
                "latest_tick_due_s": (None if self.latest_due_s is None
                                      else round(self.latest_due_s, 3)),
                "overruns": self.overruns, "skipped": self.skipped, "resyncs": self.resyncs}
