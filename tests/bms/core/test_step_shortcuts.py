"""The step's shortcuts (issue 19: the firmware's fixed cost a step) give what the full work
gives: the stuck-reading count that skips its passes while no reading can count, rows turned
off by an infinite trip point, extremes widened only when a reading is wider, row look-ups
that answer a quiet table from its bitmap, and the step's one finding of an unreadable cell."""

from __future__ import annotations

import numpy as np
import pytest

from bms.core.counters import Counters
from bms.core.firmware import STUCK_PACK_MOVE_V, Firmware
from bms.core.protection import Protection
from bms.core.signals import OPEN, Measurement
from bms.data.config import ProtectionRow
from bms.data.presets import PRESETS
from bms.data.quantities import QUANTITIES, QUANTITY_INDEX

TICK_S = 0.1
STUCK = QUANTITY_INDEX["reading_stuck_s"]


def reference_stuck_s(readings: list[np.ndarray], times_s: list[float]) -> list[float]:
    """The longest repeat, a pass over every cell each step: what the figure was before
    it skipped passes."""
    out, last, last_s = [], None, 0.0
    for v, now_s in zip(readings, times_s, strict=True):
        mean_v = float(v.sum()) / v.size
        if last is None:
            stuck_s, at_change_v = np.zeros(v.size), np.full(v.size, mean_v)
        else:
            changed = v != last
            at_change_v = np.where(changed, mean_v, at_change_v)
            moved = np.abs(at_change_v - mean_v) > STUCK_PACK_MOVE_V
            stuck_s = np.where(changed, 0.0, np.where(moved, stuck_s + (now_s - last_s),
                                                      stuck_s))
        out.append(float(stuck_s.max()))
        last, last_s = v, now_s
    return out


def wandering_readings(n_cells: int, n_steps: int, seed: int) -> list[np.ndarray]:
    """Readings at a 1 mV step whose mean wanders up and down by tens of mV, most cells
    moving each step, some holding for a while, one frozen for 30 s mid-run."""
    rng = np.random.default_rng(seed)
    mean_v = 3.6 + 0.03 * np.sin(np.linspace(0.0, 6.0, n_steps))
    v = np.round(np.full(n_cells, mean_v[0]), 3)
    out = []
    for k in range(n_steps):
        fresh = np.round(mean_v[k] + rng.normal(0.0, 0.0015, n_cells), 3)
        moving = rng.random(n_cells) < 0.7
        if 100 <= k < 400:
            moving[2] = False  # frozen while the pack moves
        v = np.where(moving, fresh, v)
        out.append(v.copy())
    return out


def back_past_a_change(n_cells: int) -> list[np.ndarray]:
    """The mean rises 4 mV (less than the 5 mV that counts) with every reading, then falls
    back past where it was while one reading holds at the top: that reading must count,
    though the mean never moves 5 mV from where it stood before the rise."""
    flicker = [np.full(n_cells, 3.600 + 0.001 * (k % 2)) for k in range(50)]
    below = []
    for k in range(100):
        v = np.full(n_cells, 3.597 + 0.001 * (k % 2))
        v[5] = 3.604
        below.append(v)
    return flicker + [np.full(n_cells, 3.604)] + below


@pytest.mark.parametrize("readings", [wandering_readings(16, 900, seed=3),
                                      back_past_a_change(16)],
                         ids=["wandering", "back-past-a-change"])
def test_the_stuck_count_equals_a_pass_over_every_cell_each_step(readings):
    times_s = [k * TICK_S for k in range(len(readings))]
    fw = Firmware(PRESETS["na-nfm"], 16, 10.0)
    got = []
    for v, now_s in zip(readings, times_s, strict=True):
        fw.step(Measurement(v, np.full(4, 25.0), 0.0, 0.0, OPEN), now_s)
        got.append(float(fw.quantities[STUCK]))
    expected = reference_stuck_s(readings, times_s)
    assert max(expected) > 5.0  # a held reading counted: both ways were exercised
    assert got == expected


