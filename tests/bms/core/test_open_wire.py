"""Open-wire detection (bms.core.open_wire): the AFE's active test decides where the source
runs it, confirmed over tests in a row; a source without it gets the strict passive
fallback, or nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bms.core.open_wire import (
    PASSIVE_MIN_CELLS,
    STAND_OUT,
    UNANSWERED_LIMIT,
    OpenWireCheck,
    passive_score_v,
)
from bms.data.config import OpenWireConfig, OpenWireFallback

CFG = OpenWireConfig()  # a test every 2 s, two in a row confirm
N = 8
V = np.full(N, 3.6)
SPREAD_V = 0.16  # what the default 80 mV row gives: twice its threshold


def wire_test_v(v: np.ndarray, lower: int | None = None) -> np.ndarray:
    """A test reading: intact channels as ordinary, the cell below an open tap at 0 V."""
    t = v.copy()
    if lower is not None:
        t[lower + 1] += t[lower]
        t[lower] = 0.0
    return t


def test_only_tests_in_a_row_confirm_an_open_wire():
    check = OpenWireCheck(N)
    assert check.update(V, wire_test_v(V, 3), True, SPREAD_V, CFG) == 0.0  # one test: not yet
    assert check.update(V, None, True, SPREAD_V, CFG) == 0.0  # held between tests
    assert check.update(V, wire_test_v(V, 3), True, SPREAD_V, CFG) == pytest.approx(3.6)
    assert check.worst_cell(V) == 3  # the channel that collapsed: the cell below the tap
    assert check.update(V, None, True, SPREAD_V, CFG) == pytest.approx(3.6)  # held
    assert check.update(V, wire_test_v(V), True, SPREAD_V, CFG) == 0.0  # a test that passes
    # A collapse, a pass, a collapse: never two in a row.
    for lower in (5, None, 5, None, 5):
        assert check.update(V, wire_test_v(V, lower), True, SPREAD_V, CFG) == 0.0


def test_confirmation_counts_the_smallest_collapse_over_the_tests():
    check = OpenWireCheck(N)
    cfg = dataclasses.replace(CFG, confirm_tests=3)
    half = V.copy()
    half[2] = 1.0  # a partial collapse: 2.6 V
    for t in (wire_test_v(V, 2), half, wire_test_v(V, 2)):
        figure = check.update(V, t, True, SPREAD_V, cfg)
    assert figure == pytest.approx(2.6)


def test_readings_alone_never_raise_it_once_the_source_tests():
    """Two neighbours as far apart, equal and opposite, as an open wire puts them: with tests
    that pass, the figure stays 0."""
    check = OpenWireCheck(N)
    v = V.copy()
    v[3] += 0.5
    v[4] -= 0.5
    assert passive_score_v(v, SPREAD_V) == pytest.approx(0.5)  # what the fallback would see
    for _ in range(5):
        assert check.update(v, wire_test_v(v), True, SPREAD_V, CFG) == 0.0
        assert check.update(v, None, True, SPREAD_V, CFG) == 0.0
    assert check.testing


def test_a_test_taken_under_a_bleed_or_of_another_size_is_not_counted():
    check = OpenWireCheck(N)
    check.update(V, wire_test_v(V, 3), True, SPREAD_V, CFG)
    assert check.update(V, wire_test_v(V, 3), False, SPREAD_V, CFG) == 0.0  # under a bleed
    assert check.update(V, wire_test_v(V, 3)[:-1], True, SPREAD_V, CFG) == 0.0
    assert check.testing  # still an answer: the source runs the test
    assert check.update(V, wire_test_v(V, 3), True, SPREAD_V, CFG) == pytest.approx(3.6)


def test_a_test_reading_that_is_not_a_number_counts_as_no_collapse():
    check = OpenWireCheck(N)
    t = wire_test_v(V, 3)
    t[3] = np.nan
    for _ in range(3):
        assert check.update(V, t, True, SPREAD_V, CFG) == 0.0


def test_tests_are_asked_for_every_period_and_only_with_no_bleed_ahead():
    check = OpenWireCheck(N)
    asked = [t for t in np.arange(0.0, 10.0, 0.1).round(6)
             if check.request(float(t), quiet=not 3.0 <= t < 5.05, cfg=CFG)
             and check.update(V, wire_test_v(V), True, SPREAD_V, CFG) == 0.0]
    # 0, 2, then the one due at 4 waits for the bleed to stop, then every 2 s from there
    assert asked == [0.0, 2.0, 5.1, 7.1, 9.1]


def test_a_source_that_does_not_answer_gets_the_fallback():
    check = OpenWireCheck(N)
    v = V.copy()
    v[3] += 0.5
    v[4] -= 0.5
    assert not check.testing  # before any answer: the fallback
    assert check.update(v, None, True, SPREAD_V, CFG) == pytest.approx(0.5)
    off = dataclasses.replace(CFG, fallback=OpenWireFallback.OFF)
    assert check.update(v, None, True, SPREAD_V, off) == 0.0
    # A source that answered, then stops: the second request in a row left unanswered
    # ends the trust in tests (and in their held figure).
    check.request(0.0, True, CFG)
    check.update(V, wire_test_v(V, 3), True, SPREAD_V, CFG)
    check.request(2.0, True, CFG)
    assert check.update(V, wire_test_v(V, 3), True, SPREAD_V, CFG) == pytest.approx(3.6)
    for k in range(UNANSWERED_LIMIT):
        assert check.testing
        check.request(4.0 + 2.0 * k, True, CFG)
        check.update(v, None, True, SPREAD_V, CFG)
    check.request(4.0 + 2.0 * UNANSWERED_LIMIT, True, CFG)
    assert not check.testing
    assert check.update(v, None, True, SPREAD_V, CFG) == pytest.approx(0.5)
    # An answer again: tests decide again, from scratch.
    assert check.update(v, wire_test_v(v), True, SPREAD_V, CFG) == 0.0 and check.testing


def test_the_passive_fallback_wants_a_pair_that_stands_out():
    rng = np.random.default_rng(1)
    spread = 0.2 * (rng.random(16) - 0.5)  # cells +-100 mV apart, on their own
    v = 3.3 + spread
    shift = np.zeros(16)
    shift[6], shift[7] = 0.3, -0.3
    # The same pair shift stands out from a tight pack, not from a pack spread this far.
    tight = 3.3 + 0.01 * spread + shift
    assert passive_score_v(tight, SPREAD_V) == pytest.approx(0.3, abs=0.005)
    assert passive_score_v(v + shift, SPREAD_V) == 0.0
    # Just at the edge: the pair's score against STAND_OUT times the largest other.
    edge = np.full(16, 3.3)
    edge[6], edge[7] = 3.6, 3.0
    other_v = 0.3 / STAND_OUT - 0.001
    edge[12], edge[13] = 3.3 + other_v, 3.3 - other_v  # the mean stays put
    assert passive_score_v(edge, SPREAD_V) == pytest.approx(0.3)
    edge[12] += 0.002
    edge[13] -= 0.002
    assert passive_score_v(edge, SPREAD_V) == 0.0


def test_the_passive_fallback_says_nothing_of_few_cells_small_spreads_or_nan():
    v = np.array([3.6, 3.0, 3.3, 3.3])
    assert PASSIVE_MIN_CELLS == 4 and passive_score_v(v, SPREAD_V) == pytest.approx(0.3)
    assert passive_score_v(v[:3], SPREAD_V) == 0.0  # three cells: too few others
    assert passive_score_v(np.array([3.6, 3.0]), SPREAD_V) == 0.0  # always "opposite"
    assert passive_score_v(v, 0.7) == 0.0  # a spread too small to look at
    v[2] = np.nan
    assert passive_score_v(v, SPREAD_V) == 0.0
