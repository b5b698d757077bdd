"""Each protection row is shown by a test in simulated time.

Every row of the default configuration of both presets (16S, 1.5 Ah) runs alone through a
fresh `Protection`, at a 0.1 s tick: a condition held for its debounce less one tick does
not raise; held for its debounce it raises once, exactly then; WARNING and ALARM rows clear
themselves after their release time past the release value, FAULT rows latch until a
clear-faults request finds the quantity past the release value. Expected times are worked
out from the row's own fields.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from bms.core.protection import Protection
from bms.data.config import ProtectionRow, default_config
from bms.data.faults import FAULT_CODES
from bms.data.presets import PRESETS
from bms.data.quantities import QUANTITIES, QUANTITY_INDEX

TICK_S = 0.1
LEAD_TICKS = 5  # neutral ticks before the condition appears: first seen at 0.5 s
FIRST_SEEN_S = LEAD_TICKS * TICK_S
PRESET_NAMES = ("na-nfm", "na-nvpf")


def row_id(preset: str, row: ProtectionRow) -> str:
    return f"{preset}-{row.fault}-{row.level}-{row.quantity}"


def every_row() -> list:
    return [pytest.param(row, id=row_id(name, row))
            for name in PRESET_NAMES
            for row in default_config(PRESETS[name], 16, 1.5).protection]


ROWS = every_row()
SELF_CLEARING = [p for p in ROWS if p.values[0].level in ("WARNING", "ALARM")]
LATCHING = [p for p in ROWS if p.values[0].level == "FAULT"]


class Values(NamedTuple):
    """Readings for one row, each a hysteresis band away from where it matters."""

    beyond: float  # past the threshold: the condition holds
    between: float  # back over the threshold, not yet past the release value
    past: float  # past the release value, on the safe side (also the neutral reading)


def values_for(row: ProtectionRow) -> Values:
    sign = 1.0 if row.above else -1.0
    band = abs(row.threshold - row.release)
    return Values(beyond=row.threshold + sign * band,
                  between=0.5 * (row.threshold + row.release),
                  past=row.release - sign * band)


def ticks_spanning(seconds: float) -> int:
    """Ticks whose first and last are `seconds` apart."""
    return round(seconds / TICK_S) + 1


def at(t_s: float) -> float:
    return round(t_s, 6)


class Drive:
    """One row alone in a fresh Protection, fed one value per tick on a simulated clock."""

    def __init__(self, row: ProtectionRow):
        self.row = row
        self.protection = Protection((row,))
        self.index = QUANTITY_INDEX[row.quantity]
        self.q = np.zeros(len(QUANTITIES))
        self.k = 0
        self.changes: list[tuple[float, str]] = []

    def hold(self, value: float, ticks: int, clear: bool = False) -> float:
        """`value` for `ticks` ticks; returns the time of the first of them."""
        first_s = self.k * TICK_S
        for _ in range(ticks):
            now_s = self.k * TICK_S
            self.q[self.index] = value
            for change in self.protection.evaluate(self.q.copy(), now_s, clear):
                assert change.row == 0
                self.changes.append((at(now_s), change.action))
            self.k += 1
        return first_s

    @property
    def active(self) -> bool:
        return bool(self.protection.active[0])


def raised(row: ProtectionRow) -> Drive:
    """A drive that has raised the row: neutral, then beyond for debounce + one tick."""
    drive = Drive(row)
    v = values_for(row)
    drive.hold(v.past, LEAD_TICKS)
    drive.hold(v.beyond, ticks_spanning(row.debounce_s + TICK_S))
    assert drive.changes == [(at(FIRST_SEEN_S + row.debounce_s), "raised")]
    return drive


def test_every_row_of_both_presets_is_covered_once():
    ids = [p.id for p in ROWS]
    assert len(ids) == len(set(ids))
    for name in PRESET_NAMES:
        n_rows = len(default_config(PRESETS[name], 16, 1.5).protection)
        assert sum(i.startswith(f"{name}-") for i in ids) == n_rows
    assert len(SELF_CLEARING) + len(LATCHING) == len(ROWS)
    assert any(p.values[0].debounce_s == 0.0 for p in ROWS)  # SHORT_CIRCUIT


@pytest.mark.parametrize("row", ROWS)
def test_row_values_are_on_the_expected_sides(row):
    """The readings the other tests use sit where their names say, for this row."""
    v = values_for(row)
    beyond = (lambda x, limit: x > limit) if row.above else (lambda x, limit: x < limit)
    assert beyond(row.threshold, row.release)  # the release is on the safe side
    assert beyond(v.beyond, row.threshold)
    assert not beyond(v.between, row.threshold) and beyond(v.between, row.release)
    assert not beyond(v.past, row.release)


@pytest.mark.parametrize("row", ROWS)
def test_beyond_threshold_for_debounce_less_a_tick_does_not_raise(row):
    drive = Drive(row)
    v = values_for(row)
    drive.hold(v.past, LEAD_TICKS)
    assert drive.changes == []
    if row.debounce_s == 0.0:
        # No debounce: there is no shorter hold; a single tick beyond trips on first sight.
        drive.hold(v.beyond, 1)
        assert drive.changes == [(at(FIRST_SEEN_S), "raised")]
        assert drive.active
        return
    short = ticks_spanning(row.debounce_s - TICK_S)
    drive.hold(v.beyond, short)
    drive.hold(v.past, 1)  # an interruption restarts the debounce
    drive.hold(v.beyond, short)
    drive.hold(v.past, ticks_spanning(row.debounce_s + row.release_s + 1.0))
    assert drive.changes == []
    assert not drive.active
    assert drive.protection.active_bitmap() == 0


@pytest.mark.parametrize("row", ROWS)
def test_beyond_threshold_for_debounce_raises_once_at_first_seen_plus_debounce(row):
    drive = Drive(row)
    v = values_for(row)
    drive.hold(v.past, LEAD_TICKS)
    first_seen_s = drive.hold(v.beyond, ticks_spanning(row.debounce_s + TICK_S))
    assert at(first_seen_s) == at(FIRST_SEEN_S)
    trip_s = at(FIRST_SEEN_S + row.debounce_s)  # 0.5 s + debounce_s
    assert drive.changes == [(trip_s, "raised")]
    # held on: still one raise, not one per tick
    drive.hold(v.beyond, ticks_spanning(3.0))
    assert drive.changes == [(trip_s, "raised")]
    assert drive.active
    assert drive.protection.active_bitmap() == 1 << FAULT_CODES[row.fault]
    assert drive.protection.any_active(row.level)
    assert drive.protection.last_value(0) == pytest.approx(v.beyond)


@pytest.mark.parametrize("row", SELF_CLEARING)
def test_warning_and_alarm_rows_clear_themselves_after_release_time_past_release(row):
    drive = raised(row)
    trip = drive.changes[0]
    v = values_for(row)
    # between threshold and release: hysteresis keeps it raised, however long
    drive.hold(v.between, ticks_spanning(row.release_s + 2.0))
    assert drive.changes == [trip] and drive.active
    # past release for one tick less than the release time, then back between: still raised
    drive.hold(v.past, ticks_spanning(row.release_s - TICK_S))
    drive.hold(v.between, 1)
    assert drive.changes == [trip] and drive.active
    # past release for the release time: clears once, exactly then
    past_from_s = drive.hold(v.past, ticks_spanning(row.release_s + TICK_S))
    drive.hold(v.past, ticks_spanning(3.0))
    assert drive.changes == [trip, (at(past_from_s + row.release_s), "cleared")]
    assert not drive.active
    assert drive.protection.active_bitmap() == 0
    assert not drive.protection.any_active(row.level)


@pytest.mark.parametrize("row", LATCHING)
def test_fault_rows_latch_until_a_clear_request_finds_the_value_past_release(row):
    drive = raised(row)
    trip = drive.changes[0]
    v = values_for(row)
    # past release well beyond the release time, no request: stays raised
    drive.hold(v.past, ticks_spanning(row.release_s + 2.0))
    assert drive.changes == [trip] and drive.active
    # a request while the value is between threshold and release: still raised
    drive.hold(v.between, 3, clear=True)
    assert drive.changes == [trip] and drive.active
    # a request while the condition holds again: still raised, and not raised twice
    drive.hold(v.beyond, 1, clear=True)
    assert drive.changes == [trip] and drive.active
    # a request with the value past release: cleared at once, exactly once
    clear_s = drive.hold(v.past, 1, clear=True)
    drive.hold(v.past, 10, clear=True)
    assert drive.changes == [trip, (at(clear_s), "cleared")]
    assert not drive.active
    assert drive.protection.active_bitmap() == 0
    assert not drive.protection.any_active("FAULT")
