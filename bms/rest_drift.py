"""Internal-short detection from rest-voltage drift.

A cell with an internal short loses charge at rest faster than its neighbours, so its
rest voltage falls against theirs. After the pack has rested `settle_s` (relaxation
done; foxBMS waits 10 minutes), each cell's deviation from the pack mean is taken as a
reference on a clean reading; later clean readings, one per `sample_every_s`, give each
cell's drift against that reference. Cells bled by the balancer since the reference
are left out (bleeding lowers them on purpose). Any current ends the rest and the
reference. The state-estimation issue will replace the voltage drift by per-cell SoC.
"""

from __future__ import annotations

import numpy as np

SETTLE_S = 600.0
SAMPLE_EVERY_S = 60.0


class RestDrift:
    def __init__(self, n_series: int, rest_current_a: float, settle_s: float = SETTLE_S,
                 sample_every_s: float = SAMPLE_EVERY_S):
        self.rest_current_a = rest_current_a
        self.settle_s = settle_s
        self.sample_every_s = sample_every_s
        self.rest_since_s: float | None = None
        self.sampled_at_s = -np.inf
        self.reference: np.ndarray | None = None
        self.bled = np.zeros(n_series, dtype=bool)
        self.drop_v = 0.0  # the worst cell's fall against the others, V (held between samples)

    def update(self, cell_voltage_v: np.ndarray, current_a: float, clean: bool,
               bleeding: np.ndarray | None, now_s: float) -> float:
        """Returns the largest drop of one cell's rest voltage against the pack mean, V."""
        if abs(current_a) >= self.rest_current_a:
            self.rest_since_s = None
            self.reference = None
            self.drop_v = 0.0
            return 0.0
        if self.rest_since_s is None:
            self.rest_since_s = now_s
        if bleeding is not None:
            self.bled |= bleeding
        if (not clean or now_s - self.rest_since_s < self.settle_s
                or now_s - self.sampled_at_s < self.sample_every_s):
            return self.drop_v
        self.sampled_at_s = now_s
        deviation = cell_voltage_v - cell_voltage_v.mean()
        if self.reference is None:
            self.reference = deviation
            self.bled[:] = False
            return self.drop_v
        drop = np.where(self.bled, 0.0, self.reference - deviation)
        self.drop_v = float(drop.max())
        return self.drop_v

    def worst_cell(self, cell_voltage_v: np.ndarray) -> int | None:
        """The cell that has fallen furthest, for the fault log."""
        if self.reference is None:
            return None
        deviation = cell_voltage_v - cell_voltage_v.mean()
        return int(np.argmax(np.where(self.bled, -np.inf, self.reference - deviation)))
