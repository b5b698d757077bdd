"""Internal-short detection from the per-cell SoC estimates at rest.

Why and how: docs/internals.md, bms/core/rest_drift.py.
"""

from __future__ import annotations

import numpy as np

SETTLE_S = 600.0
SAMPLE_EVERY_S = 60.0


class RestDrift:
    def __init__(self, rest_current_a: float, settle_s: float = SETTLE_S,
                 sample_every_s: float = SAMPLE_EVERY_S):
        self.rest_current_a = rest_current_a
        self.settle_s = settle_s
        self.sample_every_s = sample_every_s
        self.rest_since_s: float | None = None
        self.sampled_at_s = -np.inf
        self.reference: np.ndarray | None = None
        self.epoch_seen = 0
        self.drop = 0.0  # the worst cell's SoC fall against the others (held between samples)
        self.held = 0.0  # the largest fall since the last clear: a suspected short latches

    def clear(self) -> None:
        """A clear-faults request: the held fall is forgotten. A short still there shows
        again once the pack next rests long enough."""
        self.held = 0.0

    def update(self, cell_soc: np.ndarray, current_a: float, reset_epoch: int,
               now_s: float) -> float:
        """Returns the largest fall of one cell's SoC against the pack mean seen since the
        last `clear`, fraction. `cell_soc` is the estimate with the charge bled since start
        added back; `reset_epoch` counts the estimator's resets from the voltage."""
        self.held = max(self.held, self._live(cell_soc, current_a, reset_epoch, now_s))
        return self.held

    def _live(self, cell_soc: np.ndarray, current_a: float, reset_epoch: int,
              now_s: float) -> float:
        """The fall in this rest against its reference (0 without one)."""
        if reset_epoch != self.epoch_seen:
            self.epoch_seen = reset_epoch
            self.reference = None
            self.drop = 0.0
        if abs(current_a) >= self.rest_current_a:
            self.rest_since_s = None
            self.reference = None
            self.drop = 0.0
            return 0.0
        if self.rest_since_s is None:
            self.rest_since_s = now_s
        if (now_s - self.rest_since_s < self.settle_s
                or now_s - self.sampled_at_s < self.sample_every_s):
            return self.drop
        self.sampled_at_s = now_s
        deviation = cell_soc - cell_soc.mean()
        if self.reference is None:
            self.reference = deviation
            return self.drop
        self.drop = float((self.reference - deviation).max())
        return self.drop

    def worst_cell(self, cell_soc: np.ndarray) -> int | None:
        """The cell that has fallen furthest, for the fault log."""
        if self.reference is None:
            return None
        deviation = cell_soc - cell_soc.mean()
        return int(np.argmax(self.reference - deviation))
