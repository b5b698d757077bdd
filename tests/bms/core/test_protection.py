"""The protection table's one debouncer, in simulated time."""

from __future__ import annotations

import numpy as np
import pytest

from bms.core.protection import Protection
from bms.data.config import ProtectionRow
from bms.data.quantities import QUANTITIES, QUANTITY_INDEX

TICK_S = 0.1
V_MAX = QUANTITY_INDEX["cell_v_max"]
V_MIN = QUANTITY_INDEX["cell_v_min"]


def row(level="FAULT", above=True, threshold=4.1, release=3.95, debounce_s=2.0, release_s=2.0):
    quantity = "cell_v_max" if above else "cell_v_min"
    return ProtectionRow("CELL_OVERVOLTAGE" if above else "CELL_UNDERVOLTAGE", level, quantity,
                         above, threshold, release, debounce_s, release_s)


def drive(protection: Protection, values: list[float], index=V_MAX, start_s=0.0,
          clear_at_s: float | None = None):
    """Feeds one value per tick; returns (time, action) for every change."""
    q = np.zeros(len(QUANTITIES))
    seen = []
    for k, value in enumerate(values):
        now_s = start_s + k * TICK_S
        q[index] = value
        clear = clear_at_s is not None and abs(now_s - clear_at_s) < TICK_S / 2
        for change in protection.evaluate(q, now_s, clear):
            seen.append((round(now_s, 6), change.action))
    return seen


def held(seconds: float, high=4.3, low=4.0, before=5) -> list[float]:
    """`before` ticks low, then high for `seconds` (counted tick to tick), then low again."""
    n = round(seconds / TICK_S) + 1
    return [low] * before + [high] * n + [low] * 50


def test_condition_held_for_debounce_minus_a_tick_does_not_trip():
    assert drive(Protection((row(),)), held(2.0 - TICK_S)) == []


def test_condition_held_for_debounce_trips_exactly_then():
    changes = drive(Protection((row(),)), held(2.0 + TICK_S))
    # first seen at tick 5 (0.5 s): trips at 0.5 + 2.0 s
    assert changes == [(2.5, "raised")]


def test_zero_debounce_trips_on_first_sight():
    assert drive(Protection((row(debounce_s=0.0),)), held(0.0)) == [(0.5, "raised")]


def test_an_interruption_restarts_the_debounce():
    values = [4.3] * 15 + [4.0] + [4.3] * 15 + [4.0] * 5
    assert drive(Protection((row(),)), values) == []


def test_fault_latches_until_clear_request_and_condition_gone():
    protection = Protection((row(),))
    values = [4.3] * 25 + [4.0] * 100
    # no clear request: stays raised
    assert drive(protection, values) == [(2.0, "raised")]
    assert protection.active[0]
    # a request while the condition still holds does nothing
    q = np.zeros(len(QUANTITIES))
    q[V_MAX] = 4.2
    assert protection.evaluate(q, 20.0, clear_request=True) == []
    # a request once the value is back past the release value clears it, once
    q[V_MAX] = 3.9
    assert [c.action for c in protection.evaluate(q, 20.1, clear_request=True)] == ["cleared"]
    assert protection.evaluate(q, 20.2, clear_request=True) == []


def test_a_value_between_threshold_and_release_does_not_clear_a_latched_fault():
    protection = Protection((row(),))
    drive(protection, [4.3] * 25)
    q = np.zeros(len(QUANTITIES))
    q[V_MAX] = 4.0  # below the threshold, above the 3.95 V release
    assert protection.evaluate(q, 10.0, clear_request=True) == []


def test_warning_clears_itself_after_release_time_with_hysteresis():
    protection = Protection((row(level="WARNING"),))
    values = [4.3] * 25 + [4.0] * 40 + [3.9] * 40
    changes = drive(protection, values)
    # 4.0 V is below the threshold but not past the release: still raised;
    # at 3.9 V (t = 6.5 s) it clears 2 s later
    assert changes == [(2.0, "raised"), (8.5, "cleared")]


def test_below_rows_trip_low_and_release_high():
    protection = Protection((row(level="ALARM", above=False, threshold=1.8, release=2.2),))
    values = [2.5] * 5 + [1.7] * 25 + [2.0] * 30 + [2.3] * 30
    changes = drive(protection, values, index=V_MIN)
    assert changes == [(2.5, "raised"), (8.0, "cleared")]


def test_each_raise_and_clear_is_one_event():
    protection = Protection((row(level="WARNING", debounce_s=0.5, release_s=0.5),))
    values = ([4.3] * 10 + [3.9] * 10) * 3
    changes = drive(protection, values)
    assert [a for _, a in changes] == ["raised", "cleared"] * 3


def test_levels_are_independent_rows_and_bitmap_has_the_fault_bit():
    rows = (row(level="WARNING", threshold=4.0), row(level="ALARM", threshold=4.05), row())
    protection = Protection(rows)
    drive(protection, [4.06] * 30)
    assert protection.active.tolist() == [True, True, False]
    assert protection.active_bitmap() == 1  # CELL_OVERVOLTAGE is code 0
    assert protection.any_active("ALARM") and not protection.any_active("FAULT")
    assert protection.level_bitmaps == (1, 1, 0)  # WARNING and ALARM rows, no FAULT row
    drive(protection, [3.0] * 60, start_s=10.0)
    assert protection.level_bitmaps == (0, 0, 0)


def test_disabled_rows_neither_trip_nor_stay_raised():
    protection = Protection((row(above=False, threshold=1.8, release=2.2, level="WARNING"),))
    protection.set_enabled({"CELL_UNDERVOLTAGE"}, False)
    assert drive(protection, [0.0] * 50, index=V_MIN) == []


@pytest.mark.parametrize("debounce_s", [0.3, 1.0, 5.0])
def test_trip_time_is_exact_for_several_debounces(debounce_s):
    changes = drive(Protection((row(debounce_s=debounce_s),)), held(debounce_s + 1.0))
    assert changes[0] == (round(0.5 + debounce_s, 6), "raised")
