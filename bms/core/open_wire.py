"""Open-wire detection: the AFE's active test where the measurement source runs it, and a
strict look at the readings where it does not. Pure: time is passed in.

Why and how: docs/internals.md, bms/core/open_wire.py.
"""

from __future__ import annotations

import numpy as np

from bms.data.config import OpenWireConfig, OpenWireFallback

TIME_EPS_S = 1e-9  # sums of float ticks are not exact
# Requests in a row left unanswered: the source does not run the test (a replayed trace, a
# rig's frame). One may be lost (a silent tick); two are not chance.
UNANSWERED_LIMIT = 2
# Passive fallback: the pair's shift must be this many times the largest deviation of any
# other cell from the mean. An open wire moves two neighbours and leaves the rest of the
# pack together (observed 8x and more at any SoC); cells that spread on their own near
# empty move many cells (at most 1.2x observed, 16S and 416S of na-nfm and na-nvpf).
STAND_OUT = 3.0
# Fewer cells leave too few others to stand out from (two cells always deviate equally
# and oppositely from their mean).
PASSIVE_MIN_CELLS = 4


def passive_score_v(v: np.ndarray, min_spread_v: float) -> float:
    """Without the test: how far two neighbouring readings have moved apart in equal and
    opposite directions (an open sense wire moves its tap: one cell reads high, the other as
    much low, their sum stays right), counted only when that pair stands out from every
    other cell by STAND_OUT; 0 otherwise, and when the readings spread less than
    `min_spread_v` (nothing to look closer at) or one is not a number.

    For neighbours a and b (deviations from the mean) min(|a|, |b|) - |a + b| is that amount
    for such a pair, and zero or less for one cell off on its own or two moving the same way.
    """
    if v.size < PASSIVE_MIN_CELLS or not float(v.max() - v.min()) > min_spread_v:
        return 0.0
    d = v - v.sum() / v.size
    a, b = d[:-1], d[1:]
    score = np.minimum(np.abs(a), np.abs(b)) - np.abs(a + b)
    k = int(np.argmax(score))
    others = np.abs(d)
    others[k:k + 2] = 0.0
    best = float(score[k])
    return best if best >= STAND_OUT * float(others.max()) else 0.0


class OpenWireCheck:
    """The figure the OPEN_WIRE row watches (`open_wire_v`), and when to ask for a test.

    Once the source has answered a test, only tests decide: a cell channel counts by the
    smallest collapse (ordinary reading minus test reading) it showed over the last
    `confirm_tests` tests, and the figure is the largest such count, held between tests.
    Readings alone never raise OPEN_WIRE then, whatever the cells do.
    """

    def __init__(self, n_series: int):
        self.n_series = n_series
        self.testing = False  # the source answers test requests: tests alone decide
        self.pending = False  # a request is out, not answered yet
        self.unanswered = 0  # requests in a row that went unanswered
        self.requested_at_s: float | None = None
        self.tests = 0  # tests counted (taken with no bleed)
        self.collapse_v = np.zeros((0, n_series))  # the last tests' collapses, newest last
        self.confirmed_v = np.zeros(n_series)  # each channel's smallest over confirm_tests
        self.tested_v = 0.0  # the largest of those: the figure while the source tests
        self.passive_v = 0.0  # the fallback's figure, held from the last clean reading

    def update(self, v: np.ndarray, test_v: np.ndarray | None, clean: bool,
               min_spread_v: float, cfg: OpenWireConfig) -> float:
        """This step's figure, V. `test_v` is the measurement's test reading (None: none);
        `clean`: no cell bled while the readings were taken (a test under a bleed is not
        counted, and the fallback holds its last clean figure)."""
        if test_v is not None:
            self.testing, self.pending, self.unanswered = True, False, 0
            if clean and test_v.shape == v.shape:
                self._record(v - test_v, cfg.confirm_tests)
        if self.testing:
            return self.tested_v
        if cfg.fallback == OpenWireFallback.OFF:
            return 0.0
        if clean:
            self.passive_v = passive_score_v(v, min_spread_v)
        return self.passive_v

    def _record(self, collapse_v: np.ndarray, confirm: int) -> None:
        """One test: how far it pulled each reading down (a NaN counts as no pull)."""
        pulled_v = np.maximum(collapse_v, 0.0)  # a NaN stays NaN, -inf is gone
        # NaN and +inf to 0: what np.nan_to_num(..., nan=0.0, posinf=0.0) gives, without
        # its dozen checks and three passes.
        collapse_v = np.where(np.isfinite(pulled_v), pulled_v, 0.0)
        self.collapse_v = np.vstack((self.collapse_v, collapse_v))[-confirm:]
        self.tests += 1
        if self.collapse_v.shape[0] < confirm:
            self.confirmed_v = np.zeros(self.n_series)
        else:
            self.confirmed_v = self.collapse_v.min(axis=0)
        self.tested_v = float(self.confirmed_v.max(initial=0.0))

    def request(self, now_s: float, quiet: bool, cfg: OpenWireConfig) -> bool:
        """Whether this step's actuation asks for a test: one is due (`test_every_s` since
        the last request) and `quiet` (no cell bleeds in the coming interval). The second
        request in a row to go unanswered ends the trust in tests: the fallback decides
        from then on, until a test reading arrives again."""
        if not quiet or (self.requested_at_s is not None
                         and now_s - self.requested_at_s < cfg.test_every_s - TIME_EPS_S):
            return False
        if self.pending:
            self.unanswered += 1
            if self.unanswered >= UNANSWERED_LIMIT and self.testing:
                self.testing = False
                self.collapse_v = np.zeros((0, self.n_series))
                self.confirmed_v = np.zeros(self.n_series)
                self.tested_v = self.passive_v = 0.0
        self.pending = True
        self.requested_at_s = now_s
        return True

    def worst_cell(self, v: np.ndarray) -> int:
        """The cell behind the figure: the channel the tests collapsed (the cell below the
        open tap for a pull-down test), else the reading furthest from the mean."""
        if self.testing:
            return int(np.argmax(self.confirmed_v))
        return int(np.argmax(np.abs(v - v.mean())))
