"""Pack voltage against the sum of the cells, tightly: a cell reading's offset that appears
during operation. Pure: time is passed in.

The pack sensor's gain error (0.1 % sigma: over a volt on a 416S string) makes the plain
comparison (`pack_v_mismatch_v`) need a band of volts, while a cell reading 30 mV off already
hides an over-voltage. The gain error is constant, so the ratio of the two is: learnt slowly,
it leaves only what changed since. A sensor fault is a step, and a step shows as the fast
filtered disagreement against the learnt ratio.

Why and how: docs/internals.md, bms/core/pack_v_drift.py.
"""

from __future__ import annotations

import math

# The learnt ratio's time constant: long beside any fault's detection (a step is learnt
# away by 1 % in 36 s), short beside the life of a sensor's gain.
LEARN_S = 3600.0
# The disagreement's filter: averages the readings' noise (one 416S reading: ~24 mV rms,
# the pack sensor's 10 mV and the 416 cells' 1 mV each) down to ~3 mV rms at a 1 s tick,
# and finds a 30 mV step at a 20 mV threshold in 33 s.
FILTER_S = 30.0
# Nothing is judged before the ratio has been learnt this long: a ratio learnt over a few
# readings is as noisy as they are, and it would learn a step early in the run away as fast
# as the filter finds it.
WARM_UP_S = 300.0
# Below this mean cell reading the ratio of two near-zero readings says nothing (sodium-ion
# cells are stored at 0 V): nothing is learnt or judged.
MIN_CELL_V = 1.0


class PackVoltageDrift:
    """The figure `pack_v_drift_v`: how far, in volts, the pack sensor's reading (scaled by
    the learnt ratio) and the sum of the cells have moved apart, filtered over FILTER_S.

    The ratio is learnt as an exponentially weighted least-squares fit through the origin
    (weights fall with age over LEARN_S), so that readings at a low voltage weigh little and
    a ratio learnt from the first readings on is a plain mean until LEARN_S has passed.
    Learning stops while the caller holds it (a voltage sensor row, this figure's among them,
    is over its threshold or raised): a fault is never learnt away.
    """

    def __init__(self, n_series: int, learn_s: float = LEARN_S, filter_s: float = FILTER_S,
                 warm_up_s: float = WARM_UP_S):
        self.min_pack_v = MIN_CELL_V * n_series
        self.learn_s = learn_s
        self.filter_s = filter_s
        self.warm_up_s = warm_up_s
        self.restart()

    def restart(self) -> None:
        """Forgets the ratio (a service action: a sensor replaced has another gain)."""
        self.sensed_by_sum = 0.0  # weighted mean of sensed x sum, V^2
        self.sum_squared = 0.0  # weighted mean of sum^2, V^2
        self.learnt_s = 0.0  # how long the ratio has been learnt
        self.drift_v = 0.0  # the filtered disagreement, V (signed)
        self.last_s: float | None = None  # the last usable reading

    @property
    def ratio(self) -> float:
        """The learnt pack sensor / sum of the cells (NaN: nothing learnt yet)."""
        return self.sensed_by_sum / self.sum_squared if self.sum_squared > 0.0 else math.nan

    def update(self, sensed_v: float | None, cells_v: float, now_s: float, hold: bool) -> float:
        """This step's figure, V. `sensed_v`: the pack sensor (None: the source has none);
        `cells_v`: the sum of the cell readings the voltage rows judge (NaN: unreadable);
        `hold`: learn nothing this step. 0 while no comparison can be made."""
        if (sensed_v is None or not math.isfinite(sensed_v) or not math.isfinite(cells_v)
                or cells_v < self.min_pack_v):
            self.last_s = None  # the next usable reading starts the chain of intervals again
            return 0.0
        last_s, self.last_s = self.last_s, now_s
        if last_s is None:
            return self._figure()
        dt_s = now_s - last_s
        ratio = self.ratio
        if math.isfinite(ratio) and ratio > 0.0:
            residual_v = sensed_v / ratio - cells_v  # what the sum should be, minus what it is
            self.drift_v += (residual_v - self.drift_v) * -math.expm1(-dt_s / self.filter_s)
        if not hold:
            # Both means start at 0, so their ratio weighs every reading alike until the
            # oldest begin to fade.
            k = -math.expm1(-dt_s / self.learn_s)
            self.sensed_by_sum += (sensed_v * cells_v - self.sensed_by_sum) * k
            self.sum_squared += (cells_v * cells_v - self.sum_squared) * k
            self.learnt_s += dt_s
        return self._figure()

    def _figure(self) -> float:
        return abs(self.drift_v) if self.learnt_s >= self.warm_up_s else 0.0
