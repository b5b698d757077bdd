"""The protection table and its one debouncer: every check is a row, and all rows are
evaluated together, vectorised, each step.

Why and how: docs/internals.md, bms/core/protection.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from bms.data.config import ProtectionRow
from bms.data.faults import FAULT_CODES, Level
from bms.data.quantities import QUANTITY_INDEX

TIME_EPS_S = 1e-9  # sums of float ticks are not exact; a debounce of D trips at D - eps


# What identifies a row across configurations and restarts: a configuration changes its
# numbers, never these.
RowKey = tuple[str, str, bool]  # fault, quantity, above


def row_key(row: ProtectionRow) -> RowKey:
    return (row.fault, row.quantity, row.above)


@dataclass(frozen=True)
class Change:
    row: int
    action: str  # "raised" or "cleared"


class Protection:
    """All rows, one debouncer. The comparison is vectorised over the rows; the timers then
    run in plain Python over the few rows that are over their threshold or active, which
    on most steps is none at all."""

    def __init__(self, rows: tuple[ProtectionRow, ...]):
        n = len(rows)
        self.quantity_index = np.array([QUANTITY_INDEX[r.quantity] for r in rows], dtype=np.intp)
        # Flip "below" rows so that every condition reads `value * sign > threshold * sign`.
        self.sign = np.array([1.0 if r.above else -1.0 for r in rows])
        self.enabled = np.ones(n, dtype=bool)
        self._tune(rows)
        self.latching = [r.level == Level.FAULT for r in rows]
        self.bits = np.array([1 << FAULT_CODES[r.fault] for r in rows], dtype=np.int64)
        self.active = np.zeros(n, dtype=bool)
        self.over_since_s: dict[int, float] = {}  # rows over their threshold, since when
        self.safe_since_s: dict[int, float] = {}  # active rows back past release, since when
        self.value = np.zeros(n)  # each row's quantity at the last step, sign-flipped
        self.level_rows = {level: np.array([r.level == level for r in rows], dtype=bool)
                           for level in Level}
        self._summarise()

    def _tune(self, rows: tuple[ProtectionRow, ...]) -> None:
        self.rows = rows
        self.trip_at = self.sign * np.array([r.threshold for r in rows])
        self.safe_below = [r.release * (1.0 if r.above else -1.0) for r in rows]
        self.debounce_s = [r.debounce_s - TIME_EPS_S for r in rows]
        self.release_s = [r.release_s - TIME_EPS_S for r in rows]
        self._trip_if_enabled()

    def _trip_if_enabled(self) -> None:
        """Each row's trip point, +inf for a row turned off: nothing is over +inf (a NaN
        and +inf included), so `evaluate` needs no separate mask for the rows that are off."""
        self._enabled_trip_at = np.where(self.enabled, self.trip_at, np.inf)

    def retune(self, rows: tuple[ProtectionRow, ...]) -> None:
        """New numbers for the same rows (a configuration change at run time). Each row's
        state carries over - raised, debouncing since, releasing since, enabled - so a
        raised fault stays raised and a debounce under way keeps its start. Rows of another
        fault, level, quantity or direction, or in another order, are refused."""
        fixed = attrgetter("fault", "level", "quantity", "above")
        if list(map(fixed, rows)) != list(map(fixed, self.rows)):
            raise ValueError("retune takes new numbers for the same protection rows: same "
                             "fault, level, quantity and direction, in the same order")
        self._tune(rows)

    def _summarise(self) -> None:
        """Bitmap and per-level flags, recomputed only when a row changes."""
        self.bitmap = int(np.bitwise_or.reduce(self.bits[self.active], initial=0))
        self.level_active = {level: bool((self.active & rows).any())
                             for level, rows in self.level_rows.items()}
        # Read several times a step: attributes, where `any_active` reads a dict through an
        # enum member (on Python 3.11 each read of one through its class costs ~0.15 us).
        self.any_fault = self.level_active[Level.FAULT]
        self.any_alarm = self.level_active[Level.ALARM]
        self.level_bitmaps = tuple(
            int(np.bitwise_or.reduce(self.bits[self.active & self.level_rows[level]], initial=0))
            for level in Level)

    def last_value(self, row: int) -> float:
        """The row's quantity at the last step, in its own units."""
        return float(self.value[row] * self.sign[row])

    def evaluate(self, quantities: np.ndarray, now_s: float, clear_request: bool) -> list[Change]:
        """Advances every row's debouncer with this step's quantities; returns the changes."""
        value = quantities[self.quantity_index]
        value *= self.sign
        self.value = value
        over = value > self._enabled_trip_at
        hot = (over | self.active).nonzero()[0]  # flatnonzero, without its two wrappers
        if not hot.size and not self.over_since_s:
            return []
        changes: list[Change] = []
        for i in set(hot.tolist()) | set(self.over_since_s):  # Python ints
            if over[i]:
                start_s = self.over_since_s.setdefault(i, now_s)
                if not self.active[i] and now_s - start_s >= self.debounce_s[i]:
                    self.active[i] = True
                    self.safe_since_s.pop(i, None)
                    changes.append(Change(i, "raised"))
                    continue
            else:
                self.over_since_s.pop(i, None)
            if not self.active[i]:
                continue
            if not self.enabled[i] or value[i] < self.safe_below[i]:
                safe_s = self.safe_since_s.setdefault(i, now_s)
                if clear_request or (not self.latching[i]
                                     and now_s - safe_s >= self.release_s[i]):
                    self.active[i] = False
                    self.safe_since_s.pop(i, None)
                    changes.append(Change(i, "cleared"))
            else:
                self.safe_since_s.pop(i, None)
        if changes:
            changes.sort(key=lambda c: (c.action != "raised", c.row))
            self._summarise()
        return changes

    def active_bitmap(self) -> int:
        """Fault bitmap: the bit of every fault with a row of any level active."""
        return self.bitmap

    def any_active(self, level: str) -> bool:
        return self.level_active[level]

    def fault_pending(self) -> bool:
        """A FAULT row is over its threshold, tripped or not: no time to close contactors."""
        return any(self.latching[i] for i in self.over_since_s)

    def over_or_active(self, rows: tuple[int, ...]) -> bool:
        """One of these rows is over its threshold (debouncing) or raised."""
        if not (self.over_since_s or self.bitmap):  # most steps: no row over, none raised
            return False
        for i in rows:  # noqa: SIM110 - every step, for a few rows: any(generator) costs more
            if self.active[i] or i in self.over_since_s:
                return True
        return False

    def any_row_active(self, rows: tuple[int, ...]) -> bool:
        """One of these rows is raised."""
        if not self.bitmap:  # most steps: no row raised (a raised row has a bit)
            return False
        for i in rows:  # noqa: SIM110 - as in `over_or_active`
            if self.active[i]:
                return True
        return False

    def held_rows(self) -> list[int]:
        """The FAULT rows raised whose quantity was not back past its release at the last
        step: a clear request leaves them raised."""
        return [int(i) for i in np.flatnonzero(self.active & self.enabled)
                if self.latching[i] and self.value[i] >= self.safe_below[i]]

    def debouncing_fault_rows(self) -> list[RowKey]:
        """The FAULT rows over their threshold and not yet raised (debouncing)."""
        return [row_key(self.rows[i]) for i in sorted(self.over_since_s)
                if self.latching[i] and not self.active[i]]

    def latched_rows(self) -> list[RowKey]:
        """The FAULT rows raised and not yet cleared, by what identifies a row."""
        return [row_key(self.rows[i]) for i in np.flatnonzero(self.active) if self.latching[i]]

    def fault_rows(self) -> dict[RowKey, int]:
        """Each FAULT row's index, by what identifies a row."""
        return {row_key(r): i for i, r in enumerate(self.rows) if r.level == Level.FAULT}

    def latch(self, keys: list[RowKey]) -> list[RowKey]:
        """Raises the named FAULT rows as they were before a power-down (they clear, as
        ever, on a clear-faults request once their quantity is back). Returns the keys
        that name no FAULT row of this table."""
        index = self.fault_rows()
        unknown = [k for k in keys if k not in index]
        for k in keys:
            if k in index:
                self.active[index[k]] = True
        self._summarise()
        return unknown

    def set_enabled(self, faults: set[str], enabled: bool,
                    levels: set[str] | None = None) -> list[Change]:
        """Turns the rows of the named faults (at `levels`, None: every level) on or off
        (storage suspends under-voltage); an active row turned off clears at once, and that
        is reported like any clear."""
        changes = []
        for i, row in enumerate(self.rows):
            if row.fault in faults and (levels is None or row.level in levels):
                self.enabled[i] = enabled
                if not enabled:
                    if self.active[i]:
                        changes.append(Change(i, "cleared"))
                    self.active[i] = False
                    self.over_since_s.pop(i, None)
                    self.safe_since_s.pop(i, None)
        self._trip_if_enabled()
        self._summarise()
        return changes