def over_row(level: str = "WARNING") -> ProtectionRow:
    return ProtectionRow("CELL_OVERVOLTAGE", level, "cell_v_max", True, 4.1, 3.95, 0.0, 0.0)


def test_a_row_turned_off_stays_off_through_a_retune_and_trips_once_on_again():
    protection = Protection((over_row(),))
    q = np.zeros(len(QUANTITIES))
    q[QUANTITY_INDEX["cell_v_max"]] = np.inf  # beyond any threshold
    protection.set_enabled({"CELL_OVERVOLTAGE"}, False)
    protection.retune((ProtectionRow("CELL_OVERVOLTAGE", "WARNING", "cell_v_max", True, 3.0,
                                     2.9, 0.0, 0.0),))
    assert protection.evaluate(q, 0.0, False) == []
    protection.set_enabled({"CELL_OVERVOLTAGE"}, True)
    assert [c.action for c in protection.evaluate(q, 0.1, False)] == ["raised"]


def test_extremes_widen_by_readable_readings_only_and_are_kept_as_floats():
    counters = Counters()
    counters.see(np.float64(3.1), np.float64(3.3), 20.0, 25.0, np.float64(-4.0))
    counters.see(np.nan, np.nan, np.nan, np.nan, np.nan)
    counters.see(3.2, 3.2, 19.0, 24.0, 1.0)
    x = counters.extremes
    assert (x["cell_v_min"], x["cell_v_max"], x["temp_c_min"], x["temp_c_max"],
            x["current_a_min"], x["current_a_max"]) == (3.1, 3.3, 19.0, 25.0, -4.0, 1.0)
    assert all(type(value) is float for value in x.values())


def reference_over_or_active(protection: Protection, rows: tuple[int, ...]) -> bool:
    """A look at each row: what `over_or_active` gave before it looked at the bitmap first."""
    return any(protection.active[i] or i in protection.over_since_s for i in rows)


def test_row_look_ups_that_skip_a_quiet_table_equal_a_look_at_each_row():
    fw = Firmware(PRESETS["na-nfm"], 16, 10.0)
    protection = fw.protection
    rng = np.random.default_rng(5)
    n = len(protection.rows)
    rows = tuple(int(i) for i in rng.choice(n, 6, replace=False))
    seen = set()
    for k in range(400):
        # Mostly quiet, like the steps that take the shortcut; now and then rows raised
        # (summarised, as every change of the table is) or one debouncing.
        protection.active[:] = rng.random(n) < (0.0 if k % 3 else 0.1)
        protection._summarise()
        protection.over_since_s = ({int(rng.integers(n)): 0.0} if k % 5 == 0 else {})
        expected = reference_over_or_active(protection, rows)
        seen.add(expected)
        assert protection.over_or_active(rows) == expected
        assert protection.any_row_active(rows) == any(protection.active[i] for i in rows)
        assert protection.any_fault == protection.any_active("FAULT")
        assert protection.any_alarm == protection.any_active("ALARM")
    assert seen == {True, False}  # both answers were exercised


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # inf - inf, as ever
@pytest.mark.parametrize("bleeding", [False, True], ids=["no-bleed", "bleed"])
def test_the_step_knows_an_unreadable_cell_as_a_look_at_every_reading_does(bleeding):
    """The voltage room (`_voltage_room_a`) takes `_quantities`' finding rather than its own
    pass over the readings: the two agree for NaN and infinite readings, under a bleed too."""
    fw = Firmware(PRESETS["na-nfm"], 16, 10.0)
    rng = np.random.default_rng(11)
    mask = np.zeros(16, dtype=bool)
    mask[::3] = bleeding
    found = []
    for k in range(300):
        v = np.round(3.9 + rng.normal(0.0, 0.01, 16), 3)
        if k % 4 == 1:
            v[rng.integers(16)] = rng.choice([np.nan, np.inf, -np.inf])
        fw.step(Measurement(v, np.full(4, 25.0), 1.0, 0.0, OPEN, balancing=mask), k * TICK_S)
        found.append(fw._cells_unreadable)
        assert fw._cells_unreadable == (not np.isfinite(v).all())
    assert True in found and False in found
